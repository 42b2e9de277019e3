"""Write and verify webdataset shards in the layout timm's ``wds/`` reader trains from.

A dataset folder holds, per split, ``<name>-<split>-000000.tar``, ``...-000001.tar``, ... and one
``_info.json`` (timm ``timm/data/readers/reader_wds.py`` reads ``splits.<split>.num_samples``,
``filenames`` and ``shard_lengths``)::

    {"name": "cifar10", "num_classes": 10, "classes": [...],
     "splits": {"train": {"name": "train", "num_samples": 50000,
                          "filenames": ["cifar10-train-000000.tar", ...], "shard_lengths": [1000, ...],
                          "class_counts": [5000, ...], "shard_sha256": ["...", ...]}, ...}}

``class_counts`` and ``shard_sha256`` are ours (timm ignores them); ``verify`` checks them.
Each sample is ``<key>.cls`` (the class index as decimal text, what timm's reader parses with
``int()``) plus ``<key>.png`` or ``<key>.jpg`` (image bytes; timm's default ``input_key`` is
``jpg;png;webp``). Keys contain no dots (webdataset splits member names at the first dot).

Crash safety and resume: a shard is written to the hidden name ``.<shard>.partial`` and renamed
to its final name only once complete; then a state file ``.shard-state/<shard>.json`` records its
sample count, size, sha256, a digest of its planned (key, label) list and a digest of its source
content (each sample's ``content_fingerprint()``: CIFAR's pixels themselves; for an image file its
size and modification time, since hashing ImageNet's 140 GB again would cost as much as rewriting it).
A rerun skips a shard only if its keys, labels and source content are those recorded and the file on
disk still has the recorded size and sha256; it rewrites every other shard and logs why (changed
source, shard damaged or changed after writing, changed plan). ``_info.json`` is written last
(atomically), so a folder with ``_info.json`` is complete. Starting a split first removes that split
from an existing ``_info.json``.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import webdataset as wds
from tqdm import tqdm
from webdataset.tariterators import group_by_keys, tar_file_iterator

from ..atomic_io import atomic_write_text
from ..integrity import sha256_file
from .errors import DatasetFormatError, ShardLayoutError
from .imagenet import sniff_image_format

_logger = logging.getLogger(__name__)

__all__ = [
    'ShardSample', 'PixelSample', 'SplitInfo', 'VerifyReport',
    'shard_filename', 'plan_shards', 'check_out_dir', 'write_split', 'write_info', 'write_dataset', 'verify_shards',
    'INFO_NAME', 'STATE_DIR', 'check_dataset_name',
]

INFO_NAME = '_info.json'
STATE_DIR = '.shard-state'
IMAGE_EXTENSIONS = ('jpg', 'png', 'webp')  # what timm's reader accepts (input_key='jpg;png;webp')
_TAR_MTIME = 946684800  # fixed member mtime (2000-01-01) so rewriting a shard gives the same bytes
_TAR_OVERHEAD = 3 * 512 + 2 * 512  # per-sample tar headers and padding, for --shard-bytes planning


class ShardSample(Protocol):
    """What the shard writer needs from one sample (``PixelSample``, ``imagenet.ImageFile``)."""
    key: str
    label: int

    @property
    def size_estimate(self) -> int: ...

    def content_fingerprint(self) -> bytes:
        """Bytes that change whenever the sample's source content changes (what a rerun compares)."""
        ...

    def to_wds(self) -> dict[str, bytes]: ...


@dataclass(frozen=True)
class PixelSample:
    """An image held as uint8 HWC RGB pixels (CIFAR), stored losslessly as PNG."""
    key: str
    label: int
    pixels: np.ndarray

    @property
    def size_estimate(self) -> int:
        return self.pixels.nbytes + _TAR_OVERHEAD  # raw size: an upper bound for the PNG

    def content_fingerprint(self) -> bytes:
        return b'%r' % (self.pixels.shape,) + np.ascontiguousarray(self.pixels).tobytes()

    def to_wds(self) -> dict[str, bytes]:
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(self.pixels, mode='RGB').save(buf, format='PNG')
        return {'__key__': self.key, 'png': buf.getvalue(), 'cls': b'%d' % self.label}


# a dataset or split name: ASCII letters, digits and '_' only. '-' separates <name>-<split>-NNNNNN.tar (timm's
# reader splits a shard pattern at '-'), '.' would start the extension, '/' a folder; braces, commas, '..' and
# '|' have a meaning in timm's split strings (braceexpand, '|num_samples'), and '::' joins patterns
_NAME = re.compile(r'[A-Za-z0-9_]+')


def check_dataset_name(name: str, what: str = '--name') -> None:
    """ShardLayoutError (before anything is written) unless ``name`` can be a dataset or split name in shard
    file names and timm's ``wds/<name>`` / split strings: ASCII letters, digits and '_'."""
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise ShardLayoutError(f"{what} {name!r}: use only ASCII letters, digits and '_' (the shards are named "
                               f"<name>-<split>-NNNNNN.tar and timm's wds reader splits that at '-' and expands "
                               f"braces and commas), e.g. 'cifar10' or 'my_cifar10'")


def shard_filename(name: str, split: str, index: int) -> str:
    """``<name>-<split>-NNNNNN.tar``, the pattern timm's info-less ``wds`` split strings expand to."""
    return f'{name}-{split}-{index:06d}.tar'


def _shard_pattern(name: str, split: str) -> re.Pattern:
    return re.compile(rf'^{re.escape(name)}-{re.escape(split)}-(\d{{6}})\.tar$')


def plan_shards(
        samples: Sequence[ShardSample],
        shard_samples: int | None = 1000,
        shard_bytes: int | None = None,
) -> list[list[ShardSample]]:
    """Cut ``samples`` (in order) into shards of at most ``shard_samples`` samples and/or
    about ``shard_bytes`` bytes (by ``size_estimate``; a single larger sample gets its own shard)."""
    if not shard_samples and not shard_bytes:
        raise ValueError('give shard_samples and/or shard_bytes')
    if (shard_samples is not None and shard_samples < 1) or (shard_bytes is not None and shard_bytes < 1):
        raise ValueError(f'shard sizes must be positive, got {shard_samples=} {shard_bytes=}')
    shards: list[list[ShardSample]] = []
    current: list[ShardSample] = []
    current_bytes = 0
    for sample in samples:
        size = sample.size_estimate if shard_bytes else 0
        full = (shard_samples and len(current) >= shard_samples) or \
               (shard_bytes and current and current_bytes + size > shard_bytes)
        if full:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(sample)
        current_bytes += size
    if current:
        shards.append(current)
    return shards


def _shard_digests(samples: Iterable[ShardSample]) -> tuple[str, str]:
    """sha256 of the shard's (key, label) list and sha256 of its samples' content fingerprints."""
    plan, content = hashlib.sha256(), hashlib.sha256()
    for s in samples:
        plan.update(f'{s.key}\t{s.label}\n'.encode())
        fingerprint = s.content_fingerprint()
        content.update(b'%d:' % len(fingerprint) + fingerprint)
    return plan.hexdigest(), content.hexdigest()


def _atomic_write_json(path: str, obj: Any) -> None:
    """``obj`` as JSON at ``path``, written through ``.<name>.partial`` (the name _remove_partials cleans)."""
    atomic_write_text(path, json.dumps(obj, indent=1) + '\n', tmp_name=f'.{os.path.basename(path)}.partial')


class _HashingWriter(io.RawIOBase):
    """File wrapper that sha256-hashes and counts what is written through it."""

    def __init__(self, f):
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha256.update(b)
        self.size += len(b)
        return self.f.write(b)


@dataclass
class _ShardTask:
    out_dir: str
    filename: str
    samples: list[ShardSample]
    digest: str
    content_digest: str


@dataclass
class _ShardResult:
    filename: str
    num_samples: int
    size: int
    sha256: str
    digest: str  # of the (key, label) list
    content_digest: str  # of the samples' content fingerprints


def _state_path(out_dir: str, filename: str) -> str:
    return os.path.join(out_dir, STATE_DIR, filename + '.json')


def _partial_path(out_dir: str, filename: str) -> str:
    return os.path.join(out_dir, f'.{filename}.partial')


def _write_shard(task: _ShardTask) -> _ShardResult:
    """Write one shard under its partial name, rename it when complete, then record its state."""
    partial = _partial_path(task.out_dir, task.filename)
    final = os.path.join(task.out_dir, task.filename)
    key = None
    try:
        with open(partial, 'wb') as f:
            hashing = _HashingWriter(f)
            with wds.TarWriter(hashing, encoder=False, mtime=_TAR_MTIME) as writer:
                for sample in task.samples:
                    key = sample.key
                    writer.write(sample.to_wds())
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        if os.path.exists(partial):
            os.remove(partial)
        if isinstance(e, DatasetFormatError):
            raise
        if isinstance(e, Exception):
            raise DatasetFormatError(f'{final}: failed writing sample {key!r} ({type(e).__name__}: {e})') from e
        raise
    os.replace(partial, final)
    result = _ShardResult(task.filename, len(task.samples), hashing.size, hashing.sha256.hexdigest(), task.digest,
                          task.content_digest)
    _atomic_write_json(_state_path(task.out_dir, task.filename), result.__dict__)
    return result


# why a shard is (re)written: reason -> what the rerun logs (None: nothing, a first write)
_REWRITE_REASONS = {
    'new': None,
    'plan': 'their planned keys and labels changed (other samples, --shard-samples/--shard-bytes or --seed)',
    'source': 'their source images changed since they were written (same keys and labels, other content)',
    'missing': 'the shard file is missing',
    'damaged': 'the shard file changed or was damaged after writing (size or sha256 differs from the record)',
}


def _check_shard(args: tuple[str, str, str, str]) -> tuple[str, _ShardResult | None, str]:
    """``(filename, recorded result, '')`` for a shard that a previous run wrote from the same samples and
    source content and that is intact on disk (size and sha256 as recorded); else ``(filename, None, reason)``
    with a key of ``_REWRITE_REASONS``. ``args``: out_dir, filename, digest, content_digest."""
    out_dir, filename, digest, content_digest = args
    try:
        with open(_state_path(out_dir, filename)) as f:
            state = _ShardResult(**json.load(f))
    except (OSError, ValueError, TypeError):  # none (a first write, a crash before it), or an older format
        return filename, None, 'new'
    if state.digest != digest:
        return filename, None, 'plan'
    if state.content_digest != content_digest:
        return filename, None, 'source'
    path = os.path.join(out_dir, filename)
    if not os.path.isfile(path):
        return filename, None, 'missing'
    if os.path.getsize(path) != state.size or sha256_file(path) != state.sha256:
        return filename, None, 'damaged'
    return filename, state, ''


def _remove_partials(out_dir: str, names: Iterable[str]) -> None:
    for filename in names:
        state_partial = os.path.join(out_dir, STATE_DIR, f'.{filename}.json.partial')  # see _atomic_write_json
        for path in (_partial_path(out_dir, filename), state_partial):
            if os.path.exists(path):
                os.remove(path)


def _load_info(out_dir: str) -> dict | None:
    path = os.path.join(out_dir, INFO_NAME)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetFormatError(f'{path}: not valid JSON ({e})') from e


def _forget_split(out_dir: str, split: str) -> None:
    """Drop ``split`` from an existing _info.json before its shards get rewritten."""
    info = _load_info(out_dir)
    if info is None or split not in info.get('splits', {}):
        return
    del info['splits'][split]
    if info['splits']:
        _atomic_write_json(os.path.join(out_dir, INFO_NAME), info)
    else:
        os.remove(os.path.join(out_dir, INFO_NAME))


def _run_tasks(func: Callable, tasks: list, workers: int) -> Iterable:
    """``func`` over ``tasks``, in this process (workers <= 1) or a process pool, results as they finish."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(func, tasks)
        return
    with multiprocessing.Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap_unordered(func, tasks)


def _log_rewrites(where: str, out_dir: str, num_shards: int, done: dict, rewrite: dict[str, list[str]]) -> None:
    if done:
        _logger.info('%s: %d of %d shards already complete (samples, source content, size and sha256 as '
                     'recorded), skipping them', where, len(done), num_shards)
    for reason, names in rewrite.items():
        if _REWRITE_REASONS[reason]:
            names = sorted(names)
            shown = ', '.join(names[:3]) + (f', ... ({len(names)} in all)' if len(names) > 3 else '')
            log = _logger.warning if reason in ('source', 'damaged') else _logger.info
            log('%s: rewriting %d shard(s) in %s: %s: %s', where, len(names), out_dir, _REWRITE_REASONS[reason], shown)


def check_out_dir(out_dir: str | os.PathLike) -> None:
    """Raise a clear :class:`DatasetFormatError` when ``out_dir`` cannot be a dataset folder (it, or the
    nearest existing folder above it, is a file). Cheap: for commands to call before reading their inputs."""
    out_dir = os.fspath(out_dir)
    existing = os.path.abspath(out_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = 'is a file' if existing == os.path.abspath(out_dir) else f'is inside {existing}, which is a file'
        raise DatasetFormatError(f'{out_dir}: {what}, not a folder; the shards and {INFO_NAME} need a dataset '
                                 f'folder (a new path, or the folder of an earlier run to resume it)')


@dataclass
class SplitInfo:
    """One entry of ``_info.json``'s ``splits`` (timm's keys first)."""
    name: str
    num_samples: int
    filenames: list[str]
    shard_lengths: list[int]
    class_counts: list[int]
    shard_sha256: list[str]


def _checked_labels(samples: Sequence[ShardSample], name: str, split: str, num_classes: int) -> np.ndarray:
    """The samples' labels, after checking the split has samples, a usable name, and labels in range."""
    if not samples:
        raise DatasetFormatError(f'{name}/{split}: no samples to write')
    check_dataset_name(name)
    check_dataset_name(split, 'split')  # the commands offer only valid ones
    labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = samples[int(np.argmax((labels < 0) | (labels >= num_classes)))]
        raise DatasetFormatError(f'{name}/{split}: sample {bad.key!r} has label {bad.label}, '
                                 f'outside [0, {num_classes})')
    return labels


def _prepare_out_dir(out_dir: str, name: str, split: str, filenames: list[str]) -> None:
    """Create the dataset folder, drop ``split`` from its ``_info.json``, remove shards of an older plan and
    partial files."""
    check_out_dir(out_dir)
    try:
        os.makedirs(os.path.join(out_dir, STATE_DIR), exist_ok=True)
    except OSError as e:
        raise DatasetFormatError(f'{out_dir}: cannot create the dataset folder ({type(e).__name__}: {e})') from e
    _forget_split(out_dir, split)
    pattern = _shard_pattern(name, split)
    for stale in sorted(f for f in os.listdir(out_dir) if pattern.match(f) and f not in set(filenames)):
        _logger.warning('removing %s: not part of the new %s/%s plan', stale, name, split)
        os.remove(os.path.join(out_dir, stale))
        if os.path.exists(_state_path(out_dir, stale)):
            os.remove(_state_path(out_dir, stale))
    _remove_partials(out_dir, filenames)


def write_split(
        samples: Sequence[ShardSample],
        out_dir: str | os.PathLike,
        name: str,
        split: str,
        num_classes: int,
        shard_samples: int | None = 1000,
        shard_bytes: int | None = None,
        workers: int = 1,
        seed: int | None = 0,
        progress: bool = True,
        num_shards: int | None = None,
) -> SplitInfo:
    """Write one split's shards (skipping those a previous run finished) and return its info.

    Args:
        samples: the split, in source order.
        out_dir: dataset folder (created if needed).
        name, split: the shard names are ``<name>-<split>-NNNNNN.tar``.
        num_classes: labels must lie in ``[0, num_classes)``.
        shard_samples, shard_bytes: shard size target (see :func:`plan_shards`).
        workers: processes writing shards in parallel (1: this process).
        seed: shuffle the samples with ``numpy.random.default_rng(seed)`` before sharding
            (same seed, same shards); None keeps the source order.
        progress: show a tqdm bar.
        num_shards: exactly this many shards of equal length instead (``len(samples)`` must be a multiple of
            it): the layout timm's distributed validation reads exactly once when ``num_shards`` is a multiple
            of the run's processes x loader workers (:mod:`timm_identity.distributed`).

    ``_info.json`` is not touched except to drop ``split`` from it; see :func:`write_info`.
    """
    out_dir = os.fspath(out_dir)
    if num_shards is not None:
        _check_equal_shards(len(samples), num_shards, split)
        shard_samples, shard_bytes = len(samples) // num_shards, None
    labels = _checked_labels(samples, name, split, num_classes)
    order = np.arange(len(samples)) if seed is None else np.random.default_rng(seed).permutation(len(samples))
    shards = plan_shards([samples[i] for i in order], shard_samples, shard_bytes)
    filenames = [shard_filename(name, split, i) for i in range(len(shards))]
    _prepare_out_dir(out_dir, name, split, filenames)

    tasks = {filename: _ShardTask(out_dir, filename, shard, *_shard_digests(shard))
             for filename, shard in zip(filenames, shards)}
    results: dict[str, _ShardResult] = {}
    rewrite: dict[str, list[str]] = {}  # reason -> shards
    bar = tqdm(total=len(samples), unit='img', desc=f'{name}/{split}', disable=not progress)
    try:
        checks = [(out_dir, t.filename, t.digest, t.content_digest) for t in tasks.values()]
        for filename, done, reason in _run_tasks(_check_shard, checks, workers):
            if done is None:
                rewrite.setdefault(reason, []).append(filename)
            else:
                results[filename] = done
                bar.update(done.num_samples)
        _log_rewrites(f'{name}/{split}', out_dir, len(filenames), results, rewrite)
        todo = [tasks[f] for f in filenames if f not in results]
        for result in _run_tasks(_write_shard, todo, workers):
            results[result.filename] = result
            bar.update(result.num_samples)
    finally:
        bar.close()
        _remove_partials(out_dir, filenames)  # what killed workers left behind

    ordered = [results[f] for f in filenames]
    return SplitInfo(
        name=split,
        num_samples=len(samples),
        filenames=filenames,
        shard_lengths=[r.num_samples for r in ordered],
        class_counts=np.bincount(labels, minlength=num_classes).tolist(),
        shard_sha256=[r.sha256 for r in ordered],
    )


def _check_equal_shards(num_samples: int, num_shards: int, split: str) -> None:
    if num_shards < 1 or num_samples % num_shards:
        divisors = [n for n in range(2, min(num_samples, 64) + 1) if num_samples % n == 0]
        raise ShardLayoutError(f"--eval-shards {num_shards}: split '{split}' has {num_samples} samples, which do not "
                         f"divide into {num_shards} equal shards (divisors up to 64: {divisors})")


def write_info(out_dir: str | os.PathLike, name: str, classes: list[str], splits: Iterable[SplitInfo],
               extra: dict | None = None) -> dict:
    """Add ``splits`` to the folder's ``_info.json`` (atomically; other splits of the same dataset kept)."""
    out_dir = os.fspath(out_dir)
    info = _load_info(out_dir) or {}
    if info and (info.get('name') != name or info.get('classes') != list(classes)):
        _logger.warning('%s: replacing the _info.json of another dataset (%s)', out_dir, info.get('name'))
        info = {}
    old_splits = info.get('splits', {})
    info = {'name': name, 'num_classes': len(classes), 'classes': list(classes), **(extra or {})}
    info['splits'] = {**old_splits, **{s.name: s.__dict__ for s in splits}}
    _atomic_write_json(os.path.join(out_dir, INFO_NAME), info)
    return info


def write_dataset(
        splits: dict[str, Sequence[ShardSample]],
        out_dir: str | os.PathLike,
        name: str,
        classes: list[str],
        extra_info: dict | None = None,
        eval_shards: int | None = None,
        **write_kwargs,
) -> dict:
    """Write every split's shards, then ``_info.json`` (last). ``write_kwargs`` go to :func:`write_split`;
    ``eval_shards``: every split but ``train`` as that many equal shards (checked before anything is written)."""
    num_shards = {split: eval_shards if split != 'train' else None for split in splits}
    for split, samples in splits.items():
        if num_shards[split] is not None:
            _check_equal_shards(len(samples), num_shards[split], split)
    infos = [write_split(samples, out_dir, name, split, len(classes), num_shards=num_shards[split], **write_kwargs)
             for split, samples in splits.items()]
    return write_info(out_dir, name, classes, infos, extra_info)


# ---------------------------------------------------------------------------------------------- verify

@dataclass
class _ShardCheck:
    filename: str
    num_samples: int = 0
    class_counts: dict[int, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    sha256: str = ''
    problems: list[str] = field(default_factory=list)


class _HashingReader(io.RawIOBase):
    def __init__(self, f):
        self.f, self.sha256 = f, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.f.readinto(buffer)
        self.sha256.update(memoryview(buffer)[:n])
        return n


# the bytes a complete file ends with (JPEG: the EOI marker, perhaps followed by padding; PNG: the IEND chunk)
_IMAGE_END = {'jpg': b'\xff\xd9', 'png': b'IEND\xaeB`\x82'}


def _check_sample(sample: dict, num_classes: int, decode: bool) -> str | None:
    """The problem with one sample, or None."""
    if 'cls' not in sample:
        return f'no .cls (members: {sorted(k for k in sample if not k.startswith("__"))})'
    try:
        label = int(sample['cls'])
    except ValueError:
        return f'.cls is {sample["cls"][:20]!r}, not a decimal class index'
    if not 0 <= label < num_classes:
        return f'.cls {label} outside [0, {num_classes})'
    images = [ext for ext in IMAGE_EXTENSIONS if ext in sample]
    if len(images) != 1:
        return f'expected one image member ({"/".join(IMAGE_EXTENSIONS)}), found {images or "none"}'
    data = sample[images[0]]
    sniffed = sniff_image_format(data[:16])
    if images[0] != 'webp' and sniffed != images[0]:
        return f'.{images[0]} does not start with {images[0].upper()} magic bytes (first bytes {data[:8].hex()})'
    end = _IMAGE_END.get(images[0])
    if end is not None and end not in data[-32:]:  # a cut-off file: cheap to see without decoding
        return f'.{images[0]} is truncated (no {images[0].upper()} end marker {end.hex()} in its last bytes)'
    if decode:
        from PIL import Image
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
        except Exception as e:
            return f'.{images[0]} does not decode ({type(e).__name__}: {e})'
    return None


def _verify_shard(args: tuple[str, str, int, bool]) -> _ShardCheck:
    out_dir, filename, num_classes, decode = args
    check = _ShardCheck(filename)
    path = os.path.join(out_dir, filename)
    last_key = None
    try:
        with open(path, 'rb') as f:
            reader = _HashingReader(f)
            stream = io.BufferedReader(reader)
            for sample in group_by_keys(
                    {**m, '__url__': path} for m in tar_file_iterator(stream)):
                key = sample['__key__']
                problem = _check_sample(sample, num_classes, decode)
                if problem:
                    check.problems.append(f'{path}: key {key!r}: {problem}')
                else:
                    label = int(sample['cls'])
                    check.class_counts[label] = check.class_counts.get(label, 0) + 1
                check.keys.append(key)
                check.num_samples += 1
                last_key = key
            stream.read()  # end-of-archive padding, so the hash covers the whole file
            check.sha256 = reader.sha256.hexdigest()
    except FileNotFoundError:
        check.problems.append(f'{path}: missing')
    except (tarfile.TarError, OSError, ValueError, EOFError) as e:
        where = f'after key {last_key!r}' if last_key else 'at the start'
        check.problems.append(f'{path}: unreadable {where} ({type(e).__name__}: {str(e).split(" @ ")[0]})')
    return check


@dataclass
class VerifyReport:
    """What :func:`verify_shards` found; ``ok`` when ``problems`` is empty."""
    num_samples: dict[str, int] = field(default_factory=dict)  # split -> samples read back
    class_counts: dict[str, list[int]] = field(default_factory=dict)  # split -> per-class samples read back
    num_shards: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_shards(
        out_dir: str | os.PathLike,
        splits: Sequence[str] | None = None,
        decode: bool = False,
        workers: int = 1,
        progress: bool = True,
) -> VerifyReport:
    """Read every shard of a dataset folder back and check it against ``_info.json``.

    Checks: the info file's own consistency (``num_samples`` = sum of ``shard_lengths``, one length
    per file); per shard: readable to the end, sha256 (when recorded), sample count; per sample: a
    decimal ``.cls`` in range, exactly one image member whose magic bytes match its extension
    (``decode=True`` also decodes it with PIL), key unique within the split; per split: per-class
    counts (when recorded). Every problem names the file, and the sample key where there is one.
    """
    out_dir = os.fspath(out_dir)
    report = VerifyReport()
    info_path = os.path.join(out_dir, INFO_NAME)
    problem = _not_a_dataset_folder(out_dir)
    if problem:
        report.problems.append(problem)
        return report
    try:
        info = _load_info(out_dir)
    except DatasetFormatError as e:
        report.problems.append(str(e))
        return report
    if info is None:
        written = [f for f in os.listdir(out_dir) if f.endswith('.tar') or f in (STATE_DIR, f'.{INFO_NAME}.partial')]
        report.problems.append(
            f'{info_path}: missing (an unfinished or interrupted write?)' if written else
            f'{info_path}: missing; {out_dir} is not a shard folder (no {INFO_NAME}, no .tar shards)')
        return report
    num_classes = info.get('num_classes')
    all_splits = info.get('splits')
    if not isinstance(num_classes, int) or not isinstance(all_splits, dict) or not all_splits:
        report.problems.append(f'{info_path}: needs "num_classes" and a non-empty "splits"')
        return report
    for split in splits or sorted(all_splits):
        entry = all_splits.get(split)
        if entry is None:
            report.problems.append(f'{info_path}: no split {split!r} (has {sorted(all_splits)})')
            continue
        _verify_split(out_dir, split, entry, num_classes, decode, workers, progress, report)
    partials = sorted(f for f in os.listdir(out_dir) if f.endswith('.partial'))
    if partials:
        report.problems.append(f'{out_dir}: leftover partial file(s) of an interrupted write: {partials[:5]}')
    return report


def _not_a_dataset_folder(path: str) -> str | None:
    """What ``path`` is, when it is not a folder (verify's argument must be the dataset folder)."""
    if os.path.isdir(path):
        return None
    if not os.path.exists(path):
        return f'{path}: no such folder (give the dataset folder that holds {INFO_NAME} and the .tar shards)'
    parent = os.path.dirname(os.path.abspath(path))
    hint = f'give its folder {os.path.dirname(path) or "."}' if os.path.isfile(os.path.join(parent, INFO_NAME)) \
        else f'give the folder that holds {INFO_NAME} and the .tar shards'
    return f'{path}: is a file, not a dataset folder ({hint})'


def _verify_split(out_dir: str, split: str, entry: dict, num_classes: int, decode: bool, workers: int,
                  progress: bool, report: VerifyReport) -> None:
    where = f'{os.path.join(out_dir, INFO_NAME)}: splits.{split}'
    filenames = list(entry.get('filenames', []))
    lengths = list(entry.get('shard_lengths', []))
    sha256s = list(entry.get('shard_sha256', []))
    if len(filenames) != len(lengths) or not filenames:
        report.problems.append(f'{where}: {len(filenames)} filenames but {len(lengths)} shard_lengths')
        return
    if entry.get('num_samples') != sum(lengths):
        report.problems.append(f'{where}: num_samples {entry.get("num_samples")} != sum(shard_lengths) {sum(lengths)}')
    if entry.get('name', split) != split:
        report.problems.append(f'{where}: name is {entry.get("name")!r}')

    checks: dict[str, _ShardCheck] = {}
    tasks = [(out_dir, f, num_classes, decode) for f in filenames]
    with tqdm(total=sum(lengths), unit='img', desc=f'verify {split}', disable=not progress) as bar:
        for check in _run_tasks(_verify_shard, tasks, workers):
            checks[check.filename] = check
            bar.update(check.num_samples)

    counts = np.zeros(num_classes, dtype=np.int64)
    first_seen: dict[str, str] = {}
    for i, filename in enumerate(filenames):
        check = checks[filename]
        report.problems.extend(check.problems)
        path = os.path.join(out_dir, filename)
        if check.num_samples != lengths[i] and not any('missing' in p for p in check.problems):
            report.problems.append(f'{path}: {check.num_samples} samples, _info.json says {lengths[i]}')
        if i < len(sha256s) and check.sha256 and check.sha256 != sha256s[i]:
            report.problems.append(f'{path}: sha256 {check.sha256} differs from _info.json\'s {sha256s[i]}')
        for key in check.keys:
            if key in first_seen:
                report.problems.append(f'{path}: key {key!r} also in {first_seen[key]}')
            else:
                first_seen[key] = filename
        for label, n in check.class_counts.items():
            counts[label] += n
    recorded = entry.get('class_counts')
    if recorded is not None:
        diff = [c for c in range(num_classes) if c >= len(recorded) or recorded[c] != counts[c]]
        if diff or len(recorded) != num_classes:
            c = diff[0] if diff else num_classes
            report.problems.append(
                f'{where}: class_counts differ from the shards for {len(diff)} class(es), e.g. class {c}: '
                f'_info.json {recorded[c] if c < len(recorded) else None}, '
                f'shards {counts[c] if c < num_classes else None}')
    report.num_samples[split] = int(sum(c.num_samples for c in checks.values()))
    report.class_counts[split] = counts.tolist()
    report.num_shards[split] = len(filenames)
