"""A small sample of real CIFAR-10 test images that ships with the package (``timm-identity demo`` uses it).

``samples/cifar10_test_sample.png`` is a grid of 100 images of CIFAR-10's test split (10 per class: the first
10 of each class in the order of the test batch, in class order), 32x32 each, 10 to a row;
``samples/cifar10_test_sample.json`` gives their labels, class names and two SHA-256 digests, both checked on
every read: of their pixels (uint8 NHWC) and of their labels, class names and test-batch indices
(:func:`labels_sha256`). ``tools/make_demo_sample.py`` writes both files from the official test batch.
"""
from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import List, Tuple

import numpy as np

__all__ = ['SAMPLE_PNG', 'SAMPLE_JSON', 'samples_dir', 'load_cifar10_sample', 'write_cifar10_sample', 'select_sample',
           'labels_sha256']

SAMPLE_PNG = 'cifar10_test_sample.png'
SAMPLE_JSON = 'cifar10_test_sample.json'
PER_ROW = 10


def samples_dir() -> Path:
    """The folder of the shipped sample (package data of ``timm_identity.data``)."""
    return Path(str(resources.files('timm_identity.data') / 'samples'))


def labels_sha256(labels: List[int], classes: List[str], indices: List[int]) -> str:
    """SHA-256 of the sample's labels, class names and test-batch indices (as compact, key-sorted JSON): what the
    JSON record's ``labels_sha256`` holds, so an edited label or class name is caught like an edited pixel."""
    text = json.dumps({'classes': list(classes), 'labels': [int(v) for v in labels],
                       'test_batch_indices': [int(i) for i in indices]}, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def select_sample(labels: np.ndarray, per_class: int = 10) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class, class by class."""
    labels = np.asarray(labels)
    picks = [np.flatnonzero(labels == c)[:per_class] for c in range(int(labels.max()) + 1)]
    if any(len(p) < per_class for p in picks):
        raise ValueError(f'every class needs at least {per_class} images')
    return np.concatenate(picks)


def write_cifar10_sample(images: np.ndarray, labels: np.ndarray, classes: List[str], indices: np.ndarray,
                         out_dir: str | Path) -> Tuple[Path, Path]:
    """Write the grid PNG and its JSON (labels, class names, indices, pixel and label SHA-256) into ``out_dir``."""
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
    picked_labels, picked_indices = [int(labels[i]) for i in indices], [int(i) for i in indices]
    meta.write_text(json.dumps({
        'what': 'CIFAR-10 test split: the first images of each class in test-batch order, 10 per class',
        'count': int(n), 'image_size': [h, w], 'per_row': PER_ROW,
        'labels': picked_labels, 'classes': list(classes),
        'test_batch_indices': picked_indices,
        'pixels_sha256': hashlib.sha256(picked.tobytes()).hexdigest(),
        'labels_sha256': labels_sha256(picked_labels, classes, picked_indices),
    }, indent=1) + '\n')
    return png, meta


def _checked_record(meta, meta_path: Path) -> Tuple[int, int, int, int]:
    """(count, height, width, per_row) of the JSON record after checking its shape; ValueError (one line, naming
    the file) if a key is missing or of the wrong kind, or the labels / class names differ from ``labels_sha256``."""
    def bad(problem: str) -> ValueError:
        return ValueError(f'{meta_path}: {problem}; the demo image sample is damaged')

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)
    if not isinstance(meta, dict):
        raise bad(f'expected a JSON object, got {type(meta).__name__}')
    missing = [k for k in ('count', 'image_size', 'per_row', 'labels', 'classes', 'test_batch_indices',
                           'pixels_sha256', 'labels_sha256') if k not in meta]
    if missing:
        raise bad(f'no {", ".join(missing)}')
    n, size, per_row = meta['count'], meta['image_size'], meta['per_row']
    labels, classes, indices = meta['labels'], meta['classes'], meta['test_batch_indices']
    if not (is_int(n) and n >= 1 and is_int(per_row) and per_row >= 1 and isinstance(size, list) and len(size) == 2
            and all(is_int(v) and v >= 1 for v in size)):
        raise bad(f'count, per_row and image_size must be positive integers, got {n!r}, {per_row!r}, {size!r}')
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise bad(f'classes must be a list of class names, got {classes!r:.80}')
    for key, values in (('labels', labels), ('test_batch_indices', indices)):
        if not (isinstance(values, list) and len(values) == n and all(is_int(v) and v >= 0 for v in values)):
            raise bad(f'{key} must be {n} integers >= 0 (count), got {values!r:.80}')
    if max(labels) >= len(classes):
        raise bad(f'label {max(labels)} for {len(classes)} class names')
    if labels_sha256(labels, classes, indices) != meta['labels_sha256']:
        raise bad('the labels, class names or test-batch indices differ from the SHA-256 it records '
                  '(labels_sha256)')
    return n, size[0], size[1], per_row


def load_cifar10_sample(folder: str | Path | None = None) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(images uint8 NHWC, labels, class names) of the shipped sample; a damaged file (unreadable PNG or JSON, a
    record of the wrong shape, pixels or labels that differ from their recorded SHA-256) is a one-line
    ValueError naming it."""
    from PIL import Image
    folder = Path(folder) if folder is not None else samples_dir()
    png, meta_path = folder / SAMPLE_PNG, folder / SAMPLE_JSON

    def unreadable(path: Path, e: BaseException) -> ValueError:
        text = str(e).strip()
        reason = getattr(e, 'strerror', None) or (text.splitlines()[0] if text else type(e).__name__)
        return ValueError(f'{path}: not readable ({reason}); the demo image sample is damaged')
    try:
        meta = json.loads(meta_path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as e:  # missing, not UTF-8, not JSON
        raise unreadable(meta_path, e) from None
    n, h, w, per_row = _checked_record(meta, meta_path)
    try:
        grid = np.asarray(Image.open(png).convert('RGB'))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL: not a PNG, truncated, broken
        raise unreadable(png, e) from None
    rows = -(-n // per_row)
    if grid.shape != (rows * h, per_row * w, 3):
        raise ValueError(f'{png}: {grid.shape[1]}x{grid.shape[0]} pixels, but {meta_path.name} records {n} images '
                         f'of {w}x{h}, {per_row} to a row ({per_row * w}x{rows * h}); the demo image sample is '
                         f'damaged')
    images = np.stack([grid[(i // per_row) * h:(i // per_row + 1) * h, (i % per_row) * w:(i % per_row + 1) * w]
                       for i in range(n)])
    if hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest() != meta['pixels_sha256']:
        raise ValueError(f'{png}: the pixels differ from the SHA-256 that {meta_path.name} records; the demo image '
                         f'sample is damaged')
    return images, np.asarray(meta['labels'], dtype=np.int64), list(meta['classes'])
