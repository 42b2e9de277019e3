"""What a training checkpoint holds, for ``timm-identity export``: its weights, the model it is (architecture,
model arguments, label names, mean/std from the ``config.json`` beside it) and the training record of these
weights (a ``train-cifar`` checkpoint's ``run.json``, a run's ``summary.json``, timm ``train.py``'s
``summary.csv``), with each metric marked whether it was measured on these weights.

Input forms: a safetensors state dict (our trainer's checkpoints, exported folders), or a torch checkpoint such as
timm train.py's ``*.pth.tar`` (``state_dict`` / ``state_dict_ema``), read by timm's ``load_state_dict`` with
``weights_only=True`` (no arbitrary pickle code runs). A file whose ``config.json`` records its size and sha256
is checked against them first; a damaged input is a one-line error.
"""
import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from timm.models import load_state_dict

from ..data.cifar import NUM_CLASSES
from ..integrity import DamagedFileError, check_weights_file, first_line, torch_load_checked
from ..train.checkpoint import MODEL_FILE, RUN_FILE, resolve_checkpoint
from .training_sources import Metric, TrainingRecord, TrainingSummary, read_summary

__all__ = ['ExportError', 'TIMM_BEST', 'resolve_source', 'read_checkpoint', 'infer_model_args', 'training_source']

TIMM_BEST = 'model_best.pth.tar'

_logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """An export that cannot be done as asked (message says why and what to do)."""


def resolve_source(path: Union[str, Path]) -> Tuple[Path, Optional[Path]]:
    """(weights file, matching summary or None) for what a user may pass as the checkpoint:

    - a weights file (``.safetensors``, ``.pth.tar``, ...): itself, no summary;
    - a folder holding ``model.safetensors`` (a ``train-cifar`` checkpoint folder, or an exported / Hub-form
      folder): its weights, and the checkpoint's run record ``run.json`` if it has one;
    - a ``train-cifar`` run folder: its newest checkpoint and that checkpoint's ``run.json`` (for runs of
      versions that wrote none: the run's ``summary.json`` if it was written for that checkpoint);
    - a ``train-cifar`` ``summary.json``: the checkpoint it names (``last_checkpoint``), and the summary;
    - a timm ``train.py`` run folder: its ``model_best.pth.tar`` and ``summary.csv``.
    """
    path = Path(path)
    if not path.exists():
        raise ExportError(f'Checkpoint not found: {path}')
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE, (path / RUN_FILE if (path / RUN_FILE).is_file() else None)
        if (path / TIMM_BEST).is_file():  # a timm train.py run folder
            csv = path / 'summary.csv'
            return path / TIMM_BEST, (csv if csv.is_file() else None)
        try:
            ckpt = resolve_checkpoint(path)
        except FileNotFoundError as e:
            raise ExportError(f'{e}; pass a weights file, a checkpoint folder or a train-cifar run folder.') from e
        if (ckpt / RUN_FILE).is_file():
            return ckpt / MODEL_FILE, ckpt / RUN_FILE
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
        if path.name == RUN_FILE and (path.parent / MODEL_FILE).is_file():  # a checkpoint's own run record
            return path.parent / MODEL_FILE, path
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
    model arguments, tag, label names and mean/std from that config. (What the run was is in its run record,
    read by ``export_checkpoint``.)
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


def infer_model_args(state_dict: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """What the state dict itself says: number of classes and head type (our models' ``fc``), input channels."""
    args: Dict[str, Any] = {}
    if 'fc.weight' in state_dict:
        args['num_classes'] = int(state_dict['fc.weight'].shape[0])
        args['head'] = 'linear' if 'fc.bias' in state_dict else 'fixed'
    if 'stem.weight' in state_dict:
        args['in_chans'] = int(state_dict['stem.weight'].shape[1])
    return args


def training_source(weights: Path, meta: Dict[str, Any], state_dict, summary, found_summary) -> TrainingSummary:
    """What the training source says of these weights: metrics (each marked whether it was measured on them),
    card details and the training record; ``raw`` is the source's content ({} without one)."""
    summary = summary or found_summary
    source = TrainingSummary([], {}, TrainingRecord(), {})
    if summary:
        source = read_summary(summary)
        # given with --summary: it must be this checkpoint's run, as a found one is
        if found_summary is None or Path(summary).resolve() != Path(found_summary).resolve():
            own = read_summary(found_summary).raw if found_summary else {}
            _check_summary_fits(Path(summary), source.raw, own, meta, state_dict)
    source.training.weights_from = _weights_from(weights, meta)
    source.metrics += _metrics_of_these_weights(source.raw.get('rows'), meta.get('epoch'))
    weights_step = meta['step'] if meta.get('step') is not None else meta.get('epoch')
    for m in source.metrics:  # the model-index lists only what was measured on the exported weights themselves
        if m.step is not None:
            m.of_these_weights = weights_step is not None and m.step == weights_step
    return source


def _check_summary_fits(path: Path, raw: Dict[str, Any], own: Dict[str, Any], meta: Dict[str, Any],
                        state_dict) -> None:
    """An explicit train-cifar ``summary.json`` must describe the exported checkpoint: the same dataset (and so
    number of classes) as the checkpoint's own run record ``own`` and the same step; otherwise its metrics and
    dataset would go on the wrong card."""
    config = raw.get('config') if isinstance(raw.get('config'), dict) else {}
    dataset = raw.get('dataset') or config.get('dataset')
    problems = []
    own_dataset = own.get('dataset') or (own.get('config') or {}).get('dataset')
    if dataset and own_dataset and dataset != own_dataset:
        problems.append(f'it is of a {dataset} run, the checkpoint of a {own_dataset} run')
    classes = NUM_CLASSES.get((dataset, config.get('label_type') or 'fine'))
    if classes and 'fc.weight' in state_dict and int(state_dict['fc.weight'].shape[0]) != classes:
        problems.append(f'its dataset {dataset} has {classes} classes, the checkpoint '
                        f'{int(state_dict["fc.weight"].shape[0])}')
    step = next((raw[k] for k in ('checkpoint_step', 'final_step', 'steps') if raw.get(k) is not None), None)
    if isinstance(step, int) and meta.get('step') is not None and step != meta['step']:
        problems.append(f'it describes step {step}, the checkpoint is step {meta["step"]}')
    if problems:
        raise ExportError(f'--summary {path} does not describe this checkpoint: ' + '; '.join(problems)
                          + '. Pass the summary.json of the run that wrote the checkpoint, or none.')


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
