"""Bad input and faults: each defect of the second outside audit, and the one rule for every command (a wrong
argument or a failed write is one line naming the flag or file, exit code 2, nothing left behind that a later
step trusts)."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm

import timm_identity  # noqa: F401
from timm_identity.cli import main
from timm_identity.train.cifar_trainer import train

from train_helpers import TINY_MODEL_ARGS, TINY_RUN, learnable_split, tiny_overrides

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def splits():
    return learnable_split(48, seed=0), learnable_split(24, seed=1)


@pytest.mark.parametrize('depths', [(1, 0, 1), (1, -1, 1), (), (1, 1.5, 1)])
def test_empty_or_negative_stage_is_an_error(depths):
    """Defect 1: an empty stage built and reported a feature map that does not exist."""
    with pytest.raises(ValueError, match='depths'):
        timm.create_model('allconv_resnet_cifar', depths=depths, widths=(8, 16, 32)[:len(depths)] or (8,),
                          strides=(1, 2, 2)[:len(depths)] or (1,))


def test_feature_info_matches_the_maps():
    model = timm.create_model('allconv_resnet_cifar', features_only=True, depths=(1, 2, 1), widths=(8, 16, 32),
                              stem_chs=8)
    import torch
    maps = model(torch.zeros(1, 3, 32, 32))
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    assert [32 // m.shape[-1] for m in maps] == model.feature_info.reduction()


@pytest.mark.parametrize('kwargs, message', [(dict(kernel_size=4), 'kernel_size must be an odd'),
                                             (dict(stem_chs=0), 'stem_chs must be an integer >= 1, got 0'),
                                             (dict(widths=(8, 0, 32)), 'widths must be integers >= 1'),
                                             (dict(strides=(1, 0, 2)), 'strides must be integers >= 1')])
def test_architecture_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        timm.create_model('allconv_resnet_cifar', **kwargs)


def test_resume_refuses_other_training_data_of_the_same_size(tmp_path, splits):
    """Defect 4: only the image count was compared."""
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=2, checkpoint_every=2), *splits)
    assert json.loads((run / 'run_config.json').read_text())['data_sha256']
    other = learnable_split(48, seed=7)  # same size, other pixels
    with pytest.raises(ValueError, match='training data differ from the run'):
        train({'resume': str(run), 'steps': 4, 'progress': False, 'plot': False}, other, splits[1])
    summary = train({'resume': str(run), 'steps': 4, 'progress': False, 'plot': False}, *splits)
    assert summary['status'] == 'completed' and summary['steps'] == 4  # the run's own data still resumes


def test_second_process_on_one_run_folder_is_refused(tmp_path, splits):
    """Defect 5: two processes on one --out-dir both ran before the first checkpoint existed."""
    run = tmp_path / 'run'
    run.mkdir()
    with open(run / '.lock', 'a+') as held:  # what a running train-cifar holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FileExistsError, match='in use by another train-cifar process'):
            train(tiny_overrides(run, steps=2), *splits)
    assert not (run / 'log.jsonl').exists()
    # a run that stopped before its first checkpoint still owns its folder
    (run / 'log.jsonl').write_text('')
    with pytest.raises(FileExistsError, match=r'already holds a run \(log.jsonl\)'):
        train(tiny_overrides(run, steps=2), *splits)


def test_partial_last_log_line_does_not_block_resume(tmp_path, splits, capsys):
    """Defect 6: a partial last record (full disk while appending) blocked --resume with a bare JSON error."""
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=2, checkpoint_every=2), *splits)
    with open(run / 'log.jsonl', 'a') as f:
        f.write('{"step": 3, "loss": 2.1')
    summary = train({'resume': str(run), 'steps': 4, 'progress': False, 'plot': False}, *splits)
    assert summary['status'] == 'completed'
    assert 'dropped a partial last record' in capsys.readouterr().err
    assert [json.loads(line)['step'] for line in (run / 'log.jsonl').read_text().splitlines()] == [1, 2, 3, 4]
    lines = (run / 'log.jsonl').read_text().splitlines()
    (run / 'log.jsonl').write_text('\n'.join(['{"step": 1', *lines[1:]]) + '\n')  # damaged before the end
    with pytest.raises(ValueError, match=f'{run / "log.jsonl"}:1: not a JSON record'):
        train({'resume': str(run), 'steps': 5, 'progress': False, 'plot': False}, *splits)


@pytest.mark.parametrize('flags, message', [
    (['--batch-size', '-1'], '--batch-size: must be at least 1'),
    (['--batch-size', '0'], '--batch-size: must be at least 1'),
    (['--std', '0', '0', '0'], '--std: must be greater than 0'),
    (['--mean', 'nan', '0', '0'], '--mean: must be a finite number'),
])
def test_evaluate_argument_errors(tmp_path, tiny_cifar, capsys, flags, message):
    """Defect 7: --batch-size -1 reported loss 0 / error 100 % with exit code 0 (no image evaluated)."""
    with pytest.raises(SystemExit) as e:
        main(['evaluate', str(tmp_path), '--data-dir', tiny_cifar.folder, *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize('flags, message', [
    (['--pad', '-2'], '--pad must be an integer >= 0'),
    (['--time-limit', '0'], '--time-limit must be a finite number > 0'),
    (['--time-limit', '-5'], '--time-limit must be a finite number > 0'),
    (['--keep-checkpoints', '-1'], '--keep-checkpoints must be 0'),
    (['--momentum', '-1'], '--momentum must be a finite number >= 0 and < 1'),
    (['--lr', 'nan'], '--lr must be a finite number > 0'),
    (['--model-kwargs', 'in_chans=1', 'depths=(1,1,1)', 'widths=(8,16,32)', 'stem_chs=8'],
     'cannot take the cifar10 images'),
])
def test_train_cifar_argument_errors_leave_no_run_folder(tmp_path, tiny_cifar, capsys, flags, message):
    run = tmp_path / 'run'
    argv = ['train-cifar', '--data-dir', tiny_cifar.folder, '--out-dir', str(run), '--steps', '2',
            '--device', 'cpu', '--batch-size', '8', '--no-progress', '--no-plot']
    if flags[0] != '--model-kwargs':
        argv += TINY_MODEL_ARGS
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists()


def test_unwritable_out_dir_is_one_line(tmp_path, tiny_cifar, capsys):
    """An --out-dir that cannot be made (here: under a file; a read-only folder fails the same way)."""
    blocker = tmp_path / 'file'
    blocker.write_text('')
    assert main(['train-cifar', '--data-dir', tiny_cifar.folder, '--out-dir', str(blocker / 'run'),
                 '--steps', '2', *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and str(blocker) in err and 'Traceback' not in err, err
    assert len(err.strip().splitlines()) == 1


def test_failed_checkpoint_write_leaves_no_partial_folder(tmp_path, splits, monkeypatch):
    """A full disk while writing a checkpoint: a one-line OSError naming it, no .tmp-step_* folder left."""
    from timm_identity.train import checkpoint as ckpt_mod

    def full_disk(*a, **k):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(ckpt_mod.torch, 'save', full_disk)
    run = tmp_path / 'run'
    with pytest.raises(OSError, match=r'could not write checkpoint .*step_00000002 \(OSError: \[Errno 28\]'):
        train(tiny_overrides(run, steps=2, checkpoint_every=2), *splits)
    assert not [p for p in (run / 'checkpoints').iterdir() if p.name.startswith('.tmp')]


def test_sigint_writes_an_interrupted_summary(tmp_path, tiny_cifar):
    """Ctrl-C: no traceback, exit code 130, summary.json with status 'interrupted' and how to resume."""
    run = tmp_path / 'run'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen([sys.executable, str(REPO / 'tools' / 'train_cifar.py'), '--data-dir', tiny_cifar.folder,
                             '--out-dir', str(run), '--steps', '100000', '--checkpoint-every', '5',
                             '--eval-every', '100000', '--lr', '0.001', *TINY_RUN], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even if the
    # test runner itself was started with SIGINT ignored (a background job), the child takes Ctrl-C
    deadline = time.time() + 120
    while time.time() < deadline and not (run / 'checkpoints' / 'latest').is_file():
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and 'Traceback' not in err, err
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'] == 'interrupted' and f'--resume {run}' in summary['message']
    assert summary['last_checkpoint'] is not None


def test_export_refuses_a_summary_of_another_run(tmp_path, splits):
    """Defect 10: a CIFAR-100 summary on a CIFAR-10 checkpoint put the other run's dataset and metrics on the card."""
    from timm_identity.hub.export import ExportError, export_checkpoint
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=2, eval_every=2), *splits)
    other = dict(json.loads((run / 'summary.json').read_text()), dataset='cifar100', final_step=7, checkpoint_step=7)
    other['config'] = dict(other['config'], dataset='cifar100')
    (tmp_path / 'other.json').write_text(json.dumps(other))
    with pytest.raises(ExportError) as e:
        export_checkpoint(run, tmp_path / 'out', summary=tmp_path / 'other.json')
    message = str(e.value)
    assert 'does not describe this checkpoint' in message and 'cifar100 run, the checkpoint of a cifar10 run' in message
    assert 'step 7, the checkpoint is step 2' in message and not (tmp_path / 'out').exists()
    folder = export_checkpoint(run, tmp_path / 'ok', summary=run / 'summary.json')  # its own: fine
    assert (folder / 'README.md').is_file()


@pytest.mark.parametrize('argv, message', [
    (['theory', 'linear', '--sweep-depths', '1'], '--sweep-depths: must be at least 3'),
    (['theory', 'linear', '--sweep-gammas', '1000'], '--sweep-gammas: must be in [0, 20]'),
    (['theory', 'linear', '--sweep-gammas', 'nan'], '--sweep-gammas: must be a finite number'),
    (['theory', 'linear', '--sweep-gammas', '-1'], '--sweep-gammas: must be in [0, 20]'),
    (['theory', 'expressivity', '--n', '1'], '--n: must be at least 2'),
    (['theory', 'expressivity', '--close-pairs', '-1'], '--close-pairs: must be at least 0'),
])
def test_theory_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_theory_checks_its_inputs_and_out_before_the_work(tmp_path, capsys):
    assert main(['theory', 'expressivity', '--n', '10', '--close-pairs', '6', '--out', str(tmp_path)]) == 2
    assert '--close-pairs 6: at most n / 2 = 5 pairs' in capsys.readouterr().err
    blocker = tmp_path / 'file'
    blocker.write_text('')
    assert main(['theory', 'expressivity', '--n', '10', '--out', str(blocker / 'sub')]) == 2
    err = capsys.readouterr().err
    assert f'--out {blocker / "sub"}: cannot write there' in err and 'Traceback' not in err


def test_study_signal_refuses_more_images_than_the_split_has(tmp_path, tiny_cifar, capsys):
    assert main(['study', 'signal', '--data-dir', tiny_cifar.folder, '--images', '500', '--out', str(tmp_path)]) == 2
    assert '--images 500: the training split has only 40 images' in capsys.readouterr().err


@pytest.mark.parametrize('repo_id, revision, message', [
    ('a b/c', None, "--repo-id 'a b/c' is not a valid Hub repo id"),
    ('me/model', '../../x', "--revision '../../x' is not a valid branch name"),
    ('me/model', 'a b', "--revision 'a b' is not a valid branch name"),
])
def test_publish_dry_run_refuses_bad_repo_ids_and_revisions(tmp_path, repo_id, revision, message):
    from timm_identity.hub.publish import PublishError, publish
    with pytest.raises(PublishError) as e:
        publish(tmp_path, repo_id, revision=revision, dry_run=True, echo=lambda s: None)
    assert message in str(e.value)


def test_export_overwrite_onto_its_own_source_is_refused(tmp_path, splits):
    from timm_identity.hub.export import ExportError, export_checkpoint
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=2, eval_every=2), *splits)
    ckpt = run / 'checkpoints' / 'step_00000002'
    with pytest.raises(ExportError, match='is the folder of the checkpoint being exported'):
        export_checkpoint(ckpt, ckpt, overwrite=True)
    with pytest.raises(ExportError, match='is the folder of the checkpoint being exported'):
        export_checkpoint(ckpt, run, overwrite=True)
    assert (ckpt / 'model.safetensors').is_file()


def test_run_script_keeps_a_double_dash(tmp_path, capsys):
    script = tmp_path / 's.py'
    script.write_text('import sys; print(sys.argv[1:])\n')
    assert main(['run-script', str(script), '--', 'a']) == 0
    assert capsys.readouterr().out.strip() == "['--', 'a']"


def test_a_broken_tag_folder_breaks_only_that_tag(tmp_path):
    """A damaged weights.json, or a missing TIMM_IDENTITY_HUB_CONFIGS folder, must not break the import."""
    import shutil
    from timm_identity.hub.export import hub_configs_dir
    configs = tmp_path / 'hub_configs'
    shutil.copytree(hub_configs_dir(), configs, ignore=shutil.ignore_patterns('*.safetensors'))
    (configs / 'allconv_resnet_cifar.cifar10' / 'weights.json').write_text('{"file": ')
    code = ("import timm, timm_identity\nprint(timm.is_model('allconv_resnet_cifar'))\n"
            "m = timm.create_model('allconv_resnet_cifar.cifar100')\n"
            "try:\n    timm.create_model('allconv_resnet_cifar.cifar10', pretrained=True)\n"
            "except RuntimeError as e:\n    print(str(e).splitlines()[0])\n")
    for value in (str(configs), str(tmp_path / 'missing')):
        proc = subprocess.run([sys.executable, '-c', code], env={**os.environ, 'TIMM_IDENTITY_HUB_CONFIGS': value},
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == 'True'
        if value == str(configs):
            assert 'weights record is damaged' in proc.stdout
        else:
            assert 'not a folder' in proc.stderr and 'own pretrained tags instead' in proc.stderr
