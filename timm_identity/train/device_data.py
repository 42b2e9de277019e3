"""CIFAR held on the training device as uint8, with the standard augmentation done there.

The whole training set lives on the device (GPU or CPU) as one uint8 tensor, zero-padded once by
``pad`` pixels on every side (``(N, 32 + 2 pad, 32 + 2 pad, 3)``, NHWC). Each step draws the next
``batch_size`` indices of a running random permutation (every image once per epoch; an epoch is
``N / batch_size`` steps, not rounded, so batches run across epoch ends as in the paper's "390.6 steps
= 1 epoch"), and one vectorised gather does the random 32x32 crop and the horizontal flip for the
whole batch; then per-channel mean/std normalisation. No per-image Python, no host synchronisation:
every random number comes from one ``torch.Generator`` on the device, whose state (with the
permutation and its cursor) is part of the checkpoint, so a resumed run sees the same batches.

The padding is with zeros on the raw 0..255 pixels (black), before normalisation, as torchvision's
``RandomCrop(32, padding=4)`` before ``Normalize`` does.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import torch

__all__ = ['channel_stats', 'DeviceCifarTrain', 'normalize_uint8', 'iterate_eval_batches']


def channel_stats(images: np.ndarray) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std (population) of uint8 NHWC images, on the 0..1 scale."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0))


def normalize_uint8(
        x: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        channels_last: bool = False,
) -> torch.Tensor:
    """uint8 NHWC batch -> float32 NCHW ``(x / 255 - mean) / std`` (in channels_last memory if asked)."""
    x = x.permute(0, 3, 1, 2).float().div_(255.0).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)


class DeviceCifarTrain:
    """Training images and labels on ``device`` and the per-step augmented batches drawn from them.

    Args:
        images: uint8 (N, 32, 32, 3) HWC RGB (a :class:`~timm_identity.data.cifar.CifarSplit`'s).
        labels: int64 (N,).
        batch_size: images per step.
        mean, std: per-channel normalisation on the 0..1 scale.
        device: where the data, the augmentation and the generator live.
        seed: seed of the device generator (permutation, crop offsets, flips).
        augment: random crop + flip (False: the plain images, still shuffled).
        pad: zero padding before the random crop (the paper's "standard" augmentation: 4).
        hflip: random horizontal flips with probability 1/2.
        channels_last: return batches in channels_last memory format.
    """

    def __init__(
            self,
            images: np.ndarray,
            labels: np.ndarray,
            batch_size: int,
            mean: Sequence[float],
            std: Sequence[float],
            device: torch.device,
            seed: int = 0,
            augment: bool = True,
            pad: int = 4,
            hflip: bool = True,
            channels_last: bool = False,
    ):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f'images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}')
        if len(images) != len(labels):
            raise ValueError(f'{len(images)} images but {len(labels)} labels')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        if batch_size > len(images):
            raise ValueError(f'batch_size {batch_size} is larger than the training set ({len(images)} images)')
        self.device = torch.device(device)
        self.num_images = len(images)
        self.batch_size = batch_size
        self.height, self.width = images.shape[1:3]
        self.augment = augment
        self.pad = pad if augment else 0
        self.hflip = hflip and augment
        self.channels_last = channels_last
        imgs = torch.from_numpy(np.ascontiguousarray(images))
        if self.pad:
            imgs = torch.nn.functional.pad(imgs, (0, 0, self.pad, self.pad, self.pad, self.pad))  # zeros, NHWC
        self.images = imgs.to(self.device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._arange_h = torch.arange(self.height, device=self.device)
        self._arange_w = torch.arange(self.width, device=self.device)
        self.epoch = 0
        self.cursor = 0
        self.perm = self._new_perm()

    def _new_perm(self) -> torch.Tensor:
        return torch.randperm(self.num_images, generator=self.generator, device=self.device)

    def next_indices(self) -> torch.Tensor:
        """The next ``batch_size`` indices of the running permutation (a new one at each epoch end)."""
        end = self.cursor + self.batch_size
        if end <= self.num_images:
            idx = self.perm[self.cursor:end]
            self.cursor = end
            return idx
        tail = self.perm[self.cursor:]
        self.perm = self._new_perm()
        self.epoch += 1
        self.cursor = self.batch_size - tail.numel()
        return torch.cat([tail, self.perm[:self.cursor]])

    def augment_uint8(self, idx: torch.Tensor) -> torch.Tensor:
        """Random crop (+ flip) of the padded images ``idx`` in one gather: uint8 (B, H, W, C)."""
        b = idx.numel()
        if not self.augment:
            return self.images[idx]
        g = self.generator
        dy = torch.randint(0, 2 * self.pad + 1, (b, 1), generator=g, device=self.device)
        dx = torch.randint(0, 2 * self.pad + 1, (b, 1), generator=g, device=self.device)
        cols = self._arange_w.expand(b, -1)
        if self.hflip:
            flip = torch.rand((b, 1), generator=g, device=self.device) < 0.5
            cols = torch.where(flip, (self.width - 1) - cols, cols)
        rows = dy + self._arange_h  # (B, H)
        cols = dx + cols  # (B, W)
        return self.images[idx.view(b, 1, 1), rows.view(b, -1, 1), cols.view(b, 1, -1)]

    def next_batch(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)``: float32 NCHW normalised augmented images and int64 labels, on the device."""
        idx = self.next_indices()
        x = normalize_uint8(self.augment_uint8(idx), self.mean, self.std, self.channels_last)
        return x, self.labels[idx]

    def state_dict(self) -> Dict[str, object]:
        return {
            'generator': self.generator.get_state(),
            'perm': self.perm.cpu(),
            'cursor': self.cursor,
            'epoch': self.epoch,
            'num_images': self.num_images,
            'batch_size': self.batch_size,
            'device_type': self.device.type,
        }

    def load_state_dict(self, state: Dict[str, Any], seed_after_move: int = 0) -> None:
        if state['num_images'] != self.num_images:
            raise ValueError(f"checkpoint was taken on a training set of {state['num_images']} images, "
                             f"this one has {self.num_images}")
        if state.get('device_type', self.device.type) != self.device.type:
            # CPU and CUDA generators have different states (and streams): the batches after the resume cannot
            # be the ones the original device would have drawn. Continue with a reproducible stream instead.
            warnings.warn(f"the data generator state was saved on {state['device_type']}, this run is on "
                          f"{self.device.type}: continuing with a fresh generator (seed {seed_after_move}), so the "
                          f"batches differ from an uninterrupted run on {state['device_type']}")
            self.generator.manual_seed(seed_after_move)
        else:
            self.generator.set_state(state['generator'])
        self.perm = state['perm'].to(self.device)
        self.cursor = int(state['cursor'])
        self.epoch = int(state['epoch'])


def iterate_eval_batches(
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        channels_last: bool = False,
):
    """Yield ``(x, y)`` normalised test batches in order (no augmentation) from uint8 NHWC on the device."""
    for start in range(0, len(labels), batch_size):
        yield (normalize_uint8(images[start:start + batch_size], mean, std, channels_last),
               labels[start:start + batch_size])
