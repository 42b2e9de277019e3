"""Evaluation: :func:`evaluate_model` over a whole test set (the trainer's eval points), and
:func:`evaluate_checkpoint`, top-1 error of saved weights on the full CIFAR test set (``timm-identity evaluate``).

Accepts:

* a Hub-format folder (``config.json`` + ``model.safetensors``, as ``train-cifar`` checkpoints and the
  export tool write them), loaded through timm (``local-dir:``) so the fixed head and the run's
  mean/std come from the folder;
* a ``train-cifar`` run folder (its newest checkpoint);
* a ``.safetensors`` file in such a folder (a checkpoint's ``model_ema.safetensors``: the EMA of its weights),
  built from the folder's ``config.json``; a bare one, with ``--model`` (and ``--model-kwargs``) saying which
  network it is;
* a timm name ``hf-hub:...`` / ``local-dir:...`` / ``<model>.<tag>`` with pretrained weights.

Normalisation uses the model's ``pretrained_cfg`` mean/std unless ``--mean/--std`` are given. Weights files
are checked before they are loaded (the size and sha256 recorded in the ``config.json`` beside them, a
readable safetensors header): a damaged file is a one-line error naming it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..integrity import DamagedFileError, first_line
from .checkpoint import load_model_weights
from .device import autocast, device_name, resolve_device, software_versions
from .device_data import iterate_eval_batches

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
    """The model with the weights of ``source`` (resolved by :func:`timm_identity.train.sources.resolve_source`: a timm
    name, a Hub-form or checkpoint folder, a run folder, or a bare ``.safetensors`` file with ``model_name``)."""
    import timm
    import timm_identity  # noqa: F401
    from .sources import resolve_source
    if model_name and not timm.is_model(model_name):
        raise ValueError(f'unknown model {model_name!r} (timm models from timm_identity: '
                         f'{timm.list_models("allconv*")})')
    src = resolve_source(source).require('name', 'folder', 'checkpoint', 'file', what='evaluate')
    if src.kind == 'name':
        try:  # the weights are checked against their record by the model's own pretrained=True
            return timm.create_model(source, pretrained=True)
        except RuntimeError as e:  # weights not reachable: the message says which repo and what to do
            raise ValueError(str(e)) from e
    assert src.weights is not None
    if src.timm_name is not None:  # the weights are checked against their record by the model's pretrained=True
        try:
            return timm.create_model(src.timm_name, pretrained=True)
        except DamagedFileError:
            raise
        except (RuntimeError, ValueError, OSError) as e:  # config.json and weights that do not fit, ...
            raise ValueError(f'{src.folder}: timm cannot load it ({first_line(e)})') from None
    if src.weights.suffix != '.safetensors':
        raise ValueError(f'{src.weights}: expected a folder or a .safetensors file')
    beside = src.weights.parent / 'config.json'
    if not model_name and beside.is_file():  # e.g. a checkpoint's model_ema.safetensors: the model of its folder
        model = timm.create_model(f'local-dir:{src.weights.parent.resolve()}')  # (its mean/std too), these weights
        load_model_weights(model, src.weights)
        return model
    if not model_name:
        raise ValueError(f'{src.weights} is a bare weights file: say which network it is with --model '
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
        load_model_weights(model, src.weights)
    except DamagedFileError:
        raise
    except ValueError as e:  # another architecture
        raise ValueError(f'{e}: pass the --model and --model-kwargs it was trained with (now --model '
                         f'{model_name}, --model-kwargs {model_kwargs or {}})') from None
    return model


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
