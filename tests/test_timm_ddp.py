"""timm's own, unmodified train.py as 2 CPU processes (torchrun, gloo) through our launcher, on shards written by
our shard tool: each rank reads other training samples, the ranks end with the same weights, validation counts
every test image exactly once, the run exports and reloads with pretrained=True; and the launcher's shard check
reads train.py's own arguments (``-c`` YAML included).

Opt-in: set TIMM_SRC to a timm source checkout (train.py is not in the pip package). tests/test_distributed.py
runs the same checks with a stand-in that builds DDP the way train.py does, always.

    TIMM_SRC=/path/to/pytorch-image-models python -m pytest -q tests/test_timm_ddp.py
"""
import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from timm_identity.cli import main as cli_main
from timm_identity.data.testing import make_tiny_cifar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TIMM_SRC = Path(os.environ.get('TIMM_SRC', '') or '/nonexistent')
TRAIN_PY = TIMM_SRC / 'train.py'

pytestmark = pytest.mark.skipif(
    not TRAIN_PY.is_file(),
    reason='TIMM_SRC is not set to a timm source checkout (git clone https://github.com/huggingface/pytorch-image-models)')

MODEL_KWARGS = ['--model-kwargs', 'depths=(1,1,1)', 'widths=(8,16,32)', 'stem_chs=8']


def _shards(root, *extra):
    tiny = make_tiny_cifar(root / 'cifar', num_train=48, num_test=24)
    out = root / 'shards'
    assert cli_main(['shards', 'cifar', tiny.folder, '--out', str(out), '--no-progress', '--workers', '1',
                     *extra]) == 0
    return out


def _env(tmp_path):
    for name in ('keys', 'weights'):
        (tmp_path / name).mkdir(exist_ok=True)
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1', 'WDS_KEY_LOG': str(tmp_path / 'keys'),
            'DDP_WEIGHTS': str(tmp_path / 'weights'),
            'PYTHONPATH': os.pathsep.join([str(HERE / 'wds_probe'), os.environ.get('PYTHONPATH', '')])}


def _train_args(shards, out, workers=2):
    return ['-c', str(REPO / 'configs' / 'cifar10_timm_train.yaml'), '--data-dir', str(shards), '--device', 'cpu',
            *MODEL_KWARGS, '--epochs', '1', '-b', '4', '-j', str(workers), '--no-prefetcher', '--output', str(out),
            '--experiment', 'ddp', '--log-interval', '1']


def test_train_py_two_cpu_processes(tmp_path):
    # 8 training shards for 2 processes x 4 loader workers; 4 test shards for the 2 x min(2, 4) validation
    # workers the launcher's check assumes train.py uses (were it 4 per process, 4 of 8 workers would have no
    # shard and the exact count below would fail)
    shards = _shards(tmp_path, '--shard-samples', '6', '--eval-shards', '4')
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                        '-m', 'timm_identity.run_script', str(TRAIN_PY),
                        *_train_args(shards, tmp_path / 'out', workers=4)],
                       capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=400)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert 'Training in distributed mode with multiple processes' in out and 'total 2, device cpu' in out
    seen = {}
    for log in (tmp_path / 'keys').glob('*.txt'):
        for line in log.read_text().splitlines():
            rank, _, key = line.split()
            seen.setdefault(key.split('_')[0], {}).setdefault(rank, Counter())[key] += 1
    # (a) the two ranks read disjoint training samples, half of the 48 each (timm's reader pads each worker's
    # stream to whole batches by repeating some of its own samples, so a rank may decode a few twice)
    train = seen['train']
    assert sorted(train) == ['0', '1'] and not set(train['0']) & set(train['1'])
    assert len(train['0']) == len(train['1']) == 24 and len(set(train['0']) | set(train['1'])) == 48
    # validation (1 epoch, val_interval 1): every one of the 24 test images exactly once over both ranks
    assert sum(seen['test'].values(), Counter()) == Counter({f'test_{i:05d}': 1 for i in range(24)})
    # (b) gradients were all-reduced: identical weights in both processes, equal to the saved checkpoint
    w0, w1 = (load_file(tmp_path / 'weights' / f'rank{r}.safetensors') for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    run = tmp_path / 'out' / 'ddp'
    last = torch.load(run / 'last.pth.tar', map_location='cpu', weights_only=False)['state_dict']
    assert all(torch.equal(last[k], w0[k]) for k in w0)
    assert len(list(csv.DictReader(open(run / 'summary.csv')))) == 1
    # (c) export and reload with pretrained=True
    exported = tmp_path / 'export'
    assert cli_main(['export', str(run), '--arch', 'allconv_resnet_cifar.ddp_test', *MODEL_KWARGS,
                     '--output', str(exported)]) == 0
    import timm
    card = (exported / 'README.md').read_text()
    assert ('- **Evaluation counted:** every image of the split exactly once: webdataset shards checked against 2 '
            'process(es) x 4 loader worker(s)') in card
    model = timm.create_model(f'local-dir:{exported}', pretrained=True)
    best = torch.load(run / 'model_best.pth.tar', map_location='cpu', weights_only=False)['state_dict']
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_launcher_check_reads_train_py_arguments(tmp_path):
    # workers and splits come from the -c YAML and the command line, as train.py itself reads them
    shards = _shards(tmp_path, '--shard-samples', '7')  # test: 7 + 7 + 7 + 3
    base = [sys.executable, '-m', 'timm_identity.run_script', '--check', '--world-size', '2', str(TRAIN_PY),
            *_train_args(shards, tmp_path / 'out')]
    r = subprocess.run(base, capture_output=True, text=True, timeout=200)
    assert r.returncode == 2 and "would not count split 'test' (24 samples in 4 shards)" in r.stderr
    assert '2 process(es) x 2 loader worker(s)' in r.stderr and not (tmp_path / 'out').exists()
    r = subprocess.run([*base, '--val-split', ''], capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr  # no validation: nothing to miscount
    r = subprocess.run([*base, '-j', '8'], capture_output=True, text=True, timeout=200)
    assert r.returncode == 2 and '7 shards for 2 process(es) x 8 loader worker(s) = 16' in r.stderr
