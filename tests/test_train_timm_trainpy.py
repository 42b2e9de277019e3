"""timm's own, unmodified train.py with our configs, on tiny shards made by our shard tool, on CPU.

Needs timm's train.py, which is not in the pip package: set TIMM_TRAIN_PY to its path (clone timm at
the tag of the installed version, see tools/train_imagenet.sh --help). Skipped, with the reason, otherwise.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from timm_identity.cli import main as cli_main
from timm_identity.data.testing import make_tiny_cifar, make_tiny_imagenet

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = os.environ.get('TIMM_TRAIN_PY', '')

pytestmark = pytest.mark.skipif(
    not (TRAIN_PY and os.path.isfile(TRAIN_PY)),
    reason='TIMM_TRAIN_PY is not set to timm\'s train.py (clone timm at the installed version\'s tag; '
           'see tools/train_imagenet.sh --help)')

_DESTS_CODE = r'''
import importlib.util, json, sys
sys.argv = ['train.py']
spec = importlib.util.spec_from_file_location('timm_train_py', {path!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print(json.dumps(sorted({{a.dest for p in (mod.parser, mod.config_parser) for a in p._actions}})))
'''


def _run_train_py(args, tmp_path, timeout=240):
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, TRAIN_PY, '--device-modules', 'timm_identity', *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.parametrize('config', ['imagenet_paper.yaml', 'cifar10_timm_train.yaml'])
def test_config_keys_are_train_py_arguments(config):
    # train.py applies the yaml with parser.set_defaults(**cfg): an unknown (misspelt) key is silently ignored
    code = _DESTS_CODE.format(path=TRAIN_PY)
    dests = set(json.loads(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                          check=True, timeout=120).stdout.splitlines()[-1]))
    cfg = yaml.safe_load((REPO / 'configs' / config).read_text())
    assert 'device_modules' in dests, 'this train.py has no --device-modules'
    assert not set(cfg) - dests, f'{config}: keys train.py does not know: {sorted(set(cfg) - dests)}'


def test_cifar_config_one_epoch_on_tiny_shards(tmp_path):
    tiny = make_tiny_cifar(tmp_path / 'cifar', num_train=40, num_test=20)
    shards = tmp_path / 'shards'
    assert cli_main(['shards', 'cifar', tiny.folder, '--out', str(shards), '--shard-samples', '20',
                     '--no-progress', '--workers', '1']) == 0
    out = _run_train_py([
        '-c', str(REPO / 'configs' / 'cifar10_timm_train.yaml'), '--data-dir', str(shards), '--device', 'cpu',
        '--model-kwargs', 'depths=(1,1,1)', 'widths=(8,16,32)', 'stem_chs=8',
        '--epochs', '2', '-b', '8', '-j', '1', '--no-prefetcher', '--output', str(tmp_path / 'out'),
        '--log-interval', '1', '--experiment', 'cifar'], tmp_path)  # the config's own val_interval
    # the recipe as train.py resolved it: classical momentum, lr 0.05, wd 1e-4, no label smoothing
    assert 'Created SGD (momentum) optimizer: lr: 0.05, momentum: 0.9' in out and 'nesterov: False' in out
    assert 'weight_decay: 0.0001' in out and 'criterion=CrossEntropyLoss' in out
    run = tmp_path / 'out' / 'cifar'
    rows = list(csv.DictReader(open(run / 'summary.csv')))
    assert len(rows) == 2 and float(rows[0]['eval_top1']) >= 0
    # the config's cadence: a checkpoint after every epoch, so a kill loses at most one epoch
    assert (run / 'checkpoint-0.pth.tar').is_file() and (run / 'checkpoint-1.pth.tar').is_file()
    # its checkpoint is our tiny model, fixed head included
    import timm
    import timm_identity  # noqa: F401
    model = timm.create_model('allconv_resnet_cifar', depths=(1, 1, 1), widths=(8, 16, 32), stem_chs=8)
    ckpt = torch.load(run / 'last.pth.tar', map_location='cpu', weights_only=False)
    model.load_state_dict(ckpt['state_dict'])
    head = timm.create_model('allconv_resnet_cifar', depths=(1, 1, 1), widths=(8, 16, 32), stem_chs=8).fc.weight
    assert torch.equal(ckpt['state_dict']['fc.weight'], head)


def test_imagenet_config_one_epoch_on_tiny_shards(tmp_path):
    make_tiny_imagenet(tmp_path / 'imagenet', num_train_per_class=4, num_val_per_class=2, size=72)
    shards = tmp_path / 'shards'
    assert cli_main(['shards', 'imagenet', str(tmp_path / 'imagenet'), '--out', str(shards),
                     '--shard-samples', '6', '--no-progress', '--workers', '1']) == 0
    out = _run_train_py([
        '-c', str(REPO / 'configs' / 'imagenet_paper.yaml'), '--data-dir', str(shards), '--device', 'cpu',
        '--model-kwargs', 'depths=(1,1,1,1,1)', 'widths=(8,16,32,64,64)', 'stem_chs=8',
        '--num-classes', '3', '--input-size', '3', '64', '64',
        '--epochs', '1', '-b', '4', '-j', '1', '--no-prefetcher', '--output', str(tmp_path / 'out'),
        '--log-interval', '1', '--experiment', 'imagenet'], tmp_path)
    assert 'Created SGD (momentum) optimizer: lr: 0.1, momentum: 0.9' in out and 'nesterov: False' in out
    assert 'weight_decay: 0.0001' in out and 'criterion=CrossEntropyLoss' in out
    assert (tmp_path / 'out' / 'imagenet' / 'summary.csv').is_file()


def test_export_after_resume_into_the_same_folder(tmp_path, capsys):
    """train.py for 2 epochs, then `--resume` to epoch 3 into the same folder (summary.csv gets a second
    header row), then `timm-identity export` of the run folder: the card's numbers and facts are the run's."""
    tiny = make_tiny_cifar(tmp_path / 'cifar', num_train=40, num_test=20)
    shards = tmp_path / 'shards'
    assert cli_main(['shards', 'cifar', tiny.folder, '--out', str(shards), '--shard-samples', '20',
                     '--no-progress', '--workers', '1']) == 0
    common = ['-c', str(REPO / 'configs' / 'cifar10_timm_train.yaml'), '--data-dir', str(shards), '--device', 'cpu',
              '--model-kwargs', 'depths=(1,1,1)', 'widths=(8,16,32)', 'stem_chs=8', '-b', '8', '-j', '1',
              '--no-prefetcher', '--output', str(tmp_path / 'out'), '--log-interval', '1', '--val-interval', '1',
              '--experiment', 'cifar']
    _run_train_py([*common, '--epochs', '2'], tmp_path)
    run = tmp_path / 'out' / 'cifar'
    _run_train_py([*common, '--epochs', '3', '--resume', str(run / 'last.pth.tar')], tmp_path)
    text = (run / 'summary.csv').read_text()
    assert text.count('epoch,') == 2  # the resume wrote its header again
    header, *rows = [r for r in csv.reader(text.splitlines()) if r]
    rows = [r for r in rows if r != header]
    assert cli_main(['export', str(run), '--arch', 'allconv_resnet_cifar.cifar10', '--output',
                     str(tmp_path / 'export')]) == 0, capsys.readouterr().err
    from huggingface_hub import ModelCard
    card = ModelCard((tmp_path / 'export' / 'README.md').read_text())
    final = {e.metric_name: (e.dataset_split, e.metric_value) for e in card.data.eval_results}['Top-1 accuracy (final)']
    assert final == ('test', round(float(rows[-1][header.index('eval_top1')]), 2))
    assert '- **Length:** 3 epochs of 3 planned (summary.csv)' in card.text
    assert '`test` split, 20 images' in card.text and "paper's recipe" not in card.text.split('## Usage')[0]


def test_train_imagenet_sh_cpu_smoke_run(tmp_path):
    # the CPU smoke one-liner of `tools/train_imagenet.sh --help`, through torchrun, one process
    make_tiny_imagenet(tmp_path / 'imagenet', num_train_per_class=4, num_val_per_class=2, size=72)
    shards = tmp_path / 'shards'
    assert cli_main(['shards', 'imagenet', str(tmp_path / 'imagenet'), '--out', str(shards),
                     '--shard-samples', '6', '--no-progress', '--workers', '1']) == 0
    env = {**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(
        ['bash', str(REPO / 'tools' / 'train_imagenet.sh'), '--train-py', TRAIN_PY, '--data-dir', str(shards),
         '--device', 'cpu', '--nproc', '1', '--global-batch', '8', '--output', str(tmp_path / 'out'), '--',
         '--epochs', '1', '-j', '1', '--no-prefetcher', '--num-classes', '3', '--experiment', 'smoke',
         '--model-kwargs', 'depths=(1,1,1,1,1)', 'widths=(8,8,8,8,8)', 'stem_chs=8'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    rows = list(csv.DictReader(open(tmp_path / 'out' / 'smoke' / 'summary.csv')))
    assert len(rows) == 1 and (tmp_path / 'out' / 'smoke' / 'last.pth.tar').is_file()
