"""``timm-identity train-cifar``: the paper's CIFAR recipe as one plain training loop.

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

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic_io import atomic_savefig
from ..integrity import DamagedFileError, check_weights_file
from ..model_kwargs import parse_model_kwargs
from .checkpoint import (
    MODEL_FILE, atomic_write_text, load_model_weights, load_train_state, resolve_checkpoint, resume_hint,
    save_checkpoint,
)
from .device_data import DeviceCifarTrain, channel_stats, iterate_eval_batches
from .recipes import RECIPE_KEYS, RECIPES, get_recipe

__all__ = [
    'NonFiniteLossError', 'RUNTIME_DEFAULTS', 'STRICT_KEYS', 'resolve_config', 'resolve_device',
    'build_optimizer', 'build_scheduler', 'evaluate_model', 'train', 'train_step', 'add_parser', 'parse_model_kwargs',
    'autocast', 'software_versions', 'device_name', 'data_fingerprint',
]

# settings that are not part of a recipe; None means "decided at run time" (see resolve_config)
RUNTIME_DEFAULTS: Dict[str, Any] = dict(
    recipe='paper',
    data_dir=None,
    dataset='cifar10',
    verify_md5=True,
    model='allconv_resnet_cifar',
    model_kwargs={},
    seed=0,
    log_every=100,
    checkpoint_every=None,   # None: at every evaluation
    keep_checkpoints=2,
    eval_batch_size=1000,
    device='auto',
    amp='none',
    channels_last=False,
    compile=False,
    compile_mode=None,
    out_dir=None,
    resume=None,
    progress=True,
    plot=True,
    time_limit=None,         # minutes of wall time for this process; then checkpoint and stop (resumable)
)

# what a resumed run may not change: everything that changes what is computed
# (``steps`` may change: it extends or shortens the run; for the cosine schedule that changes its shape)
STRICT_KEYS = tuple(k for k in RECIPE_KEYS if k not in ('eval_every', 'steps')) + (
    'recipe', 'dataset', 'model', 'model_kwargs', 'seed')


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped."""


def _normalise(value):
    """Tuples -> lists, recursively, so configs compare equal before and after a JSON round trip."""
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def resolve_config(overrides: Dict[str, Any], resume_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The full settings of a run: recipe values, then runtime defaults, then ``overrides``.

    When resuming, the base is the checkpoint's own config, and an override of a key in
    :data:`STRICT_KEYS` that differs from it is an error (the resumed run would compute something else).
    """
    overrides = {k: _normalise(v) for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(RECIPE_KEYS) - set(RUNTIME_DEFAULTS)
    if unknown:
        raise ValueError(f'unknown settings {sorted(unknown)}')
    if resume_config is not None:
        cfg = dict(resume_config)
        changed = {k: (cfg.get(k), v) for k, v in overrides.items() if k in STRICT_KEYS and cfg.get(k) != v}
        if changed:
            lines = ', '.join(f'{k}: checkpoint {old!r} vs now {new!r}' for k, (old, new) in sorted(changed.items()))
            raise ValueError(f'cannot resume with different settings ({lines}); leave them out to continue '
                             f'the run as it was, or start a new run')
        cfg.update(overrides)
        cfg['time_limit'] = overrides.get('time_limit')  # a budget of one process, never inherited
    else:
        cfg = {**{k: _normalise(v) for k, v in RUNTIME_DEFAULTS.items()}}
        cfg.update({k: _normalise(v) for k, v in get_recipe(overrides.get('recipe', cfg['recipe'])).items()})
        cfg.update(overrides)
    _check_config(cfg)
    return cfg


def _check_config(cfg: Dict[str, Any]) -> None:
    def flag(key):
        return '--' + key.replace('_', '-')

    def positive(key):
        if not (isinstance(cfg[key], int) and cfg[key] > 0):
            raise ValueError(f'{flag(key)} must be a positive integer, got {cfg[key]!r}')

    def number(key, low, high=math.inf, low_open=False):
        value = cfg[key]
        ok = isinstance(value, (int, float)) and math.isfinite(value) and (value > low if low_open else value >= low)
        if not ok or value >= high:
            bounds = f'{"> " if low_open else ">= "}{low:g}' + (f' and < {high:g}' if high != math.inf else '')
            raise ValueError(f'{flag(key)} must be a finite number {bounds}, got {value!r}')
    for key in ('batch_size', 'steps', 'eval_every', 'log_every', 'eval_batch_size'):
        positive(key)
    if cfg['checkpoint_every'] is not None:
        positive('checkpoint_every')
    if not (isinstance(cfg['keep_checkpoints'], int) and cfg['keep_checkpoints'] >= 0):
        raise ValueError(f"--keep-checkpoints must be 0 (keep all) or more, got {cfg['keep_checkpoints']!r}")
    if not (isinstance(cfg['pad'], int) and cfg['pad'] >= 0):
        raise ValueError(f"--pad must be an integer >= 0, got {cfg['pad']!r}")
    if cfg['time_limit'] is not None:
        number('time_limit', 0, low_open=True)
    number('momentum', 0, 1)
    number('lr', 0, low_open=True)
    number('weight_decay', 0)
    number('warmup_lr', 0)
    number('min_lr', 0)
    number('decay_rate', 0, low_open=True)
    if cfg['sched'] not in ('multistep', 'cosine', 'constant'):
        raise ValueError(f"sched must be 'multistep', 'cosine' or 'constant', got {cfg['sched']!r}")
    if cfg['amp'] not in ('none', 'bf16'):
        raise ValueError(f"amp must be 'none' or 'bf16', got {cfg['amp']!r}")
    if str(cfg['model']).startswith(('local-dir:', 'hf-hub:')):
        raise ValueError(f"--model {cfg['model']}: train-cifar trains from a fresh init and would not load those "
                         f"weights (timm builds only the architecture from such a name without pretrained=True). "
                         f"Fine-tune from weights with tools/finetune.py; continue a run with --resume RUN_DIR.")
    if cfg['dataset'] not in ('cifar10', 'cifar100'):
        raise ValueError(f"dataset must be 'cifar10' or 'cifar100', got {cfg['dataset']!r}")
    if list(cfg['decay_steps']) != sorted(cfg['decay_steps']):
        raise ValueError(f"decay_steps must be increasing, got {cfg['decay_steps']}")
    if not 0.0 <= cfg['label_smoothing'] < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {cfg['label_smoothing']}")
    if cfg['lr'] <= 0 or cfg['weight_decay'] < 0:
        raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {cfg['lr']}, {cfg['weight_decay']}")
    if cfg['warmup_steps'] < 0 or (cfg['sched'] == 'cosine' and cfg['warmup_steps'] >= cfg['steps']):
        raise ValueError(f"warmup_steps must be >= 0 (and < steps for cosine), got {cfg['warmup_steps']}")


def resolve_device(name: str) -> torch.device:
    """``'auto'``: CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f'--device {name}: not a device torch knows ({e})') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device {name}: CUDA is not available on this machine')
    return device


def build_optimizer(model: torch.nn.Module, cfg: Dict[str, Any]) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2``: weight decay on parameters with 2+ dims (conv weights), none on
    biases / 1-D parameters (``filter_bias_and_bn``); buffers (the fixed head) are not parameters."""
    from timm.optim import create_optimizer_v2
    return create_optimizer_v2(
        model, opt=cfg['opt'], lr=cfg['lr'], weight_decay=cfg['weight_decay'], momentum=cfg['momentum'],
        filter_bias_and_bn=True,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Dict[str, Any]):
    """A timm scheduler counted in optimizer updates (``t_in_epochs=False``, driven by ``step_update``).

    ``step_update(t)`` sets the lr used by update ``t`` (0-based): for ``multistep`` that is
    ``lr * decay_rate ** (number of decay_steps <= t)``, so with the paper's (30000, 50000) updates
    0..29999 use 0.05, 30000..49999 use 0.005 and the rest 0.0005.
    """
    from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler
    warmup = dict(warmup_t=cfg['warmup_steps'], warmup_lr_init=cfg['warmup_lr'], t_in_epochs=False)
    if cfg['sched'] == 'multistep':
        # timm's MultiStepLRScheduler applies milestone m at t == m - 1 (a documented, deliberately kept
        # timm convention); pass m + 1 so that the decay applies from update index m on, i.e. after m
        # updates, as "x0.1 at 30k steps" says. Milestones count all updates (warmup included).
        return MultiStepLRScheduler(optimizer, decay_t=[m + 1 for m in cfg['decay_steps']],
                                    decay_rate=cfg['decay_rate'], warmup_prefix=False, **warmup)
    if cfg['sched'] == 'cosine':
        # warmup first, then one cosine over the remaining updates, reaching min_lr at cfg['steps']
        return CosineLRScheduler(optimizer, t_initial=cfg['steps'] - cfg['warmup_steps'], lr_min=cfg['min_lr'],
                                 warmup_prefix=True, **warmup)
    return MultiStepLRScheduler(optimizer, decay_t=[], decay_rate=1.0, warmup_prefix=False, **warmup)  # constant


def autocast(device: torch.device, amp: str):
    """bf16 autocast for ``amp='bf16'``, else nothing."""
    if amp == 'bf16':
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def train_step(model, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, device: torch.device,
               amp: str = 'none', label_smoothing: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """One update: forward (optionally bf16 autocast), cross-entropy in fp32, backward, optimizer step.
    Returns the detached loss and logits; nothing waits for the device."""
    with autocast(device, amp):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


@torch.no_grad()
def evaluate_model(
        model: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        batch_size: int = 1000,
        amp: str = 'none',
        channels_last: bool = False,
        flip: bool = False,
) -> Dict[str, float]:
    """Loss, top-1 (and top-5) accuracy and top-1 error in % over the whole set (uint8 NHWC on the
    model's device), in order, no augmentation (``flip``: logits averaged over each image and its horizontal
    mirror, test-time flip). One host synchronisation at the end."""
    from timm.utils import accuracy
    device = images.device
    loss_sum = torch.zeros((), device=device)
    top1_sum = torch.zeros((), device=device)
    top5_sum = torch.zeros((), device=device)
    for x, y in iterate_eval_batches(images, labels, batch_size, mean, std, channels_last):
        with autocast(device, amp):
            logits = model(x)
            if flip:
                logits = (logits.float() + model(x.flip(3)).float()) / 2
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction='sum')
        top1, top5 = accuracy(logits, y, topk=(1, 5))
        top1_sum += top1 * y.numel()
        top5_sum += top5 * y.numel()
    n = labels.numel()
    loss, top1, top5 = (torch.stack([loss_sum, top1_sum, top5_sum]) / n).tolist()
    return {'loss': loss, 'top1': top1, 'top5': top5, 'error': 100.0 - top1, 'num_images': n}


def software_versions() -> Dict[str, Any]:
    import timm
    import timm_identity
    return {
        'python': platform.python_version(),
        'torch': torch.__version__,
        'timm': timm.__version__,
        'timm_identity': timm_identity.__version__,
        'numpy': np.__version__,
        'cuda': torch.version.cuda,
        'cudnn': torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.getdevice_name(device)
    return (f'{device.type} ({platform.machine()}, {os.cpu_count()} logical cores, '
            f'{torch.get_num_threads()} torch threads)')


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


def plot_curves(records: Sequence[Dict[str, Any]], path: Path, title: str = '') -> None:
    """PNG of the training loss and lr, and of the train / test error, against the step."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = [r['step'] for r in records]
    ax_loss.plot(steps, [r['loss'] for r in records], label='train loss')
    ax_loss.set_xlabel('step')
    ax_loss.set_ylabel('loss')
    ax_loss.set_yscale('log')
    ax_lr = ax_loss.twinx()
    ax_lr.plot(steps, [r['lr'] for r in records], color='tab:gray', linestyle='--', label='lr')
    ax_lr.set_ylabel('lr')
    ax_lr.set_yscale('log')
    ax_loss.legend(loc='upper right')
    ax_err.plot(steps, [r['train_error'] for r in records], label='train error (augmented batches)')
    evals = [r for r in records if r.get('test_error') is not None]
    if evals:
        ax_err.plot([r['step'] for r in evals], [r['test_error'] for r in evals], marker='o', label='test error')
    ax_err.set_xlabel('step')
    ax_err.set_ylabel('top-1 error (%)')
    ax_err.legend()
    ax_err.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)


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


def _hub_config_writer(model, cfg, mean, std, classes, step):
    from timm.models._hub import save_config_for_hf

    def write(path):
        save_config_for_hf(
            model, str(path),
            model_config={
                'label_names': list(classes),
                'pretrained_cfg': {
                    'tag': f"{cfg['dataset']}_{cfg['recipe']}",
                    'description': f"timm-identity train-cifar checkpoint: {cfg['dataset']}, recipe "
                                   f"{cfg['recipe']}, step {step} of {cfg['steps']}.",
                },
            },
            data_config={'mean': tuple(mean), 'std': tuple(std)},
        )
    return write


def train(
        overrides: Dict[str, Any],
        train_split=None,
        test_split=None,
        batch_hook: Optional[Callable[[int, torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]] = None,
        argv: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Train; return the summary (also written to ``summary.json``).

    Args:
        overrides: settings that differ from the recipe / runtime defaults (see :func:`resolve_config`);
            ``resume`` set to a run or checkpoint folder continues that run.
        train_split, test_split: :class:`~timm_identity.data.cifar.CifarSplit`-like objects (``images``
            uint8 NHWC, ``labels``, ``classes``) to use instead of reading ``data_dir`` (tests).
        batch_hook: ``(step, x, y) -> (x, y)`` applied to each training batch (tests: a poisoned batch).
        argv: the command line, for the summary.
    Raises:
        NonFiniteLossError: the loss became NaN/inf (after writing ``summary.json`` with the reason).
    """
    process_start = time.perf_counter()
    resume_dir = resolve_checkpoint(overrides['resume']) if overrides.get('resume') else None
    state = None
    if resume_dir is not None:
        try:  # both files, before anything is built: a damaged one names the checkpoint to resume from instead
            check_weights_file(resume_dir / MODEL_FILE)
            state = load_train_state(resume_dir)
        except DamagedFileError as e:
            raise DamagedFileError(f'{e}; {resume_hint(resume_dir.parent, exclude=resume_dir)}') from None
    if resume_dir is not None and overrides.get('out_dir') is None:
        overrides = {**overrides, 'out_dir': str(resume_dir.parent.parent)}  # continue in the run's folder
    cfg = resolve_config(overrides, state['config'] if state is not None else None)
    device = resolve_device(cfg['device'])
    if cfg['out_dir'] is None:
        stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
        cfg['out_dir'] = os.path.join('runs', f"train-cifar-{cfg['dataset']}-{cfg['recipe']}-{stamp}")
    run_dir = Path(cfg['out_dir'])
    _refuse_used_run_dir(run_dir, resume_dir)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision('high')

    # data: the official archives through our reader, unless given
    if train_split is None or test_split is None:
        from timm_identity.data.cifar import load_cifar
        if not cfg['data_dir']:
            raise ValueError('--data-dir is required: the folder holding (or the path of) the official CIFAR '
                             'python release, e.g. cifar-10-batches-py or cifar-10-python.tar.gz')
        train_split = load_cifar(cfg['data_dir'], cfg['dataset'], 'train', verify_md5=cfg['verify_md5'])
        test_split = load_cifar(cfg['data_dir'], cfg['dataset'], 'test', verify_md5=cfg['verify_md5'])
    classes = list(train_split.classes)
    num_classes = len(classes)
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

    # model, optimizer, schedule
    import timm
    import timm_identity  # noqa: F401  (registers the models)
    torch.manual_seed(cfg['seed'])
    try:
        model = timm.create_model(cfg['model'], num_classes=num_classes, **cfg['model_kwargs']).to(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"cannot build --model {cfg['model']} with --model-kwargs {cfg['model_kwargs']}: "
                         f"{e}") from None
    _check_model_takes_data(model, test_images, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: a start that fails leaves no empty run folder
    lock = _lock_run_dir(run_dir)  # noqa: F841  (held until this function returns)
    _refuse_used_run_dir(run_dir, resume_dir)  # again, now that no other process can start in it
    if cfg['channels_last']:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)

    start_step, best, prev_wall = 0, {'test_error': None, 'step': None}, 0.0
    log_path = run_dir / 'log.jsonl'
    if state is not None:
        load_model_weights(model, resume_dir)
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        data.load_state_dict(state['data'], seed_after_move=cfg['seed'] + 1 + state['step'])
        torch.set_rng_state(state['torch_rng'])
        start_step, best, prev_wall = state['step'], state['best'], state['wall_time_s']
        # the log continues from the checkpoint: drop records a killed process wrote after it
        kept = [r for r in _read_log(log_path) if r['step'] <= start_step]
        atomic_write_text(log_path, ''.join(json.dumps(r) + '\n' for r in kept))
        print(f'resumed from {resume_dir} at step {start_step}', file=sys.stderr)
    else:
        log_path.write_text('')
    atomic_write_text(run_dir / 'run_config.json', json.dumps(
        {**cfg, 'mean': mean, 'std': std, 'data_sha256': fingerprint}, indent=2) + '\n')

    train_model = model
    if cfg['compile']:
        train_model = torch.compile(model, mode=cfg['compile_mode'])
    mean_t = torch.tensor(mean, device=device)
    std_t = torch.tensor(std, device=device)
    steps, bs = cfg['steps'], cfg['batch_size']
    checkpoint_every = cfg['checkpoint_every'] or cfg['eval_every']
    deadline = process_start + 60 * cfg['time_limit'] if cfg['time_limit'] else math.inf
    label_smoothing = cfg['label_smoothing']

    from timm.utils import AverageMeter, accuracy
    loss_meter, acc_meter = AverageMeter(), AverageMeter()
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
    last_ckpt = resume_dir
    ips_history = []
    summary: Dict[str, Any] = {}

    def finish(status: str, message: str = '') -> Dict[str, Any]:
        records = _read_log(log_path)
        evals = [r for r in records if r.get('test_error') is not None]
        summary.update({
            'status': status,
            'message': message,
            'dataset': cfg['dataset'],
            'model': cfg['model'],
            'recipe': cfg['recipe'],
            'steps': records[-1]['step'] if records else start_step,
            'target_steps': steps,
            'epochs': (records[-1]['step'] if records else start_step) * bs / data.num_images,
            'test_images': int(test_labels.numel()),  # the size of the test split every test_error is on
            'final_test_error': evals[-1]['test_error'] if evals else None,
            'final_step': evals[-1]['step'] if evals else None,
            'best_test_error': best['test_error'],
            'best_step': best['step'],
            'wall_time_s': prev_wall + (time.perf_counter() - process_start),
            'this_process_wall_time_s': time.perf_counter() - process_start,
            'images_per_s_median': float(np.median(ips_history)) if ips_history else None,
            'device': device_name(device),
            'amp': cfg['amp'], 'channels_last': cfg['channels_last'], 'compile': cfg['compile'],
            'versions': software_versions(),
            'argv': list(argv) if argv is not None else list(sys.argv),
            'config': cfg,
            'mean': mean, 'std': std,
            'last_checkpoint': str(last_ckpt) if last_ckpt is not None else None,
            'resumed_from': str(resume_dir) if resume_dir is not None else None,
        })
        atomic_write_text(run_dir / 'summary.json', json.dumps(summary, indent=2) + '\n')
        if cfg['plot'] and records:
            plot_curves(records, run_dir / 'curves.png',
                        title=f"{cfg['model']} on {cfg['dataset']} ({cfg['recipe']} recipe)")
        return summary

    from tqdm import tqdm
    pbar = tqdm(range(start_step, steps), initial=start_step, total=steps, disable=not cfg['progress'],
                desc='train', unit='step', dynamic_ncols=True)
    model.train()
    t_interval = time.perf_counter()
    images_interval = 0
    step = start_step
    try:
        for step in pbar:
            scheduler.step_update(step)  # the lr of update `step` (0-based)
            x, y = data.next_batch()
            if batch_hook is not None:
                x, y = batch_hook(step, x, y)
            loss, logits = train_step(train_model, optimizer, x, y, device, cfg['amp'], label_smoothing)
            loss_meter.update(loss, bs)
            acc_meter.update(accuracy(logits, y, topk=(1,))[0], bs)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step + 1, first_bad)
            images_interval += bs

            done = step + 1
            out_of_time = time.perf_counter() > deadline  # host clock only: no wait for the device
            do_eval = done % cfg['eval_every'] == 0 or done == steps or out_of_time
            do_ckpt = done % checkpoint_every == 0 or done == steps or out_of_time
            if not (do_eval or do_ckpt or done % cfg['log_every'] == 0):
                continue

            # ---- a log point: the only places the loop waits for the device ----
            train_loss, train_acc, bad = torch.stack([loss_meter.avg, acc_meter.avg, first_bad.float()]).tolist()
            interval_s = time.perf_counter() - t_interval
            if bad >= 0 or not math.isfinite(train_loss):
                pbar.close()
                where = f'at step {int(bad)}' if bad >= 0 else f'by step {done}'
                message = (f'loss became non-finite ({train_loss}) {where} (lr {optimizer.param_groups[0]["lr"]:g}); '
                           f'training stopped. Last good checkpoint: '
                           f'{last_ckpt if last_ckpt is not None else "none (no checkpoint was written yet)"}')
                finish('nonfinite_loss', message)
                raise NonFiniteLossError(message)
            ips = images_interval / max(interval_s, 1e-9)
            ips_history.append(ips)
            record = {
                'step': done,
                'epoch': done * bs / data.num_images,
                'lr': optimizer.param_groups[0]['lr'],
                'loss': train_loss,
                'train_acc': train_acc,
                'train_error': 100.0 - train_acc,
                'images_per_s': ips,
                'wall_time_s': prev_wall + (time.perf_counter() - process_start),  # since the run's first start
                'test_loss': None,
                'test_error': None,
            }
            if do_eval:
                model.eval()
                result = evaluate_model(train_model, test_images, test_labels, mean_t, std_t, cfg['eval_batch_size'],
                                        cfg['amp'], cfg['channels_last'])
                model.train()
                record.update(test_loss=result['loss'], test_error=result['error'], test_top5=result['top5'])
                if best['test_error'] is None or result['error'] < best['test_error']:
                    best = {'test_error': result['error'], 'step': done}
            with open(log_path, 'a') as f:
                f.write(json.dumps(record) + '\n')
            pbar.set_postfix(loss=f'{train_loss:.4f}', lr=f"{record['lr']:.3g}", img_s=f'{ips:.0f}',
                             **({'test_err': f"{record['test_error']:.2f}"} if do_eval else {}))
            if do_ckpt:
                if not all(torch.isfinite(p).all() for p in model.parameters()):
                    pbar.close()
                    message = (f'parameters became non-finite by step {done}; training stopped, not saved. '
                               f'Last good checkpoint: {last_ckpt}')
                    finish('nonfinite_loss', message)
                    raise NonFiniteLossError(message)
                train_state = {
                    'step': done,
                    'optimizer': optimizer.state_dict(),
                    'scheduler': scheduler.state_dict(),
                    'data': data.state_dict(),
                    'torch_rng': torch.get_rng_state(),
                    'best': best,
                    'wall_time_s': prev_wall + (time.perf_counter() - process_start),
                    'config': cfg,
                    'data_sha256': fingerprint,
                }
                last_ckpt = save_checkpoint(run_dir, done, model, train_state,
                                            _hub_config_writer(model, cfg, mean, std, classes, done),
                                            keep=cfg['keep_checkpoints'])
            loss_meter.reset()
            acc_meter.reset()
            images_interval = 0
            t_interval = time.perf_counter()
            if out_of_time and done < steps:
                pbar.close()
                return finish('time_limit', f'stopped at step {done} of {steps} after the {cfg["time_limit"]} min '
                                            f'time limit; continue with --resume {run_dir}')
    except KeyboardInterrupt:  # Ctrl-C / SIGINT: the summary says so; the last checkpoint stays resumable
        pbar.close()
        finish('interrupted', f'interrupted at step {step} of {steps}; continue from the last checkpoint '
                              f'({last_ckpt if last_ckpt is not None else "none yet"}) with --resume {run_dir}')
        raise
    pbar.close()
    return finish('completed')


def add_parser(subparsers) -> argparse.ArgumentParser:
    recipes = '; '.join(f"{name}: batch {r['batch_size']}, {r['opt']}, lr {r['lr']}, {r['sched']}, "
                        f"{r['steps']} steps, label smoothing {r['label_smoothing']}" for name, r in RECIPES.items())
    p = subparsers.add_parser(
        'train-cifar',
        help="train on CIFAR-10/100 with the paper's recipe (or a named one)",
        description="Train an all-conv residual net on CIFAR-10/100 from the official archives. The default "
                    "recipe is the paper's (SGD momentum 0.9, batch 128, wd 1e-4 on conv weights, lr 0.05 x0.1 "
                    "at 30k and 50k steps, 60k steps). Every recipe value below is a flag that overrides it. "
                    f"Recipes: {recipes}.",
    )
    g = p.add_argument_group('data and model')
    g.add_argument('--data-dir', help='official CIFAR python release: cifar-10-python.tar.gz, '
                                      'cifar-10-batches-py/ or a folder holding one (same for CIFAR-100)')
    g.add_argument('--dataset', choices=('cifar10', 'cifar100'), help='default cifar10')
    g.add_argument('--no-verify-md5', dest='verify_md5', action='store_const', const=False,
                   help='do not check the official archive md5 (for rebuilt archives)')
    g.add_argument('--model', help='timm model name (default allconv_resnet_cifar)')
    g.add_argument('--model-kwargs', nargs='*', metavar='KEY=VALUE',
                   help='extra timm.create_model arguments, e.g. depths="(1,1,1)" widths="(8,16,32)" stem_chs=8')
    g = p.add_argument_group('recipe (defaults: the chosen --recipe)')
    g.add_argument('--recipe', choices=sorted(RECIPES), help='named recipe (default paper)')
    g.add_argument('--opt', help="timm optimizer ('momentum' = SGD classical momentum, 'sgd' = Nesterov)")
    g.add_argument('--momentum', type=float)
    g.add_argument('--batch-size', '-b', type=int)
    g.add_argument('--lr', type=float)
    g.add_argument('--weight-decay', '--wd', type=float, help='on conv weights only')
    g.add_argument('--steps', type=int, help='optimizer updates in total')
    g.add_argument('--sched', choices=('multistep', 'cosine', 'constant'))
    g.add_argument('--decay-steps', type=int, nargs='*', help='multistep: updates at which lr *= decay-rate')
    g.add_argument('--decay-rate', type=float)
    g.add_argument('--warmup-steps', type=int)
    g.add_argument('--warmup-lr', type=float)
    g.add_argument('--min-lr', type=float, help='cosine: final lr')
    g.add_argument('--label-smoothing', type=float)
    g.add_argument('--augment', action=argparse.BooleanOptionalAction, default=None,
                   help='random crop + flip (on by default)')
    g.add_argument('--pad', type=int, help='zero padding before the random 32x32 crop (4)')
    g.add_argument('--hflip', action=argparse.BooleanOptionalAction, default=None)
    g.add_argument('--eval-every', type=int, help='evaluate on the full test set every N steps')
    g = p.add_argument_group('run')
    g.add_argument('--seed', type=int, help='model init and data order (default 0)')
    g.add_argument('--out-dir', help='run folder (default runs/train-cifar-<dataset>-<recipe>-<time>)')
    g.add_argument('--resume', metavar='PATH', help='continue a run: its folder or one checkpoint folder')
    g.add_argument('--log-every', type=int, help='log record every N steps (default 100)')
    g.add_argument('--checkpoint-every', type=int, help='default: at every evaluation')
    g.add_argument('--keep-checkpoints', type=int, help='newest checkpoints kept (default 2; 0 keeps all)')
    g.add_argument('--eval-batch-size', type=int, help='default 1000')
    g.add_argument('--device', help="'auto' (default: cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument('--amp', choices=('none', 'bf16'), help='bf16 autocast (default none)')
    g.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=None)
    g.add_argument('--compile', action=argparse.BooleanOptionalAction, default=None, help='torch.compile the model')
    g.add_argument('--compile-mode', help="torch.compile mode, e.g. 'max-autotune' or 'reduce-overhead'")
    g.add_argument('--no-progress', dest='progress', action='store_const', const=False, help='no progress bar')
    g.add_argument('--no-plot', dest='plot', action='store_const', const=False, help='no curves.png')
    g.add_argument('--time-limit', type=float, metavar='MINUTES',
                   help='stop after this much wall time at the next step: evaluate, checkpoint, write the summary '
                        '(status "time_limit") and exit 0; --resume continues (for machines rented by the minute)')
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ('func', 'command', 'argument_default')}
    if overrides.get('decay_steps') is not None:
        overrides['decay_steps'] = tuple(overrides['decay_steps'])
    try:
        if overrides.get('model_kwargs') is not None:
            overrides['model_kwargs'] = parse_model_kwargs(overrides['model_kwargs'])
        summary = train(overrides, argv=sys.argv)
    except NonFiniteLossError as e:
        print(f'error: {e}', file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print('error: interrupted; summary.json says where the run stopped and how to resume it', file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # bad settings or data; a folder that cannot be written (read-only, full)
        where = f' ({e.filename})' if isinstance(e, OSError) and e.filename and str(e.filename) not in str(e) else ''
        print(f'error: {e}{where}', file=sys.stderr)
        return 2
    keys = ('status', 'steps', 'final_test_error', 'best_test_error', 'best_step', 'wall_time_s',
            'images_per_s_median', 'device')
    print(json.dumps({k: summary[k] for k in keys}, indent=2))
    print(f"run folder: {summary['config']['out_dir']}", file=sys.stderr)
    return 0
