"""The settings of a ``train-cifar`` run: a named recipe (:mod:`.recipes`), then the runtime defaults, then the
command line's overrides; checked once, here, with one clear error naming the flag.

When a run resumes, its checkpoint's settings are the base, and an override of anything that changes what is
computed (:data:`STRICT_KEYS`) is an error.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional

from .recipes import RECIPE_KEYS, get_recipe
from .step import CLIP_MODES

__all__ = ['RUNTIME_DEFAULTS', 'STRICT_KEYS', 'STEM_INITS', 'resolve_config', 'check_config']

# settings that are not part of a recipe; None means "decided at run time" (see resolve_config)
RUNTIME_DEFAULTS: Dict[str, Any] = dict(
    recipe='paper',
    data_dir=None,
    dataset='cifar10',
    label_type='fine',       # CIFAR-100: 'fine' (100 classes) or 'coarse' (its 20 superclasses)
    verify_md5=True,
    model='allconv_resnet_cifar',
    model_kwargs={},
    init_from=None,          # a timm name with weights (tag, local-dir:DIR, hf-hub:ID): a warm start (fine-tuning)
    freeze_backbone=False,   # with init_from: train the classifier only (a linear probe; needs head='linear')
    stem_init='model',       # 'model': the stem as the model inits it; 'whiten': patch whitening from the data
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
    clip_grad=None,          # gradient clipping threshold (None: off); what it means depends on clip_mode
    clip_mode='norm',        # timm's dispatch_clip_grad: 'norm' (total L2 norm), 'value', 'agc' (NFNet's ratio)
)

# --stem-init: how the first conv starts ('whiten': timm_identity.models.stem_init.whiten_conv_ on training images)
STEM_INITS = ('model', 'whiten')

# what a resumed run may not change: everything that changes what is computed
# (``steps`` may change: it extends or shortens the run; for the cosine schedule that changes its shape)
STRICT_KEYS = tuple(k for k in RECIPE_KEYS if k not in ('eval_every', 'steps')) + (
    'recipe', 'dataset', 'label_type', 'model', 'model_kwargs', 'seed', 'init_from', 'freeze_backbone', 'clip_grad',
    'clip_mode', 'stem_init')


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
    if resume_config is not None:  # settings added since the checkpoint was written take their defaults
        cfg = {**{k: _normalise(v) for k, v in RUNTIME_DEFAULTS.items()}, **resume_config}
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
    check_config(cfg, given=overrides)
    return cfg


# CIFAR's images are 32x32: a zero padding of 32 or more would let a random crop miss the image entirely
IMAGE_SIZE = 32


def check_config(cfg: Dict[str, Any], given: Iterable[str] = ()) -> None:
    """Raise ValueError (one line naming the flag) for a setting the run cannot use. ``given``: the settings set
    explicitly (the command line, a config file) rather than by the recipe: only explicit --decay-steps must lie
    inside the run (a recipe's decay steps past a shortened --steps simply do not happen)."""
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
    if cfg['pad'] >= IMAGE_SIZE:
        raise ValueError(f"--pad must be less than the {IMAGE_SIZE}-pixel image size (0 to {IMAGE_SIZE - 1}; the "
                         f"paper's is 4), got {cfg['pad']!r}: a wider zero padding lets the random crop miss the "
                         f"image")
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
    if cfg['clip_grad'] is not None:
        number('clip_grad', 0, low_open=True)
    if cfg['clip_mode'] not in CLIP_MODES:
        raise ValueError(f"--clip-mode must be one of {', '.join(map(repr, CLIP_MODES))}, got {cfg['clip_mode']!r}")
    if not isinstance(cfg['model_ema'], bool):
        raise ValueError(f"--model-ema is on or off (true/false), got {cfg['model_ema']!r}")
    number('model_ema_decay', 0, 1, low_open=True)
    if cfg['amp'] not in ('none', 'bf16'):
        raise ValueError(f"amp must be 'none' or 'bf16', got {cfg['amp']!r}")
    if str(cfg['model']).startswith(('local-dir:', 'hf-hub:')):
        raise ValueError(f"--model {cfg['model']}: --model builds a fresh init and would not load those weights "
                         f"(timm builds only the architecture from such a name without pretrained=True). Start from "
                         f"weights with --init-from {cfg['model']}; continue a run with --resume RUN_DIR.")
    if cfg['label_type'] not in ('fine', 'coarse') or (cfg['label_type'] == 'coarse' and cfg['dataset'] != 'cifar100'):
        raise ValueError(f"--label-type {cfg['label_type']}: 'fine', or 'coarse' (CIFAR-100's 20 superclasses) "
                         f"with --dataset cifar100")
    if cfg['freeze_backbone'] and not cfg['init_from']:
        raise ValueError('--freeze-backbone trains the classifier of pretrained weights: pass --init-from too')
    if cfg['stem_init'] not in STEM_INITS:
        raise ValueError(f"--stem-init must be one of {STEM_INITS}, got {cfg['stem_init']!r}")
    if cfg['stem_init'] != 'model' and cfg['init_from']:
        raise ValueError(f"--stem-init {cfg['stem_init']} inits a new model's stem; --init-from brings its own "
                         f"(trained) stem: leave one of them out")
    if cfg['dataset'] not in ('cifar10', 'cifar100'):
        raise ValueError(f"dataset must be 'cifar10' or 'cifar100', got {cfg['dataset']!r}")
    decay_steps = cfg['decay_steps']
    if not (isinstance(decay_steps, (list, tuple)) and all(isinstance(m, int) and not isinstance(m, bool)
                                                            for m in decay_steps)):
        raise ValueError(f'--decay-steps must be step numbers, got {decay_steps!r}')
    if any(m < 1 for m in decay_steps):
        raise ValueError(f"--decay-steps must be positive step numbers (the lr drops after that many updates), got "
                         f"{' '.join(map(str, decay_steps))}")
    if list(decay_steps) != sorted(decay_steps):
        raise ValueError(f"decay_steps must be increasing, got {decay_steps}")
    if 'decay_steps' in given and decay_steps and decay_steps[-1] >= cfg['steps']:
        raise ValueError(f"--decay-steps {decay_steps[-1]} is not inside the run of --steps {cfg['steps']} (a decay "
                         f"at step m applies from update m on; each must be 1 to {cfg['steps'] - 1})")
    if not 0.0 <= cfg['label_smoothing'] < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {cfg['label_smoothing']}")
    if cfg['lr'] <= 0 or cfg['weight_decay'] < 0:
        raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {cfg['lr']}, {cfg['weight_decay']}")
    if not (isinstance(cfg['warmup_steps'], int) and cfg['warmup_steps'] >= 0):
        raise ValueError(f"--warmup-steps must be an integer >= 0, got {cfg['warmup_steps']!r}")
    if cfg['warmup_steps'] >= cfg['steps']:
        raise ValueError(f"--warmup-steps {cfg['warmup_steps']} must be less than --steps {cfg['steps']}: the warmup "
                         f"would be the whole run (the {cfg['sched']} schedule would never start)")
