"""What a checkpoint holds, for ``timm-identity export``: its weights, the model it is, and what its training run
records about them, each fact read from the one place that holds it.

The SOURCE is resolved by :func:`timm_identity.train.sources.resolve_source`; export takes:

- a ``train-cifar`` checkpoint (or run folder: its newest checkpoint). The model (architecture, model arguments,
  label names, mean/std) is its ``config.json``; the weights its ``model.safetensors``, or with ``--model-ema`` runs
  ``model_ema.safetensors`` unless ``use_ema`` is off; what the run was is the run record and log of the run folder
  it sits in (:func:`timm_identity.train.run_record.run_of_checkpoint`: same run id), read up to the checkpoint's
  step. The run's ``summary.json`` adds its status only when it was written for this checkpoint (same run id,
  step and weights sha256);
- a Hub-form folder (an export): its ``config.json`` and weights;
- a timm ``train.py`` output folder: ``model_best.pth.tar`` (``state_dict_ema`` when there is one and ``use_ema``)
  and its ``summary.csv`` with ``args.yaml``;
- a weights file: a ``.safetensors`` state dict, or a torch checkpoint such as train.py's ``*.pth.tar``, read by
  timm's ``load_state_dict`` with ``weights_only=True`` (no arbitrary pickle code runs).

``--summary`` is checked against the checkpoint it claims to describe, never trusted by matching sizes: a
``train-cifar`` ``summary.json`` must name the same run, step and weights sha256; a timm ``summary.csv`` must sit
in the folder of the timm checkpoint it describes and list its epoch. Weights files whose ``config.json`` records
their size and sha256 are checked against it first; a damaged input is a one-line error.
"""
import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from timm.models import load_state_dict

from ..integrity import DamagedFileError, check_weights_file, first_line, sha256_file, torch_load_checked
from ..train.sources import TIMM_BEST, Source
from ..train.checkpoint import CONFIG_FILE, EMA_FILE, MODEL_FILE
from ..train.run_record import NoRunRecordError, RunRecordError, config_at, log_records, run_of_checkpoint
from .training_sources import Metric, TrainingRecord, TrainingSummary, read_timm_summary, train_cifar_source

__all__ = ['ExportError', 'CheckpointContents', 'read_source', 'infer_model_args']

_logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """An export that cannot be done as asked (message says why and what to do)."""


@dataclass
class CheckpointContents:
    """What export needs of a SOURCE: the weights, the model they are, and the training record of them."""
    weights: Path                               # the file the tensors come from
    state_dict: Dict[str, torch.Tensor]
    arch: Optional[str] = None                  # the architecture (and tag, from a Hub-form folder)
    tag: Optional[str] = None
    model_args: Dict[str, Any] = field(default_factory=dict)
    label_names: Optional[List[str]] = None
    data_config: Optional[Dict[str, Any]] = None
    dataset: Optional[str] = None               # the run's dataset key (cifar10, cifar100, cifar100_coarse)
    base_model: Optional[str] = None            # the Hub id the run started from (fine-tuning)
    training: TrainingSummary = field(default_factory=lambda: TrainingSummary([], {}, TrainingRecord(), {}))


def read_source(source: Source, use_ema: bool = True, summary: Optional[str] = None) -> CheckpointContents:
    """The :class:`CheckpointContents` of a resolved SOURCE (``checkpoint``, ``folder``, ``timm-run`` or ``file``).
    ``summary``: a training summary given by the user, checked against the checkpoint (module docstring)."""
    source.require('checkpoint', 'folder', 'timm-run', 'file', what='export')
    if source.kind == 'checkpoint':
        return _read_train_cifar_checkpoint(source, use_ema, summary)
    assert source.weights is not None
    if source.kind == 'folder':
        if summary:
            raise ExportError(f'--summary: {source.text} is an exported folder, whose card already says how it was '
                              f'trained; export the checkpoint of the run instead.')
        return _read_hub_folder(source.weights)
    if source.kind == 'timm-run' and not summary and (source.weights.parent / 'summary.csv').is_file():
        summary = str(source.weights.parent / 'summary.csv')
    if summary and Path(summary).suffix.lower() == '.json':
        return _read_checkpoint_named_by_summary(source.weights, Path(summary))
    return _read_weights_file(source.weights, use_ema, summary)


def _read_checkpoint_named_by_summary(weights: Path, summary: Path) -> CheckpointContents:
    """A bare weights file with a train-cifar ``summary.json``: the file must be the weights of the checkpoint the
    summary names (same sha256), which is then read as that checkpoint of its run."""
    raw = _json_object(summary, 'a train-cifar summary.json')
    if not isinstance(raw.get('last_checkpoint'), str):
        raise ExportError(f'--summary {summary}: not a train-cifar summary.json naming a checkpoint')
    last = Path(raw['last_checkpoint'])
    if raw.get('checkpoint_sha256') != sha256_file(weights):
        raise ExportError(f'--summary {summary} does not describe this checkpoint: its weights sha256 '
                          f'{str(raw.get("checkpoint_sha256"))[:12]}... is not that of {weights}.')
    ckpt = summary.parent / 'checkpoints' / last.name  # the summary sits in its run folder
    if not (ckpt / MODEL_FILE).is_file():
        raise ExportError(f'--summary {summary} names the checkpoint {ckpt}, which is gone (pruned or moved): '
                          f'export the run folder instead.')
    return _read_train_cifar_checkpoint(Source(str(ckpt), 'checkpoint', ckpt / MODEL_FILE, ckpt), False,
                                        str(summary))


def _read_train_cifar_checkpoint(source: Source, use_ema: bool, summary: Optional[str]) -> CheckpointContents:
    ckpt = source.folder
    assert ckpt is not None
    try:
        run_dir, record, step = run_of_checkpoint(ckpt)
    except NoRunRecordError as e:  # moved out of its run: the weights are all it has, exported as a Hub-form folder
        _logger.warning(f'{e}; exporting it without the run\'s record (the card says "not recorded")')
        return _read_hub_folder(ckpt / MODEL_FILE)
    except RunRecordError as e:
        raise ExportError(str(e)) from None
    cfg = config_at(record, step)
    ema = use_ema and cfg['model_ema']  # an EMA file in a run without one is not the run's
    weights = ckpt / (EMA_FILE if ema else MODEL_FILE)
    # a checkpoint of this layout records its files: one without a record is not taken
    contents = _read_hub_folder(weights, config=ckpt / CONFIG_FILE, required=True)
    contents.tag = None  # a checkpoint's config names no tag; export derives it from the run's dataset
    run_summary = _matching_run_summary(run_dir / 'summary.json', record['run_id'], step, ckpt, strict=False)
    if summary:
        if Path(summary).suffix.lower() != '.json':
            raise ExportError(f'--summary {summary}: timm train.py\'s summary.csv describes timm checkpoints; {ckpt} '
                              f'is a train-cifar checkpoint (its run\'s summary.json, or none)')
        run_summary = _matching_run_summary(Path(summary), record['run_id'], step, ckpt, strict=True)
    status = run_summary.get('status') if run_summary else ('completed' if step >= cfg['steps'] else 'running')
    contents.training = train_cifar_source(record, log_records(run_dir, up_to_step=step), step, ema, status)
    which = (f', the EMA of the weights (timm ModelEmaV3, decay up to {cfg["model_ema_decay"]})' if ema else
             ', the weights themselves' + (' (the run also kept an EMA; export it without --no-ema)'
                                           if cfg['model_ema'] else ''))
    contents.training.training.weights_from = f'step {step} ({ckpt.name}/{weights.name}){which}'
    contents.dataset = cfg['dataset'] + ('_coarse' if cfg['label_type'] == 'coarse' else '')
    contents.base_model = record['base_model']
    return contents


def _matching_run_summary(path: Path, run_id: str, step: int, ckpt: Path, strict: bool) -> Optional[Dict[str, Any]]:
    """A ``train-cifar`` ``summary.json`` if it was written for checkpoint ``ckpt`` (same run id, step and weights
    sha256). ``strict`` (given with --summary): anything else is an ExportError saying what differs; otherwise
    (the run's own summary, perhaps of a later point of the run) None."""
    if not path.is_file():
        if strict:
            raise ExportError(f'--summary {path}: no such file')
        return None
    raw = _json_object(path, 'a train-cifar summary.json')
    problems = []
    if raw.get('run_id') != run_id:
        problems.append(f'it is of run {str(raw.get("run_id"))[:12]}, the checkpoint of run {run_id[:12]}')
    elif raw.get('checkpoint_step') != step:
        problems.append(f'it describes step {raw.get("checkpoint_step")}, the checkpoint is step {step}')
    elif raw.get('checkpoint_sha256') != sha256_file(ckpt / MODEL_FILE):
        problems.append(f'its weights sha256 {str(raw.get("checkpoint_sha256"))[:12]}... is not that of '
                        f'{ckpt / MODEL_FILE}')
    if problems and strict:
        raise ExportError(f'--summary {path} does not describe this checkpoint: {"; ".join(problems)}. Pass the '
                          f'summary.json of the run that wrote the checkpoint, or none.')
    return None if problems else raw


def _json_object(path: Path, what: str) -> Dict[str, Any]:
    """The JSON object in ``path`` (``what`` it should be, for the error); anything else is a one-line ExportError."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f'{path}: not readable as JSON ({e})') from None
    if not isinstance(raw, dict):
        raise ExportError(f'{path}: expected a JSON object ({what})')
    return raw


def _read_hub_folder(weights: Path, config: Optional[Path] = None, required: bool = False) -> CheckpointContents:
    """Weights and model of a Hub-form folder (``config.json`` as timm's ``save_for_hf`` writes it; ``required``:
    weights it holds no record of are refused)."""
    config = config or weights.with_name(CONFIG_FILE)
    state_dict = _load_state_dict(weights, use_ema=False, required=required)
    hub = _json_object(config, 'a timm config.json')
    cfg = hub.get('pretrained_cfg') or {}
    contents = CheckpointContents(weights, state_dict, arch=hub.get('architecture'), tag=cfg.get('tag'),
                                  model_args=dict(hub.get('model_args') or {}),
                                  label_names=hub.get('label_names') or cfg.get('label_names'))
    if cfg.get('mean') and cfg.get('std'):
        contents.data_config = dict(mean=tuple(cfg['mean']), std=tuple(cfg['std']))
    return contents


def _read_weights_file(path: Path, use_ema: bool, summary: Optional[str]) -> CheckpointContents:
    """A bare ``.safetensors`` state dict (its string metadata may name the architecture and model arguments) or a
    torch checkpoint (timm train.py's: ``arch``, ``args.model_kwargs``, ``epoch``), with timm's summary.csv."""
    state_dict = _load_state_dict(path, use_ema)
    contents = CheckpointContents(path, state_dict)
    epoch = None
    if path.suffix == '.safetensors':
        from safetensors import safe_open
        with safe_open(str(path), framework='pt') as f:
            raw = f.metadata() or {}
        contents.arch = raw.get('architecture') or raw.get('arch')
        if raw.get('model_args'):
            contents.model_args = json.loads(raw['model_args'])
    else:
        checkpoint = _torch_load_safe(path)
        if isinstance(checkpoint, dict):
            contents.arch = checkpoint.get('arch')
            args = checkpoint.get('args')
            args = vars(args) if isinstance(args, argparse.Namespace) else (args if isinstance(args, dict) else {})
            if isinstance(args.get('model_kwargs'), dict):
                contents.model_args = dict(args['model_kwargs'])
            epoch = checkpoint.get('epoch')
            used_ema = use_ema and any(checkpoint.get(k) is not None for k in ('state_dict_ema', 'model_ema'))
            contents.training.training.weights_from = _timm_weights_from(path, epoch, used_ema)
    if summary:
        contents.training = _timm_summary_of(path, epoch, Path(summary), contents.training.training.weights_from)
    return contents


def _timm_summary_of(weights: Path, epoch: Optional[int], summary: Path, weights_from: Optional[str]
                     ) -> TrainingSummary:
    """timm train.py's ``summary.csv`` for the timm checkpoint ``weights`` of ``epoch``: only the run's own (the
    same folder) that lists that epoch; a train-cifar summary is never one of a bare file's."""
    if summary.suffix.lower() != '.csv':
        raise ExportError(f'--summary {summary}: a train-cifar summary describes a checkpoint of its run; export '
                          f'that checkpoint (or its run folder) instead of {weights.name}.')
    if epoch is None:
        raise ExportError(f'--summary {summary}: {weights} is not a timm train.py checkpoint (no epoch), so timm\'s '
                          f'summary.csv does not describe it.')
    if summary.resolve().parent != weights.resolve().parent:
        raise ExportError(f'--summary {summary} is not in the folder of {weights} (the train.py run that wrote the '
                          f'checkpoint writes its summary.csv beside it).')
    source = read_timm_summary(summary)  # a damaged file: a ValueError naming it
    rows = source.raw.get('rows') or []
    if not any(r['epoch'] == epoch for r in rows):
        raise ExportError(f'--summary {summary} lists no epoch {epoch}, the epoch of {weights.name}.')
    source.training.weights_from = weights_from
    source.metrics += _metrics_of_these_weights(rows, epoch)
    for m in source.metrics:  # the model-index lists only what was measured on the exported weights themselves
        if m.step is not None:
            m.of_these_weights = m.step == epoch
    return source


def _load_state_dict(path: Path, use_ema: bool, required: bool = False) -> Dict[str, torch.Tensor]:
    """timm's ``load_state_dict`` (safetensors, or ``torch.load(weights_only=True)`` picking ``state_dict_ema`` if
    ``use_ema`` else ``state_dict`` and stripping ``module.`` / ``_orig_mod.``), after the file's integrity check."""
    try:
        check_weights_file(path, required=required)  # recorded size / sha256, safetensors header
        if path.suffix != '.safetensors':
            _torch_load_safe(path)  # refuses pickles that hold code, as a one-line error
        return load_state_dict(str(path), use_ema=use_ema, weights_only=True)
    except DamagedFileError as e:  # damaged, or a pickle that weights_only refused: never retried unsafely
        raise ExportError(str(e)) from None
    except (RuntimeError, OSError) as e:
        raise ExportError(f'Could not read {path} safely (torch.load weights_only=True): {first_line(e)}') from None


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


def _timm_weights_from(weights: Path, epoch: Optional[int], used_ema: bool) -> Optional[str]:
    """Which point of a timm train.py run the exported weights are, as the checkpoint records it."""
    if epoch is None:
        return None
    best = (': train.py\'s best eval metric since the run last started (a --resume starts the count again)'
            if weights.name == TIMM_BEST else '')
    return f'epoch {epoch} ({weights.name}{best})' + (', EMA weights' if used_ema else '')


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
