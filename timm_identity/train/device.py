"""Where a run computes, and what it records about the machine and software."""
from __future__ import annotations

import os
import platform
from contextlib import nullcontext
from typing import Any, Dict

import numpy as np
import torch

__all__ = ['resolve_device', 'autocast', 'device_name', 'software_versions']


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
    """bf16 autocast for ``amp='bf16'``, else nothing."""
    if amp == 'bf16':
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


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
    if device.type == 'cuda':
        return torch.cuda.getdevice_name(device)
    return (f'{device.type} ({platform.machine()}, {os.cpu_count()} logical cores, '
            f'{torch.get_num_threads()} torch threads)')
