"""The paper's last layer: a fixed random projection to the class logits (Section 4).

"The last layer is a fixed random projection that is not trained." The projection is a buffer, not a
Parameter: it has no gradient, no optimizer or weight-decay group ever sees it, and it is saved in the
state dict so that reloaded weights compute the same function. Our reading of its distribution (the
paper does not give one): i.i.d. Gaussian entries with std ``1/sqrt(in_features)``, drawn from a fixed
seed, so the same ``(in_features, out_features, seed)`` always gives the same matrix.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['HEAD_TYPES', 'FixedRandomProjection', 'create_classifier']

HEAD_TYPES = ('fixed', 'linear')


class FixedRandomProjection(nn.Module):
    """``logits = x W^T`` with ``W ~ N(0, 1/in_features)`` drawn once from ``seed``; not trained."""

    weight: torch.Tensor

    def __init__(self, in_features: int, out_features: int, seed: int = 0, device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.seed = seed
        # drawn on CPU in float32 from its own generator, so the same seed gives the same W on every device,
        # then placed where the model is created (timm's device / dtype factory kwargs)
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(out_features, in_features, generator=generator, dtype=torch.float32)
        weight = (weight / math.sqrt(in_features)).to(device=device, dtype=dtype or torch.float32)
        self.register_buffer('weight', weight, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}, seed={self.seed}'


def create_classifier(num_features: int, num_classes: int, head: str = 'fixed', seed: int = 0, device=None,
                      dtype=None) -> nn.Module:
    """The classifier: ``fixed`` (the paper's untrained projection), ``linear`` (a trainable
    ``nn.Linear``, for downstream fine-tuning), or ``nn.Identity`` when ``num_classes == 0``."""
    if head not in HEAD_TYPES:
        raise ValueError(f"Unknown head {head!r}; expected one of {HEAD_TYPES}.")
    if num_classes <= 0:
        return nn.Identity()
    if head == 'fixed':
        return FixedRandomProjection(num_features, num_classes, seed=seed, device=device, dtype=dtype)
    return nn.Linear(num_features, num_classes, device=device, dtype=dtype)
