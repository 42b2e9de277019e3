"""Which pretrained tags have weights: the record in ``hub_configs/<architecture>.<tag>/weights.json``.

A tag folder always holds ``config.json`` (the tag's pretrained cfg and its planned Hub repo). It holds
``weights.json`` only once weights for the tag were exported with ``timm-identity export --to-hub-configs``
(which reloads and checks them): the file's name, size and SHA-256, and, after ``timm-identity publish``,
where they were published. timm lists a tag as pretrained (``timm.list_pretrained()``) only when that record
exists, which says the weights were made:

- published on the Hub (the record says so), or
- the recorded ``model.safetensors`` sits in the tag folder (then ``pretrained=True`` loads it from there,
  after checking its SHA-256 against the record), or
- neither: then only the local Hugging Face cache can have them (``export --to-hf-cache``). Whether it does is
  looked up when ``pretrained=True`` asks for them, never at import; if not, that call is a clear error.

Every other tag is *planned*: creatable by name, documented, but ``pretrained=True`` is a clear error.

``TIMM_IDENTITY_HUB_CONFIGS`` (a folder) replaces the package's ``hub_configs/`` as the source of tags and
records, read once when ``timm_identity`` is imported (tests, or a private set of tags).
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

from timm_identity.integrity import file_record, record_mismatch, sha256_file

__all__ = ['RECORD_FILE', 'WEIGHTS_FILE', 'WeightsError', 'WeightsStatus', 'read_record', 'write_record',
           'mark_published', 'weights_status', 'cached_weights', 'verify_weights_file']

RECORD_FILE = 'weights.json'
WEIGHTS_FILE = 'model.safetensors'
HUB_CONFIGS_ENV = 'TIMM_IDENTITY_HUB_CONFIGS'


class WeightsError(RuntimeError):
    """Recorded weights that are missing, damaged or not what the record says."""


@dataclass(frozen=True)
class WeightsStatus:
    available: bool                 # weights were made for the tag (timm lists it as pretrained)
    local_file: Optional[Path]      # the recorded file in the tag folder, when it is there
    reason: str                     # where they are (or why there are none), for messages
    cache_only: bool = False        # neither in the folder nor published: only the local HF cache can have them
    repo_id: Optional[str] = None   # (cache_only) the repo they are cached under


def read_record(folder: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The weights record of a tag folder, or None (no weights exported for it)."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not {'file', 'size', 'sha256'} <= set(record):
            raise ValueError('needs "file", "size" and "sha256"')
    except ValueError as e:
        raise WeightsError(f'{path}: not a valid weights record ({e}).') from None
    return record


def _write(folder: Path, record: Dict[str, Any]) -> None:
    from timm_identity.atomic_io import atomic_write_text
    atomic_write_text(folder / RECORD_FILE, json.dumps(record, indent=2) + '\n')


def write_record(folder: Union[str, Path], repo_id: str, source: Optional[str] = None) -> Dict[str, Any]:
    """Record the exported ``folder/model.safetensors`` (size, SHA-256) as the tag's weights (not published)."""
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    record = {'file': WEIGHTS_FILE, **file_record(weights), 'repo_id': repo_id, 'published': None, 'source': source}
    _write(folder, record)
    return record


def mark_published(folder: Union[str, Path], repo_id: str, revision: str, commit_url: Optional[str]) -> bool:
    """After a publish of ``folder``: note where its recorded weights now live. False if it has no record or
    the published file is not the recorded one."""
    folder = Path(folder)
    record = read_record(folder)
    weights = folder / WEIGHTS_FILE
    if record is None or not weights.is_file() or sha256_file(weights) != record['sha256']:
        return False
    record['published'] = {'repo_id': repo_id, 'revision': revision, 'commit_url': commit_url}
    _write(folder, record)
    return True


def cached_weights(repo_id: str, filename: str, revision: Optional[str] = None) -> Optional[str]:
    """The path of ``filename`` of ``repo_id`` in the local Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # a broken cache is not weights
        return None
    return found if isinstance(found, str) else None


def weights_status(folder: Union[str, Path], repo_id: Optional[str]) -> WeightsStatus:
    """Whether the tag in ``folder`` (planned Hub repo ``repo_id``) has weights that can be loaded here."""
    folder = Path(folder)
    record = read_record(folder)
    if record is None:
        return WeightsStatus(False, None, 'no weights have been trained and exported for it yet')
    local = folder / record['file']
    if local.is_file() and local.stat().st_size == record['size']:
        return WeightsStatus(True, local, f'exported weights in {folder}')
    if record.get('published'):
        return WeightsStatus(True, None, f"published to {record['published'].get('repo_id', repo_id)}")
    exported = (f"weights were exported (sha256 {record['sha256'][:12]}...) but they are not published and "
                f"{local} is missing")
    if repo_id:  # only the HF cache can have them: looked up when pretrained=True asks (check_before_load)
        return WeightsStatus(True, None, f'{exported}; only the local Hugging Face cache ({repo_id}) can have them',
                             cache_only=True, repo_id=repo_id)
    return WeightsStatus(False, None, exported)


_verified: Dict[Path, tuple] = {}


def verify_weights_file(path: Union[str, Path], record_folder: Union[str, Path]) -> None:
    """Check ``path`` against the record in ``record_folder`` (size, then SHA-256; once per file version and
    process). Raises :class:`WeightsError` naming the file on a mismatch."""
    path = Path(path)
    record = read_record(record_folder)
    if record is None:
        return
    stat = path.stat()
    key = (stat.st_size, stat.st_mtime_ns)
    if _verified.get(path) == key:
        return
    if record_mismatch(path, record, Path(record_folder) / RECORD_FILE):
        raise WeightsError(
            f"{path}: does not match its record {Path(record_folder) / RECORD_FILE} (expected {record['size']:,} "
            f"bytes, sha256 {record['sha256']}); the file is damaged or was replaced. Export it again with "
            f"`timm-identity export ... --to-hub-configs`, or delete it to use the published copy.")
    _verified[path] = key


def hub_configs_override() -> Optional[Path]:
    value = os.environ.get(HUB_CONFIGS_ENV)
    return Path(value) if value else None
