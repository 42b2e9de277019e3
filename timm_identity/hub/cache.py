"""Put an exported folder into the local Hugging Face cache, as if it had been downloaded from the Hub.

Then ``timm.create_model('<arch>.<tag>', pretrained=True)`` (and ``hf-hub:<repo>``) find the weights through
the ordinary huggingface_hub / timm code paths, also with ``HF_HUB_OFFLINE=1``. The layout is the one
huggingface_hub documents for its cache::

    <cache>/models--<org>--<name>/blobs/<sha256 of the file>
    <cache>/models--<org>--<name>/snapshots/<commit>/<file>  -> ../../blobs/<sha256>   (symlink, or a copy)
    <cache>/models--<org>--<name>/refs/<revision>            (text: <commit>)

``<commit>`` is not a real Hub commit (the files were never pushed): it is the SHA-1 of the file list
and the files' SHA-256s, so the same files give the same snapshot. Once online, huggingface_hub asks the
Hub for the real commit of ``revision`` and downloads the published files as usual.
"""
import hashlib
import os
import shutil
from pathlib import Path
from typing import Optional, Union

from huggingface_hub import constants

from ..integrity import sha256_file

__all__ = ['install_into_hf_cache']


def install_into_hf_cache(
        folder: Union[str, Path],
        repo_id: str,
        cache_dir: Optional[Union[str, Path]] = None,
        revision: str = 'main',
) -> Path:
    """Copy the files of ``folder`` (flat: config.json, model.safetensors, README.md, ...) into the HF cache
    for the model repo ``repo_id`` at ``revision``. Returns the snapshot folder."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith('.'))
    if not files:
        raise FileNotFoundError(f'Nothing to put into the HF cache: {folder} has no files.')
    cache_dir = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    repo_dir = cache_dir / ('models--' + repo_id.replace('/', '--'))
    hashes = {p.name: sha256_file(p) for p in files}
    commit = hashlib.sha1(''.join(f'{n}\0{h}\n' for n, h in hashes.items()).encode()).hexdigest()

    (repo_dir / 'blobs').mkdir(parents=True, exist_ok=True)
    (repo_dir / 'refs').mkdir(parents=True, exist_ok=True)
    snapshot = repo_dir / 'snapshots' / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for p in files:
        blob = repo_dir / 'blobs' / hashes[p.name]
        if blob.is_symlink() or (blob.exists() and sha256_file(blob) != hashes[p.name]):
            blob.unlink()  # a blob is named by its content's sha256: one that is not is damaged; replace it
        if not blob.exists():
            tmp = blob.with_name(blob.name + '.incomplete')
            shutil.copyfile(p, tmp)
            os.replace(tmp, blob)
        link = snapshot / p.name
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            link.symlink_to(os.path.relpath(blob, snapshot))
        except OSError:  # no symlinks on this filesystem: huggingface_hub also accepts plain copies
            shutil.copyfile(blob, link)
    ref = repo_dir / 'refs' / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + '.tmp')
    tmp.write_text(commit)
    os.replace(tmp, ref)
    return snapshot
