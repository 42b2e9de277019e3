"""A small sample of real CIFAR-10 test images that ships with the package (``timm-identity demo`` uses it).

``samples/cifar10_test_sample.png`` is a grid of 100 images of CIFAR-10's test split (10 per class: the first
10 of each class in the order of the test batch, in class order), 32x32 each, 10 to a row;
``samples/cifar10_test_sample.json`` gives their labels, class names and the SHA-256 of their pixels (uint8
NHWC), checked on every read. ``tools/make_demo_sample.py`` writes both from the official test batch.
"""
from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import List, Tuple

import numpy as np

__all__ = ['SAMPLE_PNG', 'SAMPLE_JSON', 'samples_dir', 'load_cifar10_sample', 'write_cifar10_sample', 'select_sample']

SAMPLE_PNG = 'cifar10_test_sample.png'
SAMPLE_JSON = 'cifar10_test_sample.json'
PER_ROW = 10


def samples_dir() -> Path:
    """The folder of the shipped sample (package data of ``timm_identity.data``)."""
    return Path(str(resources.files('timm_identity.data') / 'samples'))


def select_sample(labels: np.ndarray, per_class: int = 10) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class, class by class."""
    labels = np.asarray(labels)
    picks = [np.flatnonzero(labels == c)[:per_class] for c in range(int(labels.max()) + 1)]
    if any(len(p) < per_class for p in picks):
        raise ValueError(f'every class needs at least {per_class} images')
    return np.concatenate(picks)


def write_cifar10_sample(images: np.ndarray, labels: np.ndarray, classes: List[str], indices: np.ndarray,
                         out_dir: str | Path) -> Tuple[Path, Path]:
    """Write the grid PNG and its JSON (labels, class names, indices, pixel SHA-256) into ``out_dir``."""
    from PIL import Image
    picked = np.ascontiguousarray(images[indices], dtype=np.uint8)
    n, h, w, c = picked.shape
    rows = -(-n // PER_ROW)
    grid = np.zeros((rows * h, PER_ROW * w, c), dtype=np.uint8)
    for i, img in enumerate(picked):
        r, k = divmod(i, PER_ROW)
        grid[r * h:(r + 1) * h, k * w:(k + 1) * w] = img
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, meta = out_dir / SAMPLE_PNG, out_dir / SAMPLE_JSON
    Image.fromarray(grid).save(png, optimize=True)
    meta.write_text(json.dumps({
        'what': 'CIFAR-10 test split: the first images of each class in test-batch order, 10 per class',
        'count': int(n), 'image_size': [h, w], 'per_row': PER_ROW,
        'labels': [int(labels[i]) for i in indices], 'classes': list(classes),
        'test_batch_indices': [int(i) for i in indices],
        'pixels_sha256': hashlib.sha256(picked.tobytes()).hexdigest(),
    }, indent=1) + '\n')
    return png, meta


def load_cifar10_sample(folder: str | Path | None = None) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(images uint8 NHWC, labels, class names) of the shipped sample; a damaged file is a clear error."""
    from PIL import Image
    folder = Path(folder) if folder is not None else samples_dir()
    png, meta_path = folder / SAMPLE_PNG, folder / SAMPLE_JSON
    try:
        meta = json.loads(meta_path.read_text())
        grid = np.asarray(Image.open(png).convert('RGB'))
    except (OSError, ValueError) as e:
        raise ValueError(f'the demo image sample in {folder} is not readable ({e})') from None
    h, w = meta['image_size']
    per_row, n = meta['per_row'], meta['count']
    images = np.stack([grid[(i // per_row) * h:(i // per_row + 1) * h, (i % per_row) * w:(i % per_row + 1) * w]
                       for i in range(n)])
    if hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest() != meta['pixels_sha256']:
        raise ValueError(f'{png}: the pixels differ from the SHA-256 that {meta_path.name} records (damaged?)')
    return images, np.asarray(meta['labels'], dtype=np.int64), list(meta['classes'])
