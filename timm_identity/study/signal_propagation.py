"""Signal propagation at initialisation: how far each residual block moves the stream, how large the
logits are and how large the gradient reaching the first layer is, before any training.

For a network ``h_0 = stem(x)``, ``h_i = shortcut_i(h_{i-1}) + branch_i(h_{i-1})`` (``i = 1..L``),
logits ``= head(pool(h_L))`` and the cross-entropy loss on a batch of real images, :func:`measure_signal`
returns

- ``branch_ratio[i] = ||h_i - shortcut_i(h_{i-1})|| / ||shortcut_i(h_{i-1})||`` (Frobenius norms over
  the batch): 0 for a block that is exactly its shortcut, about 1e-3 for the paper's tiny init;
- ``logit_rms = sqrt(mean(logits^2))`` over the batch and classes;
- ``stem_grad_norm = ||d loss / d W_stem||``, the gradient at the first layer;
- ``loss``.

The network runs in train mode, as in the first training step: batch norm (where present) normalises with
the batch's statistics. (Its running statistics are updated by the call; measure a fresh model.)
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['measure_signal', 'signal_sweep']


def _finite_or_none(value: float):
    return value if math.isfinite(value) else None


def measure_signal(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Dict[str, Any]:
    """The measures above for an ``AllConvResNet`` on the batch ``(x, y)`` (non-finite values are None)."""
    model.train()
    model.zero_grad(set_to_none=True)
    h = model.stem(x)
    ratios: List[float] = []
    for stage in model.stages:
        for block in stage:
            out = block(h)
            with torch.no_grad():
                stream = block.shortcut(h).double()  # float64: a diverging stream overflows float32 norms
                ratios.append(((out.double() - stream).norm() / stream.norm()).item())
            h = out
    logits = model.forward_head(h)
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    grad = model.stem.weight.grad
    return {
        'branch_ratio': [_finite_or_none(r) for r in ratios],
        'logit_rms': _finite_or_none(logits.detach().double().pow(2).mean().sqrt().item()),
        'stem_grad_norm': _finite_or_none(grad.double().norm().item()) if grad is not None else None,
        'loss': _finite_or_none(loss.item()),
    }


def _summarise(ratios: Sequence[Any]) -> Dict[str, Any]:
    finite = [r for r in ratios if r is not None]
    if len(finite) < len(ratios) or not finite:
        return {'branch_ratio_median': None, 'branch_ratio_max': None, 'branch_ratio_last': None}
    ordered = sorted(finite)
    return {'branch_ratio_median': ordered[len(ordered) // 2], 'branch_ratio_max': ordered[-1],
            'branch_ratio_last': finite[-1]}


def signal_sweep(
        variants: Iterable[str],
        blocks_per_stage: Iterable[int],
        x: torch.Tensor,
        y: torch.Tensor,
        widths: Sequence[int],
        stem_chs: int = 16,
        seed: int = 0,
        num_classes: int = 10,
        progress: bool = True,
) -> List[Dict[str, Any]]:
    """:func:`measure_signal` for every (variant, depth): one fresh model each, built from ``seed``."""
    import timm
    import timm_identity  # noqa: F401  (registers the models)
    from tqdm import tqdm

    from .variants import model_kwargs
    configs = [(v, n) for v in variants for n in blocks_per_stage]
    records = []
    for variant, n in tqdm(configs, desc='signal', unit='net', disable=not progress, dynamic_ncols=True):
        torch.manual_seed(seed)
        kwargs = model_kwargs(variant, n, widths, stem_chs)
        model = timm.create_model('allconv_resnet_cifar', num_classes=num_classes, **kwargs).to(x.device)
        result = measure_signal(model, x, y)
        records.append({'variant': variant, 'blocks_per_stage': n, 'blocks': n * len(widths),
                        **_summarise(result['branch_ratio']), **result})
    return records
