"""``timm-identity upgrade-run RUN --data-dir DIR``: a ``train-cifar`` run folder of the earlier layout (settings in
``run_config.json``, a copy of the run record in every checkpoint's ``run.json``, the test set not fingerprinted) in
today's layout (:mod:`.run_record`): one ``run.json`` per run, each checkpoint's ``config.json`` naming it. Then
``export`` and ``--resume`` take it as a run of this version.

The data are read again (the run's ``--data-dir``): the training set must be the one the run fingerprinted, and the
test set's fingerprint, which the earlier layout did not keep, is recorded from them. Nothing is changed until
everything was read and checked; the checkpoints' ``config.json`` files are rewritten first and ``run.json`` last, so
an interrupted upgrade is finished by running it again.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..atomic_io import atomic_write_text
from ..integrity import torch_load_checked
from .checkpoint import CONFIG_FILE, STATE_FILE
from .recipes import get_recipe
from .run_record import CHECKPOINT_RUN_KEY, new_run_record, read_run_record, write_run_record

__all__ = ['upgrade_run']


def _old_layout(run_dir: Path) -> Tuple[Dict[str, Any], str, List[Tuple[Path, int]]]:
    """(settings, training-data sha256, [(checkpoint, step)]) of a run folder of the earlier layout."""
    if read_run_record(run_dir) is not None:
        raise ValueError(f'{run_dir}: already a run of this layout (it has run.json)')
    old_config = run_dir / 'run_config.json'
    if not old_config.is_file():
        raise ValueError(f'{run_dir}: no run_config.json: not a train-cifar run folder of the earlier layout')
    try:
        saved = json.loads(old_config.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f'{old_config}: not readable ({e})') from None
    checkpoints = []
    for ckpt in sorted((run_dir / 'checkpoints').glob('step_*')):
        if (ckpt / STATE_FILE).is_file() and (ckpt / CONFIG_FILE).is_file():
            checkpoints.append((ckpt, int(torch_load_checked(ckpt / STATE_FILE, map_location='cpu')['step'])))
    config = {k: v for k, v in saved.items() if k not in ('mean', 'std', 'data_sha256')}
    for key, value in get_recipe(config.get('recipe', 'paper')).items():  # recipe settings added since: their
        config.setdefault(key, value)  # defaults, which is what the earlier version ran (no EMA)
    return config, saved.get('data_sha256', ''), checkpoints


def _earlier_start(run_dir: Path) -> Dict[str, Any]:
    """What the earlier layout kept of the run's last start (its summary's command line, device, versions)."""
    try:
        summary = json.loads((run_dir / 'summary.json').read_text())
    except (OSError, ValueError):
        return {'step': 0, 'argv': None}
    return {'step': 0, 'argv': summary.get('argv'), 'device': summary.get('device'),
            'versions': summary.get('versions'), 'note': 'recorded by the earlier layout'}


def upgrade_run(run_dir: Path, data_dir: str, verify_md5: bool = True) -> Path:
    """Convert the run folder ``run_dir`` (see the module docstring); returns its new ``run.json``."""
    from ..data.cifar import load_cifar
    from .cifar_trainer import data_fingerprint
    run_dir = Path(run_dir)
    config, train_sha256, checkpoints = _old_layout(run_dir)
    train, test = (load_cifar(data_dir, config['dataset'], split, label_type=config.get('label_type', 'fine'),
                              verify_md5=verify_md5) for split in ('train', 'test'))
    if data_fingerprint(train.images, train.labels) != train_sha256:
        raise ValueError(f'{data_dir}: not the training data of {run_dir} (its sha256 differs from the one the run '
                         f'recorded); pass the --data-dir the run was trained on')
    data = {'train_sha256': train_sha256, 'train_images': int(len(train.labels)),
            'test_sha256': data_fingerprint(test.images, test.labels), 'test_images': int(len(test.labels))}
    run_id = _existing_run_id(checkpoints)
    record = new_run_record(config, data, _base_model(config.get('init_from')))
    record['run_id'] = run_id or record['run_id']
    record['starts'].append(_earlier_start(run_dir))
    for ckpt, step in checkpoints:
        hub = json.loads((ckpt / CONFIG_FILE).read_text())
        hub[CHECKPOINT_RUN_KEY] = {'id': record['run_id'], 'step': step}
        atomic_write_text(ckpt / CONFIG_FILE, json.dumps(hub, indent=2) + '\n')
        (ckpt / 'run.json').unlink(missing_ok=True)  # the earlier per-checkpoint copy of the run record
    return write_run_record(run_dir, record)


def _existing_run_id(checkpoints: List[Tuple[Path, int]]) -> Optional[str]:
    """The run id an interrupted upgrade already gave the checkpoints, so that running it again finishes it."""
    for ckpt, _ in checkpoints:
        run = json.loads((ckpt / CONFIG_FILE).read_text()).get(CHECKPOINT_RUN_KEY)
        if isinstance(run, dict) and isinstance(run.get('id'), str):
            return run['id']
    return None


def _base_model(init_from: Optional[str]) -> Optional[str]:
    """The Hub id of a registered tag or ``hf-hub:`` name the run started from (a local folder has none)."""
    if not init_from or str(init_from).startswith('local-dir:') or Path(init_from).exists():
        return None
    if init_from.startswith('hf-hub:'):
        return init_from[len('hf-hub:'):]
    import timm
    import timm_identity  # noqa: F401
    try:
        return timm.models.get_pretrained_cfg(init_from).hf_hub_id or init_from
    except (RuntimeError, ValueError):
        return init_from
