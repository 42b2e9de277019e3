"""``timm-identity upgrade-run RUN --data-dir DIR``: a ``train-cifar`` run folder of the earlier layout (settings in
``run_config.json``, a copy of the run record in every checkpoint's ``run.json``, the test set not fingerprinted) in
today's layout (:mod:`.run_record`): one ``run.json`` per run, each checkpoint's ``config.json`` naming it. Then
``export`` and ``--resume`` take it as a run of this version.

The data are read again (the run's ``--data-dir``): the training set must be the one the run fingerprinted; the test
set, whose fingerprint the earlier layout did not keep, must have the size the run recorded and give the newest
evaluated checkpoint the test loss and error the log recorded at its step, and its fingerprint is recorded then.
Nothing is changed until everything was read and checked; the checkpoints' ``config.json`` files are rewritten first,
``run.json`` next (an interrupted upgrade is finished by running it again), and the earlier ``run_config.json`` is
removed last.
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
from .sources import base_model_id

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


def _earlier_summary(run_dir: Path) -> Dict[str, Any]:
    try:
        summary = json.loads((run_dir / 'summary.json').read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _earlier_start(summary: Dict[str, Any]) -> Dict[str, Any]:
    """What the earlier layout kept of the run's starts: the last one's command line, device and versions."""
    return {'step': 0, 'argv': summary.get('argv'), 'device': summary.get('device'),
            'versions': summary.get('versions'), 'changed': {},
            'note': 'converted from the earlier layout, which kept only the last start'
                    + (f' (a resume from {summary["resumed_from"]})' if summary.get('resumed_from') else '')}


def _check_test_set(run_dir: Path, test, summary: Dict[str, Any], checkpoints: List[Tuple[Path, int]],
                    config: Dict[str, Any]) -> None:
    """The test set given must be the run's: the size it recorded, and the newest evaluated checkpoint's test loss
    and error as the log recorded them at that step (the loss to 1e-4, the error within one image)."""
    import numpy as np
    import timm
    import torch
    from .evaluate import evaluate_model
    from .run_record import log_records
    recorded = summary.get('test_images')
    if isinstance(recorded, int) and recorded != len(test.labels):
        raise ValueError(f'{run_dir} was evaluated on {recorded:,} test images, the data given have '
                         f'{len(test.labels):,}; pass the --data-dir the run was trained on')
    logged = {r['step']: r for r in log_records(run_dir) if r.get('test_loss') is not None}
    for ckpt, step in reversed(checkpoints):
        if step not in logged:
            continue
        model = timm.create_model(f'local-dir:{ckpt.resolve()}', pretrained=True).eval()
        cfg = model.pretrained_cfg
        now = evaluate_model(model, torch.from_numpy(np.ascontiguousarray(test.images)),
                             torch.from_numpy(np.asarray(test.labels, dtype=np.int64)), torch.tensor(cfg['mean']),
                             torch.tensor(cfg['std']), config['eval_batch_size'])
        then = logged[step]
        if (abs(now['error'] - then['test_error']) > 100.0 / len(test.labels) + 1e-6
                or abs(now['loss'] - then['test_loss']) > 1e-4 * max(1.0, abs(then['test_loss']))):
            raise ValueError(f'{ckpt} has a test loss of {now["loss"]:.4f} ({now["error"]:.2f} % error) on the test '
                             f'data given, the run logged {then["test_loss"]:.4f} ({then["test_error"]:.2f} %) at '
                             f'step {step}: not the run\'s test set; pass the --data-dir the run was trained on')
        return


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
    summary = _earlier_summary(run_dir)
    _check_test_set(run_dir, test, summary, checkpoints, config)
    data = {'train_sha256': train_sha256, 'train_images': int(len(train.labels)),
            'test_sha256': data_fingerprint(test.images, test.labels), 'test_images': int(len(test.labels))}
    run_id = _existing_run_id(checkpoints)
    init_from = config.get('init_from')
    record = new_run_record(config, data, base_model_id(init_from) if init_from else None,
                            {'name': init_from} if init_from else None)
    record['run_id'] = run_id or record['run_id']
    record['starts'].append(_earlier_start(summary))
    for ckpt, step in checkpoints:
        hub = json.loads((ckpt / CONFIG_FILE).read_text())
        hub[CHECKPOINT_RUN_KEY] = {'id': record['run_id'], 'step': step}
        atomic_write_text(ckpt / CONFIG_FILE, json.dumps(hub, indent=2) + '\n')
        (ckpt / 'run.json').unlink(missing_ok=True)  # the earlier per-checkpoint copy of the run record
    path = write_run_record(run_dir, record)
    (run_dir / 'run_config.json').unlink()  # the earlier copy of the settings, now in run.json
    return path


def _existing_run_id(checkpoints: List[Tuple[Path, int]]) -> Optional[str]:
    """The run id an interrupted upgrade already gave the checkpoints, so that running it again finishes it."""
    for ckpt, _ in checkpoints:
        run = json.loads((ckpt / CONFIG_FILE).read_text()).get(CHECKPOINT_RUN_KEY)
        if isinstance(run, dict) and isinstance(run.get('id'), str):
            return run['id']
    return None
