"""One optimizer update of ``train-cifar`` and the factories of what it uses: timm's optimizer and scheduler.
The loop (:mod:`.cifar_trainer`) and ``benchmarks/train_step.py`` both use :func:`train_step`."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .device import autocast

__all__ = ['build_optimizer', 'build_scheduler', 'train_step', 'clipped_parameters', 'CLIP_MODES']

CLIP_MODES = ('norm', 'value', 'agc')  # timm.utils.dispatch_clip_grad's modes


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


def clipped_parameters(model: torch.nn.Module, mode: str) -> List[torch.nn.Parameter]:
    """The parameters gradient clipping acts on: all of them, except for adaptive clipping (``'agc'``, NFNet),
    which leaves the trainable classifier out, as NFNet does (the fixed projection head has no parameters)."""
    params = list(model.parameters())
    if mode != 'agc':
        return params
    head = model.get_classifier() if hasattr(model, 'get_classifier') else None
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    return [p for p in params if id(p) not in head_ids]


def train_step(model, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, device: torch.device,
               amp: str = 'none', label_smoothing: float = 0.0, clip_grad: Optional[float] = None,
               clip_mode: str = 'norm') -> Tuple[torch.Tensor, torch.Tensor]:
    """One update: forward (optionally bf16 autocast), cross-entropy in fp32, backward, gradient clipping when
    ``clip_grad`` is set (timm's ``dispatch_clip_grad``: total norm, value, or adaptive ``agc`` with
    ``clip_grad`` the ratio), optimizer step. Returns the detached loss and logits; nothing waits for the device."""
    with autocast(device, amp):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad is not None:
        from timm.utils import dispatch_clip_grad
        dispatch_clip_grad(clipped_parameters(model, clip_mode), clip_grad, mode=clip_mode)
    optimizer.step()
    return loss.detach(), logits.detach()
