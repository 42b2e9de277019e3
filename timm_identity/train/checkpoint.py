"""Training checkpoints: safetensors weights + a Hub-format config, and the training state beside them.

Layout of a run folder (the run's own record, log and summary: :mod:`.run_record`)::

    RUN/checkpoints/step_00002000/model.safetensors   every tensor of model.state_dict(), including
                                                      the fixed projection head (a buffer)
    RUN/checkpoints/step_00002000/model_ema.safetensors  with --model-ema: the EMA of the weights
    RUN/checkpoints/step_00002000/config.json         timm's Hub config (architecture, model_args, label
                                                      names, pretrained_cfg with the run's mean/std), so the
                                                      folder loads with timm.create_model('local-dir:...'),
                                                      plus "run": {"id", "step"} (the run record it belongs
                                                      to) and "files" (size and sha256 of the files beside it)
    RUN/checkpoints/step_00002000/train_state.pt      step, optimizer, scheduler, data generator and
                                                      permutation, RNG state, wall time
                                                      (plain tensors/containers: torch.load weights_only)
    RUN/checkpoints/latest                            the name of the newest complete checkpoint

Every checkpoint is written into a temporary folder that is renamed into place when complete, and
``latest`` is replaced atomically afterwards, so a run killed at any moment leaves the previous
checkpoint intact and ``latest`` never names a partial one (a temporary folder left by a killed process is
removed when the run next starts: :func:`remove_partial_checkpoints`). ``config.json`` records the size and
sha256 of the weights and ``train_state.pt`` (:mod:`timm_identity.integrity`); loading checks them, and a
damaged checkpoint is a one-line error that names the file and the newest intact checkpoint.
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
    CONFIG_NAME, FILES_KEY, WEIGHTS_FILE, DamagedFileError, check_recorded, check_weights_file, first_line,
    record_files, torch_load_checked,
)

__all__ = [
    'MODEL_FILE', 'EMA_FILE', 'CONFIG_FILE', 'STATE_FILE', 'atomic_write_text', 'checkpoint_path', 'save_checkpoint',
    'resolve_checkpoint', 'remove_partial_checkpoints', 'recorded_weights_sha256',
    'load_train_state', 'load_model_weights', 'model_state_for_save', 'state_dict_mismatch', 'check_checkpoint',
    'newest_intact_checkpoint', 'resume_hint', 'hub_config_writer',
]

MODEL_FILE = WEIGHTS_FILE  # the Hub form's names (timm_identity.integrity): a checkpoint is such a folder
CONFIG_FILE = CONFIG_NAME
STATE_FILE = 'train_state.pt'
EMA_FILE = 'model_ema.safetensors'
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
        ema_model: Optional[torch.nn.Module] = None,
        keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, and keep the newest ``keep``.

    ``write_config(path)`` writes the Hub-format ``config.json`` (:func:`hub_config_writer`); ``ema_model`` (the
    EMA of the weights) becomes ``model_ema.safetensors``. Returns the checkpoint folder.
    """
    final = checkpoint_path(run_dir, step)
    root, name = final.parent, final.name
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f'.tmp-{name}-{os.getpid()}'
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file(model_state_for_save(model), str(tmp / MODEL_FILE), metadata={'format': 'pt'})
        write_config(tmp / CONFIG_FILE)
        torch.save(train_state, tmp / STATE_FILE)
        weights = [MODEL_FILE, STATE_FILE]
        if ema_model is not None:
            save_file(model_state_for_save(ema_model), str(tmp / EMA_FILE),
                      metadata={'format': 'pt'})
            weights.append(EMA_FILE)
        written = [*weights, CONFIG_FILE]
        record_files(tmp, weights)
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


def remove_partial_checkpoints(run_dir: PathLike) -> None:
    """Remove the temporary folders a process killed while writing a checkpoint left in ``RUN/checkpoints``, and put
    back a checkpoint it had moved aside to replace it, if the replacement never arrived (call only while holding
    the run folder's lock: no other process is writing one)."""
    root = Path(run_dir) / 'checkpoints'
    if root.is_dir():
        for leftover in root.iterdir():
            if not leftover.is_dir():
                continue
            if leftover.name.startswith('.old-step_'):  # killed between the two renames of a re-saved step:
                final = root / leftover.name[len('.old-'):].rsplit('-', 1)[0]  # the old one is the only copy
                if not final.exists():
                    os.replace(leftover, final)
                    continue
            if leftover.name.startswith(('.tmp-step_', '.old-step_')):
                shutil.rmtree(leftover, ignore_errors=True)


def recorded_weights_sha256(ckpt_dir: PathLike) -> Optional[str]:
    """The sha256 that a checkpoint's ``config.json`` records for its ``model.safetensors`` (None if none)."""
    try:
        config = json.loads((Path(ckpt_dir) / CONFIG_FILE).read_text())
        return config[FILES_KEY][MODEL_FILE]['sha256']
    except (OSError, ValueError, KeyError, TypeError):
        return None


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


def load_train_state(ckpt_dir: PathLike, map_location: Optional[Union[str, torch.device]] = 'cpu',
                     required: bool = False) -> Dict[str, Any]:
    """The training state of a checkpoint (loaded with ``weights_only=True``: tensors and containers only),
    after checking its recorded size and sha256 (``required``: a file without a record is refused too)."""
    return torch_load_checked(Path(ckpt_dir) / STATE_FILE, required, map_location=map_location)


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


def hub_config_writer(model, run_id: str, mean, std, classes, step: int):
    """``write(path)``: the checkpoint's timm ``config.json`` (Hub form: architecture, model arguments, label names,
    the run's mean/std) and the run it belongs to (``"run": {"id", "step"}``: the run's facts are in its record,
    :mod:`.run_record`), as :func:`save_checkpoint` takes it."""
    from ..timm_private import save_config_for_hf

    def write(path):
        save_config_for_hf(
            model, str(path), data_config={'mean': tuple(mean), 'std': tuple(std)},
            model_config={'label_names': list(classes), 'pretrained_cfg': {  # not the tag the model was built from
                'tag': 'train_cifar_checkpoint',
                'description': 'timm-identity train-cifar checkpoint (its run and step: "run" below).'}})
        config = json.loads(Path(path).read_text())
        config['run'] = {'id': run_id, 'step': step}
        Path(path).write_text(json.dumps(config, indent=2) + '\n')
    return write
