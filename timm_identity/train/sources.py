"""What a user points at, decided in one place: :func:`resolve_source`, used by ``evaluate``, ``export``,
``train-cifar --resume`` and ``train-cifar --init-from``.

A SOURCE is one of:

- a timm name: a registered ``<model>.<tag>``, or ``hf-hub:ID`` (kind ``name``);
- a folder in the Hub form, ``config.json`` + ``model.safetensors`` (an exported folder; kind ``folder``), given
  as a path or as ``local-dir:DIR``;
- a ``train-cifar`` checkpoint folder (``RUN/checkpoints/step_N``: also ``train_state.pt``, and its ``config.json``
  names its run; kind ``checkpoint``), or a run folder, which means its newest complete checkpoint
  (``checkpoints/latest``);
- a timm ``train.py`` output folder (``model_best.pth.tar``; kind ``timm-run``);
- a weights file (``.safetensors``, ``.pth.tar``, ...; kind ``file``); a folder's own ``config.json`` means that
  folder.

Each command then says which kinds it takes (:meth:`Source.require`), with one error naming what was given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .checkpoint import CONFIG_FILE, MODEL_FILE, STATE_FILE, resolve_checkpoint

__all__ = ['Source', 'resolve_source', 'base_model_id', 'TIMM_BEST', 'KIND_WORDS']

TIMM_BEST = 'model_best.pth.tar'
# what makes a SOURCE that does not exist a path (a missing file) rather than a timm name
_FILE_SUFFIXES = ('.safetensors', '.pth', '.pt', '.bin', '.tar', '.json')

KIND_WORDS = {
    'name': 'a timm name (<model>.<tag>, hf-hub:ID)',
    'folder': 'a Hub-form folder (config.json + model.safetensors)',
    'checkpoint': 'a train-cifar checkpoint or run folder',
    'timm-run': "a timm train.py output folder (model_best.pth.tar)",
    'file': 'a weights file',
}


@dataclass(frozen=True)
class Source:
    """A resolved SOURCE: its ``kind`` (see the module docstring), the weights file (not for names), the folder
    (folder, checkpoint, timm run) and the name ``timm.create_model(..., pretrained=True)`` loads it by."""
    text: str
    kind: str
    weights: Optional[Path] = None
    folder: Optional[Path] = None

    @property
    def timm_name(self) -> Optional[str]:
        """``<model>.<tag>`` / ``hf-hub:ID`` as given, ``local-dir:<absolute folder>`` for a folder with a
        ``config.json``; None for what timm cannot load by name (a bare file, a timm run folder)."""
        if self.kind == 'name':
            return self.text
        if self.kind in ('folder', 'checkpoint') and self.folder is not None and (self.folder / CONFIG_FILE).is_file():
            return f'local-dir:{self.folder.resolve()}'
        return None

    def require(self, *kinds: str, what: str) -> 'Source':
        """This source if its kind is one of ``kinds``; else a ValueError saying what ``what`` takes."""
        if self.kind not in kinds:
            raise ValueError(f'{what} {self.text}: that is {KIND_WORDS[self.kind]}; {what} takes '
                             + ' or '.join(KIND_WORDS[k] for k in kinds))
        return self


def _looks_like_path(text: str) -> bool:
    return ('/' in text or os.sep in text or text.startswith(('.', '~'))
            or Path(text).suffix.lower() in _FILE_SUFFIXES)


def _names_a_run(folder: Path) -> bool:
    """A checkpoint's ``config.json`` names its run (``"run": {"id", "step"}``); an exported folder's does not."""
    from .run_record import RunRecordError, checkpoint_run_id
    try:
        return (folder / CONFIG_FILE).is_file() and checkpoint_run_id(folder)[0] is not None
    except RunRecordError:
        return False


def _from_folder(text: str, path: Path) -> Source:
    if (path / MODEL_FILE).is_file():
        kind = 'checkpoint' if (path / STATE_FILE).is_file() or _names_a_run(path) else 'folder'
        return Source(text, kind, weights=path / MODEL_FILE, folder=path)
    if (path / TIMM_BEST).is_file():
        return Source(text, 'timm-run', weights=path / TIMM_BEST, folder=path)
    try:
        ckpt = resolve_checkpoint(path)  # a run folder: its newest complete checkpoint
    except FileNotFoundError as e:
        raise FileNotFoundError(f'{e}; expected a checkpoint, run, Hub-form or timm train.py output folder') from None
    return Source(text, 'checkpoint', weights=ckpt / MODEL_FILE, folder=ckpt)


def resolve_source(text: str) -> Source:
    """The :class:`Source` that ``text`` names (see the module docstring). A path that does not exist is a
    ``FileNotFoundError``; a name that is neither a path nor a registered timm model is a ``ValueError``."""
    text = str(text)
    if text.startswith('hf-hub:'):
        if not text[len('hf-hub:'):].strip():
            raise ValueError(f'{text}: hf-hub: needs a repo id (hf-hub:owner/name)')
        return Source(text, 'name')
    local = text.startswith('local-dir:')
    path = Path(text[len('local-dir:'):] if local else text).expanduser()
    if path.is_dir():
        return _from_folder(text, path)
    if path.is_file():
        if path.name == CONFIG_FILE:
            return _from_folder(text, path.parent)
        if local:
            raise ValueError(f'{text}: local-dir: takes a folder (config.json + model.safetensors), not a file')
        return Source(text, 'file', weights=path)
    if local or path.exists() or _looks_like_path(text):
        raise FileNotFoundError(f'{path}: no such file or folder')
    import timm
    import timm_identity  # noqa: F401  (registers the models)
    model = text.split('.', 1)[0]
    if not timm.is_model(model):
        raise ValueError(f'unknown model {model!r} and no file or folder {text!r} (models from timm_identity: '
                         f'{timm.list_models("allconv*")})')
    return Source(text, 'name')


def base_model_id(name: str) -> Optional[str]:
    """The Hugging Face Hub repo of the weights that ``name`` (a ``--init-from`` value, or timm train.py's ``--model``
    with ``--pretrained``) loads, for a model card's ``base_model``: an ``hf-hub:`` name's repo, or the repo a
    registered tag's weights are published to. None for local weights (a folder, ``local-dir:``) and for a tag that
    ships none: there is no repo holding them to point at."""
    if name.startswith('hf-hub:'):
        return name[len('hf-hub:'):].partition('@')[0] or None
    if name.startswith('local-dir:') or _looks_like_path(name) or Path(name).exists():
        return None
    import timm
    import timm_identity  # noqa: F401  (registers the models)
    try:
        return timm.models.get_pretrained_cfg(name).hf_hub_id or None
    except (RuntimeError, ValueError):
        return None
