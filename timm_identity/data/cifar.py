"""Read the official CIFAR-10 / CIFAR-100 "python version" releases into uint8 arrays.

Accepted ``root`` forms (for ``dataset='cifar10'``; CIFAR-100 is the same with its own names):

* the official archive file ``cifar-10-python.tar.gz`` (read in place, never extracted);
* the unpacked folder ``cifar-10-batches-py/``;
* a folder that contains either of them (the unpacked folder wins when both are there).

Checksums: when given the archive, its md5 is checked against the official one (the md5s that
torchvision also uses) unless ``verify_md5=False``, which logs a warning. Unpacked folders are not
checked against the official per-file md5s, because copies rebuilt from other sources (such as the
project's restored CIFAR-10) have the official layout and pixels but their own file bytes; their
structure (keys, dtypes, shapes, label ranges) is checked instead, as it is for archives.

Files are unpickled with ``encoding='bytes'`` (they were written by Python 2) through an unpickler
that only accepts the numpy objects these files are made of, so a tampered file cannot run code.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import numpy as np

from ..integrity import file_digest
from .errors import ChecksumError, DatasetFormatError

_logger = logging.getLogger(__name__)
_MD5_OFF_LOGGED: set[str] = set()

__all__ = ['CifarSplit', 'CIFAR_LAYOUTS', 'NUM_CLASSES', 'CIFAR10_CLASSES', 'CIFAR100_CLASSES', 'load_cifar',
           'file_md5']

CifarName = Literal['cifar10', 'cifar100']

# (dataset, label type) -> number of classes
NUM_CLASSES = {('cifar10', 'fine'): 10, ('cifar100', 'fine'): 100, ('cifar100', 'coarse'): 20}

# CIFAR-10's class names, in label order (the release's batches.meta)
CIFAR10_CLASSES = (
    'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck',
)
# CIFAR-100's fine class names, in label order (the release's meta file)
CIFAR100_CLASSES = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle', 'bowl', 'boy',
    'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock',
    'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur', 'dolphin', 'elephant', 'flatfish',
    'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion',
    'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain', 'mouse', 'mushroom', 'oak_tree', 'orange',
    'orchid', 'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy', 'porcupine',
    'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket', 'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk',
    'skyscraper', 'snail', 'snake', 'spider', 'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank',
    'telephone', 'television', 'tiger', 'tractor', 'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale',
    'willow_tree', 'wolf', 'woman', 'worm',
)


@dataclass(frozen=True)
class CifarLayout:
    """Where things live in one official CIFAR python release."""
    archive_name: str  # the official download
    archive_md5: str  # its official md5
    folder_name: str  # what the archive unpacks to
    split_files: dict[str, tuple[str, ...]]  # split -> batch files inside the folder
    meta_file: str
    label_keys: dict[str, bytes]  # label_type -> key of the labels in a batch file
    class_name_keys: dict[str, bytes]  # label_type -> key of the class names in the meta file


CIFAR_LAYOUTS: dict[str, CifarLayout] = {
    'cifar10': CifarLayout(
        archive_name='cifar-10-python.tar.gz',
        archive_md5='c58f30108f718f92721af3b95e74349a',
        folder_name='cifar-10-batches-py',
        split_files={
            'train': tuple(f'data_batch_{i}' for i in range(1, 6)),
            'test': ('test_batch',),
        },
        meta_file='batches.meta',
        label_keys={'fine': b'labels'},
        class_name_keys={'fine': b'label_names'},
    ),
    'cifar100': CifarLayout(
        archive_name='cifar-100-python.tar.gz',
        archive_md5='eb9058c3a382ffc7106e4002c42a8d85',
        folder_name='cifar-100-python',
        split_files={'train': ('train',), 'test': ('test',)},
        meta_file='meta',
        label_keys={'fine': b'fine_labels', 'coarse': b'coarse_labels'},
        class_name_keys={'fine': b'fine_label_names', 'coarse': b'coarse_label_names'},
    ),
}

_IMAGE_SHAPE = (32, 32, 3)
_ROW_BYTES = 32 * 32 * 3


@dataclass
class CifarSplit:
    """One split of CIFAR as arrays, in the order of the official batch files."""
    images: np.ndarray  # uint8, (N, 32, 32, 3), HWC, RGB
    labels: np.ndarray  # int64, (N,)
    classes: list[str]  # label names from the archive's meta file; labels index into it

    def __len__(self) -> int:
        return len(self.labels)


def file_md5(path: str | os.PathLike) -> str:
    """Hex md5 of a file (the official archives publish md5s)."""
    return file_digest(path, 'md5')


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR batch files: plain containers plus numpy arrays, nothing else."""
    _ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'),
        ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'),
        ('numpy._core.multiarray', 'scalar'),
        ('numpy', 'ndarray'),
        ('numpy', 'dtype'),
        ('_codecs', 'encode'),  # how Python 3 writes bytes at protocol 2 (re-pickled copies)
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}: not part of a CIFAR batch file')
        return super().find_class(module, name)


def _unpickle(f: BinaryIO, where: str) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(f, encoding='bytes').load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DatasetFormatError(f'{where}: not a readable CIFAR pickle ({type(e).__name__}: {e})') from e
    if not isinstance(obj, dict):
        raise DatasetFormatError(f'{where}: expected a pickled dict, found {type(obj).__name__}')
    return obj


def _get_key(batch: dict, key: bytes, where: str) -> Any:
    if key not in batch:
        found = sorted(k.decode('latin1') if isinstance(k, bytes) else str(k) for k in batch)
        raise DatasetFormatError(f'{where}: missing key {key.decode()!r} (found keys {found})')
    return batch[key]


class _FolderSource:
    """Batch files read from an unpacked release folder."""

    def __init__(self, folder: str):
        self.folder = folder

    def describe(self, member: str) -> str:
        return os.path.join(self.folder, member)

    def load(self, member: str) -> dict:
        path = self.describe(member)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{path}: missing CIFAR file (is {self.folder} a complete unpacked release?)')
        with open(path, 'rb') as f:
            return _unpickle(f, path)

    def close(self) -> None:
        pass


class _ArchiveSource:
    """Batch files read straight out of the official .tar.gz (no extraction to disk)."""

    def __init__(self, path: str, folder_name: str):
        self.path = path
        self.folder_name = folder_name
        self.tar = None
        try:
            self.tar = tarfile.open(path, 'r:gz')
            # reading the whole member list detects truncation/corruption early, with the archive named
            self.members = {m.name: m for m in self.tar.getmembers()}
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            self.close()
            raise DatasetFormatError(
                f'{path}: cannot read the archive, it is truncated or not a .tar.gz ({type(e).__name__}: {e})') from e

    def describe(self, member: str) -> str:
        return f'{self.path}:{self.folder_name}/{member}'

    def load(self, member: str) -> dict:
        name = f'{self.folder_name}/{member}'
        info = self.members.get(name)
        if info is None or not info.isfile():
            tops = sorted({n.split('/', 1)[0] for n in self.members})
            raise DatasetFormatError(
                f'{self.path}: no member {name} (top-level entries: {tops}); '
                f'is this the right CIFAR archive for the requested dataset?')
        try:
            f = self.tar.extractfile(info)
            data = f.read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DatasetFormatError(
                f'{self.describe(member)}: cannot read, the archive is truncated or corrupt '
                f'({type(e).__name__}: {e})') from e
        if len(data) != info.size:
            raise DatasetFormatError(
                f'{self.describe(member)}: truncated ({len(data)} of {info.size} bytes)')
        return _unpickle(io.BytesIO(data), self.describe(member))

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def _open_source(root: str, layout: CifarLayout, verify_md5: bool) -> _FolderSource | _ArchiveSource:
    """Resolve ``root`` to the unpacked folder or the archive (see the module docstring)."""
    if os.path.isdir(root):
        if os.path.isfile(os.path.join(root, layout.meta_file)):
            return _FolderSource(root)
        folder = os.path.join(root, layout.folder_name)
        if os.path.isdir(folder):
            return _FolderSource(folder)
        archive = os.path.join(root, layout.archive_name)
        if os.path.isfile(archive):
            root = archive
        else:
            raise FileNotFoundError(
                f'{root}: no CIFAR release found; expected {layout.folder_name}/ or {layout.archive_name} '
                f'in it, or the files of {layout.folder_name}/ ({layout.meta_file}, ...) directly')
    elif not os.path.exists(root):
        raise FileNotFoundError(f'{root}: no such file or folder')

    if verify_md5:
        md5 = file_md5(root)
        if md5 != layout.archive_md5:
            raise ChecksumError(
                f'{root}: md5 {md5} is not the official {layout.archive_name} md5 {layout.archive_md5} '
                f'(truncated or altered download, or another dataset; pass verify_md5=False / '
                f'--no-verify-md5 to read it anyway)')
    elif os.path.abspath(root) not in _MD5_OFF_LOGGED:  # once per archive and process (train and test read it)
        _MD5_OFF_LOGGED.add(os.path.abspath(root))
        _logger.warning('md5 check is OFF for %s: reading it without checking it is the official %s',
                        root, layout.archive_name)
    return _ArchiveSource(root, layout.folder_name)


def _check_batch(batch: dict, label_key: bytes, num_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    data = _get_key(batch, b'data', where)
    labels = _get_key(batch, label_key, where)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW_BYTES:
        raise DatasetFormatError(
            f"{where}: key 'data' should be uint8 of shape (N, {_ROW_BYTES}), found {data.dtype} {data.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DatasetFormatError(
            f'{where}: key {label_key.decode()!r} has shape {labels.shape}, expected ({data.shape[0]},) '
            f'to match the images')
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFormatError(
            f'{where}: key {label_key.decode()!r} has labels in [{labels.min()}, {labels.max()}], '
            f'outside [0, {num_classes}) given by the meta file')
    return data, labels


def load_cifar(
        root: str | os.PathLike,
        dataset: CifarName = 'cifar10',
        split: str = 'train',
        label_type: str = 'fine',
        verify_md5: bool = True,
) -> CifarSplit:
    """Load one split of CIFAR-10 or CIFAR-100 from the official python release.

    Args:
        root: the official ``.tar.gz``, the unpacked folder, or a folder containing either.
        dataset: ``'cifar10'`` or ``'cifar100'``.
        split: ``'train'`` (50,000 images) or ``'test'`` (10,000 images).
        label_type: ``'fine'`` (CIFAR-10's only labels; CIFAR-100's 100 classes) or ``'coarse'``
            (CIFAR-100's 20 superclasses).
        verify_md5: check the official archive md5 (archives only; logs a warning when off).

    Returns:
        A :class:`CifarSplit` with images uint8 (N, 32, 32, 3) HWC RGB, labels int64 (N,), class names.

    Raises:
        ValueError: bad ``dataset`` / ``split`` / ``label_type``.
        FileNotFoundError: ``root`` or a file of the release is missing.
        ChecksumError: the archive md5 is not the official one.
        DatasetFormatError: truncated/corrupt archive, wrong layout, missing keys, wrong shapes.
    """
    if dataset not in CIFAR_LAYOUTS:
        raise ValueError(f'dataset must be one of {sorted(CIFAR_LAYOUTS)}, got {dataset!r}')
    layout = CIFAR_LAYOUTS[dataset]
    if split not in layout.split_files:
        raise ValueError(f'split must be one of {sorted(layout.split_files)} for {dataset}, got {split!r}')
    if label_type not in layout.label_keys:
        raise ValueError(f'label_type must be one of {sorted(layout.label_keys)} for {dataset}, got {label_type!r}')

    source = _open_source(os.fspath(root), layout, verify_md5)
    try:
        meta_where = source.describe(layout.meta_file)
        names = _get_key(source.load(layout.meta_file), layout.class_name_keys[label_type], meta_where)
        classes = [n.decode('utf-8') if isinstance(n, bytes) else str(n) for n in names]
        if not classes:
            raise DatasetFormatError(f'{meta_where}: no class names')

        images, labels = [], []
        for member in layout.split_files[split]:
            data, batch_labels = _check_batch(
                source.load(member), layout.label_keys[label_type], len(classes), source.describe(member))
            images.append(data)
            labels.append(batch_labels)
    finally:
        source.close()

    images = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return CifarSplit(
        images=np.ascontiguousarray(images),
        labels=np.concatenate(labels),
        classes=classes,
    )
