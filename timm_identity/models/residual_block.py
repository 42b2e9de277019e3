"""The paper's residual block ``x + C2(ReLU(C1 x))`` and its shortcuts (Section 4).

The block is the convolutional form of Section 3's ``h + T_{U,V,s}(h)`` with
``T_{U,V,s}(h) = V ReLU(U h + s)``: ``C1`` plays ``U`` (its bias is ``s``), ``C2`` plays ``V``.
There is no batch norm, no dropout and no max pool; with ``C1 = C2 = 0`` the block is exactly its
shortcut, and the paper's tiny init (``sigma = 1 / (k^2 c)``) starts every block close to it.
"""
import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    'INIT_SCHEMES', 'SHORTCUT_TYPES', 'init_std', 'init_conv_', 'AvgPoolPadShortcut', 'create_shortcut',
    'AllConvResidualBlock',
]

INIT_SCHEMES = ('paper', 'standard', 'zero')
SHORTCUT_TYPES = ('avgpool', 'proj')


def init_std(kernel_size: int, out_chs: int, scheme: str = 'paper') -> float:
    """Std of the Gaussian init for a ``kernel_size x kernel_size`` conv with ``out_chs`` outputs.

    ``paper``: ``1 / (k^2 c)``, the paper's residual-conv init ("rather than 1/(k sqrt(c)) used for
    standard convolutional layers"); ``standard``: ``1 / (k sqrt(c))``; ``zero``: 0 (exact identity).
    """
    if scheme == 'paper':
        return 1.0 / (kernel_size ** 2 * out_chs)
    if scheme == 'standard':
        return 1.0 / (kernel_size * math.sqrt(out_chs))
    if scheme == 'zero':
        return 0.0
    raise ValueError(f"Unknown init scheme {scheme!r}; expected one of {INIT_SCHEMES}.")


def init_conv_(conv: nn.Conv2d, scheme: str = 'paper') -> None:
    """Draw ``conv.weight ~ N(0, init_std(k, c_out, scheme)^2)`` and zero its bias, in place."""
    std = init_std(conv.kernel_size[0], conv.out_channels, scheme)
    with torch.no_grad():
        if std > 0:
            nn.init.normal_(conv.weight, mean=0.0, std=std)
        else:
            nn.init.zeros_(conv.weight)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


class AvgPoolPadShortcut(nn.Module):
    """Parameter-free shortcut where the shape changes: average pooling for the stride, then zero
    channel padding from ``in_chs`` to ``out_chs`` (the paper's "no projection conv" choice).

    Pooling uses ``ceil_mode=True, count_include_pad=False`` so that its output size always equals
    that of the strided 3x3 conv beside it, also for odd input sizes.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f'AvgPoolPadShortcut cannot reduce channels ({in_chs} -> {out_chs}); use shortcut="proj".')
        self.in_chs = in_chs
        self.out_chs = out_chs
        self.stride = stride
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        if self.out_chs > self.in_chs:
            x = F.pad(x, (0, 0, 0, 0, 0, self.out_chs - self.in_chs))
        return x

    def extra_repr(self) -> str:
        return f'{self.in_chs}, {self.out_chs}, stride={self.stride}'


def create_shortcut(in_chs: int, out_chs: int, stride: int, shortcut: str = 'avgpool') -> nn.Module:
    """Identity where the shape is kept; else ``avgpool`` (pool + zero pad) or ``proj`` (strided 1x1 conv)."""
    if shortcut not in SHORTCUT_TYPES:
        raise ValueError(f"Unknown shortcut {shortcut!r}; expected one of {SHORTCUT_TYPES}.")
    if in_chs == out_chs and stride == 1:
        return nn.Identity()
    if shortcut == 'avgpool':
        return AvgPoolPadShortcut(in_chs, out_chs, stride)
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)


class AllConvResidualBlock(nn.Module):
    """``shortcut(x) + C2(ReLU(C1 x))``: one ReLU, no normalisation by default.

    ``C1`` carries the block's stride and channel change, ``C2`` has stride 1. Both are drawn with the
    chosen init scheme (``paper`` by default). ``norm_layer`` (an ablation, off in the paper) adds a norm
    after each conv.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            kernel_size: int = 3,
            bias: bool = True,
            shortcut: str = 'avgpool',
            init: str = 'paper',
            norm_layer: Optional[Callable[[int], nn.Module]] = None,
            act_layer: Callable[..., nn.Module] = nn.ReLU,
    ):
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, bias=bias)
        self.norm1 = norm_layer(out_chs) if norm_layer is not None else nn.Identity()
        self.act = act_layer()
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size, stride=1, padding=padding, bias=bias)
        self.norm2 = norm_layer(out_chs) if norm_layer is not None else nn.Identity()
        self.shortcut = create_shortcut(in_chs, out_chs, stride, shortcut)
        init_conv_(self.conv1, init)
        init_conv_(self.conv2, init)
        if isinstance(self.shortcut, nn.Conv2d):
            init_conv_(self.shortcut, 'standard')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        # The stream keeps x's dtype: under autocast only the convs run in bf16/fp16. A freshly initialised
        # branch is ~1e-3 of the stream, below bf16's resolution (~4e-3): a bf16 stream would round it away.
        return self.shortcut(x).to(x.dtype) + residual.to(x.dtype)
