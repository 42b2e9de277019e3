"""Evaluation: :func:`evaluate_model` over a whole test set (the trainer's eval points), and
:func:`evaluate_checkpoint`, top-1 error of saved weights on the full CIFAR test set (``timm-identity evaluate``).

Accepts:

* a Hub-format folder (``config.json`` + ``model.safetensors``, as ``train-cifar`` checkpoints and the
  export tool write them), loaded through timm (``local-dir:``) so the fixed head and the run's
  mean/std come from the folder;
* a ``train-cifar`` run folder (its newest checkpoint);
* a bare ``.safetensors`` file, with ``--model`` (and ``--model-kwargs``) saying which network it is;
* a timm name ``hf-hub:...`` / ``local-dir:...`` / ``<model>.<tag>`` with pretrained weights.

Normalisation uses the model's ``pretrained_cfg`` mean/std unless ``--mean/--std`` are given. Weights files
are checked before they are loaded (the size and sha256 recorded in the ``config.json`` beside them, a
readable safetensors header): a damaged file is a one-line error naming it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..integrity import DamagedFileError, check_weights_file, first_line
from .checkpoint import MODEL_FILE, load_model_weights, resolve_checkpoint
from .device import autocast, device_name, resolve_device, software_versions
from .device_data import iterate_eval_batches

# what makes a SOURCE that does not exist a path (a missing file) rather than a timm name
_FILE_SUFFIXES = ('.safetensors', '.pth', '.pt', '.bin', '.tar', '.json')

__all__ = ['evaluate_model', 'load_for_eval', 'evaluate_checkpoint']


@torch.no_grad()
def evaluate_model(
        model: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        batch_size: int = 1000,
        amp: str = 'none',
        channels_last: bool = False,
        flip: bool = False,
) -> Dict[str, float]:
    """Loss, top-1 (and top-5) accuracy and top-1 error in % over the whole set (uint8 NHWC on the
    model's device), in order, no augmentation (``flip``: logits averaged over each image and its horizontal
    mirror, test-time flip). One host synchronisation at the end."""
    from timm.utils import accuracy
    device = images.device
    loss_sum = torch.zeros((), device=device)
    top1_sum = torch.zeros((), device=device)
    top5_sum = torch.zeros((), device=device)
    for x, y in iterate_eval_batches(images, labels, batch_size, mean, std, channels_last):
        with autocast(device, amp):
            logits = model(x)
            if flip:
                logits = (logits.float() + model(x.flip(3)).float()) / 2
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction='sum')
        top1, top5 = accuracy(logits, y, topk=(1, 5))
        top1_sum += top1 * y.numel()
        top5_sum += top5 * y.numel()
    n = labels.numel()
    loss, top1, top5 = (torch.stack([loss_sum, top1_sum, top5_sum]) / n).tolist()
    return {'loss': loss, 'top1': top1, 'top5': top5, 'error': 100.0 - top1, 'num_images': n}


def load_for_eval(source: str, model_name: Optional[str] = None, model_kwargs: Optional[Dict[str, Any]] = None,
                  num_classes: Optional[int] = None) -> torch.nn.Module:
    """The model with the weights of ``source`` (see the module docstring for what ``source`` may be)."""
    import timm
    import timm_identity  # noqa: F401
    path = Path(source)
    if not path.exists() and ':' not in source and (
            '/' in source or os.sep in source or source.startswith(('.', '~')) or path.suffix in _FILE_SUFFIXES):
        raise FileNotFoundError(f'{source}: no such file or folder')
    for name in (model_name, None if path.exists() or ':' in source else source.split('.', 1)[0]):
        if name and not timm.is_model(name):
            raise ValueError(f'unknown model {name!r}' + ('' if name == model_name else f' and no file or folder '
                             f'{source!r}') + f' (timm models from timm_identity: {timm.list_models("allconv*")})')
    if source.startswith('local-dir:'):
        path = Path(source[len('local-dir:'):])
    if path.exists():
        if path.is_dir() and not (path / MODEL_FILE).is_file():
            path = resolve_checkpoint(path)  # a run folder
        if path.is_dir():
            if not (path / MODEL_FILE).is_file():
                raise FileNotFoundError(f'{path}: no {MODEL_FILE} here')
            check_weights_file(path / MODEL_FILE)
            try:
                return timm.create_model(f'local-dir:{path.resolve()}', pretrained=True)
            except (RuntimeError, ValueError, OSError) as e:  # config.json and weights that do not fit, ...
                raise ValueError(f'{path}: timm cannot load it ({first_line(e)})') from None
        if path.suffix != '.safetensors':
            raise ValueError(f'{path}: expected a folder or a .safetensors file')
        if not model_name:
            raise ValueError(f'{path} is a bare weights file: say which network it is with --model '
                             f'(and --model-kwargs if it is not the default architecture)')
        kwargs = dict(model_kwargs or {})
        if num_classes is not None:
            kwargs.setdefault('num_classes', num_classes)
        try:
            model = timm.create_model(model_name, **kwargs)
        except (RuntimeError, TypeError, ValueError) as e:
            raise ValueError(f'cannot build --model {model_name} with --model-kwargs {model_kwargs or {}}: '
                             f'{e}') from None
        try:
            load_model_weights(model, path)
        except DamagedFileError:
            raise
        except ValueError as e:  # another architecture
            raise ValueError(f'{e}: pass the --model and --model-kwargs it was trained with (now --model '
                             f'{model_name}, --model-kwargs {model_kwargs or {}})') from None
        return model
    if ':' in source or '.' in source:
        _check_hf_cache(source)
        try:
            return timm.create_model(source, pretrained=True)
        except RuntimeError as e:  # weights not reachable: the message says which repo and what to do
            raise ValueError(str(e)) from e
    raise FileNotFoundError(f'{source}: no such file or folder (and not a hf-hub:/local-dir:/<model>.<tag> name)')


def _check_hf_cache(name: str) -> None:
    """The weights of a ``hf-hub:`` / ``<model>.<tag>`` name that are already in the local HF cache (put there
    by ``export --to-hf-cache`` or a download), checked like a folder's before timm loads them."""
    import timm
    from timm_identity.pretrained.weights_record import cached_weights
    if name.startswith('hf-hub:'):
        repo_id = name[len('hf-hub:'):]
    else:
        try:
            cfg = timm.models.get_pretrained_cfg(name) if not name.startswith('local-dir:') else None
        except RuntimeError:  # no such tag: timm.create_model says so
            cfg = None
        repo_id = getattr(cfg, 'hf_hub_id', None)
    if repo_id:
        repo_id, _, revision = repo_id.partition('@')
        cached = cached_weights(repo_id, MODEL_FILE, revision=revision or None)
        if cached is not None:
            check_weights_file(cached)


def evaluate_checkpoint(
        source: str,
        data_dir: str,
        dataset: Optional[str] = None,
        verify_md5: bool = True,
        model_name: Optional[str] = None,
        model_kwargs: Optional[Dict[str, Any]] = None,
        mean=None,
        std=None,
        batch_size: int = 1000,
        device: str = 'auto',
        amp: str = 'none',
        channels_last: bool = False,
        flip: bool = False,
        label_type: Optional[str] = None,
) -> Dict[str, Any]:
    """Evaluate ``source`` on the CIFAR test set in ``data_dir``; returns loss, top-1/top-5, error (single
    view), and with ``flip`` also ``flip_*``: the same with the logits averaged over each image and its
    horizontal mirror (test-time flip). ``dataset`` / ``label_type`` default to what the model's number of
    classes says (10: CIFAR-10, 100: CIFAR-100, 20: CIFAR-100's coarse superclasses)."""
    from timm_identity.data.cifar import NUM_CLASSES, load_cifar
    t0 = time.perf_counter()
    num_classes = NUM_CLASSES.get((dataset, label_type or 'fine')) if dataset else None
    model = load_for_eval(source, model_name, model_kwargs, num_classes)
    if dataset is None or label_type is None:
        by_classes = {n: key for key, n in NUM_CLASSES.items()
                      if dataset in (None, key[0]) and label_type in (None, key[1])}
        if model.num_classes not in by_classes:
            raise ValueError(f'the model has {model.num_classes} classes; say which test set with --dataset and '
                             f'--label-type')
        dataset, label_type = by_classes[model.num_classes]
    test = load_cifar(data_dir, dataset, 'test', verify_md5=verify_md5, label_type=label_type)
    if model.num_classes != len(test.classes):
        raise ValueError(f'the model has {model.num_classes} outputs but {dataset} ({label_type} labels) has '
                         f'{len(test.classes)} classes')
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    mean = tuple(mean) if mean else tuple(cfg.get('mean', ()))
    std = tuple(std) if std else tuple(cfg.get('std', ()))
    if len(mean) != 3 or len(std) != 3:
        raise ValueError('no mean/std known for this model: pass --mean and --std (3 values each, 0..1 scale)')
    try:
        dev = resolve_device(device)
    except RuntimeError as e:  # a malformed or unavailable --device
        raise ValueError(str(e) if '--device' in str(e) else f'--device {device}: {e}') from e
    model = model.to(dev).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = torch.from_numpy(np.ascontiguousarray(test.images)).to(dev)
    labels = torch.from_numpy(np.asarray(test.labels, dtype=np.int64)).to(dev)
    mean_t, std_t = torch.tensor(mean, device=dev), torch.tensor(std, device=dev)
    result = evaluate_model(model, images, labels, mean_t, std_t, batch_size, amp, channels_last)
    if flip:
        flipped = evaluate_model(model, images, labels, mean_t, std_t, batch_size, amp, channels_last, flip=True)
        result.update({f'flip_{k}': v for k, v in flipped.items() if k != 'num_images'})
    return {
        'source': source, 'dataset': dataset, 'label_type': label_type, 'split': 'test', **result,
        'mean': mean, 'std': std, 'device': device_name(dev), 'amp': amp,
        'seconds': time.perf_counter() - t0, 'versions': software_versions(),
    }
