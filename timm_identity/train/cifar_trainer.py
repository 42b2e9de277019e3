"""The CIFAR trainer (``timm-identity train-cifar``): the paper's recipe as one plain training loop.

Top to bottom, no framework: read the official CIFAR archives (``timm_identity.data.cifar``), put the
uint8 images on the device, build the model with ``timm.create_model``, the optimizer with
``timm.optim.create_optimizer_v2`` (weight decay on conv weights only: timm puts biases and other 1-D
parameters in a no-decay group, and the fixed projection head is a buffer that no optimizer sees),
a timm scheduler stepped per update, optionally timm's ``ModelEmaV3`` (an exponential moving average of the
weights, ``--model-ema``), then loop: augmented batch on the device -> forward (optionally bf16 autocast,
channels_last, torch.compile) -> cross-entropy -> backward -> step (-> EMA update).

The loop never waits for the device except at log / eval / checkpoint points: loss and accuracy are
summed on the device (timm ``AverageMeter`` over tensors), and a non-finite loss is remembered on the
device (the first step it happened) and acted on at the next such point. However the loop ends (all steps
done, the time limit, Ctrl-C or SIGTERM, a non-finite loss, a failed write), it ends in one place:
:func:`_finish` writes ``summary.json`` once, then ``train`` returns it or raises what stopped the run.

Outputs in the run folder: ``run.json`` (the run record: settings, data fingerprints, starts; see
:mod:`.run_record`), ``log.jsonl`` (one record per log point: step, epoch, lr, loss, train acc/error,
images/s, and test loss/error (and the EMA's) where evaluated), ``summary.json`` (how the last process ended:
status, final and best test error, wall time, speed, the last checkpoint and its sha256), ``curves.png``, and
``checkpoints/`` (see :mod:`timm_identity.train.checkpoint`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..integrity import DamagedFileError, check_weights_file, first_line, sha256_file
from .sources import base_model_id, resolve_source
from .checkpoint import (
    EMA_FILE, MODEL_FILE, atomic_write_text, hub_config_writer, load_model_weights, load_train_state,
    recorded_weights_sha256, remove_partial_checkpoints, resume_hint, save_checkpoint,
)
from .config import resolve_config
from .device import configure_backend, device_name, resolve_device, software_versions
from ..models.stem_init import whiten_conv_
from .device_data import DeviceCifarTrain, channel_stats, normalize_uint8
from .evaluate import evaluate_model
from .plots import plot_curves
from .run_record import config_at, log_records, new_run_record, run_of_checkpoint, upgrade_hint, write_run_record
from .step import build_optimizer, build_scheduler, train_step

__all__ = ['NonFiniteLossError', 'train', 'data_fingerprint']

BatchHook = Callable[[int, torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped."""


@dataclass
class ResumePoint:
    """A checkpoint to continue from, checked before anything is built: its folder, its run's folder and
    record (the run id matches), and its training state."""
    checkpoint: Path
    run_dir: Path
    record: Dict[str, Any]
    state: Dict[str, Any]


@dataclass
class Outcome:
    """How the loop ended: the summary's status and message, and the exception to raise after the summary."""
    status: str
    message: str = ''
    error: Optional[BaseException] = None


@dataclass
class Run:
    """Everything one training process works with, passed explicitly between the steps of :func:`train`."""
    cfg: Dict[str, Any]
    record: Dict[str, Any]                # the run record (run.json)
    device: torch.device
    run_dir: Path
    model: torch.nn.Module
    train_model: Any                      # the model, or its torch.compile wrapper
    ema: Any                              # timm ModelEmaV3 of the model, or None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: DeviceCifarTrain
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    classes: List[str]
    process_start: float
    lock: Any                             # the open lock file of the run folder
    start_step: int = 0
    prev_wall: float = 0.0                # wall time of the earlier processes of a resumed run
    last_ckpt: Optional[Path] = None
    last_ckpt_step: Optional[int] = None
    ips_history: List[float] = field(default_factory=list)

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
            continues that run, in its own folder.
        train_split, test_split: :class:`~timm_identity.data.cifar.CifarSplit`-like objects (``images``
            uint8 NHWC, ``labels``, ``classes``) to use instead of reading ``data_dir`` (tests).
        batch_hook: ``(step, x, y) -> (x, y)`` applied to each training batch (tests: a poisoned batch).
        argv: the command line, for the run record.
    Raises:
        NonFiniteLossError: the loss became NaN/inf; KeyboardInterrupt: Ctrl-C or SIGTERM; OSError: a write
        failed. Each after ``summary.json`` says so.
    """
    process_start = time.perf_counter()
    resume = _read_resume_point(overrides)
    run = _setup(overrides, resume, train_split, test_split, process_start)
    try:
        with _sigterm_as_interrupt():
            _start(run, resume, list(argv) if argv is not None else list(sys.argv))
            outcome = _loop(run, batch_hook)
        try:
            summary = _finish(run, outcome)  # the one place a run ends
        except OSError:
            if outcome.error is None:
                raise
            summary = {}  # a full disk: the error that stopped the run is the one to report
    finally:
        run.lock.close()
    if outcome.error is not None:
        raise outcome.error
    return summary


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a job scheduler, ``kill``) stops the run as Ctrl-C does: no partial checkpoint, a summary."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt('SIGTERM')
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _read_resume_point(overrides: Dict[str, Any]) -> Optional[ResumePoint]:
    """The checkpoint to resume from, its run and its training state, all checked before anything is built: the
    checkpoint's run record must be its own run's, a damaged file names the checkpoint to resume from instead,
    and the run continues in its own folder."""
    if not overrides.get('resume'):
        return None
    ckpt = resolve_source(overrides['resume']).require('checkpoint', what='--resume').folder
    assert ckpt is not None
    run_dir, record, step = run_of_checkpoint(ckpt)
    out_dir = overrides.get('out_dir')
    if out_dir is not None and Path(out_dir).resolve() != run_dir:
        raise ValueError(f'--resume continues the run in its own folder {run_dir}, not in --out-dir {out_dir}; '
                         f'leave --out-dir out, or start a new run from these weights with --init-from {ckpt}')
    try:  # a checkpoint of this layout records every file it holds: one without its record is not taken
        check_weights_file(ckpt / MODEL_FILE, required=True)
        if record['config']['model_ema']:
            check_weights_file(ckpt / EMA_FILE, required=True)
        state = load_train_state(ckpt, required=True)
    except DamagedFileError as e:
        raise DamagedFileError(f'{e}; {resume_hint(ckpt.parent, exclude=ckpt)}') from None
    if state.get('step') != step:
        raise DamagedFileError(f'{ckpt}: its training state is of step {state.get("step")}, its config.json of step '
                               f'{step}; {resume_hint(ckpt.parent, exclude=ckpt)}')
    if overrides.get('steps') is not None and overrides['steps'] < step:
        raise ValueError(f"--steps {overrides['steps']} is below the checkpoint's step {step}: a resumed run can "
                         f"only go on (--steps {step} or more)")
    return ResumePoint(ckpt, run_dir, record, state)


def _setup(overrides, resume: Optional[ResumePoint], train_split, test_split, process_start) -> Run:
    """Settings, data, model, optimizer, schedule and EMA; the run folder only once all of them could be made."""
    if resume is not None:
        overrides = {**overrides, 'out_dir': str(resume.run_dir)}  # a run continues in its own folder
    cfg = resolve_config(overrides, config_at(resume.record) if resume is not None else None)
    device = resolve_device(cfg['device'])
    if cfg['out_dir'] is None:
        stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
        cfg['out_dir'] = os.path.join('runs', f"train-cifar-{cfg['dataset']}-{cfg['recipe']}-{stamp}")
    run_dir = Path(cfg['out_dir'])
    if resume is None:
        _refuse_used_run_dir(run_dir)
        if cfg['init_from']:  # before the data are read: a wrong name is the first thing said
            resolve_source(cfg['init_from']).require('name', 'folder', 'checkpoint', what='--init-from')
    configure_backend(device)
    train_split, test_split = _read_data(cfg, train_split, test_split)
    data_facts = {'train_sha256': data_fingerprint(train_split.images, train_split.labels),
                  'train_images': int(len(train_split.labels)),
                  'test_sha256': data_fingerprint(test_split.images, test_split.labels),
                  'test_images': int(len(test_split.labels))}
    if resume is not None:
        _check_same_data(resume, data_facts, cfg)
    mean, std = channel_stats(train_split.images)  # the training set's own per-channel statistics
    data = DeviceCifarTrain(
        train_split.images, train_split.labels, cfg['batch_size'], mean, std, device, seed=cfg['seed'] + 1,
        augment=cfg['augment'], pad=cfg['pad'], hflip=cfg['hflip'], channels_last=cfg['channels_last'])
    test_images = torch.from_numpy(np.ascontiguousarray(test_split.images)).to(device)
    test_labels = torch.from_numpy(np.asarray(test_split.labels, dtype=np.int64)).to(device)

    model = _build_model(cfg, len(train_split.classes), device, resume)
    _check_model_takes_data(model, test_images, cfg)
    if cfg['stem_init'] == 'whiten' and resume is None:
        _whiten_stem(model, train_split.images, mean, std, device)
    if cfg['channels_last']:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)  # before the run folder: a bad --opt leaves nothing behind
    scheduler = build_scheduler(optimizer, cfg)
    ema = _build_ema(model, cfg)
    record = resume.record if resume is not None else new_run_record(
        cfg, data_facts, base_model_id(cfg['init_from']) if cfg['init_from'] else None, _init_weights(cfg))
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: a start that fails leaves no run folder
    lock = _lock_run_dir(run_dir)  # held until train() returns
    if resume is None:
        try:
            _refuse_used_run_dir(run_dir)  # again, now that no other process can start in it
        except FileExistsError:
            lock.close()
            raise
    remove_partial_checkpoints(run_dir)  # of a process killed while writing one
    return Run(
        cfg=cfg, record=record, device=device, run_dir=run_dir, model=model,
        train_model=torch.compile(model, mode=cfg['compile_mode']) if cfg['compile'] else model, ema=ema,
        optimizer=optimizer, scheduler=scheduler, data=data, test_images=test_images, test_labels=test_labels,
        mean=mean, std=std, classes=list(train_split.classes), process_start=process_start, lock=lock)


def _read_data(cfg: Dict[str, Any], train_split, test_split):
    """The training and test splits: given (tests), or the official archives through our reader."""
    if train_split is not None and test_split is not None:
        return train_split, test_split
    from timm_identity.data.cifar import load_cifar
    if not cfg['data_dir']:
        raise ValueError('--data-dir is required: the folder holding (or the path of) the official CIFAR '
                         'python release, e.g. cifar-10-batches-py or cifar-10-python.tar.gz')
    return tuple(load_cifar(cfg['data_dir'], cfg['dataset'], split, label_type=cfg['label_type'],
                            verify_md5=cfg['verify_md5']) for split in ('train', 'test'))


def _check_same_data(resume: ResumePoint, now: Dict[str, Any], cfg: Dict[str, Any]) -> None:
    """A resumed run must see the run's own training and test data (its best and final errors are of one test
    set)."""
    then = resume.record['data']
    for split in ('train', 'test'):
        if then[f'{split}_sha256'] != now[f'{split}_sha256']:
            raise ValueError(
                f"cannot resume {resume.checkpoint}: the {split} data differ from the run's (sha256 "
                f"{then[f'{split}_sha256'][:16]}... then, {now[f'{split}_sha256'][:16]}... now, "
                f"{now[f'{split}_images']:,} images from {cfg['data_dir'] or 'the given split'}); resume with the "
                f"run's data, or start a new run")


def _build_model(cfg: Dict[str, Any], num_classes: int, device: torch.device,
                 resume: Optional[ResumePoint]) -> torch.nn.Module:
    """The model: a fresh init of ``--model``; (``--init-from``) pretrained weights with a classifier for this
    dataset (timm keeps the backbone and builds a new head when the number of classes differs); or, resuming,
    the checkpoint's own architecture (its ``config.json``; the weights come from the checkpoint, so a base
    that has moved since is not needed)."""
    import timm
    import timm_identity  # noqa: F401  (registers the models)
    torch.manual_seed(cfg['seed'])
    if resume is not None:
        name, what, pretrained, kwargs = f'local-dir:{resume.checkpoint.resolve()}', '--resume', False, {}
    elif cfg['init_from']:
        source = resolve_source(cfg['init_from']).require('name', 'folder', 'checkpoint', what='--init-from')
        name, what, pretrained = source.timm_name, '--init-from', True
        kwargs = dict(num_classes=num_classes, **cfg['model_kwargs'])
    else:
        name, what, pretrained = cfg['model'], '--model', False
        kwargs = dict(num_classes=num_classes, **cfg['model_kwargs'])
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except DamagedFileError:
        raise
    except (RuntimeError, TypeError, ValueError, OSError) as e:
        raise ValueError(f"cannot build {what} {name} with --model-kwargs {cfg['model_kwargs']}: "
                         f"{first_line(e)}") from None
    if cfg['init_from'] and resume is None:
        cfg['model'] = model.pretrained_cfg.get('architecture') or cfg['model']  # what was built, for the record
    if cfg['freeze_backbone']:
        for param_name, param in model.named_parameters():
            param.requires_grad_(param_name.startswith('fc.'))
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError('--freeze-backbone leaves nothing to train: the fixed random projection head has no '
                             'parameters; pass --model-kwargs head=linear for a trainable classifier')
    return model.to(device)


WHITEN_IMAGES = 5000  # the first training images, as airbench's whitening layer takes


def _whiten_stem(model: torch.nn.Module, images: np.ndarray, mean, std, device: torch.device) -> None:
    """``--stem-init whiten``: the stem's filters from the first :data:`WHITEN_IMAGES` training images,
    normalised as training normalises them (timm_identity.models.stem_init.whiten_conv_)."""
    stem = getattr(model, 'stem', None)
    if not isinstance(stem, torch.nn.Conv2d):
        raise ValueError(f'--stem-init whiten needs a model whose first layer is a conv named stem; '
                         f'{type(model).__name__} has none')
    x = torch.from_numpy(np.ascontiguousarray(images[:WHITEN_IMAGES])).to(device)
    whiten_conv_(stem, normalize_uint8(x, torch.tensor(mean, device=device), torch.tensor(std, device=device)))


def _init_weights(cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Which weights ``--init-from`` started from, for the run record: a timm name as given, or the folder (absolute)
    and the sha256 of its weights."""
    if not cfg['init_from']:
        return None
    source = resolve_source(cfg['init_from'])
    if source.kind == 'name' or source.weights is None or source.folder is None:
        return {'name': source.text}
    return {'folder': str(source.folder.resolve()), 'sha256': sha256_file(source.weights)}


def _build_ema(model: torch.nn.Module, cfg: Dict[str, Any]):
    """timm's ``ModelEmaV3`` of the model (``--model-ema``), with its warmup: the decay at update t is
    ``min(model_ema_decay, 1 - (1 + t) ** (-2/3))``, so a short run averages over a horizon that fits it."""
    if not cfg['model_ema']:
        return None
    from timm.utils import ModelEmaV3
    return ModelEmaV3(model, decay=cfg['model_ema_decay'], use_warmup=True)


def _start(run: Run, resume: Optional[ResumePoint], argv: List[str]) -> None:
    """Record this process's start in the run record; resuming, continue exactly where the checkpoint stopped:
    weights, EMA, optimizer, schedule, data order, RNG, and the log as of its step."""
    if resume is None:
        run.log_path.write_text('')
    else:
        state = resume.state
        load_model_weights(run.model, resume.checkpoint)
        if run.ema is not None:
            load_model_weights(run.ema.module, resume.checkpoint / EMA_FILE)
        run.optimizer.load_state_dict(state['optimizer'])
        run.scheduler.load_state_dict(state['scheduler'])
        run.data.load_state_dict(state['data'], seed_after_move=run.cfg['seed'] + 1 + state['step'])
        torch.set_rng_state(state['torch_rng'])
        run.start_step, run.prev_wall = state['step'], state['wall_time_s']
        run.last_ckpt, run.last_ckpt_step = resume.checkpoint, state['step']
        # the log continues from the checkpoint: drop records a killed process wrote after it
        kept = log_records(run.run_dir, up_to_step=run.start_step)
        atomic_write_text(run.log_path, ''.join(json.dumps(r) + '\n' for r in kept))
        print(f'resumed from {resume.checkpoint} at step {run.start_step}', file=sys.stderr)
    before = config_at(run.record)
    run.record['starts'].append({
        'step': run.start_step, 'argv': argv, 'device': device_name(run.device), 'versions': software_versions(),
        'time': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'changed': {k: v for k, v in run.cfg.items() if before.get(k) != v}})
    write_run_record(run.run_dir, run.record)


def _loop(run: Run, batch_hook: Optional[BatchHook]) -> Outcome:
    """The training loop: one update per step; at log / eval / checkpoint points (the only places that wait for
    the device) a log record, an evaluation and a checkpoint. Returns how it ended; never writes the summary."""
    from timm.utils import AverageMeter, accuracy
    from tqdm import tqdm
    cfg, steps, bs = run.cfg, run.cfg['steps'], run.cfg['batch_size']
    checkpoint_every = cfg['checkpoint_every'] or cfg['eval_every']
    deadline = run.process_start + 60 * cfg['time_limit'] if cfg['time_limit'] else math.inf
    interval = Interval(AverageMeter(), AverageMeter(), torch.full((), -1, dtype=torch.long, device=run.device))
    pbar = tqdm(range(run.start_step, steps), initial=run.start_step, total=steps, disable=not cfg['progress'],
                desc='train', unit='step', dynamic_ncols=True)
    run.model.train()
    done = run.start_step
    resume_how = f'continue with --resume {run.run_dir}'
    try:
        for step in pbar:
            run.scheduler.step_update(step)  # the lr of update `step` (0-based)
            x, y = run.data.next_batch()
            if batch_hook is not None:
                x, y = batch_hook(step, x, y)
            loss, logits = train_step(run.train_model, run.optimizer, x, y, run.device, cfg['amp'],
                                      cfg['label_smoothing'], cfg['clip_grad'], cfg['clip_mode'])
            if run.ema is not None:
                run.ema.update(run.model, step=step + 1)
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
                _save(run, done)
            interval = Interval(AverageMeter(), AverageMeter(), interval.first_bad)  # a new interval starts
            if out_of_time and done < steps:
                return Outcome('time_limit', f'stopped at step {done} of {steps} after the {cfg["time_limit"]} min '
                                             f'time limit; {resume_how}')
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM: the last checkpoint stays resumable
        last = run.last_ckpt if run.last_ckpt is not None else 'none yet'
        return Outcome('interrupted', f'interrupted at step {done} of {steps}; continue from the last checkpoint '
                                      f'({last}) with --resume {run.run_dir}', e)
    except NonFiniteLossError as e:
        return Outcome('nonfinite_loss', str(e), e)
    except OSError as e:  # a checkpoint or log that could not be written (a full disk): nothing partial is kept
        return Outcome('failed', f'{e}; {resume_how}', e)
    except Exception as e:  # anything else (out of memory, a bug): the summary says where the run stopped
        return Outcome('failed', f'{type(e).__name__}: {first_line(e)} at step {done}; the last checkpoint is '
                                 f'{run.last_ckpt if run.last_ckpt is not None else "none yet"}', e)
    finally:
        pbar.close()
    return Outcome('completed')


def _evaluate(run: Run, model) -> Dict[str, float]:
    return evaluate_model(model, run.test_images, run.test_labels, torch.tensor(run.mean, device=run.device),
                          torch.tensor(run.std, device=run.device), run.cfg['eval_batch_size'], run.cfg['amp'],
                          run.cfg['channels_last'])


def _log_point(run: Run, interval: Interval, done: int, do_eval: bool, pbar) -> None:
    """Read the interval's sums (one host sync), stop on a non-finite loss, evaluate if due (the weights, and
    their EMA), append the record."""
    train_loss, train_acc, bad = torch.stack(
        [interval.loss.avg, interval.acc.avg, interval.first_bad.float()]).tolist()
    if bad >= 0 or not math.isfinite(train_loss):
        where = f'at step {int(bad)}' if bad >= 0 else f'by step {done}'
        raise NonFiniteLossError(
            f'loss became non-finite ({train_loss}) {where} (lr {run.optimizer.param_groups[0]["lr"]:g}); '
            f'training stopped. Last good checkpoint: '
            f'{run.last_ckpt if run.last_ckpt is not None else "none (no checkpoint was written yet)"}')
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
        result = _evaluate(run, run.train_model)
        run.model.train()
        record.update(test_loss=result['loss'], test_error=result['error'], test_top5=result['top5'])
        if run.ema is not None:
            result = _evaluate(run, run.ema.module)
            record.update(ema_test_loss=result['loss'], ema_test_error=result['error'], ema_test_top5=result['top5'])
    with open(run.log_path, 'a') as f:
        f.write(json.dumps(record) + '\n')
    pbar.set_postfix(loss=f'{train_loss:.4f}', lr=f"{record['lr']:.3g}", img_s=f'{ips:.0f}',
                     **({'test_err': f"{record['test_error']:.2f}"} if do_eval else {}))


def _save(run: Run, done: int) -> None:
    """Checkpoint step ``done`` (weights, their EMA, timm config.json naming the run and step, optimizer /
    schedule / data / RNG state); parameters that are no longer finite are never saved."""
    if not all(torch.isfinite(p).all() for p in run.model.parameters()):
        raise NonFiniteLossError(f'parameters became non-finite by step {done}; training stopped, not saved. '
                                 f'Last good checkpoint: {run.last_ckpt}')
    train_state = {
        'step': done,
        'optimizer': run.optimizer.state_dict(),
        'scheduler': run.scheduler.state_dict(),
        'data': run.data.state_dict(),
        'torch_rng': torch.get_rng_state(),
        'wall_time_s': run.wall_time(),
    }
    write_config = hub_config_writer(run.model, run.record['run_id'], run.mean, run.std, run.classes, done)
    run.last_ckpt = save_checkpoint(run.run_dir, done, run.model, train_state, write_config,
                                    ema_model=run.ema.module if run.ema is not None else None,
                                    keep=run.cfg['keep_checkpoints'])
    run.last_ckpt_step = done


def _finish(run: Run, outcome: Outcome) -> Dict[str, Any]:
    """Write ``summary.json`` (and ``curves.png``) from the log and how the loop ended; return the summary."""
    records = log_records(run.run_dir)
    summary = _summary(run, outcome, records)
    atomic_write_text(run.run_dir / 'summary.json', json.dumps(summary, indent=2) + '\n')
    if run.cfg['plot'] and records:
        plot_curves(records, run.run_dir / 'curves.png',
                    title=f"{run.cfg['model']} on {run.cfg['dataset']} ({run.cfg['recipe']} recipe)")
    return summary


def _final_and_best(records: List[Dict[str, Any]], key: str, prefix: str) -> Dict[str, Any]:
    evals = [r for r in records if r.get(key) is not None]
    best = min(evals, key=lambda r: r[key]) if evals else None
    return {f'final_{prefix}test_error': evals[-1][key] if evals else None,
            f'final_{prefix}step': evals[-1]['step'] if evals else None,
            f'best_{prefix}test_error': best[key] if best else None,
            f'best_{prefix}step': best['step'] if best else None}


def _summary(run: Run, outcome: Outcome, records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """How the run stands at its end: status, the latest and best test error (and their steps; with the EMA's),
    length, speed, and the checkpoint left (with its weights' sha256). The run's settings and data are in its
    record (``run.json``, same ``run_id``), not here."""
    steps_done = records[-1]['step'] if records else run.start_step
    ckpt = run.last_ckpt
    return {
        'run_id': run.record['run_id'],
        'status': outcome.status,
        'message': outcome.message,
        'steps': steps_done,
        'epochs': steps_done * run.cfg['batch_size'] / run.data.num_images,
        **_final_and_best(records, 'test_error', ''),
        **(_final_and_best(records, 'ema_test_error', 'ema_') if run.ema is not None else {}),
        'wall_time_s': run.wall_time(),
        'this_process_wall_time_s': time.perf_counter() - run.process_start,
        'images_per_s_median': float(np.median(run.ips_history)) if run.ips_history else None,
        'run_dir': str(run.run_dir),
        'last_checkpoint': str(ckpt) if ckpt is not None else None,
        'checkpoint_step': run.last_ckpt_step,
        'checkpoint_sha256': recorded_weights_sha256(ckpt) if ckpt is not None else None,
    }


def data_fingerprint(images: np.ndarray, labels) -> str:
    """SHA-256 of a split's images (uint8 NHWC) and labels: a resumed run must see the same data."""
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
        raise FileExistsError(f'{run_dir} is in use by another train-cifar process; wait for it to end (a new run: '
                              f'or choose another --out-dir)') from None
    return f


def _refuse_used_run_dir(run_dir: Path) -> None:
    """A new run needs a folder that holds no run: a record, a checkpoint, or a log of a run that stopped
    before its first checkpoint (``run_config.json``: a run of an older layout)."""
    used = [name for name in ('run.json', 'checkpoints', 'log.jsonl', 'run_config.json') if (run_dir / name).exists()]
    if used:
        hint = (f'convert it with {upgrade_hint(run_dir)}, then pass --resume {run_dir} to continue it, or '
                if 'run_config.json' in used else f'pass --resume {run_dir} to continue it or '
                if 'checkpoints' in used else '')
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
