"""benchmarks/speedrun/airbench_cpu.py: the installed airbench94 runs on a CPU through the shim (float32, and bf16
autocast with a finite loss), on a tiny official-format CIFAR-10, and the shim leaves torch as it found it."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from timm_identity.data.testing import make_tiny_cifar

pytest.importorskip('airbench', reason='the optional speedrun dependency (pip install .[speedrun])')
SHIM = Path(__file__).resolve().parents[1] / 'benchmarks' / 'speedrun' / 'airbench_cpu.py'


def _shim():
    spec = importlib.util.spec_from_file_location('airbench_cpu', SHIM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def cifar_2048(tmp_path_factory):
    """2,048 training images: two of airbench's 1,024-image batches per epoch."""
    return make_tiny_cifar(tmp_path_factory.mktemp('cifar'), num_train=2048, num_test=100)


@pytest.mark.parametrize('amp', ['none', 'bf16'])
def test_airbench94_trains_on_cpu(cifar_2048, tmp_path, amp):
    shim = _shim()
    out = tmp_path / 'result.json'
    half, cuda, event = nn.Module.half, nn.Module.cuda, torch.cuda.Event
    assert shim.main(['--data-dir', str(cifar_2048.folder), '--epochs', '1', '--amp', amp,
                      '--work-dir', str(tmp_path / 'work'), '--out', str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r['method'], r['amp'], r['epochs'], r['batch_size']) == ('airbench94', amp, 1.0, 1024)
    assert r['steps'] == 2 and r['images'] == 2048 and len(r['curve']) == 1
    assert 0 <= r['test_acc'] <= 1 and 0 <= r['test_acc_tta'] <= 1 and r['train_time_s'] > 0
    # finite under bf16 too: the whitening init's eigendecomposition must stay float32 (bf16 gives NaN weights)
    assert math.isfinite(r['curve'][-1]['train_loss'])
    assert r['num_params'] == 1_972_792  # airbench94's own net, unchanged
    assert 0.6e9 < r['train_flops_per_image'] < 0.8e9  # ~3 x its 0.236 GFLOP forward
    assert 'cpu (' in r['device'] and r['threads'] == torch.get_num_threads()
    assert (nn.Module.half, nn.Module.cuda, torch.cuda.Event) == (half, cuda, event)  # torch as it was
