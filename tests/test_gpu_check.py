"""tools/gpu_check.sh rehearsed on CPU with tiny sizes: every step it runs on a GPU (train-cifar with bf16,
channels_last and torch.compile; evaluate; export; pretrained=True; shards; timm's train.py under torchrun
through the launcher; the step benchmark) runs here, only the device and sizes differ. timm's train.py step
runs when TIMM_SRC is set (it is not in the pip package) and is reported as skipped otherwise."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / 'tools' / 'gpu_check.sh')
TRAIN_PY = Path(os.environ.get('TIMM_SRC', '') or '/nonexistent') / 'train.py'


def _run(*args, cwd=None):
    env = {**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '2'}
    env.pop('TIMM_TRAIN_PY', None)
    return subprocess.run(['bash', SCRIPT, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


def test_every_step_runs_on_cpu(tmp_path, tiny_cifar):
    out = tmp_path / 'check'
    train_py = ['--train-py', str(TRAIN_PY)] if TRAIN_PY.is_file() else []
    r = _run('--data-dir', tiny_cifar.folder, '--out', str(out), '--device', 'cpu', '--tiny', '--steps', '4',
             *train_py)
    assert r.returncode == 0, r.stderr[-4000:]
    result = json.loads((out / 'gpu_check.json').read_text())
    status = {s['step']: s['status'] for s in result['steps']}
    assert status == {'train': 'ok', 'evaluate': 'ok', 'export': 'ok', 'reload': 'ok', 'shards': 'ok',
                      'train.py': 'ok' if train_py else 'skipped', 'benchmark': 'ok'}
    summary = json.loads((out / 'train' / 'summary.json').read_text())
    cfg = json.loads((out / 'train' / 'run.json').read_text())['config']
    assert (cfg['amp'], cfg['channels_last'], cfg['compile'], summary['steps']) == ('bf16', True, True, 4)
    assert result['test_images'] == 20 and result['device_name'].startswith('cpu (')
    assert 'reloaded' in (out / 'reload.log').read_text()
    [bench] = result['train_step']
    assert bench['compile'] and bench['amp'] == 'bf16' and bench['images_per_s'] > 0
    if train_py:
        assert (out / 'timm' / 'gpu_check' / 'summary.csv').is_file()


def test_bad_input_is_one_line_and_exit_2(tmp_path, tiny_cifar):
    for args, message in [((), '--data-dir is required'),
                          (('--data-dir', tiny_cifar.folder), '--out is required'),
                          (('--data-dir', tiny_cifar.folder, '--out', str(tmp_path)), 'exists; give a new folder'),
                          (('--data-dir', tiny_cifar.folder, '--out', str(tmp_path / 'n'), '--nproc', '0'),
                           '--nproc must be a positive integer'),
                          (('--data-dir', tiny_cifar.folder, '--out', str(tmp_path / 'n'), '--device', 'tpu'),
                           '--device must be cuda, cuda:N or cpu')]:
        r = _run(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith('gpu_check.sh: error: ') and message in r.stderr and not (tmp_path / 'n').exists()
    assert _run('--help').returncode == 0
