"""Export a trained model to a folder in exactly the form its Hugging Face Hub repo has.

    <folder>/config.json        timm's save_for_hf: architecture, num_classes, label_names, model_args,
                                pretrained_cfg (with hf_hub_id and tag)
    <folder>/model.safetensors  the state dict (float32, or float16 with --fp16), never a pickle
    <folder>/README.md          the model card (model_card.py): Hub metadata + MODEL_CARD.md

Input checkpoints: a safetensors state dict (our CIFAR trainer), or a torch checkpoint such as timm
train.py's ``*.pth.tar`` (``state_dict`` / ``state_dict_ema``), read by timm's ``load_state_dict`` with
``weights_only=True`` (no arbitrary pickle code runs). An input whose ``config.json`` records its size and
sha256 (our checkpoints and exports) is checked against them first; a damaged input is a one-line error.
The folder is written under a temporary name beside the destination, its ``config.json`` records the size
and sha256 of ``model.safetensors`` (``timm_identity.integrity``), it is checked (reloaded through
``timm.create_model('local-dir:...')``, identical outputs), given ordinary file modes (umask) and renamed
into place at the end: a failure leaves nothing half-written.

The model card states only what the training source records (``model_card.TrainingRecord``): a
``train-cifar`` summary or checkpoint, or a timm ``train.py`` folder's ``summary.csv`` and ``args.yaml``.
"""
import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import timm
from timm.models import load_state_dict, save_for_hf, split_model_name_tag

from timm_identity.models.weights_record import write_record

from ..atomic_io import set_new_file_mode
from ..integrity import DamagedFileError, check_weights_file, first_line, record_files, torch_load_checked
from ..train.checkpoint import STATE_FILE, state_dict_mismatch
from .model_card import DATASETS, ModelInfo, dataset_info, render_model_card
from .training_sources import Metric, TrainingRecord, read_summary, train_cifar_record

__all__ = ['ExportError', 'export_checkpoint', 'export_model', 'read_checkpoint', 'resolve_source', 'hub_configs_dir',
           'default_model_card_path', 'atomic_replace_dir']

_logger = logging.getLogger(__name__)

HUB_ORG = 'timm-identity'
TIMM_BEST = 'model_best.pth.tar'


class ExportError(RuntimeError):
    """An export that cannot be done as asked (message says why and what to do)."""


def hub_configs_dir() -> Path:
    """The ``hub_configs/`` folder the package reads its pretrained tags from (a source checkout's, with an
    editable install, or ``$TIMM_IDENTITY_HUB_CONFIGS``)."""
    from timm_identity.models.pretrained_tags import hub_configs_root
    return Path(str(hub_configs_root()))


def default_model_card_path() -> Path:
    """The common model card body: ``MODEL_CARD.md`` installed beside this module (a wheel install), else the
    one at the root of the source checkout the package runs from (an editable install or ``PYTHONPATH``)."""
    installed = Path(__file__).resolve().parent / 'MODEL_CARD.md'
    if installed.is_file():
        return installed
    return Path(__file__).resolve().parents[2] / 'MODEL_CARD.md'


def _registered_tags(architecture: str) -> List[str]:
    """Every tag registered for ``architecture``, with weights or planned (``timm.list_pretrained`` lists only
    the former)."""
    return [n.split('.', 1)[1] for n in timm.list_models(f'{architecture}.*', include_tags=True)]


def resolve_source(path: Union[str, Path]) -> Tuple[Path, Optional[Path]]:
    """(weights file, matching summary or None) for what a user may pass as the checkpoint:

    - a weights file (``.safetensors``, ``.pth.tar``, ...): itself, no summary;
    - a folder holding ``model.safetensors`` (a ``train-cifar`` checkpoint folder, or an exported / Hub-form
      folder): its weights, no summary (an older checkpoint's metrics are not the run's);
    - a ``train-cifar`` run folder: its newest checkpoint, and its ``summary.json`` if that summary was
      written for that checkpoint;
    - a ``train-cifar`` ``summary.json``: the checkpoint it names (``last_checkpoint``), and the summary;
    - a timm ``train.py`` run folder: its ``model_best.pth.tar`` and ``summary.csv``.
    """
    from timm_identity.train.checkpoint import MODEL_FILE, resolve_checkpoint
    path = Path(path)
    if not path.exists():
        raise ExportError(f'Checkpoint not found: {path}')
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE, None
        if (path / TIMM_BEST).is_file():  # a timm train.py run folder
            csv = path / 'summary.csv'
            return path / TIMM_BEST, (csv if csv.is_file() else None)
        try:
            ckpt = resolve_checkpoint(path)
        except FileNotFoundError as e:
            raise ExportError(f'{e}; pass a weights file, a checkpoint folder or a train-cifar run folder.') from e
        summary = path / 'summary.json'
        if summary.is_file() and _summary_checkpoint(summary) == ckpt.resolve():
            return ckpt / MODEL_FILE, summary
        if summary.is_file():
            _logger.warning(f'{summary} was not written for {ckpt} (the newest checkpoint); exporting without '
                            f'its metrics (pass --summary to use it anyway).')
        return ckpt / MODEL_FILE, None
    if path.suffix.lower() == '.json':
        if path.name == 'config.json':
            return resolve_source(path.parent)
        ckpt = _summary_checkpoint(path)
        if ckpt is None:
            raise ExportError(f'{path} names no checkpoint (no "last_checkpoint"): pass the checkpoint itself '
                              f'and this file as --summary.')
        if not (ckpt / MODEL_FILE).is_file():
            raise ExportError(f'{path} names the checkpoint {ckpt}, which has no {MODEL_FILE} (moved or pruned?).')
        return ckpt / MODEL_FILE, path
    return path, None


def _summary_checkpoint(summary: Path) -> Optional[Path]:
    """The checkpoint folder a train-cifar ``summary.json`` names (relative names are taken from its folder)."""
    try:
        raw = json.loads(summary.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f'Could not read {summary} as JSON: {e}') from e
    last = raw.get('last_checkpoint') if isinstance(raw, dict) else None
    if not last:
        return None
    last = Path(last)
    if not last.is_absolute():
        last = summary.parent / last
    if not last.exists():  # a moved run folder: the same checkpoint name under this summary's folder
        moved = summary.parent / 'checkpoints' / last.name
        last = moved if moved.exists() else last
    return last.resolve()


def read_checkpoint(path: Union[str, Path], use_ema: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(state dict, metadata) of a checkpoint file (or folder, see ``resolve_source``).

    Weights: timm's ``load_state_dict`` (safetensors, or ``torch.load(weights_only=True)`` picking
    ``state_dict_ema`` if ``use_ema`` else ``state_dict`` and stripping ``module.`` / ``_orig_mod.``).
    Metadata: ``arch`` and ``args.model_kwargs`` of a timm train.py checkpoint, or the string metadata of a
    safetensors file (``architecture`` / ``arch``, ``model_args`` as JSON); for a safetensors file with a
    timm ``config.json`` beside it (our trainer's checkpoints, exported folders) also the architecture,
    model arguments, tag, label names and mean/std from that config.
    """
    path, _ = resolve_source(path)
    if not path.is_file():
        raise ExportError(f'Checkpoint not found: {path}')
    try:
        check_weights_file(path)  # recorded size / sha256, safetensors header
        checkpoint = None if path.suffix == '.safetensors' else _torch_load_safe(path)
        state_dict = load_state_dict(str(path), use_ema=use_ema, weights_only=True)
    except DamagedFileError as e:  # damaged, or a pickle that weights_only refused: never retried unsafely
        raise ExportError(str(e)) from None
    except (RuntimeError, OSError) as e:
        raise ExportError(f'Could not read {path} safely (torch.load weights_only=True): {first_line(e)}') from None
    meta: Dict[str, Any] = {}
    if path.suffix == '.safetensors':
        from safetensors import safe_open
        with safe_open(str(path), framework='pt') as f:
            raw = f.metadata() or {}
        meta['arch'] = raw.get('architecture') or raw.get('arch')
        if raw.get('model_args'):
            meta['model_args'] = json.loads(raw['model_args'])
        if str(raw.get('step', '')).isdigit():
            meta['step'] = int(raw['step'])  # train-cifar writes it
        config_path = path.with_name('config.json')
        if config_path.is_file():
            meta.update(_read_hub_config(config_path))
        state_path = path.with_name(STATE_FILE)
        if state_path.is_file():  # a train-cifar checkpoint folder: its state records the run's settings
            try:
                state = torch_load_checked(state_path, map_location='cpu')
            except DamagedFileError as e:  # not needed for the weights: export them, without these facts
                _logger.warning(f'{e}; the model card will not have the run\'s settings.')
                state = None
            if isinstance(state, dict) and isinstance(state.get('config'), dict):
                meta['train_config'] = state['config']
    else:
        if isinstance(checkpoint, dict):
            meta['arch'] = checkpoint.get('arch')
            args = checkpoint.get('args')
            args = vars(args) if isinstance(args, argparse.Namespace) else (args if isinstance(args, dict) else {})
            if isinstance(args.get('model_kwargs'), dict):
                meta['model_args'] = dict(args['model_kwargs'])
            meta['epoch'] = checkpoint.get('epoch')
            meta['used_ema'] = use_ema and any(checkpoint.get(k) is not None for k in ('state_dict_ema', 'model_ema'))
    return state_dict, {k: v for k, v in meta.items() if v is not None}


def _read_hub_config(path: Path) -> Dict[str, Any]:
    """Metadata of a timm Hub-form ``config.json`` (written by ``save_for_hf``)."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f'Could not read {path} as JSON: {e}') from e
    if not isinstance(config, dict):
        raise ExportError(f'{path}: expected a JSON object (a timm config.json).')
    cfg = config.get('pretrained_cfg') or {}
    meta = dict(arch=config.get('architecture'), model_args=dict(config.get('model_args') or {}) or None,
                tag=cfg.get('tag'), label_names=config.get('label_names') or cfg.get('label_names'))
    if cfg.get('mean') and cfg.get('std'):
        meta['data_config'] = dict(mean=tuple(cfg['mean']), std=tuple(cfg['std']))
    return meta


def _torch_load_safe(path: Path) -> Any:
    """``torch.load(weights_only=True)`` allowing the ``argparse.Namespace`` timm train.py stores in ``args``
    (a damaged or refused file: ``DamagedFileError``)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch_load_checked(path, map_location='cpu')


def _weights_from(weights: Path, meta: Dict[str, Any]) -> Optional[str]:
    """Which point of the training run the exported weights are, as the checkpoint records it."""
    ema = ', EMA weights' if meta.get('used_ema') else ''
    if meta.get('epoch') is not None:  # timm train.py
        best = (': train.py\'s best eval metric since the run last started (a --resume starts the count again)'
                if weights.name == TIMM_BEST else '')
        return f'epoch {meta["epoch"]} ({weights.name}{best}){ema}'
    if meta.get('step') is not None:  # train-cifar
        return f'step {meta["step"]} ({weights.parent.name}/{weights.name}){ema}'
    return None


def _metrics_of_these_weights(rows: Optional[List[Dict[str, Any]]], epoch: Optional[int]) -> List[Metric]:
    """timm train.py: the summary row of the epoch the exported checkpoint is from, when it is neither the
    final nor the best row (after a resume, ``model_best.pth.tar`` may be neither)."""
    if not rows or epoch is None:
        return []
    evaluated = [r for r in rows if 'eval_top1' in r]
    row = next((r for r in evaluated if r['epoch'] == epoch), None)
    if row is None or row is evaluated[-1] or row is max(evaluated, key=lambda r: r['eval_top1']):
        return []
    which = f'these weights (epoch {epoch})'
    return [Metric('accuracy', row[k], topk, which, step=epoch, step_unit='epoch')
            for k, topk in (('eval_top1', 1), ('eval_top5', 5)) if k in row]


def _base_model_id(init_from: str) -> Optional[str]:
    """The Hub repo id of the weights a run started from (``--init-from``), for the card's ``base_model``."""
    if init_from.startswith('hf-hub:'):
        return init_from[len('hf-hub:'):]
    if init_from.startswith('local-dir:'):
        config = Path(init_from[len('local-dir:'):]) / 'config.json'
        try:
            return (json.loads(config.read_text()).get('pretrained_cfg') or {}).get('hf_hub_id')
        except (OSError, ValueError, AttributeError):
            return None
    try:
        return timm.models.get_pretrained_cfg(init_from).hf_hub_id or init_from
    except (RuntimeError, ValueError):
        return init_from


def _check_summary_fits(path: Path, raw: Dict[str, Any], meta: Dict[str, Any], state_dict) -> None:
    """An explicit train-cifar ``summary.json`` must describe the exported checkpoint: the same dataset (and so
    number of classes) and the same step; otherwise its metrics and dataset would go on the wrong card."""
    config = raw.get('config') if isinstance(raw.get('config'), dict) else {}
    dataset = raw.get('dataset') or config.get('dataset')
    problems = []
    own = (meta.get('train_config') or {}).get('dataset')
    if dataset and own and dataset != own:
        problems.append(f'it is of a {dataset} run, the checkpoint of a {own} run')
    classes = {'cifar10': 10, 'cifar100': 100}.get(dataset)
    if classes and 'fc.weight' in state_dict and int(state_dict['fc.weight'].shape[0]) != classes:
        problems.append(f'its dataset {dataset} has {classes} classes, the checkpoint '
                        f'{int(state_dict["fc.weight"].shape[0])}')
    step = raw.get('final_step') if raw.get('final_step') is not None else raw.get('steps')
    if isinstance(step, int) and meta.get('step') is not None and step != meta['step']:
        problems.append(f'its final evaluation is of step {step}, the checkpoint is step {meta["step"]}')
    if problems:
        raise ExportError(f'--summary {path} does not describe this checkpoint: ' + '; '.join(problems)
                          + '. Pass the summary.json of the run that wrote the checkpoint, or none.')


def _infer_model_args(state_dict: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """What the state dict itself says: number of classes and head type (our models' ``fc``), input channels."""
    args: Dict[str, Any] = {}
    if 'fc.weight' in state_dict:
        args['num_classes'] = int(state_dict['fc.weight'].shape[0])
        args['head'] = 'linear' if 'fc.bias' in state_dict else 'fixed'
    if 'stem.weight' in state_dict:
        args['in_chans'] = int(state_dict['stem.weight'].shape[1])
    return args


def _non_default_args(architecture: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """The arguments in ``args`` that make the model differ from what ``timm.create_model(architecture)``
    builds (num_classes aside)."""
    import inspect
    from timm_identity.models import ARCH_DEFAULTS, AllConvResNet
    defaults = {k: p.default for k, p in inspect.signature(AllConvResNet).parameters.items()}
    defaults.update(ARCH_DEFAULTS.get(architecture, {}))

    def norm(v):
        return list(v) if isinstance(v, (list, tuple)) else v
    return {k: v for k, v in args.items() if k != 'num_classes' and (k not in defaults or norm(v) != norm(defaults[k]))}


def atomic_replace_dir(src: Path, dst: Path, overwrite: bool) -> None:
    """Move the finished folder ``src`` to ``dst`` (same filesystem); an existing ``dst`` only with
    ``overwrite``, and it stays intact until the new one is in place."""
    old = None
    if dst.exists():
        if not overwrite:
            raise ExportError(f'{dst} already exists; pass --overwrite to replace it.')
        old = dst.with_name(f'.{dst.name}.old-{os.getpid()}')
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _count(model: torch.nn.Module) -> Tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters())
    fc = model.get_classifier() if hasattr(model, 'get_classifier') else None
    fixed = sum(b.numel() for b in fc.buffers()) if fc is not None else 0
    return trainable, fixed


def _verify(folder: Path, reference: torch.nn.Module, dtype: torch.dtype) -> None:
    """Reload ``folder`` with ``timm.create_model('local-dir:...')`` and demand the same logits as
    ``reference`` with its weights rounded to ``dtype`` (bit-identical on the same machine)."""
    ref = reference
    if dtype != torch.float32:
        import copy
        ref = copy.deepcopy(reference)
        ref.load_state_dict({k: v.to(dtype).float() if v.is_floating_point() else v
                             for k, v in reference.state_dict().items()})
    reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    ref.eval()
    size = tuple(reloaded.pretrained_cfg['input_size'])
    x = torch.randn((2, *size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(x), reloaded(x)
    if a.shape != b.shape or not torch.equal(a, b):
        raise ExportError(f'Check failed: the model reloaded from {folder} does not reproduce the exported '
                          f'model (max |diff| {(a - b).abs().max().item() if a.shape == b.shape else "shape"}).')


def export_model(
        model: torch.nn.Module,
        output: Union[str, Path],
        *,
        tag: str,
        repo_id: Optional[str] = None,
        dataset: Optional[str] = None,
        label_names: Optional[Sequence[str]] = None,
        description: Optional[str] = None,
        metrics: Sequence[Metric] = (),
        details: Optional[Dict[str, Any]] = None,
        training: Optional[TrainingRecord] = None,
        fp16: bool = False,
        model_card: Optional[Union[str, Path]] = None,
        data_config: Optional[Dict[str, Any]] = None,
        base_model: Optional[str] = None,
        overwrite: bool = False,
        verify: bool = True,
) -> Path:
    """Write ``model`` (made by ``timm.create_model``) as a Hub-form folder at ``output``; returns it.

    ``training``: what the training source records (the card says "not recorded" for the rest).
    ``description``: one line for config.json and the card (default: architecture, dataset and the
    recorded trainer/length; never a registered tag's own description, which describes other weights).
    ``model_card``: the MODEL_CARD.md template (default: the checkout's, if there is one).
    """
    architecture = model.pretrained_cfg.get('architecture') or type(model).__name__
    repo_id = repo_id or f'{HUB_ORG}/{architecture}.{tag}'
    # `create_model('<arch>.<tag>', pretrained=True)` gives these weights only for the default architecture
    registered = tag in _registered_tags(architecture) and not _non_default_args(
        architecture, getattr(model, '_model_args', {}))
    source_cfg = model.pretrained_cfg
    if dataset is None:
        dataset = tag if dataset_info(tag).get('key') in DATASETS else None
    if label_names is None and source_cfg.get('tag') == tag:
        label_names = source_cfg.get('label_names')
    if label_names is not None and len(label_names) != model.num_classes:
        raise ExportError(f'{len(label_names)} label names for a model with {model.num_classes} classes.')
    training = training or TrainingRecord()
    pretrained_cfg = dict(hf_hub_id=repo_id, tag=tag, description=description or (
        f'{architecture} (timm-identity) trained on {dataset_info(dataset).get("name", "a dataset not recorded")}'
        + (f' with {training.trainer}' if training.trainer else '')
        + (f'; {training.length}' if training.length else '') + '.'))
    model_config: Dict[str, Any] = dict(pretrained_cfg=pretrained_cfg)
    if label_names is not None:
        model_config['label_names'] = list(label_names)

    template_path = Path(model_card) if model_card else default_model_card_path()
    if template_path.is_file():
        template = template_path.read_text(encoding='utf-8')
    elif model_card:
        raise ExportError(f'Model card template not found: {template_path}')
    else:
        _logger.warning(f'No {template_path.name} at {template_path}; the model card has only the generated part.')
        template = None

    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists() and not overwrite:
        raise ExportError(f'{output} already exists; pass --overwrite to replace it.')
    tmp = Path(tempfile.mkdtemp(prefix=f'.{output.name}.tmp-', dir=output.parent))
    try:
        model = model.eval()
        dtype = torch.float16 if fp16 else torch.float32
        to_save = model
        if fp16:
            import copy
            to_save = copy.deepcopy(model).to(torch.float16)
        save_for_hf(to_save, tmp, model_config=model_config, safe_serialization=True, data_config=data_config)
        saved_cfg = json.loads((tmp / 'config.json').read_text())['pretrained_cfg']
        trainable, fixed = _count(model)
        info = ModelInfo(
            architecture=architecture, tag=tag, repo_id=repo_id, num_classes=model.num_classes,
            num_params=trainable, num_fixed=fixed, dataset=dataset,
            description=saved_cfg.get('description', ''), weights_dtype='float16' if fp16 else 'float32',
            input_size=saved_cfg.get('input_size', ()), mean=saved_cfg.get('mean', ()), std=saved_cfg.get('std', ()),
            license=saved_cfg.get('license', 'apache-2.0'), metrics=list(metrics), details=dict(details or {}),
            base_model=base_model, registered=registered, training=training,
        )
        (tmp / 'README.md').write_text(render_model_card(info, template), encoding='utf-8')
        record_files(tmp, ['model.safetensors'])
        if verify:
            _verify(tmp, model, dtype)
        for path in (tmp, *tmp.iterdir()):  # mkdtemp makes 0o700, save_file 0o600: this folder is for sharing
            set_new_file_mode(path)
        atomic_replace_dir(tmp, output, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def export_checkpoint(
        checkpoint: Union[str, Path],
        output: Optional[Union[str, Path]] = None,
        *,
        arch: Optional[str] = None,
        tag: Optional[str] = None,
        model_args: Optional[Dict[str, Any]] = None,
        use_ema: bool = True,
        summary: Optional[Union[str, Path]] = None,
        to_hub_configs: Optional[Union[str, Path, bool]] = None,
        to_hf_cache: bool = False,
        hf_cache_dir: Optional[Union[str, Path]] = None,
        **kwargs,
) -> Path:
    """Checkpoint file -> Hub-form folder (see ``export_model`` for the other keyword arguments).

    ``arch`` may carry the tag (``allconv_resnet_cifar.cifar10``). ``to_hub_configs``: write into
    ``<hub_configs>/<arch>.<tag>/`` (True: the package's own ``hub_configs/``) instead of ``output``; the
    architecture must then be the registered default, since ``pretrained=True`` builds that.
    ``to_hf_cache``: also put the folder into the local HF cache under its ``hf_hub_id``.
    """
    weights, found_summary = resolve_source(checkpoint)
    state_dict, meta = read_checkpoint(weights, use_ema=use_ema)
    summary = summary or found_summary
    metrics: List[Metric] = []
    details: Dict[str, Any] = {}
    raw_summary: Dict[str, Any] = {}
    training = TrainingRecord()
    if summary:
        read = read_summary(summary)
        metrics, details, training, raw_summary = read.metrics, read.details, read.training, read.raw
        # given with --summary: it must be this checkpoint's run, as a found one is
        if found_summary is None or Path(summary).resolve() != Path(found_summary).resolve():
            _check_summary_fits(Path(summary), raw_summary, meta, state_dict)
    elif meta.get('train_config'):  # a train-cifar checkpoint folder without its run's summary
        training = train_cifar_record(meta['train_config'], meta.get('step'))
    training.weights_from = _weights_from(weights, meta)
    metrics += _metrics_of_these_weights(raw_summary.get('rows'), meta.get('epoch'))
    weights_step = meta['step'] if meta.get('step') is not None else meta.get('epoch')
    for m in metrics:  # the model-index lists only what was measured on the exported weights themselves
        if m.step is not None:
            m.of_these_weights = weights_step is not None and m.step == weights_step
    arch = arch or meta.get('arch') or raw_summary.get('architecture') or raw_summary.get('model')
    if not arch:
        raise ExportError('Which architecture? Pass --arch (e.g. allconv_resnet_cifar.cifar10); the checkpoint '
                          'and summary do not name one.')
    architecture, arch_tag = split_model_name_tag(arch)
    tag = tag or arch_tag or meta.get('tag')
    if kwargs.get('dataset') is None and raw_summary.get('dataset'):
        kwargs['dataset'] = raw_summary['dataset']
    init_from = (meta.get('train_config') or {}).get('init_from') or (raw_summary.get('config') or {}).get('init_from')
    if init_from and kwargs.get('base_model') is None:  # a fine-tuned run: the card names its base model
        kwargs['base_model'] = _base_model_id(init_from)
    if kwargs.get('label_names') is None and meta.get('label_names'):
        kwargs['label_names'] = meta['label_names']
    if kwargs.get('data_config') is None and meta.get('data_config'):
        kwargs['data_config'] = meta['data_config']  # the mean/std the weights were trained with
    if not tag:
        raise ExportError(f'Which pretrained tag? Pass --tag or --arch {architecture}.<tag> (registered tags: '
                          f'{_registered_tags(architecture)}).')
    if not timm.is_model(architecture):
        raise ExportError(f'Unknown architecture {architecture!r} (is timm_identity imported?).')

    args = dict(meta.get('model_args') or {})
    args.update(raw_summary.get('model_args') or raw_summary.get('model_kwargs')
                or (raw_summary.get('config') or {}).get('model_kwargs') or {})
    args.update(model_args or {})
    for key, value in _infer_model_args(state_dict).items():
        args.setdefault(key, value)
    registered = tag in _registered_tags(architecture)
    name = f'{architecture}.{tag}' if registered else architecture
    if registered and args.get('num_classes') is not None:
        want = timm.models.get_pretrained_cfg(name).num_classes
        if args['num_classes'] != want:
            raise ExportError(f'The checkpoint has {args["num_classes"]} classes but the registered tag {name} has '
                              f'{want}; use another --tag for this model.')

    if to_hub_configs:
        root = hub_configs_dir() if to_hub_configs is True else Path(to_hub_configs)
        if 'site-packages' in root.parts:
            raise ExportError(f'--to-hub-configs needs a source checkout (editable install); {root} is an '
                              f'installed package. Use --output instead.')
        changed = _non_default_args(architecture, args)
        if changed or not registered:
            raise ExportError(
                f'--to-hub-configs writes the weights that timm.create_model({architecture + "." + tag!r}, '
                f'pretrained=True) loads, which builds the registered default architecture; this checkpoint '
                + (f'needs {changed}.' if changed else f'has the unregistered tag {tag!r}.')
                + ' Use --output for it.')
        output = root / f'{architecture}.{tag}'
        kwargs['overwrite'] = True
    if output is None:
        raise ExportError('Where to? Pass --output DIR or --to-hub-configs.')
    source_dir = Path(weights).resolve().parent
    if Path(output).resolve() in (source_dir, *source_dir.parents) and not to_hub_configs:
        raise ExportError(f'--output {output} is the folder of the checkpoint being exported (or holds it): '
                          f'--overwrite would delete the source. Export to another folder.')

    try:
        model = timm.create_model(name, pretrained=False, **args)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ExportError(f'Cannot build {name} with {args}: {first_line(e)}') from None
    problem = state_dict_mismatch(model, state_dict)
    if problem:
        raise ExportError(f'The checkpoint {weights} does not fit {name} built with {args} ({problem}): pass the '
                          f'model arguments it was trained with (--model-kwargs key=value ...).')
    model.load_state_dict(state_dict, strict=True)
    folder = export_model(model, output, tag=tag, metrics=metrics, details=details, training=training, **kwargs)
    if to_hub_configs:  # the record that makes the tag pretrained (timm_identity.models.weights_record)
        repo_id = json.loads((folder / 'config.json').read_text())['pretrained_cfg']['hf_hub_id']
        write_record(folder, repo_id, source=str(checkpoint))
    if to_hf_cache:
        from .cache import install_into_hf_cache
        repo_id = json.loads((folder / 'config.json').read_text())['pretrained_cfg']['hf_hub_id']
        install_into_hf_cache(folder, repo_id, cache_dir=hf_cache_dir)
    return folder
