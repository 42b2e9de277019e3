"""Training checkpoints: safetensors weights + a Hub-format config, and the training state beside them.

Layout of a run folder::

    RUN/checkpoints/step_00002000/model.safetensors   every tensor of model.state_dict(), including
                                                      the fixed projection head (a buffer)
    RUN/checkpoints/step_00002000/config.json         timm's Hub config (architecture, model_args,
                                                      pretrained_cfg with the run's mean/std), so the
                                                      folder loads with timm.create_model('local-dir:...')
    RUN/checkpoints/step_00002000/train_state.pt      step, optimizer, scheduler, data generator and
                                                      permutation, RNG states, best error, config
                                                      (plain tensors/containers: torch.load weights_only)
    RUN/checkpoints/latest                            the name of the newest complete checkpoint

Every checkpoint is written into a temporary folder that is renamed into place when complete, and
``latest`` is replaced atomically afterwards, so a run killed at any moment leaves the previous
checkpoint intact and ``latest`` never names a partial one.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from safetensors.torch import load_file, save_file

from ..atomic_io import atomic_write_text

__all__ = [
    'MODEL_FILE', 'CONFIG_FILE', 'STATE_FILE', 'atomic_write_text', 'save_checkpoint', 'resolve_checkpoint',
    'load_train_state', 'load_model_weights', 'model_state_for_save',
]

MODEL_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
STATE_FILE = 'train_state.pt'
LATEST = 'latest'

PathLike = Union[str, os.PathLike]


def _fsync_file(path: Path) -> None:
    with open(path, 'rb+') as f:
        os.fsync(f.fileno())


def model_state_for_save(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """``model.state_dict()`` (parameters and buffers: the fixed head is a buffer) as contiguous CPU
    tensors, which safetensors needs (channels_last weights are not contiguous)."""
    return {k: v.detach().to('cpu', copy=True).contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(
        run_dir: PathLike,
        step: int,
        model: torch.nn.Module,
        train_state: Dict[str, Any],
        write_config,
        keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, and keep the newest ``keep``.

    ``write_config(path)`` writes the Hub-format ``config.json`` (see ``save_config_for_hf``).
    Returns the checkpoint folder.
    """
    root = Path(run_dir) / 'checkpoints'
    root.mkdir(parents=True, exist_ok=True)
    name = f'step_{step:08d}'
    final = root / name
    tmp = root / f'.tmp-{name}-{os.getpid()}'
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(model_state_for_save(model), str(tmp / MODEL_FILE), metadata={'format': 'pt', 'step': str(step)})
    write_config(tmp / CONFIG_FILE)
    torch.save(train_state, tmp / STATE_FILE)
    for f in (MODEL_FILE, CONFIG_FILE, STATE_FILE):
        _fsync_file(tmp / f)
    if final.exists():  # the same step written again (a resumed run re-saving): replace it
        old = root / f'.old-{name}-{os.getpid()}'
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    atomic_write_text(root / LATEST, name + '\n')
    if keep > 0:
        done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith('step_'))
        for old in done[:-keep]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return final


def _is_checkpoint(path: Path) -> bool:
    return (path / MODEL_FILE).is_file() and (path / STATE_FILE).is_file()


def resolve_checkpoint(path: PathLike) -> Path:
    """The checkpoint folder meant by ``path``: a checkpoint folder itself, a run folder
    (its ``checkpoints/latest``), or a ``checkpoints`` folder (its ``latest``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'{path}: no such checkpoint or run folder')
    if _is_checkpoint(path):
        return path
    for root in (path / 'checkpoints', path):
        latest = root / LATEST
        if latest.is_file():
            ckpt = root / latest.read_text().strip()
            if not _is_checkpoint(ckpt):
                raise FileNotFoundError(f'{latest} names {ckpt.name}, which is not a complete checkpoint')
            return ckpt
    raise FileNotFoundError(
        f'{path}: neither a checkpoint folder (with {MODEL_FILE} and {STATE_FILE}) nor a run folder '
        f'with checkpoints/{LATEST}')


def load_train_state(ckpt_dir: PathLike, map_location: Optional[Union[str, torch.device]] = 'cpu') -> Dict[str, Any]:
    """The training state of a checkpoint (loaded with ``weights_only=True``: tensors and containers only)."""
    return torch.load(Path(ckpt_dir) / STATE_FILE, map_location=map_location, weights_only=True)


def load_model_weights(model: torch.nn.Module, path: PathLike) -> None:
    """Load a ``model.safetensors`` (or a folder holding one) into ``model``, strictly: every parameter
    and buffer, including the fixed head, must be there and match."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f'{path} does not match the model: missing {sorted(missing)}, unexpected {sorted(unexpected)}')
