"""Model cards: the repository's common MODEL_CARD.md plus a generated per-model part, with Hub metadata.

The rendered ``README.md`` is

    ---
    <YAML metadata, written by huggingface_hub's ModelCardData: library_name, license, tags, datasets,
     pipeline_tag, base_model, model-index with the measured metrics>
    ---
    <the per-model section>          (unless MODEL_CARD.md places it itself with {{ model_details }})
    <the body of MODEL_CARD.md, placeholders filled>

Placeholder convention for MODEL_CARD.md (plain Markdown, readable as is in the repository):
- ``{{ name }}`` (spaces optional) is replaced by the per-model value ``name``; the names are in
  ``PLACEHOLDERS``. An unknown name is an error (so a typo does not reach the Hub). Nothing else in the
  text is touched (no Jinja: code blocks and braces stay as written).
- ``{{ model_details }}`` is the whole generated section (title, facts, results table, usage). If the
  body does not contain it, the section is put in front of the body.
- An optional YAML front matter block at the top of MODEL_CARD.md is merged into the metadata: its
  ``tags`` are added to ours, its other keys are used where we generate none (for example
  ``license_name``); the measured metrics, datasets and library always come from the export.
"""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = ['DATASETS', 'PLACEHOLDERS', 'Metric', 'ModelInfo', 'TrainingRecord', 'TrainingSummary',
           'render_model_card', 'read_summary', 'read_timm_summary_csv', 'train_cifar_record', 'split_front_matter']

# datasets we know: Hub dataset id, display name (the evaluated split is what the training source records)
DATASETS: Dict[str, Dict[str, str]] = {
    'cifar10': dict(hub_id='uoft-cs/cifar10', name='CIFAR-10'),
    'cifar100': dict(hub_id='uoft-cs/cifar100', name='CIFAR-100'),
    'in1k': dict(hub_id='ILSVRC/imagenet-1k', name='ImageNet-1k'),
}
DATASET_ALIASES = {'cifar-10': 'cifar10', 'cifar-100': 'cifar100', 'imagenet': 'in1k', 'imagenet-1k': 'in1k',
                   'imagenet1k': 'in1k', 'uoft-cs/cifar10': 'cifar10', 'uoft-cs/cifar100': 'cifar100',
                   'ilsvrc/imagenet-1k': 'in1k', 'torch/cifar10': 'cifar10', 'torch/cifar100': 'cifar100',
                   'wds/cifar10': 'cifar10', 'wds/cifar100': 'cifar100', 'wds/imagenet': 'in1k'}

PLACEHOLDERS = ('model_name', 'architecture', 'tag', 'repo_id', 'dataset', 'dataset_id', 'num_classes',
                'num_params', 'weights_dtype', 'metrics_table', 'usage', 'model_details')

SOURCE_URL = 'https://github.com/timm-identity/timm-identity'
IMPORT_NOTE = 'registers the architecture with timm: import it before create_model, hf-hub: names included'

PAPER = 'Hardt & Ma, *Identity Matters in Deep Learning*, ICLR 2017 ([arXiv:1611.04231](https://arxiv.org/abs/1611.04231))'


def dataset_info(dataset: Optional[str]) -> Dict[str, str]:
    """Hub id and display name of a dataset key (``cifar10``...) or of any other name / Hub id."""
    if not dataset:
        return {}
    key = DATASET_ALIASES.get(dataset.lower(), dataset.lower())
    if key in DATASETS:
        return dict(key=key, **DATASETS[key])
    return dict(key=dataset, hub_id=dataset, name=dataset)


@dataclass
class Metric:
    """A measured number. ``kind`` 'error' or 'accuracy' (percent); 'top1' / 'top5'; ``which`` a label
    such as 'final' or 'best during training'; ``step`` the training step (or epoch, for timm train.py) whose
    weights were measured, if known; ``of_these_weights``: measured on the exported weights themselves (only
    those go into the card's model-index metadata; the others are in its text, labelled)."""
    kind: str
    value: float
    topk: int = 1
    which: str = 'final'
    step: Optional[int] = None
    of_these_weights: bool = True
    step_unit: str = 'step'  # 'epoch' for timm train.py

    @property
    def accuracy(self) -> float:
        return self.value if self.kind == 'accuracy' else 100. - self.value

    @property
    def error(self) -> float:
        return self.value if self.kind == 'error' else 100. - self.value


@dataclass
class ModelInfo:
    """Everything per model that the card needs."""
    architecture: str
    tag: str
    repo_id: str
    num_classes: int
    num_params: int
    num_fixed: int = 0
    dataset: Optional[str] = None
    description: str = ''
    weights_dtype: str = 'float32'
    input_size: Sequence[int] = (3, 32, 32)
    mean: Sequence[float] = ()
    std: Sequence[float] = ()
    license: str = 'apache-2.0'
    metrics: List[Metric] = field(default_factory=list)
    details: Dict[str, Any] = field(default_factory=dict)  # extra facts (wall time, device ...)
    base_model: Optional[str] = None
    registered: bool = True  # the tag is one of the package's pretrained tags
    training: 'TrainingRecord' = field(default_factory=lambda: TrainingRecord())  # what the source records

    @property
    def model_name(self) -> str:
        return f'{self.architecture}.{self.tag}'


def split_front_matter(text: str) -> Tuple[Dict[str, Any], str]:
    """(YAML metadata, body) of a Markdown text that may start with a ``---`` front matter block."""
    match = re.match(r'\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)', text, flags=re.S)
    if not match:
        return {}, text
    meta = yaml.safe_load(match.group(1)) or {}
    if not isinstance(meta, dict):
        raise ValueError('The front matter of the model card template is not a YAML mapping.')
    return meta, text[match.end():]


@dataclass
class TrainingRecord:
    """What the training source (summary, settings, checkpoint) records about how the weights were made.
    None: not recorded, and the card says so; nothing here is ever filled in from the paper's recipe."""
    trainer: Optional[str] = None       # 'timm-identity train-cifar', 'timm train.py', ...
    recipe: Optional[str] = None        # the named recipe and what differs from it, or the key settings
    command: Optional[str] = None       # the command line
    length: Optional[str] = None        # '16 optimizer steps of 16 planned (4.00 epochs of 64 images)'
    weights_from: Optional[str] = None  # which point of the run the exported weights are
    eval_split: Optional[str] = None    # the split the metrics were measured on
    eval_images: Optional[int] = None   # its size
    eval_images_source: Optional[str] = None  # where the size comes from, if not from the run itself


@dataclass
class TrainingSummary:
    """A training summary as read by :func:`read_summary`."""
    metrics: List[Metric]
    details: Dict[str, Any]       # extra facts for the card (wall time, device)
    training: TrainingRecord
    raw: Dict[str, Any]           # the file's content (timm summary.csv: its rows and args.yaml)


def read_summary(path: Union[str, Path]) -> TrainingSummary:
    """Metrics and training facts from a training summary; any error names the file.

    - ``.json`` (our trainer's ``summary.json``): ``final_test_error``, ``best_test_error`` and optionally
      ``final_test_error_top5``, ``best_test_error_top5`` -- top-1 / top-5 error in percent on the test
      split; and, where present, the run's config (recipe), command line, steps, test set size, wall time,
      device.
    - ``.csv`` (timm train.py's ``summary.csv``, see :func:`read_timm_summary_csv`): ``eval_top1`` /
      ``eval_top5`` (accuracy, percent) of the last epoch (final) and of the epoch with the best
      ``eval_top1`` (best); train.py's ``args.yaml`` beside it gives the settings and the evaluated split.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Summary file not found: {path}')
    if path.suffix.lower() == '.csv':
        return _read_timm_summary(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f'{path}: not readable as JSON ({e})') from None
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: expected a JSON object.')
    metrics: List[Metric] = []
    steps = {'final': raw.get('final_step'), 'best during training': raw.get('best_step')}
    for key, topk, which in (('final_test_error', 1, 'final'), ('best_test_error', 1, 'best during training'),
                             ('final_test_error_top5', 5, 'final'),
                             ('best_test_error_top5', 5, 'best during training')):
        if raw.get(key) is not None:
            try:
                value = float(raw[key])
            except (TypeError, ValueError):
                raise ValueError(f'{path}: {key}={raw[key]!r} is not a number.') from None
            if not 0. <= value <= 100.:
                raise ValueError(f'{path}: {key}={value} is not a percentage in [0, 100].')
            step = steps[which] if isinstance(steps[which], int) else None
            # train-cifar's final evaluation is of the summary's checkpoint; its best only if at that step
            ours = which == 'final' or (step is not None and step == steps['final'])
            metrics.append(Metric('error', value, topk, which, step=step, of_these_weights=ours))
    errors = [m.value for m in metrics if m.topk == 1]
    if errors and max(errors) < 1.:
        raise ValueError(f'{path}: test errors {errors} look like fractions; the summary must give percent '
                         f'(6.38 for 6.38 %).')
    details: Dict[str, Any] = {}
    if isinstance(raw.get('wall_time_s'), (int, float)):
        details['training wall time'] = f'{raw["wall_time_s"]:,.0f} s'
    if raw.get('device'):
        details['training device'] = raw['device']
    training = train_cifar_record(raw.get('config') or {}, raw.get('steps'), raw.get('epochs'), raw.get('argv'),
                                  raw.get('status'), bool(raw.get('resumed_from')))
    if metrics:  # train-cifar's *_test_error keys are measured on the test split of its data
        training.eval_split = 'test'
        training.eval_images = raw.get('test_images')
    return TrainingSummary(metrics, details, training, raw)


def train_cifar_record(config: Dict[str, Any], steps: Optional[int] = None, epochs: Optional[float] = None,
                       argv: Optional[Sequence[str]] = None, status: Optional[str] = None,
                       resumed: bool = False) -> TrainingRecord:
    """The :class:`TrainingRecord` of a ``train-cifar`` run from its config (``summary.json``'s ``config``
    or a checkpoint's ``train_state.pt``), steps done and command line."""
    import shlex
    from timm_identity.train.recipes import RECIPES
    record = TrainingRecord()
    if not config and argv is None and steps is None:
        return record
    record.trainer = 'timm-identity train-cifar'
    name = config.get('recipe')
    if name in RECIPES:
        def norm(v):
            return list(v) if isinstance(v, (list, tuple)) else v
        changed = [f'{k} {config[k]} (recipe: {v})' for k, v in RECIPES[name].items()
                   if k in config and norm(config[k]) != norm(v)]
        record.recipe = f'`{name}` (timm_identity/train/recipes.py)' + (
            f', changed: {", ".join(changed)}' if changed else ', unchanged')
    elif name:
        record.recipe = f'`{name}` (not a recipe of this version of timm-identity)'
    if argv:
        words = [Path(argv[0]).name, *argv[1:]]
        record.command = f'`{shlex.join(words)}`' + (' (the last start of a resumed run)' if resumed else '')
    if steps is not None:
        planned = f' of {config["steps"]:,} planned' if config.get('steps') else ''
        record.length = f'{steps:,} optimizer steps{planned}' + (
            f' ({epochs:.2f} epochs)' if isinstance(epochs, (int, float)) else '') + (
            f', stopped: {status}' if status and status != 'completed' else '')
    return record


def read_timm_summary_csv(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """The epochs of a timm ``train.py`` run from its ``summary.csv``, read the way train.py writes it.

    train.py appends one row per evaluated epoch and writes the header again whenever it starts (so once
    more after every ``--resume`` into the same folder); a process killed while writing leaves a partial
    last row. Here: every header row sets the columns of the rows after it; a row that does not end its
    line, has another number of cells than its header, or a cell that is not a number is partial and
    skipped (with a warning naming the lines); a row for an epoch at or before an earlier row's (train.py
    started again from an older checkpoint) replaces the rows from that epoch on. Returns the rows in
    epoch order, values as numbers (``epoch`` an int).
    """
    import csv
    import logging
    path = Path(path)
    try:
        with open(path, newline='') as f:  # keep '\r\n': a row without its line end is partial
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f'{path}: not readable as a text file ({e})') from None
    header: Optional[List[str]] = None
    rows: List[Dict[str, Any]] = []
    skipped: List[int] = []
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        cells = next(csv.reader([line]), [])
        if not any(c.strip() for c in cells):
            continue
        if cells[0].strip() == 'epoch':
            header = [c.strip() for c in cells]
            continue
        if header is None:
            raise ValueError(f'{path}:{lineno}: a row before any header row (expected timm train.py\'s '
                             f'summary.csv, which starts with "epoch,...").')
        try:
            values = [float(c) for c in cells]
        except ValueError:
            values = None
        if values is None or len(cells) != len(header) or not line.endswith(('\n', '\r')):
            skipped.append(lineno)
            continue
        row: Dict[str, Any] = dict(zip(header, values))
        row['epoch'] = int(row['epoch'])
        rows = [r for r in rows if r['epoch'] < row['epoch']] + [row]
    if skipped:
        logging.getLogger(__name__).warning(
            f'{path}: skipped partial row(s) on line(s) {skipped} (a train.py process stopped while writing).')
    return rows


def _read_timm_summary(path: Path) -> TrainingSummary:
    rows = read_timm_summary_csv(path)
    evaluated = [r for r in rows if 'eval_top1' in r]
    if not evaluated:
        raise ValueError(f'{path}: no rows with an eval_top1 column (expected timm train.py summary.csv).')
    best = max(evaluated, key=lambda r: r['eval_top1'])
    final = evaluated[-1]
    metrics: List[Metric] = []
    for which, row in (('final', final), ('best during training', best)):
        metrics.append(Metric('accuracy', row['eval_top1'], 1, which, step=row['epoch'], step_unit='epoch'))
        if 'eval_top5' in row:
            metrics.append(Metric('accuracy', row['eval_top5'], 5, which, step=row['epoch'], step_unit='epoch'))
    args = _read_timm_args(path.parent / 'args.yaml')
    training = TrainingRecord(trainer='timm train.py')
    if args:
        keys = ('model', 'opt', 'lr', 'momentum', 'weight_decay', 'batch_size', 'sched', 'decay_milestones',
                'decay_epochs', 'decay_rate', 'warmup_epochs', 'epochs', 'smoothing', 'mixup', 'cutmix',
                'model_ema')
        settings = ', '.join(f'{k} {args[k]}' for k in keys if args.get(k) not in (None, '', False))
        training.recipe = f'{settings} (args.yaml; all settings there)'
    planned = f' of {args["epochs"]} planned' if args.get('epochs') else ''
    training.length = f'{rows[-1]["epoch"] + 1} epochs{planned} (summary.csv)'
    if args.get('val_split'):
        training.eval_split = str(args['val_split'])
        training.eval_images, training.eval_images_source = _wds_split_size(args.get('data_dir'), training.eval_split)
    details = {'final epoch': final['epoch'], 'best epoch': best['epoch']}
    raw = dict(rows=rows, args=args, dataset=args.get('dataset'))
    return TrainingSummary(metrics, details, training, raw)


def _read_timm_args(path: Path) -> Dict[str, Any]:
    """train.py's ``args.yaml`` (its resolved settings; rewritten at every start), or {} if there is none."""
    if not path.is_file():
        return {}
    try:
        args = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f'{path}: not readable as YAML ({e})') from None
    return args if isinstance(args, dict) else {}


def _wds_split_size(data_dir: Optional[str], split: str) -> Tuple[Optional[int], Optional[str]]:
    """``num_samples`` of ``split`` in the ``_info.json`` of a webdataset folder (timm's wds reader reads the
    same), if that folder is still there."""
    info = Path(data_dir) / '_info.json' if data_dir else None
    if info is None or not info.is_file():
        return None, None
    try:
        n = json.loads(info.read_text())['splits'][split]['num_samples']
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    return (int(n), f'{info} as it is now') if isinstance(n, int) else (None, None)


def _fmt(x: float) -> str:
    return f'{x:.2f}'


NOT_RECORDED = 'not recorded'


def evaluated_on(info: ModelInfo) -> str:
    """The evaluated dataset, split and size, as far as the source records them."""
    t = info.training
    name = dataset_info(info.dataset).get('name', '')
    if not t.eval_split:
        return f'{name} (split {NOT_RECORDED})'.strip()
    size = f'{t.eval_images:,} images' if t.eval_images is not None else f'size {NOT_RECORDED}'
    return f'{name} `{t.eval_split}` split, {size}'.strip()


def metric_label(metric: Metric, split: Optional[str] = None) -> str:
    """The row label of a metric in the card's text: which point of the run, and whether it is these weights."""
    label = metric.which
    if metric.step is not None and str(metric.step) not in label:
        label += f', {metric.step_unit} {metric.step:,}'
    if metric.which.startswith('best'):
        label += f' (picked by its {split or NOT_RECORDED} split error)'
    if not metric.of_these_weights:
        label += ': other weights than these'
    return label


def metrics_table(metrics: Sequence[Metric], evaluated: str = '', split: Optional[str] = None) -> str:
    if not metrics:
        return '_No measured results were given with this export._'
    lines = [f'| {evaluated} | top-1 error (%) | top-1 acc. (%) | top-5 error (%) |',
             '|---|---|---|---|']
    for which in dict.fromkeys(m.which for m in metrics):
        top1 = next((m for m in metrics if m.which == which and m.topk == 1), None)
        top5 = next((m for m in metrics if m.which == which and m.topk == 5), None)
        lines.append(f'| {metric_label(top1 or top5, split)} | {_fmt(top1.error) if top1 else "-"} '
                     f'| {_fmt(top1.accuracy) if top1 else "-"} | {_fmt(top5.error) if top5 else "-"} |')
    if any(not m.of_these_weights for m in metrics):
        lines += ['', 'Only the rows measured on these weights are in the card\'s metadata (model-index).']
    return '\n'.join(lines)


def usage_snippet(info: ModelInfo) -> str:
    if info.registered:
        create = (f"model = timm.create_model('{info.model_name}', pretrained=True)\n"
                  f"# same weights: timm.create_model('hf-hub:{info.repo_id}', pretrained=True)")
    else:
        create = f"model = timm.create_model('hf-hub:{info.repo_id}', pretrained=True)"
    return (
        '```python\n'
        'import timm\n'
        f'import timm_identity  # {IMPORT_NOTE}\n\n'
        f'{create}\n'
        'model.eval()\n'
        'data_cfg = timm.data.resolve_data_config({}, model=model)\n'
        'transform = timm.data.create_transform(**data_cfg)  # PIL image -> normalised tensor\n'
        '# logits = model(transform(img).unsqueeze(0))\n'
        '```\n\n'
        f'`timm_identity` is the `timm-identity` package ({SOURCE_URL}; not on PyPI: `pip install .` in a checkout '
        f'of its source). It must be imported before `timm.create_model` is given one of its names, '
        f'`hf-hub:` names included: timm knows the architecture only once the package has registered it.\n\n'
        'Fine-tuning on another label set: `timm.create_model(..., pretrained=True, num_classes=N)` keeps the '
        'backbone and builds a new head (add `head=\'linear\'` for a trainable one); '
        '`python -m timm_identity.hub.finetune --help` does it end to end.'
    )


def model_details(info: ModelInfo) -> str:
    ds = dataset_info(info.dataset)
    lines = [f'# {info.model_name}', '']
    if info.description:
        lines += [info.description, '']
    head = (f' + {info.num_fixed:,} entries of the fixed random projection head (a buffer, not trained)'
            if info.num_fixed else '')
    lines += [
        f'- **Architecture:** `{info.architecture}` from `timm-identity`, {info.num_params:,} trainable '
        f'parameters{head}',
        f'- **Dataset:** {ds.get("name", "not given")}'
        + (f' ([`{ds["hub_id"]}`](https://huggingface.co/datasets/{ds["hub_id"]}))' if ds.get('hub_id') else '')
        + f', {info.num_classes} classes',
        f'- **Input:** {"x".join(str(s) for s in info.input_size)}'
        + (f', normalised with mean {tuple(info.mean)} and std {tuple(info.std)}' if info.mean else ''),
    ]
    if info.weights_dtype == 'float16':
        lines.append('- **Weights:** `model.safetensors` stored in **float16** (half the download). Loading casts '
                     'them to the model\'s float32; logits differ from those of the float32 training weights by '
                     'that rounding.')
    else:
        lines.append(f'- **Weights:** `model.safetensors`, {info.weights_dtype}')
    if info.base_model:
        lines.append(f'- **Fine-tuned from:** `{info.base_model}`')
    lines.append(f'- **Paper:** {PAPER}')
    lines += ['', '## Training', '', 'As recorded by the training run these weights come from '
              f'("{NOT_RECORDED}": the run does not say).', '']
    t = info.training
    size_note = f' (count from {t.eval_images_source})' if t.eval_split and t.eval_images_source else ''
    for key, value in (('trainer', t.trainer), ('recipe', t.recipe), ('command', t.command), ('length', t.length),
                       ('exported weights', t.weights_from),
                       ('evaluated on', evaluated_on(info) + size_note if t.eval_split else None),
                       *info.details.items()):
        lines.append(f'- **{key[:1].upper() + key[1:]}:** {NOT_RECORDED if value is None else value}')
    lines += ['', '## Results', '', metrics_table(info.metrics, evaluated_on(info), info.training.eval_split),
              '', '## Usage', '', usage_snippet(info), '']
    return '\n'.join(lines)


def card_data(info: ModelInfo, template_meta: Optional[Dict[str, Any]] = None) -> ModelCardData:
    template_meta = dict(template_meta or {})
    ds = dataset_info(info.dataset)
    tags = ['image-classification', 'timm', 'timm-identity', 'arxiv:1611.04231']
    for t in template_meta.pop('tags', None) or []:
        if t not in tags:
            tags.append(t)
    eval_results = []
    for m in info.metrics:
        if not m.of_these_weights:  # e.g. the best test error during training, at another step
            continue
        eval_results.append(EvalResult(
            task_type='image-classification', task_name='Image Classification',
            dataset_type=ds.get('hub_id', 'unknown'), dataset_name=ds.get('name', 'unknown'),
            dataset_split=info.training.eval_split,
            metric_type='accuracy', metric_value=round(m.accuracy, 2),
            metric_name=f'Top-{m.topk} accuracy ({m.which})',
        ))
    generated = dict(
        library_name='timm', pipeline_tag='image-classification', license=template_meta.pop('license', info.license),
        tags=tags, datasets=[ds['hub_id']] if ds.get('hub_id') else None, base_model=info.base_model,
        model_name=info.model_name, eval_results=eval_results or None,
    )
    for key in ('library_name', 'pipeline_tag', 'datasets', 'model-index', 'model_name', 'eval_results',
                'base_model'):
        template_meta.pop(key, None)  # measured / per-model facts always come from the export
    return ModelCardData(**{k: v for k, v in generated.items() if v is not None}, **template_meta)


def render_model_card(info: ModelInfo, template: Optional[str] = None) -> str:
    """``README.md`` text for one model: metadata + per-model section + the common MODEL_CARD.md body."""
    template_meta, body = split_front_matter(template or '')
    details = model_details(info)
    ds = dataset_info(info.dataset)
    values = dict(
        model_name=info.model_name, architecture=info.architecture, tag=info.tag, repo_id=info.repo_id,
        dataset=ds.get('name', ''), dataset_id=ds.get('hub_id', ''), num_classes=str(info.num_classes),
        num_params=f'{info.num_params:,}', weights_dtype=info.weights_dtype,
        metrics_table=metrics_table(info.metrics, evaluated_on(info), info.training.eval_split),
        usage=usage_snippet(info), model_details=details,
    )
    unknown = sorted({m.group(1) for m in re.finditer(r'\{\{\s*(\w+)\s*\}\}', body)} - set(values))
    if unknown:
        raise ValueError(f'Unknown placeholder(s) {unknown} in the model card template; known: {list(PLACEHOLDERS)}.')
    has_details = re.search(r'\{\{\s*model_details\s*\}\}', body) is not None
    body = re.sub(r'\{\{\s*(\w+)\s*\}\}', lambda m: values[m.group(1)], body)
    if not has_details:
        body = details + ('\n' + body.lstrip('\n') if body.strip() else '')
    data = card_data(info, template_meta)
    card = ModelCard(f'---\n{data.to_yaml()}\n---\n\n{body.strip()}\n')
    return str(card)
