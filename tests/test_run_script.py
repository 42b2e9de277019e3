"""`timm-identity run-script` / `python -m timm_identity.run_script`: any timm script runs with our models
registered and its arguments unchanged. CI has no timm checkout, so a stand-in script plays timm's scripts
(tests/test_timm_scripts.py runs the real validate.py / benchmark.py / inference.py when TIMM_SRC is set)."""
import json
import os
import subprocess
import sys

import pytest

STAND_IN = '''
import json, os, sys
import timm
model = timm.create_model(sys.argv[sys.argv.index('--model') + 1])   # what validate.py & co. do first
print(json.dumps({'argv': sys.argv, 'name': __name__, 'path0': sys.path[0], 'timm': timm.__file__,
                  'classes': model.num_classes, 'rank': os.environ.get('RANK')}))
sys.exit(int(os.environ.get('STAND_IN_EXIT', '0')))
'''


@pytest.fixture()
def stand_in(tmp_path):
    script = tmp_path / 'scripts' / 'validate.py'
    script.parent.mkdir()
    script.write_text(STAND_IN)
    return script


def _run(args, env_extra=None, cwd=None):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', **(env_extra or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=180)


def test_plain_python_does_not_know_our_models(stand_in):
    r = _run([str(stand_in), '--model', 'allconv_resnet_cifar.cifar100'])
    assert r.returncode != 0 and 'Unknown model' in r.stderr  # why the launcher exists


@pytest.mark.parametrize('launcher', [['-m', 'timm_identity.run_script'], ['-m', 'timm_identity', 'run-script']])
def test_launcher_runs_the_script_as_main_with_its_arguments(stand_in, launcher):
    args = ['--model', 'allconv_resnet_cifar.cifar100', '--help', '-b', '8', '--', 'x']
    r = _run([*launcher, str(stand_in), *args], {'STAND_IN_EXIT': '3'})
    assert r.returncode == 3, r.stderr  # the script's exit code
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out['argv'] == [str(stand_in), *args] and out['name'] == '__main__' and out['classes'] == 100
    assert out['path0'] == str(stand_in.parent)  # as `python SCRIPT` sets it


def test_installed_timm_is_used_even_inside_a_timm_checkout(stand_in):
    import timm
    fake = stand_in.parent / 'timm'  # a checkout's own timm/ package beside the script
    fake.mkdir()
    (fake / '__init__.py').write_text('raise ImportError("the checkout timm was imported")\n')
    (fake / 'version.py').write_text("__version__ = '0.0.1.dev0'\n")
    r = _run(['-m', 'timm_identity.run_script', str(stand_in), '--model', 'allconv_resnet_cifar'])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])['timm'] == timm.__file__
    assert f'comes from a timm 0.0.1.dev0 checkout; it runs with the installed timm {timm.__version__}' in r.stderr


def test_under_torchrun(stand_in, tmp_path):
    r = _run(['-m', 'torch.distributed.run', '--nproc_per_node=2', '-m', 'timm_identity.run_script', str(stand_in),
              '--model', 'allconv_resnet_imagenet'], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    outs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith('{')]
    assert sorted(o['rank'] for o in outs) == ['0', '1'] and all(o['classes'] == 1000 for o in outs)


def test_missing_script_is_a_clear_error(tmp_path):
    r = _run(['-m', 'timm_identity', 'run-script', str(tmp_path / 'validate.py'), '--model', 'x'])
    assert r.returncode == 2 and 'validate.py: no such file' in r.stderr and 'Traceback' not in r.stderr
