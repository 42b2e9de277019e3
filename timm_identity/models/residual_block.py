"""The paper's residual block ``x + C2(ReLU(C1 x))`` and its shortcuts (Section 4).

The block is the convolutional form of Section 3's ``h + T_{U,V,s}(h)`` with
``T_{U,V,s}(h) = V ReLU(U h + s)``: ``C1`` plays ``U`` (its bias is ``s``), ``C2`` plays ``V``.
There is no batch norm, no dropout and no max pool; with ``C1 = C2 = 0`` the block is exactly its
shortcut, and the paper's tiny init (``sigma = 1 / (k^2 c)``) starts every block close to it.

Two later answers to the same question (how to start a deep residual net near the identity without
normalisation) are options here, for the study in :mod:`timm_identity.study`: a SkipInit / ReZero gate
(``branch_gate=True``) and Fixup (``init='fixup'``). Both are off by default.
"""
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    'INIT_SCHEMES', 'SHORTCUT_TYPES', 'init_std', 'init_conv_', 'fixup_std', 'AvgPoolPadShortcut',
    'create_shortcut', 'ScalarBias', 'ScalarScale', 'AllConvResidualBlock',
]

INIT_SCHEMES = ('paper', 'standard', 'zero', 'fixup')
SHORTCUT_TYPES = ('avgpool', 'proj')


def init_std(kernel_size: int, out_chs: int, scheme: str = 'paper') -> float:
    """Std of the Gaussian init for a ``kernel_size x kernel_size`` conv with ``out_chs`` outputs.

    ``paper``: ``1 / (k^2 c)``, the paper's residual-conv init ("rather than 1/(k sqrt(c)) used for
    standard convolutional layers"); ``standard``: ``1 / (k sqrt(c))``; ``zero``: 0 (exact identity).
    (``fixup`` draws each conv of a branch differently and needs the depth: :func:`fixup_std`.)
    """
    if scheme == 'paper':
        return 1.0 / (kernel_size ** 2 * out_chs)
    if scheme == 'standard':
        return 1.0 / (kernel_size * math.sqrt(out_chs))
    if scheme == 'zero':
        return 0.0
    if scheme == 'fixup':
        raise ValueError("init 'fixup' has no single std: it depends on the depth (fixup_std) and zeroes C2.")
    raise ValueError(f"Unknown init scheme {scheme!r}; expected one of {INIT_SCHEMES}.")


def fixup_std(kernel_size: int, out_chs: int, num_blocks: int, branch_layers: int = 2) -> float:
    """Fixup's std for the first conv of a branch: He init ``sqrt(2 / (k^2 c_out))`` (fan-out, as Fixup's
    reference code draws it) times ``L^(-1/(2m-2))``, ``L = num_blocks`` residual branches of ``m =
    branch_layers`` layers each (``L^(-1/2)`` for our two-conv branches)."""
    return math.sqrt(2.0 / (kernel_size ** 2 * out_chs)) * num_blocks ** (-1.0 / (2 * branch_layers - 2))


def init_conv_(conv: nn.Conv2d, scheme: str = 'paper', std: Optional[float] = None) -> None:
    """Draw ``conv.weight ~ N(0, std^2)`` (default ``init_std(k, c_out, scheme)``) and zero its bias, in place."""
    if std is None:
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
        self.pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                     else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        if self.out_chs > self.in_chs:
            x = F.pad(x, (0, 0, 0, 0, 0, self.out_chs - self.in_chs))
        return x

    def extra_repr(self) -> str:
        return f'{self.in_chs}, {self.out_chs}, stride={self.stride}'


def create_shortcut(in_chs: int, out_chs: int, stride: int, shortcut: str = 'avgpool', device=None,
                    dtype=None) -> nn.Module:
    """Identity where the shape is kept; else ``avgpool`` (pool + zero pad) or ``proj`` (strided 1x1 conv)."""
    if shortcut not in SHORTCUT_TYPES:
        raise ValueError(f"Unknown shortcut {shortcut!r}; expected one of {SHORTCUT_TYPES}.")
    if in_chs == out_chs and stride == 1:
        return nn.Identity()
    if shortcut == 'avgpool':
        return AvgPoolPadShortcut(in_chs, out_chs, stride)
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False, device=device, dtype=dtype)


class ScalarBias(nn.Module):
    """``x + b``: one learnable scalar ``b`` for the whole tensor, starting at 0 (Fixup's scalar bias)."""

    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.to(x.dtype)


class ScalarScale(nn.Module):
    """``s * x``: one learnable scalar ``s`` starting at ``init_value`` (0: the SkipInit / ReZero gate;
    1: Fixup's multiplier)."""

    def __init__(self, init_value: float = 1.0, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.full((1,), float(init_value), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.to(x.dtype)


class AllConvResidualBlock(nn.Module):
    """``shortcut(x) + C2(ReLU(C1 x))``: one ReLU, no normalisation by default.

    ``C1`` carries the block's stride and channel change, ``C2`` has stride 1. Both are drawn with the
    chosen init scheme (``paper`` by default). ``norm_layer`` (an ablation, off in the paper) adds a norm
    after each conv.

    ``branch_gate=True``: SkipInit (De & Smith 2020) / ReZero (Bachlechner et al. 2020),
    ``shortcut(x) + alpha * C2(ReLU(C1 x))`` with one learnable scalar ``alpha`` per block starting at 0, so
    every block starts as exactly its shortcut whatever the conv init (the convs keep ``init``).

    ``init='fixup'``: Fixup (Zhang, Dauphin & Ma, ICLR 2019, Section 3 "Fixup initialization", m = 2 layers
    per branch), as its reference CIFAR code (``FixupBasicBlock``) does it::

        b = x + bias1a
        out = shortcut(b if the shortcut changes the shape else x)
              + scale * C2(ReLU(C1(b) + bias1b) + bias2a) + bias2b

    ``C2`` is zero-initialised, ``C1`` drawn with He's fan-out std ``sqrt(2 / (k^2 c_out))`` times
    ``L^(-1/(2m-2)) = L^(-1/2)`` (``num_blocks`` = L, every residual block of the network); the four scalar
    biases start at 0 and ``scale`` at 1; a ``proj`` shortcut keeps the standard init. Where it differs from
    the paper's recipe: our convs keep their per-channel biases (``conv_bias``, zero at init, so the start is
    the same; Fixup's convs have none), the scalars get no weight decay and the same lr as the rest (timm's
    optimizer groups; Fixup's code trains them with lr / 10 and weight decay), and the classifier-level
    parts are the model's business (see ``AllConvResNet``). With ``norm_layer`` the norms sit after each
    conv as usual (Fixup has none).
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
            branch_gate: bool = False,
            num_blocks: Optional[int] = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}  # timm's factory kwargs: where and in which dtype to create
        fixup = init == 'fixup'
        if fixup and not (isinstance(num_blocks, int) and num_blocks >= 1):
            raise ValueError(f"init='fixup' needs num_blocks (L, the number of residual blocks in the "
                             f"network) >= 1, got {num_blocks!r}.")
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, bias=bias, **dd)
        self.norm1 = norm_layer(out_chs).to(**dd) if norm_layer is not None else nn.Identity()
        self.act = act_layer()
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size, stride=1, padding=padding, bias=bias, **dd)
        self.norm2 = norm_layer(out_chs).to(**dd) if norm_layer is not None else nn.Identity()
        self.shortcut = create_shortcut(in_chs, out_chs, stride, shortcut, **dd)
        # Fixup's scalar biases / multiplier (Identity otherwise: the paper's block has none)
        self.bias1a = ScalarBias(**dd) if fixup else nn.Identity()
        self.bias1b = ScalarBias(**dd) if fixup else nn.Identity()
        self.bias2a = ScalarBias(**dd) if fixup else nn.Identity()
        self.scale = ScalarScale(1.0, **dd) if fixup else nn.Identity()
        self.bias2b = ScalarBias(**dd) if fixup else nn.Identity()
        # Fixup feeds x + bias1a to a shape-changing shortcut, plain x to an identity one
        self.shortcut_sees_bias = fixup and not isinstance(self.shortcut, nn.Identity)
        self.gate = ScalarScale(0.0, **dd) if branch_gate else nn.Identity()
        if fixup:
            init_conv_(self.conv1, std=fixup_std(kernel_size, out_chs, num_blocks))
            init_conv_(self.conv2, 'zero')
        else:
            init_conv_(self.conv1, init)
            init_conv_(self.conv2, init)
        if isinstance(self.shortcut, nn.Conv2d):
            init_conv_(self.shortcut, 'standard')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        biased = self.bias1a(x)
        residual = self.act(self.bias1b(self.norm1(self.conv1(biased))))
        residual = self.bias2b(self.scale(self.norm2(self.conv2(self.bias2a(residual)))))
        residual = self.gate(residual)
        if self.shortcut_sees_bias:
            x = biased
        # The stream keeps x's dtype: under autocast only the convs run in bf16/fp16. A freshly initialised
        # branch is ~1e-3 of the stream, below bf16's resolution (~4e-3): a bf16 stream would round it away.
        return self.shortcut(x).to(x.dtype) + residual.to(x.dtype)
