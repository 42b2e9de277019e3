"""List ImageNet ILSVRC-2012 as people keep it on disk, with timm's class indices.

Layout under ``root``::

    train/<wnid>/<anything>.JPEG          one folder per class (1000 for ILSVRC-2012)
    val/<wnid>/<anything>.JPEG            either class folders, as for train ...
    val/ILSVRC2012_val_00000001.JPEG      ... or flat, with a labels file (``val_labels``)

Class index = position of the wnid in the sorted list of ``train/`` folder names (timm's
``ImageFolder`` convention), so ``n01440764`` is 0 for ILSVRC-2012. ``val/`` may only name wnids
that ``train/`` has.

Accepted labels files for a flat ``val/`` (the format is detected per file):

* ``<image> <wnid>`` per line, whitespace or comma separated (e.g. ``ILSVRC2012_val_00000001.JPEG n01751748``);
* ``<image> <class index>`` per line, the index 0-based in sorted-wnid order (timm's order,
  NOT the devkit's 1-based ILSVRC2012_ID of ``ILSVRC2012_validation_ground_truth.txt``, which needs
  the devkit's meta.mat to map and is rejected);
* Kaggle's ``LOC_val_solution.csv`` (header ``ImageId,PredictionString``; the first token of the
  prediction string is the wnid).

``<image>`` may be given with or without its extension. Blank lines and lines starting with ``#``
are skipped. Every image in ``val/`` needs exactly one label and every label an image.

Only the listing happens here; the bytes are read (and checked to be JPEG/PNG by their magic
bytes, never re-encoded) when the shards are written.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import DatasetFormatError

__all__ = ['ImageFile', 'ImageNetSplit', 'list_imagenet', 'read_val_labels', 'sniff_image_format']

_WNID = re.compile(r'^n\d{8}$')

# magic bytes -> the webdataset extension the image bytes are stored under (timm reads jpg;png;webp)
_IMAGE_MAGIC = (
    (b'\xff\xd8\xff', 'jpg'),
    (b'\x89PNG\r\n\x1a\n', 'png'),  # ILSVRC-2012 train has a PNG named .JPEG (n02105855_2933)
)


def sniff_image_format(head: bytes) -> str | None:
    """'jpg' / 'png' from a file's first bytes, or None when it is neither."""
    for magic, ext in _IMAGE_MAGIC:
        if head.startswith(magic):
            return ext
    return None


@dataclass(frozen=True)
class ImageFile:
    """One image of a split: where it is, its sample key (file name without extension), its class.

    Also a sample for the shard writer (``shards.ShardSample``): ``to_wds`` reads the bytes as
    they are and stores them as ``jpg`` (or ``png`` for a PNG) after checking the magic bytes.
    """
    path: str
    key: str
    label: int

    @property
    def size_estimate(self) -> int:
        return os.path.getsize(self.path) + 3 * 512 + 2 * 512  # + tar headers and padding

    def content_fingerprint(self) -> bytes:
        """Size and modification time of the file: a rerun rewrites the shard when either changed
        (reading every image again to hash it would cost as much as rewriting the shards)."""
        st = os.stat(self.path)
        return b'%d:%d' % (st.st_size, st.st_mtime_ns)

    def to_wds(self) -> dict[str, bytes]:
        with open(self.path, 'rb') as f:
            data = f.read()
        ext = sniff_image_format(data[:16])
        if ext is None:
            raise DatasetFormatError(
                f'{self.path}: not an image (first bytes {data[:8].hex() or "none, empty file"}; '
                f'expected JPEG ffd8ff or PNG 89504e47)')
        return {'__key__': self.key, ext: data, 'cls': b'%d' % self.label}


@dataclass
class ImageNetSplit:
    files: list[ImageFile]  # sorted by (label, key)
    classes: list[str]  # wnids, sorted; labels index into it

    def __len__(self) -> int:
        return len(self.files)


def _visible_entries(folder: str) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith('.')), key=lambda e: e.name)


def _sample_key(path: str) -> str:
    # webdataset splits a member name at the first dot of its base name, so the key is what precedes it
    name = os.path.basename(path).split('.', 1)[0]
    if not name:
        raise DatasetFormatError(f'{path}: file name gives an empty sample key')
    return name


def _list_class_folders(split_dir: str, class_to_idx: dict[str, int] | None) -> tuple[list[ImageFile], list[str]]:
    entries = _visible_entries(split_dir)
    stray = [e.name for e in entries if not e.is_dir()]
    if stray:
        raise DatasetFormatError(
            f'{split_dir}: expected only class folders (<wnid>/), found file(s) {stray[:5]}')
    wnids = [e.name for e in entries]
    bad = [w for w in wnids if not _WNID.match(w)]
    if bad:
        raise DatasetFormatError(f'{split_dir}: class folder names must be wnids like n01440764, found {bad[:5]}')
    if class_to_idx is None:
        class_to_idx = {w: i for i, w in enumerate(wnids)}
    files = []
    for wnid in wnids:
        if wnid not in class_to_idx:
            raise DatasetFormatError(
                f'{os.path.join(split_dir, wnid)}: class folder not in train/ (the classes are train/\'s folders)')
        class_dir = os.path.join(split_dir, wnid)
        for e in _visible_entries(class_dir):
            if not e.is_file():
                raise DatasetFormatError(f'{e.path}: expected image files in {class_dir}, found a folder')
            files.append(ImageFile(path=e.path, key=_sample_key(e.path), label=class_to_idx[wnid]))
    return files, wnids


def read_val_labels(path: str | os.PathLike, classes: list[str]) -> dict[str, int]:
    """Read a flat-val labels file (formats in the module docstring) into ``{image stem: class index}``."""
    path = os.fspath(path)
    class_to_idx = {w: i for i, w in enumerate(classes)}
    labels: dict[str, int] = {}
    with open(path, encoding='utf-8-sig') as f:  # a UTF-8 byte-order mark (Windows editors) is not part of a name
        lines = f.read().splitlines()
    kaggle = bool(lines) and lines[0].replace(' ', '').lower().startswith('imageid,predictionstring')
    for lineno, line in enumerate(lines[1:] if kaggle else lines, start=2 if kaggle else 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        fields = line.replace(',', ' ').split()
        where = f'{path}:{lineno}'
        if len(fields) < 2 or (not kaggle and len(fields) != 2):
            raise DatasetFormatError(f'{where}: expected "<image> <wnid or class index>", got {line!r}')
        image, label = fields[0], fields[1]
        stem = image.split('.', 1)[0]
        if _WNID.match(label):
            if label not in class_to_idx:
                raise DatasetFormatError(f'{where}: wnid {label} has no class folder in train/')
            index = class_to_idx[label]
        elif label.isdigit():
            index = int(label)
            if index >= len(classes):
                raise DatasetFormatError(
                    f'{where}: class index {index} is outside [0, {len(classes)}) '
                    f'(indices are 0-based in sorted-wnid order)')
        else:
            raise DatasetFormatError(f'{where}: label {label!r} is neither a wnid nor a class index')
        if stem in labels:
            raise DatasetFormatError(f'{where}: second label for image {stem}')
        labels[stem] = index
    if not labels:
        raise DatasetFormatError(f'{path}: no labels found')
    return labels


def list_imagenet(
        root: str | os.PathLike,
        split: str = 'train',
        val_labels: str | os.PathLike | None = None,
) -> ImageNetSplit:
    """List one split (``'train'`` or ``'val'``) of an ILSVRC-2012-style folder tree.

    Args:
        root: the folder holding ``train/`` and ``val/`` (``train/`` is always needed: it defines the classes).
        split: ``'train'`` or ``'val'``.
        val_labels: labels file for a flat ``val/`` (ignored, with class folders).

    Raises:
        FileNotFoundError: missing ``train/`` / ``val/`` folder or labels file.
        DatasetFormatError: stray files, non-wnid folders, a val class missing from train,
            duplicate sample keys, labels that do not match the images.
    """
    root = os.fspath(root)
    if split not in ('train', 'val'):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    train_dir = os.path.join(root, 'train')
    if not os.path.isdir(train_dir):
        raise FileNotFoundError(f'{train_dir}: missing (ImageNet layout: train/<wnid>/*.JPEG, val/...)')
    classes = sorted(e.name for e in _visible_entries(train_dir) if e.is_dir())
    if not classes:
        raise DatasetFormatError(f'{train_dir}: no class folders')
    empty = [c for c in classes if _WNID.match(c) and not _visible_entries(os.path.join(train_dir, c))]
    if empty:
        raise DatasetFormatError(
            f'{os.path.join(train_dir, empty[0])}: an empty class folder (timm\'s ImageFolder skips it, which would '
            f'shift every later class index against ours); remove it or add its images'
            + (f' ({len(empty)} empty: {empty[:5]})' if len(empty) > 1 else ''))
    class_to_idx = {w: i for i, w in enumerate(classes)}

    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(f'{split_dir}: missing')
    entries = _visible_entries(split_dir)
    if split == 'train' or (entries and all(e.is_dir() for e in entries)):
        files, _ = _list_class_folders(split_dir, class_to_idx)
    else:
        if val_labels is None:
            raise DatasetFormatError(
                f'{split_dir}: flat val/ (image files, no class folders) needs a labels file '
                f'(--val-labels; one "<image> <wnid>" line per image)')
        labels = read_val_labels(val_labels, classes)
        folders = [e.name for e in entries if e.is_dir()]
        if folders:
            raise DatasetFormatError(f'{split_dir}: mixes files and folders ({folders[:5]}); use one layout')
        files = []
        for e in entries:
            key = _sample_key(e.path)
            if key not in labels:
                raise DatasetFormatError(f'{e.path}: no label for it in {val_labels}')
            files.append(ImageFile(path=e.path, key=key, label=labels.pop(key)))
        if labels:
            raise DatasetFormatError(
                f'{val_labels}: {len(labels)} label(s) for images not in {split_dir}, e.g. {sorted(labels)[:3]}')

    seen: dict[str, str] = {}
    for f in files:
        if f.key in seen:
            raise DatasetFormatError(f'{f.path}: sample key {f.key!r} also used by {seen[f.key]}')
        seen[f.key] = f.path
    if not files:
        raise DatasetFormatError(f'{split_dir}: no images')
    files.sort(key=lambda f: (f.label, f.key))
    return ImageNetSplit(files=files, classes=classes)
