"""The CIFAR trainer (``timm-identity train-cifar``): the paper's recipe as one plain training loop.

Top to bottom, no framework: read the official CIFAR archives (``timm_identity.data.cifar``), put the
uint8 images on the device, build the model with ``timm.create_model``, the optimizer with
``timm.optim.create_optimizer_v2`` (weight decay on conv weights only: timm puts biases and other 1-D
parameters in a no-decay group, and the fixed projection head is a buffer that no optimizer sees),
a timm scheduler stepped per update, then loop: augmented batch on the device -> forward (optionally
bf16 autocast, channels_last, torch.compile) -> cross-entropy -> backward -> step.

The loop never waits for the device except at log / eval / checkpoint points: loss and accuracy are
summed on the device (timm ``AverageMeter`` over tensors), and a non-finite loss is remembered on the
device (the first step it happened) and acted on at the next such point: the run stops with a clear
message, nothing is saved after the last good checkpoint, and ``summary.json`` says what happened.

Outputs in the run folder: ``run_config.json`` (the resolved settings), ``log.jsonl`` (one record per
log point: step, epoch, lr, loss, train acc/error, images/s, and test loss/error where evaluated),
``summary.json`` (final and best test error, test set size, wall time, steps, device, versions, command line),
``curves.png``, and ``checkpoints/`` (see :mod:`timm_identity.train.checkpoint`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..integrity import DamagedFileError, check_weights_file
from .checkpoint import (
    MODEL_FILE, atomic_write_text, checkpoint_path, hub_config_writer, load_model_weights, load_train_state,
    resolve_checkpoint, resume_hint, save_checkpoint,
)
from .config import resolve_config
from .device import configure_backend, device_name, resolve_device, software_versions
from .device_data import DeviceCifarTrain, channel_stats
from .evaluate import evaluate_model
from .plots import plot_curves
from .step import build_optimizer, build_scheduler, train_step

__all__ = ['NonFiniteLossError', 'train', 'data_fingerprint']

BatchHook = Callable[[int, torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped."""


@dataclass
class Run:
    """Everything one training process works with, passed explicitly between the steps of :func:`train`."""
    cfg: Dict[str, Any]
    device: torch.device
    run_dir: Path
    model: torch.nn.Module
    train_model: Any                      # the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: DeviceCifarTrain
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    classes: List[str]
    fingerprint: str
    process_start: float
    argv: List[str]
    resume_dir: Optional[Path] = None
    start_step: int = 0
    best: Dict[str, Any] = field(default_factory=lambda: {'test_error': None, 'step': None})
    prev_wall: float = 0.0                # wall time of the earlier processes of a resumed run
    last_ckpt: Optional[Path] = None
    last_ckpt_step: Optional[int] = None  # the step of last_ckpt (a resumed checkpoint may have any folder name)
    ips_history: List[float] = field(default_factory=list)
    lock: Any = None                      # the open lock file of the run folder

    @property
    def log_path(self) -> Path:
        return self.run_dir / 'log.jsonl'

    def wall_time(self) -> float:
        return self.prev_wall + (time.perf_counter() - self.process_start)


@dataclass
class Interval:
    """What the loop sums on the device between two log points (no host synchronisation in between)."""
    loss: Any
    acc: Any
    first_bad: torch.Tensor               # first step with a non-finite loss, -1 if none
    images: int = 0
    started: float = field(default_factory=time.perf_counter)


def train(
        overrides: Dict[str, Any],
        train_split=None,
        test_split=None,
        batch_hook: Optional[BatchHook] = None,
        argv: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Train; return the summary (also written to ``summary.json``).

    Args:
        overrides: settings that differ from the recipe / runtime defaults (see
            :func:`~timm_identity.train.config.resolve_config`); ``resume`` set to a run or checkpoint folder
            continues that run.
        train_split, test_split: :class:`~timm_identity.data.cifar.CifarSplit`-like objects (``images``
            uint8 NHWC, ``labels``, ``classes``) to use instead of reading ``data_dir`` (tests).
        batch_hook: ``(step, x, y) -> (x, y)`` applied to each training batch (tests: a poisoned batch).
        argv: the command line, for the summary.
    Raises:
        NonFiniteLossError: the loss became NaN/inf (after writing ``summary.json`` with the reason).
    """
    process_start = time.perf_counter()
    resume_dir, state = _read_resume_state(overrides)
    run = _setup(overrides, state, resume_dir, train_split, test_split, process_start, argv)
    if state is not None:
        _restore(run, state)
    else:
        run.log_path.write_text('')
    atomic_write_text(run.run_dir / 'run_config.json', json.dumps(
        {**run.cfg, 'mean': run.mean, 'std': run.std, 'data_sha256': run.fingerprint}, indent=2) + '\n')
    try:
        return _loop(run, batch_hook)
    finally:
        run.lock.close()


def _read_resume_state(overrides: Dict[str, Any]) -> Tuple[Optional[Path], Optional[Dict[str, Any]]]:
    """The checkpoint folder to resume from and its training state, both checked before anything is built (a
    damaged file names the checkpoint to resume from instead)."""
    if not overrides.get('resume'):
        return None, None
    resume_dir = resolve_checkpoint(overrides['resume'])
    try:
        check_weights_file(resume_dir / MODEL_FILE)
        return resume_dir, load_train_state(resume_dir)
    except DamagedFileError as e:
        raise DamagedFileError(f'{e}; {resume_hint(resume_dir.parent, exclude=resume_dir)}') from None


def _setup(overrides, state, resume_dir, train_split, test_split, process_start, argv) -> Run:
    """Settings, data, model, optimizer and schedule; the run folder only once all of them could be made."""
    if resume_dir is not None and overrides.get('out_dir') is None:
        overrides = {**overrides, 'out_dir': str(resume_dir.parent.parent)}  # continue in the run's folder
    cfg = resolve_config(overrides, state['config'] if state is not None else None)
    device = resolve_device(cfg['device'])
    if cfg['out_dir'] is None:
        stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
        cfg['out_dir'] = os.path.join('runs', f"train-cifar-{cfg['dataset']}-{cfg['recipe']}-{stamp}")
    run_dir = Path(cfg['out_dir'])
    _refuse_used_run_dir(run_dir, resume_dir)
    configure_backend(device)

    if train_split is None or test_split is None:  # the official archives through our reader
        from timm_identity.data.cifar import load_cifar
        if not cfg['data_dir']:
            raise ValueError('--data-dir is required: the folder holding (or the path of) the official CIFAR '
                             'python release, e.g. cifar-10-batches-py or cifar-10-python.tar.gz')
        train_split, test_split = (load_cifar(cfg['data_dir'], cfg['dataset'], split, label_type=cfg['label_type'],
                                              verify_md5=cfg['verify_md5']) for split in ('train', 'test'))
    fingerprint = data_fingerprint(train_split.images, train_split.labels)
    if state is not None and state.get('data_sha256') not in (None, fingerprint):
        raise ValueError(f"cannot resume {resume_dir}: the training data differ from the run's (sha256 "
                         f"{state['data_sha256'][:16]}... then, {fingerprint[:16]}... now, "
                         f"{len(train_split.labels):,} images from {cfg['data_dir'] or 'the given split'}); "
                         f"resume with the run's data, or start a new run")
    mean, std = channel_stats(train_split.images)  # the training set's own per-channel statistics
    data = DeviceCifarTrain(
        train_split.images, train_split.labels, cfg['batch_size'], mean, std, device, seed=cfg['seed'] + 1,
        augment=cfg['augment'], pad=cfg['pad'], hflip=cfg['hflip'], channels_last=cfg['channels_last'])
    test_images = torch.from_numpy(np.ascontiguousarray(test_split.images)).to(device)
    test_labels = torch.from_numpy(np.asarray(test_split.labels, dtype=np.int64)).to(device)

    model = _build_model(cfg, len(train_split.classes), device)
    _check_model_takes_data(model, test_images, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: a start that fails leaves no empty run folder
    lock = _lock_run_dir(run_dir)  # held until train() returns
    _refuse_used_run_dir(run_dir, resume_dir)  # again, now that no other process can start in it
    if cfg['channels_last']:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    return Run(
        cfg=cfg, device=device, run_dir=run_dir, model=model,
        train_model=torch.compile(model, mode=cfg['compile_mode']) if cfg['compile'] else model,
        optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg), data=data, test_images=test_images,
        test_labels=test_labels, mean=mean, std=std, classes=list(train_split.classes), fingerprint=fingerprint,
        process_start=process_start, argv=list(argv) if argv is not None else list(sys.argv),
        resume_dir=resume_dir, last_ckpt=resume_dir, last_ckpt_step=state['step'] if state is not None else None,
        lock=lock)


def _build_model(cfg: Dict[str, Any], num_classes: int, device: torch.device) -> torch.nn.Module:
    """The model: a fresh init of ``--model``, or (``--init-from``) pretrained weights with a classifier for this
    dataset (timm keeps the backbone and builds a new head when the number of classes differs)."""
    import timm
    import timm_identity  # noqa: F401  (registers the models)
    torch.manual_seed(cfg['seed'])
    name, what = (cfg['init_from'], '--init-from') if cfg['init_from'] else (cfg['model'], '--model')
    try:
        model = timm.create_model(name, pretrained=bool(cfg['init_from']), num_classes=num_classes,
                                  **cfg['model_kwargs'])
    except (RuntimeError, TypeError, ValueError, OSError) as e:
        raise ValueError(f"cannot build {what} {name} with --model-kwargs {cfg['model_kwargs']}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if cfg['init_from']:
        cfg['model'] = model.pretrained_cfg.get('architecture') or cfg['model']  # what was built, for the record
    if cfg['freeze_backbone']:
        for param_name, param in model.named_parameters():
            param.requires_grad_(param_name.startswith('fc.'))
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError('--freeze-backbone leaves nothing to train: the fixed random projection head has no '
                             'parameters; pass --model-kwargs head=linear for a trainable classifier')
    return model.to(device)


def _restore(run: Run, state: Dict[str, Any]) -> None:
    """Continue exactly where the checkpoint stopped: weights, optimizer, schedule, data order, RNG, best."""
    load_model_weights(run.model, run.resume_dir)
    run.optimizer.load_state_dict(state['optimizer'])
    run.scheduler.load_state_dict(state['scheduler'])
    run.data.load_state_dict(state['data'], seed_after_move=run.cfg['seed'] + 1 + state['step'])
    torch.set_rng_state(state['torch_rng'])
    run.start_step, run.best, run.prev_wall = state['step'], state['best'], state['wall_time_s']
    # the log continues from the checkpoint: drop records a killed process wrote after it
    kept = [r for r in _read_log(run.log_path) if r['step'] <= run.start_step]
    atomic_write_text(run.log_path, ''.join(json.dumps(r) + '\n' for r in kept))
    print(f'resumed from {run.resume_dir} at step {run.start_step}', file=sys.stderr)


def _loop(run: Run, batch_hook: Optional[BatchHook]) -> Dict[str, Any]:
    """The training loop: one update per step; at log / eval / checkpoint points (the only places that wait for
    the device) a log record, an evaluation and a checkpoint."""
    from timm.utils import AverageMeter, accuracy
    from tqdm import tqdm
    cfg, steps, bs = run.cfg, run.cfg['steps'], run.cfg['batch_size']
    checkpoint_every = cfg['checkpoint_every'] or cfg['eval_every']
    deadline = run.process_start + 60 * cfg['time_limit'] if cfg['time_limit'] else math.inf
    interval = Interval(AverageMeter(), AverageMeter(), torch.full((), -1, dtype=torch.long, device=run.device))
    pbar = tqdm(range(run.start_step, steps), initial=run.start_step, total=steps, disable=not cfg['progress'],
                desc='train', unit='step', dynamic_ncols=True)
    run.model.train()
    step = run.start_step
    try:
        for step in pbar:
            run.scheduler.step_update(step)  # the lr of update `step` (0-based)
            x, y = run.data.next_batch()
            if batch_hook is not None:
                x, y = batch_hook(step, x, y)
            loss, logits = train_step(run.train_model, run.optimizer, x, y, run.device, cfg['amp'],
                                      cfg['label_smoothing'], cfg['clip_grad'], cfg['clip_mode'])
            interval.loss.update(loss, bs)
            interval.acc.update(accuracy(logits, y, topk=(1,))[0], bs)
            interval.first_bad = torch.where((interval.first_bad < 0) & ~torch.isfinite(loss), step + 1,
                                             interval.first_bad)
            interval.images += bs
            done = step + 1
            out_of_time = time.perf_counter() > deadline  # host clock only: no wait for the device
            do_eval = done % cfg['eval_every'] == 0 or done == steps or out_of_time
            do_ckpt = done % checkpoint_every == 0 or done == steps or out_of_time
            if not (do_eval or do_ckpt or done % cfg['log_every'] == 0):
                continue
            _log_point(run, interval, done, do_eval, pbar)
            if do_ckpt:
                _save(run, done, pbar, 'completed' if done == steps else 'time_limit' if out_of_time else 'running')
            interval = Interval(AverageMeter(), AverageMeter(), interval.first_bad)  # a new interval starts
            if out_of_time and done < steps:
                pbar.close()
                return _finish(run, 'time_limit', f'stopped at step {done} of {steps} after the '
                                                  f'{cfg["time_limit"]} min time limit; continue with --resume '
                                                  f'{run.run_dir}')
    except KeyboardInterrupt:  # Ctrl-C / SIGINT: the summary says so; the last checkpoint stays resumable
        pbar.close()
        _finish(run, 'interrupted', f'interrupted at step {step} of {steps}; continue from the last checkpoint '
                                    f'({run.last_ckpt if run.last_ckpt is not None else "none yet"}) with '
                                    f'--resume {run.run_dir}')
        raise
    pbar.close()
    return _finish(run, 'completed')


def _log_point(run: Run, interval: Interval, done: int, do_eval: bool, pbar) -> None:
    """Read the interval's sums (one host sync), stop on a non-finite loss, evaluate if due, append the record."""
    train_loss, train_acc, bad = torch.stack(
        [interval.loss.avg, interval.acc.avg, interval.first_bad.float()]).tolist()
    if bad >= 0 or not math.isfinite(train_loss):
        pbar.close()
        where = f'at step {int(bad)}' if bad >= 0 else f'by step {done}'
        message = (f'loss became non-finite ({train_loss}) {where} (lr {run.optimizer.param_groups[0]["lr"]:g}); '
                   f'training stopped. Last good checkpoint: '
                   f'{run.last_ckpt if run.last_ckpt is not None else "none (no checkpoint was written yet)"}')
        _finish(run, 'nonfinite_loss', message)
        raise NonFiniteLossError(message)
    ips = interval.images / max(time.perf_counter() - interval.started, 1e-9)
    run.ips_history.append(ips)
    record = {
        'step': done,
        'epoch': done * run.cfg['batch_size'] / run.data.num_images,
        'lr': run.optimizer.param_groups[0]['lr'],
        'loss': train_loss,
        'train_acc': train_acc,
        'train_error': 100.0 - train_acc,
        'images_per_s': ips,
        'wall_time_s': run.wall_time(),  # since the run's first start
        'test_loss': None,
        'test_error': None,
    }
    if do_eval:
        run.model.eval()
        result = evaluate_model(run.train_model, run.test_images, run.test_labels,
                                torch.tensor(run.mean, device=run.device), torch.tensor(run.std, device=run.device),
                                run.cfg['eval_batch_size'], run.cfg['amp'], run.cfg['channels_last'])
        run.model.train()
        record.update(test_loss=result['loss'], test_error=result['error'], test_top5=result['top5'])
        if run.best['test_error'] is None or result['error'] < run.best['test_error']:
            run.best = {'test_error': result['error'], 'step': done}
    with open(run.log_path, 'a') as f:
        f.write(json.dumps(record) + '\n')
    pbar.set_postfix(loss=f'{train_loss:.4f}', lr=f"{record['lr']:.3g}", img_s=f'{ips:.0f}',
                     **({'test_err': f"{record['test_error']:.2f}"} if do_eval else {}))


def _save(run: Run, done: int, pbar, status: str) -> None:
    """Checkpoint step ``done`` (weights, timm config.json, the run record as of this step, optimizer / schedule /
    data / RNG state); parameters that are no longer finite are never saved."""
    if not all(torch.isfinite(p).all() for p in run.model.parameters()):
        pbar.close()
        message = (f'parameters became non-finite by step {done}; training stopped, not saved. '
                   f'Last good checkpoint: {run.last_ckpt}')
        _finish(run, 'nonfinite_loss', message)
        raise NonFiniteLossError(message)
    train_state = {
        'step': done,
        'optimizer': run.optimizer.state_dict(),
        'scheduler': run.scheduler.state_dict(),
        'data': run.data.state_dict(),
        'torch_rng': torch.get_rng_state(),
        'best': run.best,
        'wall_time_s': run.wall_time(),
        'config': run.cfg,
        'data_sha256': run.fingerprint,
    }
    record = _run_record(run, status, checkpoint=checkpoint_path(run.run_dir, done), checkpoint_step=done)
    run.last_ckpt = save_checkpoint(run.run_dir, done, run.model, train_state,
                                    hub_config_writer(run.model, run.cfg, run.mean, run.std, run.classes, done),
                                    run_record=record, keep=run.cfg['keep_checkpoints'])
    run.last_ckpt_step = done


def _finish(run: Run, status: str, message: str = '') -> Dict[str, Any]:
    """Write ``summary.json`` (and ``curves.png``) from the log and the run's state; return the summary."""
    records = _read_log(run.log_path)
    summary = _run_record(run, status, message, run.last_ckpt, run.last_ckpt_step, records)
    atomic_write_text(run.run_dir / 'summary.json', json.dumps(summary, indent=2) + '\n')
    if run.cfg['plot'] and records:
        plot_curves(records, run.run_dir / 'curves.png',
                    title=f"{run.cfg['model']} on {run.cfg['dataset']} ({run.cfg['recipe']} recipe)")
    return summary


def _run_record(run: Run, status: str, message: str = '', checkpoint: Optional[Path] = None,
                checkpoint_step: Optional[int] = None, records: Optional[List[Dict[str, Any]]] = None
                ) -> Dict[str, Any]:
    """What the run is as of its last log record: settings, the latest and best test error (and their steps),
    length, speed, device, versions, command line and the checkpoint of these weights. ``summary.json`` at the
    end, and ``run.json`` in every checkpoint (what ``timm-identity export`` reads)."""
    cfg = run.cfg
    records = _read_log(run.log_path) if records is None else records
    evals = [r for r in records if r.get('test_error') is not None]
    steps_done = records[-1]['step'] if records else run.start_step
    return {
        'status': status,
        'message': message,
        'dataset': cfg['dataset'],
        'model': cfg['model'],
        'recipe': cfg['recipe'],
        'steps': steps_done,
        'target_steps': cfg['steps'],
        'epochs': steps_done * cfg['batch_size'] / run.data.num_images,
        'test_images': int(run.test_labels.numel()),  # the size of the test split every test_error is on
        'final_test_error': evals[-1]['test_error'] if evals else None,
        'final_step': evals[-1]['step'] if evals else None,
        'best_test_error': run.best['test_error'],
        'best_step': run.best['step'],
        'wall_time_s': run.wall_time(),
        'this_process_wall_time_s': time.perf_counter() - run.process_start,
        'images_per_s_median': float(np.median(run.ips_history)) if run.ips_history else None,
        'device': device_name(run.device),
        'amp': cfg['amp'], 'channels_last': cfg['channels_last'], 'compile': cfg['compile'],
        'versions': software_versions(),
        'argv': run.argv,
        'config': cfg,
        'mean': run.mean, 'std': run.std,
        'last_checkpoint': str(checkpoint) if checkpoint is not None else None,
        'checkpoint_step': checkpoint_step,
        'resumed_from': str(run.resume_dir) if run.resume_dir is not None else None,
    }


def _read_log(path: Path) -> List[Dict[str, Any]]:
    """The records of ``log.jsonl``. A partial last line (the process stopped while appending it, e.g. on a
    full disk) is dropped with a warning; a damaged line before the last is an error naming the file."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                print(f'warning: {path}: dropped a partial last record (line {i + 1})', file=sys.stderr)
                break
            raise ValueError(f'{path}:{i + 1}: not a JSON record (the log is damaged)') from None
    return records


def data_fingerprint(images: np.ndarray, labels) -> str:
    """SHA-256 of the training images (uint8 NHWC) and labels: a resumed run must see the same data."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on ``run_dir/.lock`` for this process (released when the returned file closes);
    a second train-cifar process on the same folder gets a clear error instead of interleaving the run."""
    import fcntl
    f = open(run_dir / '.lock', 'a+')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise FileExistsError(f'{run_dir} is in use by another train-cifar process; wait for it or choose '
                              f'another --out-dir') from None
    return f


def _refuse_used_run_dir(run_dir: Path, resume_dir: Optional[Path]) -> None:
    """A new run needs a folder that holds no run: a checkpoint, or a log/config of a run that stopped before
    its first checkpoint."""
    if resume_dir is not None:
        return
    used = [name for name in ('checkpoints', 'run_config.json', 'log.jsonl') if (run_dir / name).exists()]
    if used:
        hint = f'pass --resume {run_dir} to continue it or ' if 'checkpoints' in used else ''
        raise FileExistsError(f'{run_dir} already holds a run ({", ".join(used)}); {hint}choose another --out-dir')


def _check_model_takes_data(model: torch.nn.Module, images: torch.Tensor, cfg: Dict[str, Any]) -> None:
    """One forward pass on two test images before anything is written: a model that cannot take this data
    (``in_chans=1`` on RGB images, an input smaller than its total stride) is a clear error, not a run folder."""
    x = images[:2].permute(0, 3, 1, 2).float()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"--model {cfg['model']} with --model-kwargs {cfg['model_kwargs']} cannot take the "
                         f"{cfg['dataset']} images ({tuple(x.shape[1:])}): {str(e).splitlines()[0]}") from None
    finally:
        model.train(was_training)
