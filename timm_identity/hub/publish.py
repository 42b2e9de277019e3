"""Publish an exported folder to a Hugging Face Hub model repo.

Everything that can be checked locally is checked before anything goes over the network: the folder
has ``config.json``, ``README.md`` and safetensors weights, and nothing that could hold a pickle (only
the file types in ``ALLOWED_SUFFIXES``; every ``.safetensors`` must really be one, and match the size and
sha256 that ``config.json`` records for it). Then: a token (from
``hf auth login`` or ``HF_TOKEN``; never printed), a ``whoami`` call that proves the endpoint is reachable
and the token valid, ``create_repo(exist_ok=True)``, the branch for ``--revision`` if it is not ``main``,
and one ``upload_folder`` commit holding exactly the files that ``--dry-run`` lists.
"""
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Union

from huggingface_hub import HfApi, constants, get_token

from ..integrity import DamagedFileError, check_weights_file, sha256_file

__all__ = ['PublishError', 'UploadFile', 'check_repo_names', 'collect_upload', 'publish']

ALLOWED_SUFFIXES = ('.safetensors', '.json', '.md', '.txt', '.yaml', '.yml', '.csv', '.jsonl', '.png', '.jpg',
                    '.jpeg', '.svg')
PICKLE_SUFFIXES = ('.bin', '.pth', '.pt', '.tar', '.ckpt', '.pkl', '.pickle', '.npy', '.npz', '.joblib', '.h5')
REQUIRED = ('config.json', 'README.md')


class PublishError(RuntimeError):
    """A publish that cannot be done (message says why; nothing was uploaded)."""


@dataclass
class UploadFile:
    path_in_repo: str
    local_path: Path
    size: int
    sha256: str


_SPECIAL_KINDS = ((stat.S_ISFIFO, 'a FIFO (named pipe)'), (stat.S_ISSOCK, 'a socket'),
                  (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'))


def _refuse_special_files(folder: Path) -> None:
    """PublishError (one line, naming it) for the first entry under ``folder`` that is neither a regular file, a
    folder nor a symbolic link (which ``collect_upload`` refuses itself): reading a FIFO would wait forever, a
    device would read without end. Checked with ``lstat`` before any file is opened."""
    for dirpath, dirnames, filenames in os.walk(folder):  # does not follow links to folders
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
                continue
            kind = next((what for test, what in _SPECIAL_KINDS if test(mode)), 'a special file')
            raise PublishError(f'Refusing to publish {folder}: {path.relative_to(folder).as_posix()} is {kind}, not '
                               f'a regular file or folder; remove it. Nothing was read or uploaded.')


def collect_upload(folder: Union[str, Path]) -> List[UploadFile]:
    """The files of ``folder`` that a publish uploads, after the local checks (raises PublishError)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f'Not a folder: {folder}')
    _refuse_special_files(folder)
    files: List[UploadFile] = []
    problems: List[str] = []
    root = folder.resolve()
    for path in sorted(folder.rglob('*')):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink() or root not in path.resolve().parents:
            problems.append(f'{rel}: a symbolic link (or a path outside the folder); upload preparation would '
                            f'read its target. Copy the real file in instead')
            continue
        if path.is_dir():
            continue
        if any(part.startswith('.') for part in path.relative_to(folder).parts):
            problems.append(f'{rel}: hidden file (remove it; upload_folder would treat it differently)')
            continue
        if any(c in rel for c in '*?[]'):
            problems.append(f'{rel}: glob characters in the file name (rename it)')
            continue
        name = path.name.lower()
        if name.endswith(PICKLE_SUFFIXES):
            problems.append(f'{rel}: pickle-based weights/data are never published; only safetensors '
                            f'(export the checkpoint with `timm-identity export`)')
            continue
        if not name.endswith(ALLOWED_SUFFIXES):
            problems.append(f'{rel}: file type not allowed (allowed: {", ".join(ALLOWED_SUFFIXES)})')
            continue
        if name.endswith('.safetensors'):
            try:
                check_weights_file(path)  # readable header, and the size / sha256 that config.json records
            except DamagedFileError as e:
                problems.append(str(e))
                continue
        files.append(UploadFile(rel, path, path.stat().st_size, sha256_file(path)))
    names = {f.path_in_repo for f in files}
    for required in REQUIRED:
        if required not in names:
            problems.append(f'{required}: missing (make the folder with `timm-identity export`)')
    if not any(n.endswith('.safetensors') for n in names):
        problems.append('model.safetensors: missing (no weights in the folder)')
    if 'config.json' in names:
        try:
            cfg = json.loads((folder / 'config.json').read_text())
            if not isinstance(cfg, dict) or 'architecture' not in cfg:
                problems.append('config.json: has no "architecture" (not a timm config)')
        except ValueError as e:
            problems.append(f'config.json: not valid JSON ({e})')
    if problems:
        raise PublishError(f'Refusing to publish {folder}:\n  - ' + '\n  - '.join(problems))
    return files


def check_repo_names(folder: Union[str, Path], repo_id: str) -> None:
    """The folder's config.json (``pretrained_cfg.hf_hub_id``) and model card (its ``hf-hub:`` names) must
    name ``repo_id``: a folder exported for another repo would tell its users to load something else."""
    folder = Path(folder)
    named = set()
    cfg = json.loads((folder / 'config.json').read_text())
    hub_id = (cfg.get('pretrained_cfg') or {}).get('hf_hub_id')
    if hub_id:
        named.add(hub_id)
    named.update(re.findall(r'hf-hub:([\w.-]+/[\w.-]+)', (folder / 'README.md').read_text(encoding='utf-8')))
    others = sorted(named - {repo_id})
    if others:
        raise PublishError(
            f'Refusing to publish {folder} to {repo_id!r}: it was exported for {", ".join(map(repr, others))} '
            f'(config.json\'s hf_hub_id and the model card name that repo). Export it again for this repo: '
            f'`timm-identity export CHECKPOINT --arch ARCH.TAG --repo-id {repo_id} --output DIR` and publish DIR, '
            f'or publish this folder with --repo-id {others[0]}. Nothing was uploaded.')


def _scrub(text: str, token: Optional[str]) -> str:
    return text.replace(token, '***') if token else text


def _describe(e: BaseException, token: Optional[str]) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    return _scrub(f'{type(e).__name__}: {first}', token)


def _check_repo_id_and_revision(repo_id: str, revision: Optional[str]) -> None:
    if not repo_id or repo_id.count('/') != 1 or not all(repo_id.split('/')):
        raise PublishError(f'--repo-id must be "owner/name", got {repo_id!r}.')
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f'--repo-id {repo_id!r} is not a valid Hub repo id ({str(e).splitlines()[0]}).') from None
    if revision is not None and (not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9._/-]*', revision)
                                 or '..' in revision.split('/') or revision.endswith(('/', '.lock'))):
        raise PublishError(f'--revision {revision!r} is not a valid branch name (letters, digits, . _ - /; no '
                           f'".." parts).')


def _logged_in_api(endpoint: str, token: str):
    """(HfApi, whoami) for ``token`` at ``endpoint``; a rejected token or an unreachable Hub is one line."""
    from timm_identity import __version__
    api = HfApi(endpoint=endpoint, token=token, library_name='timm-identity', library_version=__version__)
    try:
        return api, api.whoami()
    except Exception as e:
        status = getattr(getattr(e, 'response', None), 'status_code', None)
        if status == 401:
            raise PublishError(f'The Hub at {endpoint} rejected the token (401). Log in again with '
                               f'`hf auth login` or fix HF_TOKEN. Nothing was uploaded.') from None
        raise PublishError(f'Cannot reach the Hub at {endpoint} ({_describe(e, token)}). Check the network and '
                           f'HF_ENDPOINT. Nothing was uploaded.') from None


def publish(
        folder: Union[str, Path],
        repo_id: str,
        *,
        private: bool = False,
        revision: Optional[str] = None,
        dry_run: bool = False,
        commit_message: Optional[str] = None,
        endpoint: Optional[str] = None,
        token: Optional[str] = None,
        echo: Callable[[str], None] = print,
) -> Optional[str]:
    """Upload ``folder`` to the model repo ``repo_id``. Returns the commit URL (None for a dry run)."""
    _check_repo_id_and_revision(repo_id, revision)
    files = collect_upload(folder)
    check_repo_names(folder, repo_id)
    endpoint = (endpoint or constants.ENDPOINT).rstrip('/')
    branch = revision or 'main'
    token = token or get_token()

    header = (f'{endpoint}/{repo_id} (model repo, revision {branch}, '
              f'{"private" if private else "public"} if created)')

    def listing(title: str) -> None:
        echo(f'{title} {header}:')
        width = max(len(f.path_in_repo) for f in files)
        for f in files:
            echo(f'  {f.path_in_repo:<{width}}  {f.size:>14,} bytes  sha256 {f.sha256}')
        echo(f'  {len(files)} files, {sum(f.size for f in files):,} bytes in all')

    if dry_run:
        listing('DRY RUN, nothing is uploaded. Would upload to')
        echo('Token: ' + ('found (not shown)' if token else
                          'none found: a real publish needs `hf auth login` or the HF_TOKEN environment variable'))
        return None

    if constants.HF_HUB_OFFLINE:
        raise PublishError('HF_HUB_OFFLINE is set: cannot publish offline. Nothing was uploaded.')
    if not token:
        raise PublishError('No Hugging Face token: log in with `hf auth login` or set the HF_TOKEN environment '
                           'variable (a token with write access). Nothing was uploaded.')
    api, user = _logged_in_api(endpoint, token)
    echo(f'Logged in as {user.get("name", "?")}.')
    listing('Uploading to')
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        repo_id = repo_url.repo_id
        if branch != 'main':
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(Path(folder)), revision=branch,
            commit_message=commit_message or f'Upload {Path(folder).name} with timm-identity publish',
            allow_patterns=[f.path_in_repo for f in files],
        )
    except Exception as e:
        raise PublishError(f'Publishing to {repo_id} failed ({_describe(e, token)}). The upload is one commit, '
                           f'so the repo holds all of these files or none of them (the repo itself may '
                           f'have been created).') from None
    url = getattr(commit, 'commit_url', None) or str(commit)
    echo(f'Done: {url}')
    return url
