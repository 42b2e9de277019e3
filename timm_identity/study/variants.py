"""The arms of the study: named model options of ``allconv_resnet_cifar`` beside the paper's own.

Every variant differs from the paper's network (``paper``: sigma = 1/(k^2 c) init, no batch norm, fixed
random projection head, avg-pool + zero-pad shortcuts) in the options its name says, and in nothing else.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

__all__ = ['VARIANTS', 'SIGNAL_VARIANTS', 'TRAIN_VARIANTS', 'REDUCED_WIDTHS', 'PAPER_WIDTHS', 'model_kwargs']

_BN = dict(norm_layer='batchnorm2d')

# name -> (timm.create_model kwargs on top of the architecture, what it is)
VARIANTS: Dict[str, Tuple[Dict[str, Any], str]] = {
    'paper': (dict(init='paper'), "the paper's: sigma = 1/(k^2 c), no BN"),
    'standard': (dict(init='standard'), 'standard init sigma = 1/(k sqrt c), no BN'),
    'zero': (dict(init='zero'), 'both branch convs zero, no BN'),
    'fixup': (dict(init='fixup'), 'Fixup (Zhang et al. 2019), no BN'),
    'gate': (dict(init='standard', branch_gate=True), 'SkipInit/ReZero gate alpha = 0, standard init, no BN'),
    'paper_bn': (dict(init='paper', **_BN), 'paper init + batch norm after each conv'),
    'standard_bn': (dict(init='standard', **_BN), 'standard init + batch norm (the usual ResNet start)'),
    'zero_bn': (dict(init='zero', **_BN), 'zero init + batch norm'),
    'fixup_bn': (dict(init='fixup', **_BN), 'Fixup + batch norm'),
    'gate_bn': (dict(init='standard', branch_gate=True, **_BN), 'gate + standard init + batch norm'),
    'linear_head': (dict(init='paper', head='linear'), 'paper, trained linear head instead of the fixed projection'),
    'proj': (dict(init='paper', shortcut='proj'), 'paper, 1x1 projection shortcuts instead of avg-pool + pad'),
}

# init x batch norm: the signal-propagation sweep
SIGNAL_VARIANTS: Tuple[str, ...] = ('paper', 'standard', 'zero', 'fixup', 'gate',
                                    'paper_bn', 'standard_bn', 'zero_bn', 'fixup_bn', 'gate_bn')
# the training grid's default arms
TRAIN_VARIANTS: Tuple[str, ...] = ('paper', 'standard', 'zero', 'paper_bn', 'standard_bn', 'linear_head', 'proj',
                                   'gate', 'fixup')

REDUCED_WIDTHS: Tuple[int, ...] = (16, 32, 64)   # the CPU study: 1/4 of Table 1's widths
PAPER_WIDTHS: Tuple[int, ...] = (64, 128, 256)   # Table 1


def model_kwargs(variant: str, blocks_per_stage: int, widths: Sequence[int] = REDUCED_WIDTHS,
                 stem_chs: int = 16) -> Dict[str, Any]:
    """``timm.create_model('allconv_resnet_cifar', **kwargs)`` kwargs of ``variant`` with
    ``blocks_per_stage`` blocks in each of Table 1's three stages (strides 1, 2, 2)."""
    if variant not in VARIANTS:
        raise ValueError(f'unknown study variant {variant!r}; choose from {sorted(VARIANTS)}')
    if blocks_per_stage < 1:
        raise ValueError(f'blocks per stage must be >= 1, got {blocks_per_stage}')
    return dict(depths=(blocks_per_stage,) * len(widths), widths=tuple(widths), stem_chs=stem_chs,
                **VARIANTS[variant][0])
