"""Training checkpoints: safetensors weights + a Hub-format config, and the training state beside them.

Layout of a run folder::

    RUN/checkpoints/step_00002000/model.safetensors   every tensor of model.state_dict(), including
                                                      the fixed projection head (a buffer)
    RUN/checkpoints/step_00002000/config.json         timm's Hub config (architecture, model_args,
                                                      pretrained_cfg with the run's mean/std), so the
                                                      folder loads with timm.create_model('local-dir:...')
    RUN/checkpoints/step_00002000/run.json            the run record as of this step (settings, test error
                                                      of these weights and the best so far, length, speed,
                                                      command line): what export reads for the model card
    RUN/checkpoints/step_00002000/train_state.pt      step, optimizer, scheduler, data generator and
                                                      permutation, RNG states, best error, config
                                                      (plain tensors/containers: torch.load weights_only)
    RUN/checkpoints/latest                            the name of the newest complete checkpoint

Every checkpoint is written into a temporary folder that is renamed into place when complete, and
``latest`` is replaced atomically afterwards, so a run killed at any moment leaves the previous
checkpoint intact and ``latest`` never names a partial one. ``config.json`` also records the size and
sha256 of ``model.safetensors`` and ``train_state.pt`` (:mod:`timm_identity.integrity`); loading checks
them, and a damaged checkpoint is a one-line error that names the file and the newest intact checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from safetensors.torch import load_file, save_file

from ..atomic_io import atomic_write_text, set_new_file_mode
from ..integrity import (
    DamagedFileError, check_recorded, check_weights_file, first_line, record_files, torch_load_checked,
)

__all__ = [
    'MODEL_FILE', 'CONFIG_FILE', 'STATE_FILE', 'RUN_FILE', 'atomic_write_text', 'checkpoint_path', 'save_checkpoint',
    'resolve_checkpoint',
    'load_train_state', 'load_model_weights', 'model_state_for_save', 'state_dict_mismatch', 'check_checkpoint',
    'newest_intact_checkpoint', 'resume_hint', 'hub_config_writer',
]

MODEL_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
STATE_FILE = 'train_state.pt'
RUN_FILE = 'run.json'
LATEST = 'latest'

PathLike = Union[str, os.PathLike]


def _fsync_file(path: Path) -> None:
    with open(path, 'rb+') as f:
        os.fsync(f.fileno())


def model_state_for_save(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """``model.state_dict()`` (parameters and buffers: the fixed head is a buffer) as contiguous CPU
    tensors, which safetensors needs (channels_last weights are not contiguous)."""
    return {k: v.detach().to('cpu', copy=True).contiguous() for k, v in model.state_dict().items()}


def checkpoint_path(run_dir: PathLike, step: int) -> Path:
    """The folder of checkpoint ``step`` in a run folder."""
    return Path(run_dir) / 'checkpoints' / f'step_{step:08d}'


def save_checkpoint(
        run_dir: PathLike,
        step: int,
        model: torch.nn.Module,
        train_state: Dict[str, Any],
        write_config,
        run_record: Optional[Dict[str, Any]] = None,
        keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, and keep the newest ``keep``.

    ``write_config(path)`` writes the Hub-format ``config.json`` (see ``save_config_for_hf``); ``run_record``
    (JSON) becomes ``run.json``. Returns the checkpoint folder.
    """
    final = checkpoint_path(run_dir, step)
    root, name = final.parent, final.name
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f'.tmp-{name}-{os.getpid()}'
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file(model_state_for_save(model), str(tmp / MODEL_FILE), metadata={'format': 'pt', 'step': str(step)})
        write_config(tmp / CONFIG_FILE)
        torch.save(train_state, tmp / STATE_FILE)
        written = [MODEL_FILE, CONFIG_FILE, STATE_FILE]
        if run_record is not None:
            (tmp / RUN_FILE).write_text(json.dumps(run_record, indent=2) + '\n')
            written.append(RUN_FILE)
        record_files(tmp, (MODEL_FILE, STATE_FILE))
        for f in written:
            set_new_file_mode(tmp / f)  # save_file writes 0o600
            _fsync_file(tmp / f)
    except BaseException as e:  # a full disk, an interrupt: no half-written checkpoint stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, NotImplementedError):
            raise OSError(f'could not write checkpoint {final} ({type(e).__name__}: '
                          f'{str(e).splitlines()[0] if str(e) else ""}); nothing of it was kept') from e
        raise
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
                raise FileNotFoundError(f'{latest} names {ckpt.name}, which is not a complete checkpoint; '
                                        f'{resume_hint(root, exclude=ckpt)}')
            return ckpt
    raise FileNotFoundError(
        f'{path}: neither a checkpoint folder (with {MODEL_FILE} and {STATE_FILE}) nor a run folder '
        f'with checkpoints/{LATEST}')


def check_checkpoint(ckpt_dir: PathLike) -> None:
    """Raise :class:`DamagedFileError` (naming the file) unless both weights files of the checkpoint are
    intact: equal to their recorded size and sha256, or, where nothing is recorded (older checkpoints),
    readable."""
    ckpt_dir = Path(ckpt_dir)
    check_weights_file(ckpt_dir / MODEL_FILE)
    if not check_recorded(ckpt_dir / STATE_FILE):
        torch_load_checked(ckpt_dir / STATE_FILE, map_location='cpu')


def newest_intact_checkpoint(root: PathLike, exclude: Optional[PathLike] = None) -> Optional[Path]:
    """The newest complete, intact checkpoint folder in ``root`` (a ``checkpoints`` folder), ``exclude`` aside."""
    root = Path(root)
    exclude = Path(exclude).resolve() if exclude is not None else None
    found = sorted((p for p in root.glob('step_*') if _is_checkpoint(p) and p.resolve() != exclude), reverse=True)
    for ckpt in found:
        try:
            check_checkpoint(ckpt)
        except (DamagedFileError, FileNotFoundError):
            continue
        return ckpt
    return None


def resume_hint(root: PathLike, exclude: Optional[PathLike] = None) -> str:
    """What to do instead: the newest intact checkpoint in ``root`` and how to resume from it."""
    intact = newest_intact_checkpoint(root, exclude)
    if intact is None:
        return f'no intact checkpoint is left in {root}: start the run again (another --out-dir)'
    return f'the newest intact checkpoint is {intact.name}: resume from it with --resume {intact}'


def load_train_state(ckpt_dir: PathLike, map_location: Optional[Union[str, torch.device]] = 'cpu') -> Dict[str, Any]:
    """The training state of a checkpoint (loaded with ``weights_only=True``: tensors and containers only),
    after checking its recorded size and sha256."""
    return torch_load_checked(Path(ckpt_dir) / STATE_FILE, map_location=map_location)


def state_dict_mismatch(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """How ``state`` differs from ``model.state_dict()`` in one line (missing and unexpected keys, and
    shapes), or None when it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for what, items in (('missing', missing), ('unexpected', unexpected), ('other shapes (file vs model)', shapes)):
        if items:
            parts.append(f'{len(items)} {what}: {", ".join(items[:3])}{", ..." if len(items) > 3 else ""}')
    return '; '.join(parts) or None


def load_model_weights(model: torch.nn.Module, path: PathLike) -> None:
    """Load a ``model.safetensors`` (or a folder holding one) into ``model``, strictly: every parameter
    and buffer, including the fixed head, must be there and match. The file is checked first
    (recorded sha256, readable header); a damaged file or one of another architecture is a one-line error."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    check_weights_file(path)
    try:
        state = load_file(str(path))
    except Exception as e:  # SafetensorError past the header
        raise DamagedFileError(f'{path}: not a readable safetensors file ({first_line(e)})') from None
    problem = state_dict_mismatch(model, state)
    if problem:
        raise ValueError(f'{path} does not fit the model ({problem})')
    model.load_state_dict(state)


def hub_config_writer(model, cfg: Dict[str, Any], mean, std, classes, step: int):
    """``write(path)``: the checkpoint's timm ``config.json`` (Hub form: label names, the run's mean/std, a tag
    and description naming the run), as :func:`save_checkpoint` takes it."""
    from ..timm_private import save_config_for_hf

    def write(path):
        save_config_for_hf(
            model, str(path),
            model_config={
                'label_names': list(classes),
                'pretrained_cfg': {
                    'tag': f"{cfg['dataset']}_{cfg['recipe']}",
                    'description': f"timm-identity train-cifar checkpoint: {cfg['dataset']}, recipe "
                                   f"{cfg['recipe']}, step {step} of {cfg['steps']}.",
                },
            },
            data_config={'mean': tuple(mean), 'std': tuple(std)},
        )
    return write
