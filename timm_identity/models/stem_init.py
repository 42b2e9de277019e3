"""A data-dependent init of the first convolution: patch whitening.

The paper's net starts with one plain conv (the stem, ``h_0 = A_0 x``) whose init it does not specify; ours is the
'standard' fan-in init. :func:`whiten_conv_` instead sets its filters from the training images, as the whitening
layer of the CIFAR-10 speedruns (hlb-cifar10, airbench) does: filter ``i`` is the ``i``-th principal direction of
the ``k x k`` image patches, scaled by ``1 / sqrt(lambda_i + eps)``, so the stem's output channels start
decorrelated with (about) unit variance. It is an init, not a normalisation: nothing is computed from a batch while
training, and the filters then train like any other weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['whiten_conv_']


@torch.no_grad()
def whiten_conv_(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4, chunk: int = 500) -> None:
    """Set ``conv``'s filters to the leading whitening directions of the patches of ``images``; zero its bias.

    Args:
        conv: an ungrouped conv with at most ``in_chans * k * k`` output channels (one filter per principal
            direction, the leading ones first).
        images: normalised float images, NCHW, as the model sees them (e.g. a few thousand training images).
        eps: added to each eigenvalue before the ``1 / sqrt``, so that near-empty directions are not blown up.
        chunk: images per step of the patch second-moment sum (memory).
    """
    k_h, k_w = conv.kernel_size
    dim = conv.in_channels * k_h * k_w
    if conv.groups != 1 or conv.out_channels > dim:
        raise ValueError(f'whitening init needs an ungrouped conv with at most in_chans x k x k = {dim} output '
                         f'channels, got {conv.out_channels} (groups {conv.groups})')
    if images.ndim != 4 or images.shape[1] != conv.in_channels or not images.is_floating_point():
        raise ValueError(f'whitening init needs normalised float images (N, {conv.in_channels}, H, W), got '
                         f'{tuple(images.shape)} {images.dtype}')
    moment = torch.zeros(dim, dim, dtype=torch.float64, device=images.device)
    count = 0
    for batch in images.split(chunk):
        patches = F.unfold(batch.double(), (k_h, k_w)).transpose(1, 2).reshape(-1, dim)  # (C, kh, kw) order
        moment += patches.T @ patches
        count += len(patches)
    if count == 0:
        raise ValueError('whitening init needs at least one image patch')
    eigenvalues, eigenvectors = torch.linalg.eigh(moment / count)  # ascending
    top = eigenvalues.argsort(descending=True)[:conv.out_channels]
    filters = eigenvectors[:, top].T / (eigenvalues[top].clamp_min(0) + eps).sqrt()[:, None]
    conv.weight.copy_(filters.reshape(conv.weight.shape).to(conv.weight.dtype))
    if conv.bias is not None:
        conv.bias.zero_()
