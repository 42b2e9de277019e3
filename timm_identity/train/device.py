"""Where a run computes, and what it records about the machine and software.

Every line that differs between CPU and CUDA lives here, so that each one is a function a CPU test can run
with ``torch.cuda`` stood in for (tests/test_device.py): naming the device, the backend switches a CUDA run
sets, host synchronisation and the autocast context.
"""
from __future__ import annotations

import os
import platform
from contextlib import nullcontext
from typing import Any, Dict

import numpy as np
import torch

__all__ = ['resolve_device', 'autocast', 'device_name', 'software_versions', 'configure_backend', 'synchronize',
           'cpu_model']


def resolve_device(name: str) -> torch.device:
    """``'auto'``: CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f'--device {name}: not a device torch knows ({e})') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device {name}: CUDA is not available on this machine')
    return device


def autocast(device: torch.device, amp: str):
    """bf16 autocast on ``device``'s type for ``amp='bf16'``, else nothing."""
    if amp == 'bf16':
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def configure_backend(device: torch.device) -> None:
    """The speed switches a CUDA run sets before building its model: cuDNN autotuning (fixed input shapes)
    and TF32 matmuls for the float32 parts. Nothing on CPU."""
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision('high')


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; CPU work is done when it returns)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def software_versions() -> Dict[str, Any]:
    import timm
    import timm_identity
    return {
        'python': platform.python_version(),
        'torch': torch.__version__,
        'timm': timm.__version__,
        'timm_identity': timm_identity.__version__,
        'numpy': np.__version__,
        'cuda': torch.version.cuda,
        'cudnn': torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def device_name(device: torch.device) -> str:
    """What a run records as its device: the GPU's name, or the CPU's model, cores and torch threads."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return (f'{device.type} ({cpu_model()}, {os.cpu_count()} logical cores, '
            f'{torch.get_num_threads()} torch threads)')


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``), else the machine type."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
