"""Model cards: the repository's common MODEL_CARD.md plus a generated per-model part, with Hub metadata
(the training facts come from :mod:`.training_sources`).

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
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .training_sources import Metric, TrainingRecord

__all__ = ['DATASETS', 'PLACEHOLDERS', 'ModelInfo', 'render_model_card', 'split_front_matter']

# datasets we know: Hub dataset id, display name (the evaluated split is what the training source records)
DATASETS: Dict[str, Dict[str, str]] = {
    'cifar10': dict(hub_id='uoft-cs/cifar10', name='CIFAR-10'),
    'cifar100': dict(hub_id='uoft-cs/cifar100', name='CIFAR-100'),
    'cifar100_coarse': dict(hub_id='uoft-cs/cifar100', name='CIFAR-100 (its 20 superclasses, the coarse labels)'),
    'in1k': dict(hub_id='ILSVRC/imagenet-1k', name='ImageNet-1k'),
}
DATASET_ALIASES = {'cifar-10': 'cifar10', 'cifar-100': 'cifar100', 'imagenet': 'in1k', 'imagenet-1k': 'in1k',
                   'imagenet1k': 'in1k', 'uoft-cs/cifar10': 'cifar10', 'uoft-cs/cifar100': 'cifar100',
                   'ilsvrc/imagenet-1k': 'in1k', 'torch/cifar10': 'cifar10', 'torch/cifar100': 'cifar100',
                   'wds/cifar10': 'cifar10', 'wds/cifar100': 'cifar100', 'wds/cifar100_coarse': 'cifar100_coarse',
                   'wds/imagenet': 'in1k'}

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
    label = metric.which + (' = best during training' if metric.also_best else '')
    if metric.step is not None and str(metric.step) not in label:
        label += f', {metric.step_unit} {metric.step:,}'
    if metric.also_best:
        label += f' (best picked by its {split or NOT_RECORDED} split error)'
    elif metric.which.startswith('best'):
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
        'backbone and builds a new head (add `head=\'linear\'` for a trainable one). On CIFAR, '
        '`timm-identity train-cifar --init-from NAME --model-kwargs head=linear` fine-tunes (`--freeze-backbone`: '
        'a linear probe); on any other data, timm\'s own `train.py` does, run through '
        '`timm-identity run-script TIMM_SRC/train.py --model NAME --pretrained --num-classes N --model-kwargs '
        'head=linear ...` (`TIMM_SRC`: a checkout of timm, whose scripts are not in its pip package).'
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
    same_as_code = ', as the code of `timm-identity` is (its LICENSE file)' if info.license == 'apache-2.0' else ''
    lines.append(f'- **License:** {info.license}: these weights are released under it{same_as_code}')
    lines += ['', '## Training', '', 'As recorded by the training run these weights come from '
              f'("{NOT_RECORDED}": the run does not say).', '']
    t = info.training
    size_note = f' (count from {t.eval_images_source})' if t.eval_split and t.eval_images_source else ''
    for key, value in (('trainer', t.trainer), ('recipe', t.recipe), ('command', t.command), ('length', t.length),
                       ('exported weights', t.weights_from),
                       ('evaluated on', evaluated_on(info) + size_note if t.eval_split else None),
                       *((('evaluation counted', t.eval_count),) if t.eval_count else ()),
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
        library_name='timm', pipeline_tag='image-classification', license=info.license,
        tags=tags, datasets=[ds['hub_id']] if ds.get('hub_id') else None, base_model=info.base_model,
        model_name=info.model_name, eval_results=eval_results or None,
    )
    for key in ('library_name', 'pipeline_tag', 'datasets', 'model-index', 'model_name', 'eval_results',
                'base_model', 'license'):  # the licence too: the card's text states the same one
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
