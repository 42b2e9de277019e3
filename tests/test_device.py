"""The CUDA-only lines of timm_identity.train.device, run on CPU with torch.cuda stood in for.

What a CPU cannot run honestly (a real CUDA kernel, NCCL) is named in docs/training.md ("What runs where")
and run by tools/gpu_check.sh on a GPU."""
import warnings

import pytest
import torch

from timm_identity.train import device as dev


@pytest.fixture()
def fake_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda d=None: calls.append(('name', d)) or 'NVIDIA H200')
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda d=None: calls.append(('sync', d)))
    return calls


def test_device_name_on_cuda_asks_torch_for_the_gpu_name(fake_cuda):
    cuda = torch.device('cuda:0')
    assert dev.device_name(cuda) == 'NVIDIA H200' and fake_cuda == [('name', cuda)]


def test_device_name_on_cpu_names_the_cpu_model_and_threads():
    name = dev.device_name(torch.device('cpu'))
    assert name.startswith(f'cpu ({dev.cpu_model()}, ') and f'{torch.get_num_threads()} torch threads' in name
    assert dev.cpu_model()  # /proc/cpuinfo's model name, else the machine type


def test_resolve_device_auto_and_cuda(fake_cuda, monkeypatch):
    assert dev.resolve_device('auto') == torch.device('cuda') and dev.resolve_device('cuda:1').index == 1
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert dev.resolve_device('auto') == torch.device('cpu')
    with pytest.raises(ValueError, match='--device cuda: CUDA is not available'):
        dev.resolve_device('cuda')
    with pytest.raises(ValueError, match='--device gpu0: not a device torch knows'):
        dev.resolve_device('gpu0')


def test_synchronize_waits_on_cuda_only(fake_cuda):
    dev.synchronize(torch.device('cpu'))
    assert fake_cuda == []
    dev.synchronize(torch.device('cuda:0'))
    assert fake_cuda == [('sync', torch.device('cuda:0'))]


def test_configure_backend_switches_cudnn_autotune_and_tf32_on_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    precision = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision('highest')
        dev.configure_backend(torch.device('cpu'))
        assert torch.backends.cudnn.benchmark is False and torch.get_float32_matmul_precision() == 'highest'
        dev.configure_backend(torch.device('cuda'))
        assert torch.backends.cudnn.benchmark is True and torch.get_float32_matmul_precision() == 'high'
    finally:
        torch.set_float32_matmul_precision(precision)


@pytest.mark.parametrize('device_type', ['cpu', 'cuda'])
def test_autocast_choice(device_type):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "CUDA is not available, disabling" on a CPU machine
        ctx = dev.autocast(torch.device(device_type), 'bf16')
    assert isinstance(ctx, torch.autocast) and ctx.device == device_type and ctx.fast_dtype == torch.bfloat16
    assert not isinstance(dev.autocast(torch.device(device_type), 'none'), torch.autocast)
