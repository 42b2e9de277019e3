"""The one record of a ``train-cifar`` run: ``RUN/run.json``, written when the run starts and read as it is.

Each fact of a run is written once, here::

    {
      "format": "timm-identity/train-cifar-run/2",
      "run_id": "9f2c...",                  the run's identity; every checkpoint's config.json names it
      "config": {...},                      every setting as the run was started: dataset, label_type, model,
                                            model_kwargs, recipe and its values, init_from, model_ema, seed, ...
                                            (train/config.py; what a resume changed is in its start entry)
      "base_model": "timm-identity/...",    the Hub repo of the weights --init-from started from (or null)
      "init_weights": {...},                those weights: {"name"} of a timm name, or {"folder", "sha256"}
      "data": {"train_sha256", "train_images", "test_sha256", "test_images"},
      "starts": [{"step", "argv", "device", "versions", "time", "changed"}, ...]   one entry per process (a
                                            resume adds one; "changed": the settings it changed, see config_at)
    }

What else a run folder holds refers to this record instead of repeating it: a checkpoint's ``config.json`` (the
Hub form, which must carry the architecture, model arguments, label names and mean/std) adds
``"run": {"id": RUN_ID, "step": N}``; ``log.jsonl`` holds the measurements (test error at each evaluation);
``summary.json`` the outcome of the last process (status, where it stopped, the checkpoint it left and that
file's sha256). :func:`run_of_checkpoint` is how a checkpoint finds its run: the folder above it, and only when
that folder's record has the checkpoint's run id.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..atomic_io import atomic_write_text

__all__ = ['RUN_RECORD', 'FORMAT', 'RunRecordError', 'NoRunRecordError', 'upgrade_hint', 'config_at',
           'new_run_record', 'write_run_record', 'read_run_record', 'checkpoint_run_id', 'run_of_checkpoint',
           'log_records']

RUN_RECORD = 'run.json'
FORMAT = 'timm-identity/train-cifar-run/2'
CHECKPOINT_RUN_KEY = 'run'  # config.json of a checkpoint: {"run": {"id": ..., "step": ...}}

PathLike = Union[str, os.PathLike]


class RunRecordError(ValueError):
    """A run record that is missing, damaged, of another run, or of an older layout (the message says which)."""


class NoRunRecordError(RunRecordError):
    """A checkpoint whose run folder holds no run record: it was moved out of its run."""


def upgrade_hint(run_dir: PathLike) -> str:
    """The command that converts a run folder of the earlier layout (to run as printed, but for the data folder)."""
    return f'`timm-identity upgrade-run {run_dir} --data-dir DIR` (DIR: the CIFAR data the run was trained on)'


def new_run_record(config: Dict[str, Any], data: Dict[str, Any], base_model: Optional[str],
                   init_weights: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The record of a new run (a fresh run id, no starts yet)."""
    return {'format': FORMAT, 'run_id': uuid.uuid4().hex, 'config': config, 'base_model': base_model,
            'init_weights': init_weights, 'data': data, 'starts': []}


def write_run_record(run_dir: PathLike, record: Dict[str, Any]) -> Path:
    """Write ``RUN/run.json`` atomically (the old record, or none, until the new one is complete)."""
    path = Path(run_dir) / RUN_RECORD
    atomic_write_text(path, json.dumps(record, indent=2) + '\n')
    return path


def read_run_record(run_dir: PathLike) -> Optional[Dict[str, Any]]:
    """``RUN/run.json``, or None when the folder has none. A damaged record, or one of another format, is a
    :class:`RunRecordError` naming the file."""
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunRecordError(f'{path}: not a readable run record ({e})') from None
    if not isinstance(record, dict) or record.get('format') != FORMAT:
        raise RunRecordError(f'{path}: not a train-cifar run record of this version (format '
                             f'{record.get("format") if isinstance(record, dict) else None!r}, expected {FORMAT!r}); '
                             f'convert the run with {upgrade_hint(path.parent)}')
    kinds = {'run_id': str, 'config': dict, 'data': dict, 'starts': list}
    wrong = [k for k, kind in kinds.items() if not isinstance(record.get(k), kind)]
    data = record.get('data') if isinstance(record.get('data'), dict) else {}
    wrong += [f'data.{k}' for k in ('train_sha256', 'test_sha256') if not isinstance(data.get(k), str)]
    wrong += [f'data.{k}' for k in ('train_images', 'test_images') if not isinstance(data.get(k), int)]
    wrong += [f'starts[{i}]' for i, s in enumerate(record.get('starts') or []) if not isinstance(s, dict)]
    if wrong:
        raise RunRecordError(f'{path}: damaged run record ({", ".join(wrong)} missing or of the wrong type)')
    return record


def config_at(record: Dict[str, Any], step: Optional[int] = None) -> Dict[str, Any]:
    """The settings the run had when it trained up to ``step`` (None: as of its last start): its first start's
    ``config``, with what a later start changed (``starts[i]['changed']``: the settings a resume may change, such as
    a longer ``steps``) for every start before ``step``."""
    config = dict(record['config'])
    for start in record['starts']:
        if step is None or start.get('step', 0) < step:
            config.update(start.get('changed') or {})
    return config


def checkpoint_run_id(ckpt_dir: PathLike) -> Tuple[Optional[str], Optional[int]]:
    """(run id, step) that a checkpoint's ``config.json`` names, or (None, None) for a folder that names no run
    (an exported folder, a checkpoint of an older layout)."""
    path = Path(ckpt_dir) / 'config.json'
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunRecordError(f'{path}: not readable as JSON ({e})') from None
    run = config.get(CHECKPOINT_RUN_KEY) if isinstance(config, dict) else None
    if not isinstance(run, dict) or not isinstance(run.get('id'), str):
        return None, None
    step = run.get('step')
    return run['id'], step if isinstance(step, int) else None


def run_of_checkpoint(ckpt_dir: PathLike) -> Tuple[Path, Dict[str, Any], int]:
    """(run folder, its record, the checkpoint's step) of a ``train-cifar`` checkpoint folder.

    The run folder is the one the checkpoint sits in (``RUN/checkpoints/step_N``), and its record must carry
    the run id the checkpoint names; anything else (a copied record, a checkpoint moved into another run, an
    older layout) is a :class:`RunRecordError` that says so."""
    ckpt_dir = Path(ckpt_dir)
    run_id, step = checkpoint_run_id(ckpt_dir)
    run_dir = ckpt_dir.resolve().parent.parent
    if run_id is None or step is None:
        raise RunRecordError(f'{ckpt_dir}: a checkpoint of an older train-cifar layout (its config.json names no '
                             f'run); convert its run with {upgrade_hint(run_dir)}')
    record = read_run_record(run_dir)
    if record is None:
        raise NoRunRecordError(f'{ckpt_dir}: its run folder {run_dir} has no {RUN_RECORD} (the checkpoint was moved '
                               f'out of its run)')
    if record['run_id'] != run_id:
        raise RunRecordError(f'{ckpt_dir} belongs to run {run_id[:12]}, but {run_dir / RUN_RECORD} is the record '
                             f'of run {record["run_id"][:12]} (a checkpoint or record copied between runs)')
    return run_dir, record, step


def log_records(run_dir: PathLike, up_to_step: Optional[int] = None) -> List[Dict[str, Any]]:
    """The records of ``RUN/log.jsonl`` (up to and including ``up_to_step``). A partial last line (the process
    stopped while appending it, e.g. on a full disk) is dropped with a warning; a damaged line before the last
    is an error naming the file."""
    import sys
    path = Path(run_dir) / 'log.jsonl'
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                print(f'warning: {path}: dropped a partial last record (line {i + 1})', file=sys.stderr)
                break
            raise RunRecordError(f'{path}:{i + 1}: not a JSON record (the log is damaged)') from None
        if not isinstance(record, dict) or not isinstance(record.get('step'), int):
            raise RunRecordError(f'{path}:{i + 1}: not a log record (no step; the log is damaged)')
        records.append(record)
    if up_to_step is not None:
        records = [r for r in records if r['step'] <= up_to_step]
    return records
