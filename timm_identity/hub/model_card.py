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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = ['DATASETS', 'PLACEHOLDERS', 'Metric', 'ModelInfo', 'render_model_card', 'read_summary',
           'split_front_matter']

# datasets we know: Hub dataset id, display name, evaluation split
DATASETS: Dict[str, Dict[str, str]] = {
    'cifar10': dict(hub_id='uoft-cs/cifar10', name='CIFAR-10', split='test'),
    'cifar100': dict(hub_id='uoft-cs/cifar100', name='CIFAR-100', split='test'),
    'in1k': dict(hub_id='ILSVRC/imagenet-1k', name='ImageNet-1k', split='validation'),
}
DATASET_ALIASES = {'cifar-10': 'cifar10', 'cifar-100': 'cifar100', 'imagenet': 'in1k', 'imagenet-1k': 'in1k',
                   'imagenet1k': 'in1k', 'uoft-cs/cifar10': 'cifar10', 'uoft-cs/cifar100': 'cifar100',
                   'ilsvrc/imagenet-1k': 'in1k', 'torch/cifar10': 'cifar10', 'torch/cifar100': 'cifar100'}

PLACEHOLDERS = ('model_name', 'architecture', 'tag', 'repo_id', 'dataset', 'dataset_id', 'num_classes',
                'num_params', 'weights_dtype', 'metrics_table', 'usage', 'model_details')

PAPER = 'Hardt & Ma, *Identity Matters in Deep Learning*, ICLR 2017 ([arXiv:1611.04231](https://arxiv.org/abs/1611.04231))'


def dataset_info(dataset: Optional[str]) -> Dict[str, str]:
    """Hub id, display name and eval split of a dataset key (``cifar10``...) or of any other name / Hub id."""
    if not dataset:
        return {}
    key = DATASET_ALIASES.get(dataset.lower(), dataset.lower())
    if key in DATASETS:
        return dict(key=key, **DATASETS[key])
    return dict(key=dataset, hub_id=dataset, name=dataset, split='test')


@dataclass
class Metric:
    """A measured number. ``kind`` 'error' or 'accuracy' (percent); 'top1' / 'top5'; ``which`` a label
    such as 'final' or 'best during training'."""
    kind: str
    value: float
    topk: int = 1
    which: str = 'final'

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
    details: Dict[str, Any] = field(default_factory=dict)  # extra facts (steps, wall time, device ...)
    base_model: Optional[str] = None
    registered: bool = True  # the tag is one of the package's pretrained tags

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


def read_summary(path: Union[str, Path]) -> Tuple[List[Metric], Dict[str, Any], Dict[str, Any]]:
    """Metrics from a training summary: (metrics, details, raw).

    - ``.json`` (our trainer's summary): keys ``final_test_error``, ``best_test_error`` and optionally
      ``final_test_error_top5``, ``best_test_error_top5`` -- top-1 / top-5 test error in percent; also read
      if present: ``steps``, ``best_step``, ``epochs``, ``wall_time_s``, ``device``.
    - ``.csv`` (timm train.py's ``summary.csv``): ``eval_top1`` / ``eval_top5`` (accuracy, percent) of the
      last epoch (final) and of the epoch with the best ``eval_top1`` (best).
    """
    import csv
    import json
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Summary file not found: {path}')
    metrics: List[Metric] = []
    details: Dict[str, Any] = {}
    if path.suffix.lower() == '.csv':
        with path.open(newline='') as f:
            rows = [r for r in csv.DictReader(f) if r.get('eval_top1') not in (None, '')]
        if not rows:
            raise ValueError(f'{path}: no rows with an eval_top1 column (expected timm train.py summary.csv).')
        best = max(rows, key=lambda r: float(r['eval_top1']))
        for which, row in (('final', rows[-1]), ('best during training', best)):
            metrics.append(Metric('accuracy', float(row['eval_top1']), 1, which))
            if row.get('eval_top5') not in (None, ''):
                metrics.append(Metric('accuracy', float(row['eval_top5']), 5, which))
        details['epochs'] = len(rows)
        details['best epoch'] = best.get('epoch')
        return metrics, details, dict(rows=rows)

    raw = json.loads(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: expected a JSON object.')
    for key, topk, which in (('final_test_error', 1, 'final'), ('best_test_error', 1, 'best during training'),
                             ('final_test_error_top5', 5, 'final'),
                             ('best_test_error_top5', 5, 'best during training')):
        if raw.get(key) is not None:
            value = float(raw[key])
            if not 0. <= value <= 100.:
                raise ValueError(f'{path}: {key}={value} is not a percentage in [0, 100].')
            metrics.append(Metric('error', value, topk, which))
    errors = [m.value for m in metrics if m.topk == 1]
    if errors and max(errors) < 1.:
        raise ValueError(f'{path}: test errors {errors} look like fractions; the summary must give percent '
                         f'(6.38 for 6.38 %).')
    for key in ('steps', 'best_step', 'epochs', 'wall_time_s', 'device'):
        if raw.get(key) is not None:
            details[key.replace('_', ' ')] = raw[key]
    return metrics, details, raw


def _fmt(x: float) -> str:
    return f'{x:.2f}'


def metrics_table(metrics: Sequence[Metric], dataset_name: str = '', split: str = 'test') -> str:
    if not metrics:
        return '_No measured results were given with this export._'
    lines = [f'| {dataset_name} {split} | top-1 error (%) | top-1 acc. (%) | top-5 error (%) |'.strip(),
             '|---|---|---|---|']
    for which in dict.fromkeys(m.which for m in metrics):
        top1 = next((m for m in metrics if m.which == which and m.topk == 1), None)
        top5 = next((m for m in metrics if m.which == which and m.topk == 5), None)
        lines.append(f'| {which} | {_fmt(top1.error) if top1 else "-"} | {_fmt(top1.accuracy) if top1 else "-"} '
                     f'| {_fmt(top5.error) if top5 else "-"} |')
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
        'import timm_identity  # registers the architecture with timm (pip install timm-identity)\n\n'
        f'{create}\n'
        'model.eval()\n'
        'data_cfg = timm.data.resolve_data_config({}, model=model)\n'
        'transform = timm.data.create_transform(**data_cfg)  # PIL image -> normalised tensor\n'
        '# logits = model(transform(img).unsqueeze(0))\n'
        '```\n\n'
        'Fine-tuning on another label set: `timm.create_model(..., pretrained=True, num_classes=N)` keeps the '
        'backbone and builds a new head (add `head=\'linear\'` for a trainable one); see `tools/finetune.py`.'
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
    for key, value in info.details.items():
        lines.append(f'- **{key[:1].upper() + key[1:]}:** {value}')
    lines.append(f'- **Paper:** {PAPER}')
    lines += ['', '## Results', '', metrics_table(info.metrics, ds.get('name', ''), ds.get('split', 'test')),
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
        eval_results.append(EvalResult(
            task_type='image-classification', task_name='Image Classification',
            dataset_type=ds.get('hub_id', 'unknown'), dataset_name=ds.get('name', 'unknown'),
            dataset_split=ds.get('split', 'test'),
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
        metrics_table=metrics_table(info.metrics, ds.get('name', ''), ds.get('split', 'test')),
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
