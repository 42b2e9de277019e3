"""Tiny stand-ins for the real datasets, in their real on-disk formats, for tests and examples.

``make_tiny_cifar`` writes a CIFAR release exactly as the official python version lays it out
(Python pickles with the official byte-string keys, the meta file, the ``.tar.gz``), only with a few
random images. ``make_tiny_imagenet`` writes an ILSVRC-2012-style folder tree of small JPEGs.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass

import numpy as np

from .cifar import CIFAR10_CLASSES, CIFAR_LAYOUTS, CifarSplit

__all__ = ['TinyCifar', 'make_tiny_cifar', 'make_tiny_imagenet']


@dataclass
class TinyCifar:
    """What :func:`make_tiny_cifar` wrote: the paths and the ground truth per split."""
    folder: str  # the unpacked release folder
    archive: str | None  # the .tar.gz (None when not written)
    splits: dict[str, CifarSplit]  # 'train' / 'test' -> images, fine labels, fine class names
    coarse_labels: dict[str, np.ndarray]  # CIFAR-100 only, else empty


def _dump(obj: dict, path: str) -> None:
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=2)


def make_tiny_cifar(
        out_dir: str | os.PathLike,
        dataset: str = 'cifar10',
        num_train: int = 10,
        num_test: int = 5,
        seed: int = 0,
        archive: bool = True,
) -> TinyCifar:
    """Write a tiny CIFAR-10/100 release in the official format under ``out_dir``.

    Images are uniform random uint8. CIFAR-10's train set is spread over the five official
    ``data_batch_*`` files (so ``num_train`` should be at least 5 for every file to hold images);
    CIFAR-100 gets 100 fine classes and 20 coarse ones, as the real one.
    """
    layout = CIFAR_LAYOUTS[dataset]
    rng = np.random.default_rng(seed)
    out_dir = os.fspath(out_dir)
    folder = os.path.join(out_dir, layout.folder_name)
    os.makedirs(folder, exist_ok=True)

    if dataset == 'cifar10':
        fine_names = list(CIFAR10_CLASSES)
        coarse_names: list[str] = []
        _dump({b'num_cases_per_batch': 10000, b'label_names': [n.encode() for n in fine_names],
               b'num_vis': 32 * 32 * 3}, os.path.join(folder, layout.meta_file))
    else:
        fine_names = [f'fine_{i:02d}' for i in range(100)]
        coarse_names = [f'coarse_{i:02d}' for i in range(20)]
        _dump({b'fine_label_names': [n.encode() for n in fine_names],
               b'coarse_label_names': [n.encode() for n in coarse_names]}, os.path.join(folder, layout.meta_file))

    splits, coarse = {}, {}
    for split, count in (('train', num_train), ('test', num_test)):
        images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, len(fine_names), size=count).astype(np.int64)
        coarse_labels = labels % 20 if coarse_names else None
        files = layout.split_files[split]
        for i, (member, idx) in enumerate(zip(files, np.array_split(np.arange(count), len(files)))):
            batch = {
                b'batch_label': f'{split} batch {i + 1} of {len(files)}'.encode(),
                b'data': images[idx].transpose(0, 3, 1, 2).reshape(len(idx), -1),  # official: CHW rows
                b'filenames': [f'img_{split}_{j:05d}.png'.encode() for j in idx],
            }
            if dataset == 'cifar10':
                batch[b'labels'] = [int(v) for v in labels[idx]]
            else:
                batch[b'fine_labels'] = [int(v) for v in labels[idx]]
                batch[b'coarse_labels'] = [int(v) for v in coarse_labels[idx]]
            _dump(batch, os.path.join(folder, member))
        splits[split] = CifarSplit(images=images, labels=labels, classes=fine_names)
        if coarse_labels is not None:
            coarse[split] = coarse_labels

    archive_path = None
    if archive:
        archive_path = os.path.join(out_dir, layout.archive_name)
        with tarfile.open(archive_path, 'w:gz') as tar:
            tar.add(folder, arcname=layout.folder_name)
    return TinyCifar(folder=folder, archive=archive_path, splits=splits, coarse_labels=coarse)



def make_tiny_imagenet(
        out_dir: str | os.PathLike,
        wnids: tuple[str, ...] = ('n01440764', 'n01443537', 'n01484850'),
        num_train_per_class: int = 3,
        num_val_per_class: int = 2,
        val_layout: str = 'folders',
        seed: int = 0,
        size: int = 16,
) -> dict[str, dict[str, bytes]]:
    """Write ``train/<wnid>/<wnid>_<i>.JPEG`` and ``val/`` under ``out_dir``, as random small JPEGs.

    ``val_layout='folders'``: ``val/<wnid>/ILSVRC2012_val_*.JPEG``; ``'flat'``: ``val/ILSVRC2012_val_*.JPEG``
    plus ``out_dir/val_labels.txt`` with one ``<image name> <wnid>`` line per image.
    Returns ``{split: {path relative to the split folder: the JPEG bytes written}}``.
    """
    from PIL import Image  # Pillow comes with torchvision / timm

    if val_layout not in ('folders', 'flat'):
        raise ValueError(f"val_layout must be 'folders' or 'flat', got {val_layout!r}")
    rng = np.random.default_rng(seed)
    out_dir = os.fspath(out_dir)
    written: dict[str, dict[str, bytes]] = {'train': {}, 'val': {}}

    def jpeg() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(buf, format='JPEG')
        return buf.getvalue()

    val_lines = []
    val_index = 0
    for wnid in wnids:
        for i in range(num_train_per_class):
            written['train'][f'{wnid}/{wnid}_{i}.JPEG'] = jpeg()
        for _ in range(num_val_per_class):
            val_index += 1
            name = f'ILSVRC2012_val_{val_index:08d}.JPEG'
            written['val'][f'{wnid}/{name}' if val_layout == 'folders' else name] = jpeg()
            val_lines.append(f'{name} {wnid}')
    for split, files in written.items():
        for rel, data in files.items():
            path = os.path.join(out_dir, split, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'wb') as f:
                f.write(data)
    if val_layout == 'flat':
        with open(os.path.join(out_dir, 'val_labels.txt'), 'w') as f:
            f.write('\n'.join(val_lines) + '\n')
    return written
