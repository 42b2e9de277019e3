"""The train-cifar / evaluate commands end to end on tiny official-format archives, resume after a real
SIGKILL, and tools/train_imagenet.sh's argument checks."""
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from timm_identity.cli import main
from timm_identity.data.testing import make_tiny_cifar

from train_helpers import TINY_MODEL_ARGS, TINY_RUN

REPO = Path(__file__).resolve().parents[1]


def _log(run):
    return [json.loads(line) for line in (Path(run) / 'log.jsonl').read_text().splitlines()]


def test_train_cifar_then_evaluate(tmp_path, tiny_cifar, capsys):
    run = tmp_path / 'run'
    # the tiny archive is not the official one: its md5 check must be switched off
    assert main(['train-cifar', '--data-dir', tiny_cifar.archive, '--no-verify-md5', '--out-dir', str(run),
                 '--steps', '4', '--eval-every', '2', *TINY_RUN]) == 0
    summary = json.loads((run / 'summary.json').read_text())
    record = json.loads((run / 'run.json').read_text())
    assert summary['status'] == 'completed' and summary['steps'] == 4 and record['config']['lr'] == 0.05
    start, = record['starts']
    assert start['argv'] and start['versions']['timm'] and start['device'].startswith('cpu')
    assert summary['run_id'] == record['run_id'] and record['data']['test_images'] == 20
    capsys.readouterr()
    # evaluate the run folder (newest checkpoint, a Hub-format folder): the same error as the last eval
    assert main(['evaluate', str(run), '--data-dir', tiny_cifar.folder, '--device', 'cpu']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['num_images'] == 20 and result['dataset'] == 'cifar10'
    assert result['error'] == pytest.approx(summary['final_test_error'], abs=1e-4)
    # a bare safetensors file needs the architecture
    cfg = json.loads((run / 'checkpoints' / 'step_00000004' / 'config.json').read_text())['pretrained_cfg']
    weights = tmp_path / 'bare.safetensors'  # without the config.json beside it
    weights.write_bytes((run / 'checkpoints' / 'step_00000004' / 'model.safetensors').read_bytes())
    assert main(['evaluate', str(weights), '--data-dir', tiny_cifar.folder]) == 2
    assert 'say which network' in capsys.readouterr().err
    assert main(['evaluate', str(weights), '--data-dir', tiny_cifar.folder, '--model', 'allconv_resnet_cifar',
                 *TINY_MODEL_ARGS, '--mean', *map(str, cfg['mean']), '--std', *map(str, cfg['std'])]) == 0
    assert json.loads(capsys.readouterr().out)['error'] == pytest.approx(result['error'])


def test_train_cifar_clear_errors(tmp_path, tiny_cifar, capsys):
    assert main(['train-cifar', '--out-dir', str(tmp_path / 'a'), *TINY_RUN]) == 2
    assert '--data-dir is required' in capsys.readouterr().err
    assert main(['train-cifar', '--data-dir', str(tmp_path / 'nothing'), '--out-dir', str(tmp_path / 'b'),
                 *TINY_RUN]) == 2
    assert 'error:' in capsys.readouterr().err
    assert main(['train-cifar', '--data-dir', tiny_cifar.folder, '--steps', '0', *TINY_RUN]) == 2
    assert 'steps must be a positive integer' in capsys.readouterr().err
    # a bad model, model argument or device: one line naming it, and no run folder left behind
    for flags, message in [(['--model', 'no_such_model'], 'cannot build --model no_such_model'),
                           (['--model-kwargs', 'nope=1'], "cannot build --model allconv_resnet_cifar.*'nope'"),
                           (['--model-kwargs', 'depths'], 'expects key=value items'),
                           (['--device', 'cpux'], '--device cpux: not a device'),
                           (['--model', 'local-dir:/x'], 'would not load those weights.*--init-from')]:
        run = tmp_path / 'bad'
        assert main(['train-cifar', '--data-dir', tiny_cifar.folder, '--out-dir', str(run), '--steps', '2',
                     '--batch-size', '8', '--device', 'cpu', '--no-progress', *flags]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and 'Traceback' not in err, err
        assert not run.exists()


def test_train_cifar_nan_guard_exit_code(tmp_path, tiny_cifar, capsys):
    assert main(['train-cifar', '--data-dir', tiny_cifar.folder, '--out-dir', str(tmp_path / 'run'),
                 '--lr', '1e30', '--steps', '10', '--log-every', '5', *TINY_RUN]) == 3
    err = capsys.readouterr().err
    assert 'loss became non-finite' in err and 'training stopped' in err


def test_resume_after_sigkill_equals_uninterrupted(tmp_path, tiny_cifar):
    steps = 250
    common = [sys.executable, str(REPO / 'tools' / 'train_cifar.py'), '--data-dir', tiny_cifar.folder,
              '--steps', str(steps), '--log-every', '1', '--eval-every', '1000', '--checkpoint-every', '5',
              '--keep-checkpoints', '2', '--decay-steps', '100', '200', *TINY_RUN]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    # reference: uninterrupted
    ref = tmp_path / 'ref'
    subprocess.run([*common, '--out-dir', str(ref)], check=True, env=env, capture_output=True, timeout=300)
    # killed with SIGKILL once it has written a few checkpoints, at whatever point it is then
    run = tmp_path / 'run'
    proc = subprocess.Popen([*common, '--out-dir', str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = run / 'checkpoints' / 'latest'
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() >= 'step_00000015':
            break
        time.sleep(0.005)
    assert proc.poll() is None, 'the run finished before it could be killed; raise steps'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpt_step = int(latest.read_text().strip().split('_')[1])
    assert 15 <= ckpt_step < steps
    # resume with nothing but --resume: the rest comes from the checkpoint
    subprocess.run([sys.executable, str(REPO / 'tools' / 'train_cifar.py'), '--resume', str(run),
                    '--no-progress'], check=True, env=env, capture_output=True, timeout=300)
    a, b = _log(ref), _log(run)
    assert [r['step'] for r in b] == list(range(1, steps + 1))  # records after the checkpoint were replaced
    for ra, rb in zip(a, b):
        keys = ('step', 'loss', 'lr', 'train_acc')
        assert [ra[k] for k in keys] == [rb[k] for k in keys]
    assert b[-1]['lr'] == pytest.approx(0.0005)
    sa, sb = (json.loads((d / 'summary.json').read_text()) for d in (ref, run))
    assert sa['final_test_error'] == sb['final_test_error']


def test_train_imagenet_sh_help_and_errors(tmp_path):
    sh = str(REPO / 'tools' / 'train_imagenet.sh')
    env = {**os.environ, 'PYTHON': sys.executable}
    env.pop('TIMM_TRAIN_PY', None)
    help_ = subprocess.run(['bash', sh, '--help'], capture_output=True, text=True, env=env)
    assert help_.returncode == 0 and 'git clone' in help_.stdout and '-m timm_identity.run_script PATH' in help_.stdout
    r = subprocess.run(['bash', sh, '--data-dir', str(tmp_path)], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and 'no train.py' in r.stderr
    fake = tmp_path / 'train.py'
    fake.write_text('')
    r = subprocess.run(['bash', sh, '--train-py', str(fake), '--data-dir', str(tmp_path)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2 and 'no _info.json' in r.stderr
    (tmp_path / '_info.json').write_text('{}')
    r = subprocess.run(['bash', sh, '--train-py', str(fake), '--data-dir', str(tmp_path), '--nproc', '3'],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and 'not divisible' in r.stderr
    r = subprocess.run(['bash', sh, '--train-py', str(fake), '--data-dir', str(tmp_path), '--nproc', '4',
                        '--dry-run', '--', '--amp'], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert '--nproc_per_node=4' in r.stderr and '-b 64' in r.stderr and '--amp' in r.stderr
    assert 'imagenet_paper.yaml' in r.stderr and '--standalone' in r.stderr and '--device cuda' in r.stderr


def test_train_imagenet_sh_multi_node_and_cpu_command_lines(tmp_path):
    sh = str(REPO / 'tools' / 'train_imagenet.sh')
    env = {**os.environ, 'PYTHON': sys.executable}
    fake = tmp_path / 'train.py'
    fake.write_text('')
    (tmp_path / '_info.json').write_text('{}')
    base = ['bash', sh, '--train-py', str(fake), '--data-dir', str(tmp_path), '--dry-run']

    def run(*flags):
        r = subprocess.run(base + list(flags), capture_output=True, text=True, env=env)
        return r.returncode, r.stderr

    code, cmd = run('--nnodes', '2', '--node-rank', '1', '--master', 'node0:29500')
    assert code == 0, cmd
    assert ('-m torch.distributed.run --nnodes=2 --node_rank=1 --master_addr=node0 --master_port=29500 '
            '--nproc_per_node=8 ') in cmd and '--standalone' not in cmd
    assert ' -b 16 ' in cmd  # 256 over 2 x 8 processes
    code, cmd = run('--nnodes', '2', '--rdzv-endpoint', 'node0:29400', '--rdzv-id', 'job7')
    assert code == 0 and '--nnodes=2 --rdzv_backend=c10d --rdzv_endpoint=node0:29400 --rdzv_id=job7 ' in cmd, cmd
    code, cmd = run('--device', 'cpu', '--nproc', '2', '--global-batch', '8', '--', '--epochs', '1')
    assert code == 0 and ' -b 4 --device cpu ' in cmd, cmd
    assert f'--standalone --nproc_per_node=2 -m timm_identity.run_script {fake} -c ' in cmd  # through the launcher
    for flags, message in [(('--nnodes', '2'), 'needs --node-rank R and --master HOST:PORT'),
                           (('--nnodes', '2', '--node-rank', '2', '--master', 'a:1'), '--node-rank must be 0..1'),
                           (('--nnodes', '2', '--node-rank', '0', '--master', 'a'), '--master must be HOST:PORT'),
                           (('--node-rank', '0'), 'are for --nnodes > 1'),
                           (('--nnodes', '6'), 'not divisible by the 48 processes'),
                           (('--nproc', '0'), '--nproc must be a positive integer'),
                           (('--nnodes', '2', '--rdzv-id', 'job7'), 'needs --node-rank R and --master HOST:PORT (or '
                                                                    '--rdzv-endpoint HOST:PORT)'),
                           (('--nnodes', '2', '--rdzv-endpoint', 'node0'), '--rdzv-endpoint must be HOST:PORT')]:
        code, err = run(*flags)
        assert code == 2 and message in err, (flags, err)


def test_evaluate_clear_errors(tmp_path, tiny_cifar, capsys):
    weights = tmp_path / 'w.safetensors'
    weights.write_bytes(b'')  # never read: the arguments are checked first
    assert main(['evaluate', str(weights), '--data-dir', tiny_cifar.folder, '--model', 'no_such_net']) == 2
    assert "unknown model 'no_such_net'" in capsys.readouterr().err
    assert main(['evaluate', 'no_such_net.cifar10', '--data-dir', tiny_cifar.folder]) == 2
    assert "unknown model 'no_such_net'" in capsys.readouterr().err
    import timm
    from safetensors.torch import save_file
    save_file(timm.create_model('allconv_resnet_cifar', depths=(1, 1, 1), widths=(8, 16, 32), stem_chs=8)
              .state_dict(), str(weights))
    assert main(['evaluate', str(weights), '--data-dir', tiny_cifar.folder, '--model', 'allconv_resnet_cifar',
                 *TINY_MODEL_ARGS, '--device', 'gpu0']) == 2
    assert 'error: --device gpu0' in capsys.readouterr().err


def _to_earlier_layout(run: Path) -> None:
    """Rewrite a run folder as the earlier version wrote it: settings in run_config.json (with the run's mean/std
    and training-data sha256), no run id in the checkpoints' config.json, a run.json copy in each checkpoint."""
    record = json.loads((run / 'run.json').read_text())
    config = {k: v for k, v in record['config'].items() if k not in ('model_ema', 'model_ema_decay')}
    (run / 'run_config.json').write_text(json.dumps({**config, 'data_sha256': record['data']['train_sha256']}))
    summary = json.loads((run / 'summary.json').read_text())
    start = record['starts'][-1]
    (run / 'summary.json').write_text(json.dumps({**summary, 'test_images': record['data']['test_images'],
                                                  'argv': start['argv'], 'device': start['device'], 'config': config}))
    (run / 'run.json').unlink()
    for ckpt in (run / 'checkpoints').glob('step_*'):
        hub = json.loads((ckpt / 'config.json').read_text())
        del hub['run']
        (ckpt / 'config.json').write_text(json.dumps(hub))
        (ckpt / 'run.json').write_text(json.dumps({'config': config, 'dataset': 'cifar100'}))


def test_upgrade_run_of_the_earlier_layout(tmp_path, tiny_cifar, capsys):
    """A run folder of the earlier layout: export and --resume name the command that converts it; after
    `upgrade-run` (the run's own data only), it exports as a run of this version and resumes."""
    run = tmp_path / 'run'
    assert main(['train-cifar', '--data-dir', tiny_cifar.folder, '--no-verify-md5', '--out-dir', str(run),
                 '--steps', '2', '--eval-every', '2', *TINY_RUN]) == 0
    _to_earlier_layout(run)
    capsys.readouterr()
    assert main(['export', str(run), '--output', str(tmp_path / 'x')]) == 2
    assert f'convert its run with `timm-identity upgrade-run {run.resolve()} --data-dir DIR`' in capsys.readouterr().err
    assert main(['train-cifar', '--resume', str(run), '--steps', '3', *TINY_RUN]) == 2
    assert 'timm-identity upgrade-run' in capsys.readouterr().err
    other = make_tiny_cifar(tmp_path / 'other', 'cifar10', num_train=40, num_test=20, seed=5, archive=False).folder
    assert main(['upgrade-run', str(run), '--data-dir', other, '--no-verify-md5']) == 2
    assert 'not the training data of' in capsys.readouterr().err
    mixed = tmp_path / 'mixed' / 'cifar-10-batches-py'  # the run's training data with another test set
    shutil.copytree(tiny_cifar.folder, mixed)
    shutil.copyfile(Path(other) / 'test_batch', mixed / 'test_batch')
    assert main(['upgrade-run', str(run), '--data-dir', str(mixed), '--no-verify-md5']) == 2
    assert "not the run's test set" in capsys.readouterr().err
    smaller = make_tiny_cifar(tmp_path / 'smaller', 'cifar10', num_train=40, num_test=10, archive=False).folder
    shutil.copyfile(Path(smaller) / 'test_batch', mixed / 'test_batch')
    assert main(['upgrade-run', str(run), '--data-dir', str(mixed), '--no-verify-md5']) == 2
    assert 'was evaluated on 20 test images, the data given have 10' in capsys.readouterr().err
    assert not (run / 'run.json').exists() and (run / 'run_config.json').is_file()  # nothing changed
    assert main(['upgrade-run', str(run), '--data-dir', tiny_cifar.folder, '--no-verify-md5']) == 0
    record = json.loads((run / 'run.json').read_text())
    assert record['config']['model_ema'] is False and record['data']['test_images'] == 20
    assert not list(run.glob('checkpoints/step_*/run.json')) and not (run / 'run_config.json').exists()
    assert main(['export', str(run), '--output', str(tmp_path / 'x')]) == 0
    assert json.loads((tmp_path / 'x' / 'config.json').read_text())['pretrained_cfg']['tag'] == 'cifar10'
    assert main(['train-cifar', '--resume', str(run), '--steps', '3', '--data-dir', tiny_cifar.folder,
                 '--no-verify-md5', *TINY_RUN]) == 0
    assert main(['upgrade-run', str(run), '--data-dir', tiny_cifar.folder]) == 2
    assert 'already a run of this layout' in capsys.readouterr().err
