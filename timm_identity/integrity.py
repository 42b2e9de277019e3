"""Integrity of the weights files we write: their size and sha256, recorded in the ``config.json`` beside them.

``train-cifar`` checkpoints (``model.safetensors``, ``train_state.pt``), exported Hub folders and the pretrained
tags' folders ``hub_configs/<arch>.<tag>/`` (``model.safetensors``) carry, next to timm's own keys, ::

    "files": {"model.safetensors": {"size": 54242336, "sha256": "9f2c..."}}

``{"size", "sha256"}`` (:func:`file_record`) is the one record of a file in the package, ``config.json["files"]``
(:func:`read_files_record`) the one place it is kept (it goes to the Hub with the folder), and
:func:`record_mismatch` the one comparison. (timm ignores keys it does not know; the sha256 is the one the Hub
shows for the file and ``sha256sum`` prints). Every load of such a file, by our commands and by
``timm.create_model(..., pretrained=True)`` on our models, checks it first with :func:`check_weights_file`
(against the record beside it, or, for a copy in the Hugging Face cache of a shipped tag's weights, against the
tag's record: :func:`check_against_record`): a file that differs from its record, or one whose safetensors
header cannot be read, is a :class:`DamagedFileError` with one line that names the file. Files without a record
(older checkpoints, timm ``train.py`` checkpoints, a bare weights file) are read as they are.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

from .atomic_io import atomic_write_text

__all__ = ['FILES_KEY', 'CONFIG_NAME', 'WEIGHTS_FILE', 'DamagedFileError', 'file_digest', 'sha256_file',
           'file_record', 'record_mismatch', 'record_files', 'read_files_record', 'check_against_record',
           'check_recorded', 'check_weights_file', 'torch_load_checked', 'first_line']

FILES_KEY = 'files'
CONFIG_NAME = 'config.json'        # a Hub-form folder's timm config, which holds the record
WEIGHTS_FILE = 'model.safetensors'  # its weights

PathLike = Union[str, os.PathLike]


class DamagedFileError(ValueError):
    """A weights file that differs from its recorded size/sha256, or cannot be read (message names it)."""


def file_digest(path: PathLike, algorithm: str = 'sha256', chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks: the one file hash of the package (sha256 for our records and
    shards; md5 only to compare with the official CIFAR archives' published md5)."""
    digest = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file (the one the Hub shows and ``sha256sum`` prints)."""
    return file_digest(path, 'sha256')


def file_record(path: PathLike) -> Dict[str, Any]:
    """The record of a file: ``{'size': bytes, 'sha256': hex}``."""
    return {'size': Path(path).stat().st_size, 'sha256': sha256_file(path)}


def record_mismatch(path: PathLike, record: Dict[str, Any], where: PathLike) -> Optional[str]:
    """How ``path`` differs from its ``record`` (kept in ``where``), in words; None when it matches. The size is
    compared first (no hashing of a truncated file); checkpoints written by earlier versions name it ``bytes``."""
    path = Path(path)
    size = path.stat().st_size
    want = record.get('size', record.get('bytes'))
    if want is not None and size != want:
        sha = f', sha256 {record["sha256"]}' if record.get('sha256') else ''
        return (f'{path} is damaged (truncated or overwritten): {size:,} bytes, but {where} records '
                f'{want:,}{sha}')
    if record.get('sha256') and sha256_file(path) != record['sha256']:
        return (f'{path} is damaged or was changed after it was written: its sha256 differs from the '
                f'{record["sha256"]} recorded in {where}')
    return None


def record_files(folder: PathLike, names: Iterable[str]) -> None:
    """Add the size and sha256 of ``folder/<name>`` for each of ``names`` to ``folder/config.json``
    (replacing any earlier record; the config is rewritten atomically)."""
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    config = json.loads(config_path.read_text())
    config[FILES_KEY] = {name: file_record(folder / name) for name in names}
    atomic_write_text(config_path, json.dumps(config, indent=2) + '\n')


def read_files_record(folder: PathLike) -> Dict[str, Dict[str, Any]]:
    """``config.json["files"]`` of ``folder``: ``{file name: {'size', 'sha256'}}``, empty when the folder has no
    ``config.json`` or it records no files; a ``config.json`` that is not JSON is a :class:`DamagedFileError`."""
    config_path = Path(folder) / CONFIG_NAME
    if not config_path.is_file():
        return {}
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise DamagedFileError(f'{config_path}: not readable as JSON ({e})') from None
    files = config.get(FILES_KEY) if isinstance(config, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


def check_against_record(path: PathLike, record_folder: PathLike, required: bool = False) -> bool:
    """Compare ``path`` with the size and sha256 that ``record_folder/config.json`` records for a file of its
    name (the folder beside it, or, for a copy of it elsewhere, the folder it was exported to).

    Returns False when nothing is recorded for it (a :class:`DamagedFileError` with ``required``), True when it
    matches; raises :class:`DamagedFileError` when it does not (or is missing)."""
    path = Path(path)
    where = Path(record_folder) / CONFIG_NAME
    record = read_files_record(record_folder).get(path.name)
    if record is None:
        if required:
            raise DamagedFileError(f'{path}: {where} records no size and sha256 for it ("{FILES_KEY}"), so it '
                                   f'cannot be checked; write it with `timm-identity export`, which records it')
        return False
    if not path.is_file():
        raise DamagedFileError(f'{path}: missing, though {where} records it')
    problem = record_mismatch(path, record, where)
    if problem:
        raise DamagedFileError(problem)
    return True


def check_recorded(path: PathLike) -> bool:
    """Compare ``path`` with the size and sha256 that the ``config.json`` beside it records.

    Returns False when nothing is recorded for it, True when it matches; raises :class:`DamagedFileError`
    when it does not (or is missing)."""
    return check_against_record(path, Path(path).parent)


def check_weights_file(path: PathLike, record_folder: Optional[PathLike] = None, required: bool = False) -> None:
    """Everything we can check before loading ``path``: its recorded size and sha256 (recorded beside it, or in
    ``record_folder``: :func:`check_against_record`), and for a ``.safetensors`` file that its header reads
    (raises :class:`DamagedFileError`)."""
    path = Path(path)
    if not path.is_file():
        raise DamagedFileError(f'{path}: no such file')
    check_against_record(path, path.parent if record_folder is None else record_folder, required)
    if path.suffix == '.safetensors':
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework='pt'):
                pass
        except Exception as e:  # SafetensorError (bad / truncated header), OSError
            raise DamagedFileError(f'{path}: not a readable safetensors file ({first_line(e)})') from None


def torch_load_checked(path: PathLike, required: bool = False, **kwargs) -> Any:
    """``torch.load(path, weights_only=True, **kwargs)`` after checking it against the record beside it
    (:func:`check_against_record`, ``required``: a file without one is refused too); a damaged file or a pickle
    that holds more than tensors and plain containers is a one-line :class:`DamagedFileError`."""
    import torch
    path = Path(path)
    check_against_record(path, path.parent, required)
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as e:
        found = re.search(r'WeightsUnpickler error: ([^.\n]*)', str(e))
        raise DamagedFileError(
            f'{path}: refused to load: it holds Python objects other than tensors and plain containers '
            f'({found.group(1) if found else first_line(e)}), which torch.load(weights_only=True) never runs; '
            f'use only files you wrote') from None
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated or overwritten: RuntimeError (zip reader), OSError, EOFError ...
        raise DamagedFileError(f'{path}: not a readable torch file, damaged or truncated '
                               f'({type(e).__name__}: {first_line(e)})') from None


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none): for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
