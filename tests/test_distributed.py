"""Several processes through the launcher, on CPU (gloo): the launcher's DDP fix, shard checks and exact
distributed validation, with a stand-in that builds DDP and reads shards the way timm's train.py does
(tests/ddp_standin_train.py; tests/test_timm_ddp.py runs the real train.py when TIMM_SRC is set)."""
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from timm_identity.cli import main as cli_main
from timm_identity.data.testing import make_tiny_cifar
from timm_identity.distributed import allow_cpu_ddp, wds_layout_problems, worker_sample_counts

HERE = Path(__file__).resolve().parent
TINY = ['--model-kwargs', json.dumps({'depths': [1, 1, 1], 'widths': [8, 16, 32], 'stem_chs': 8})]


def _env(tmp_path, **extra):
    keys = tmp_path / 'keys'
    keys.mkdir(exist_ok=True)
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'WDS_KEY_LOG': str(keys),
            'PYTHONPATH': os.pathsep.join([str(HERE / 'wds_probe'), os.environ.get('PYTHONPATH', '')]), **extra}


def _shards(tmp_path, *extra, num_train=48, num_test=24):
    tmp_path.mkdir(parents=True, exist_ok=True)
    tiny = make_tiny_cifar(tmp_path / 'cifar', num_train=num_train, num_test=num_test)
    out = tmp_path / 'shards'
    assert cli_main(['shards', 'cifar', tiny.folder, '--out', str(out), '--no-progress', '--workers', '1',
                     *extra]) == 0
    return out


def _standin(tmp_path):
    script = tmp_path / 'src' / 'train.py'
    script.parent.mkdir()
    shutil.copy(HERE / 'ddp_standin_train.py', script)
    return script


def _torchrun(tmp_path, args, nproc=2):
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}',
                           *args], capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=300)


def _keys(tmp_path):
    """{rank: Counter of (shard, key)} that timm's reader decoded, per split prefix ('train', 'test')."""
    seen = {}
    for log in (tmp_path / 'keys').glob('*.txt'):
        for line in log.read_text().splitlines():
            rank, shard, key = line.split()
            split = key.split('_')[0]
            seen.setdefault(split, {}).setdefault(int(rank), Counter())[key] += 1
    return seen


def test_an_uneven_validation_layout_is_read_wrongly_by_timm_and_refused_by_the_launcher(tmp_path):
    shards = _shards(tmp_path, '--shard-samples', '7')  # test: 24 = 7 + 7 + 7 + 3, for 2 x 2 workers
    script = _standin(tmp_path)
    args = ['--dataset', 'wds/cifar10', '--data-dir', str(shards), '--val-split', 'test', '-j', '2', '-b', '4',
            '--output', str(tmp_path / 'out'), *TINY]
    # what timm's reader does with it (plain script, no launcher, validation only): 24 counted, not 24 images
    r = _torchrun(tmp_path, [str(script), '--no-ddp', '--device-modules', 'timm_identity', *args])
    assert r.returncode == 0, r.stderr[-4000:]
    assert json.loads((tmp_path / 'out' / 'result.json').read_text())['eval_images_counted'] == 24
    counts = sum(_keys(tmp_path)['test'].values(), Counter())
    assert set(counts.values()) != {1} or len(counts) != 24  # some images twice, others never
    # the launcher refuses it before the script starts (under torchrun every process runs this same check with the
    # world size torchrun announces: the 2-process run of test_two_cpu_processes_through_train_imagenet_sh
    # records it)
    shutil.rmtree(tmp_path / 'out')
    # the data folder given positionally, as train.py also takes it: one line, exit 2, nothing written
    positional = [str(shards), *[a for a in args if a not in ('--data-dir', str(shards))]]
    r = subprocess.run([sys.executable, '-m', 'timm_identity.run_script', '--check', '--world-size', '2', str(script),
                        *positional], capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / 'out').exists()
    assert "would not count split 'test' (24 samples in 4 shards) exactly once" in r.stderr
    assert '--eval-shards 4' in r.stderr


def test_layout_rules():
    assert worker_sample_counts([7, 7, 7, 3], 4) == [7, 7, 7, 3]
    assert worker_sample_counts([5] * 10, 4) == [15, 15, 10, 10]  # 10 shards, 2 ranks x 2 workers


@pytest.mark.parametrize('lengths, world, workers, expect', [
    ([6] * 4, 2, 2, None),                # equal shards, a multiple of 2 x 2
    ([6] * 4, 2, 8, None),                # train.py validates with min(2, -j) workers
    ([5] * 10, 2, 2, 'exactly once'),     # 10 shards over 4 workers: 15, 15, 10, 10
    ([6] * 4, 2, 0, '-j 1 or more'),      # -j 0: every rank reads the same samples
    ([6] * 4, 1, 2, None),                # one process reads everything once, whatever the layout
    ([7, 3], 1, 4, None),
])
def test_validation_layout_problems(tmp_path, lengths, world, workers, expect):
    split = {'num_samples': sum(lengths), 'shard_lengths': lengths, 'filenames': [f'{i}.tar' for i in lengths]}
    (tmp_path / '_info.json').write_text(json.dumps({'splits': {'test': split}}))
    problems = wds_layout_problems(str(tmp_path), None, 'test', world, workers)
    assert (problems == []) if expect is None else (len(problems) == 1 and expect in problems[0])


def test_zero_loader_workers_with_several_processes_is_refused(tmp_path):
    split = {'num_samples': 12, 'shard_lengths': [6, 6], 'filenames': ['a.tar', 'b.tar']}
    (tmp_path / '_info.json').write_text(json.dumps({'splits': {'train': split}}))
    [problem] = wds_layout_problems(str(tmp_path), 'train', None, 2, 0)
    assert '-j 1 or more' in problem and 'every process reads the same samples' in problem
    assert wds_layout_problems(str(tmp_path), 'train', None, 1, 0) == []  # one process reads it all, once


def test_fewer_training_shards_than_workers_is_refused(tmp_path):
    split = {'num_samples': 12, 'shard_lengths': [6, 6], 'filenames': ['a.tar', 'b.tar']}
    (tmp_path / '_info.json').write_text(json.dumps({'splits': {'train': split}}))
    assert wds_layout_problems(str(tmp_path), 'train', None, 1, 2) == []
    [problem] = wds_layout_problems(str(tmp_path), 'train', None, 2, 2)
    assert '2 shards for 2 process(es) x 2 loader worker(s) = 4' in problem and 'never ends its epoch' in problem


def test_cpu_ddp_fix_changes_only_cpu_device_ids(monkeypatch):
    seen = []
    ddp = torch.nn.parallel.DistributedDataParallel
    monkeypatch.setattr(ddp, '__init__', lambda self, module, device_ids=None, output_device=None, *a, **k:
                        seen.append((device_ids, output_device)))
    allow_cpu_ddp()
    allow_cpu_ddp()  # idempotent
    cpu_module = torch.nn.Linear(2, 2)
    ddp(cpu_module, device_ids=[torch.device('cpu')])
    ddp(cpu_module, device_ids=['cpu'], output_device='cpu')
    ddp(cpu_module)
    gpu_ids = [torch.device('cuda', 0)]
    ddp(cpu_module, device_ids=gpu_ids, output_device=0)  # not a CPU device: torch decides, as without us
    assert seen == [(None, None), (None, None), (None, None), (gpu_ids, 0)]


def test_two_cpu_processes_through_train_imagenet_sh(tmp_path):
    """tools/train_imagenet.sh with the stand-in as train.py: refused (one line, exit 2, nothing started) on an
    uneven validation layout; on an even one, 2 CPU processes through the launcher read disjoint training
    samples, end with identical weights, validate every test image exactly once, and the run exports and
    reloads with pretrained=True."""
    script = _standin(tmp_path)
    out = tmp_path / 'out'
    sh = [str(HERE.parent / 'tools' / 'train_imagenet.sh'), '--train-py', str(script), '--device', 'cpu',
          '--nproc', '2', '--global-batch', '8', '--output', str(out)]
    extra = ['--', '--dataset', 'wds/cifar10', '--val-split', 'test', '-j', '2', '--steps', '3', *TINY]
    env = {**_env(tmp_path), 'PYTHON': sys.executable}
    uneven = _shards(tmp_path / 'uneven', '--shard-samples', '7')  # test: 24 = 7 + 7 + 7 + 3 for 2 x 2 workers
    r = subprocess.run(['bash', *sh, '--data-dir', str(uneven), *extra], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and not out.exists(), r.stderr[-3000:]
    assert r.stderr.splitlines()[-1].startswith('timm-identity run-script: error: distributed validation would not')
    assert '--eval-shards 4' in r.stderr.splitlines()[-1]
    # 8 training shards for 2 processes x 2 workers; the test split as 4 equal shards
    even = _shards(tmp_path / 'even', '--shard-samples', '6', '--eval-shards', '4')
    r = subprocess.run(['bash', *sh, '--data-dir', str(even), *extra], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert '-m timm_identity.run_script' in r.stderr  # the command it ran, through the launcher
    result = json.loads((out / 'result.json').read_text())
    assert result['world_size'] == 2 and result['wrapper'] == 'DistributedDataParallel'
    record = json.loads((out / 'run' / 'timm_identity_launch.json').read_text())  # the launcher's, for export
    assert record['world_size'] == 2 and 'checked against 2 process(es) x 2 loader' in record['validation_count']
    # (a) the ranks read different training samples: 3 steps x batch 4 each, no key shared
    train = _keys(tmp_path)['train']
    assert sorted(train) == [0, 1] and not set(train[0]) & set(train[1])
    assert all(sum(c.values()) >= 12 for c in train.values())
    # (b) gradients were all-reduced: the ranks end with the same weights, and training changed them
    w0, w1 = load_file(out / 'rank0.safetensors'), load_file(out / 'rank1.safetensors')
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    import timm
    torch.manual_seed(42)
    init = timm.create_model('allconv_resnet_cifar', num_classes=10, **json.loads(TINY[1])).state_dict()
    assert not all(torch.equal(init[k], w0[k]) for k in w0)
    # exact validation: every one of the 24 test images counted, each exactly once
    assert result['eval_images_counted'] == 24
    test = _keys(tmp_path)['test']
    assert sum(test.values(), Counter()) == Counter({f'test_{i:05d}': 1 for i in range(24)})
    # (c) the run exports and reloads with pretrained=True
    exported = tmp_path / 'export'
    assert cli_main(['export', str(out / 'checkpoint.pth.tar'), '--arch', 'allconv_resnet_cifar.ddp_test',
                     '--model-kwargs', 'depths=(1,1,1)', 'widths=(8,16,32)', 'stem_chs=8', '--dataset', 'cifar10',
                     '--output', str(exported)]) == 0
    model = timm.create_model(f'local-dir:{exported}', pretrained=True)
    assert all(torch.equal(v, w0[k]) for k, v in model.state_dict().items())
