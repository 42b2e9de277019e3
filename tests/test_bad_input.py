"""Bad input and faults: each defect of the second outside audit, and the one rule for every command (a wrong
argument or a failed write is one line naming the flag or file, exit code 2, nothing left behind that a later
step trusts)."""
import fcntl
import json
import os
import re
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
    assert json.loads((run / 'run.json').read_text())['data']['train_sha256']
    other = learnable_split(48, seed=7)  # same size, other pixels
    with pytest.raises(ValueError, match='the train data differ from the run'):
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
    (['--opt', 'nosuchopt'], 'nosuchopt'),  # the optimizer is built before the run folder: not even a .lock
    (['--model-ema-decay', '1.5'], '--model-ema-decay must be a finite number > 0 and < 1'),
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


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_sigint_writes_an_interrupted_summary(tmp_path, tiny_cifar, sig):
    """Ctrl-C or SIGTERM: no traceback, exit code 130 or 143, summary.json with status 'interrupted' and how to resume,
    no partial checkpoint folder."""
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
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig and 'Traceback' not in err, err
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'] == 'interrupted' and f'--resume {run}' in summary['message']
    assert summary['last_checkpoint'] is not None
    assert not [p for p in (run / 'checkpoints').iterdir() if p.name.startswith('.')]


def test_a_partial_checkpoint_of_a_killed_process_is_removed_on_resume(tmp_path, splits):
    """SIGKILL during a checkpoint write leaves its temporary folder; the run's next start removes it."""
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=2, checkpoint_every=2), *splits)
    leftover = run / 'checkpoints' / '.tmp-step_00000004-99999'
    leftover.mkdir()
    (leftover / 'model.safetensors').write_bytes(b'half')
    train({'resume': str(run), 'steps': 4, 'progress': False, 'plot': False}, *splits)
    assert not leftover.exists() and (run / 'checkpoints' / 'step_00000004').is_dir()


def test_init_from_weights_that_differ_from_their_record_is_refused(tmp_path, splits, capsys):
    """--init-from local-dir:DIR trained from weights that did not match their recorded sha256 (evaluate refused
    them): a swapped or truncated file is a one-line error now, with no run folder."""
    from timm_identity.hub.export import export_checkpoint
    source = tmp_path / 'source'
    train(tiny_overrides(source, steps=2, checkpoint_every=2), *splits)
    folder = export_checkpoint(source, tmp_path / 'exported')
    weights = folder / 'model.safetensors'
    good = weights.read_bytes()
    for damaged in (good[:-7] + b'\0' * 7, good[:len(good) // 2]):  # changed bytes, truncated
        weights.write_bytes(damaged)
        with pytest.raises(ValueError, match=f'{weights}.*(damaged|truncated|sha256)'):
            train(tiny_overrides(tmp_path / 'tuned', steps=1, init_from=f'local-dir:{folder}'), *splits)
        assert not (tmp_path / 'tuned').exists()
    weights.write_bytes(good)
    assert main(['train-cifar', '--init-from', str(tmp_path / 'nothing'), '--out-dir', str(tmp_path / 'x'),
                 *TINY_RUN]) == 2
    assert 'no such file or folder' in capsys.readouterr().err


def test_a_fine_tune_resumes_after_its_base_moved(tmp_path, splits):
    """A resumed --init-from run builds its model from its own checkpoint: the base weights are not needed."""
    from timm_identity.hub.export import export_checkpoint
    source = tmp_path / 'source'
    train(tiny_overrides(source, steps=2, checkpoint_every=2), *splits)
    base = export_checkpoint(source, tmp_path / 'base')
    tuned = tmp_path / 'tuned'
    train(tiny_overrides(tuned, steps=2, checkpoint_every=2, init_from=f'local-dir:{base}'), *splits)
    base.rename(tmp_path / 'moved')
    summary = train({'resume': str(tuned), 'steps': 4, 'progress': False, 'plot': False}, *splits)
    assert summary['status'] == 'completed' and summary['steps'] == 4


def test_export_refuses_a_summary_of_another_run(tmp_path, splits):
    """A summary is checked against the checkpoint it claims (run id, step, weights sha256), never trusted by
    matching sizes: another run's summary of the same dataset and step count, another step of this run, a summary
    whose weights are not these, and a timm summary.csv whose epoch equals a train-cifar step are refused."""
    from timm_identity.hub.export import ExportError, export_checkpoint
    run, twin = tmp_path / 'run', tmp_path / 'twin'
    train(tiny_overrides(run, steps=2, eval_every=1, keep_checkpoints=0), *splits)
    train(tiny_overrides(twin, steps=2, eval_every=1, seed=3), *splits)  # same dataset, same step count
    own = json.loads((run / 'summary.json').read_text())
    cases = [(twin / 'summary.json', 'it is of run'),
             (dict(own, checkpoint_step=1), 'it describes step 1, the checkpoint is step 2'),
             (dict(own, checkpoint_sha256='0' * 64), 'its weights sha256 000000000000... is not that of')]
    for i, (summary, message) in enumerate(cases):
        if isinstance(summary, dict):
            (tmp_path / f's{i}.json').write_text(json.dumps(summary))
            summary = tmp_path / f's{i}.json'
        with pytest.raises(ExportError, match='does not describe this checkpoint: ' + message):
            export_checkpoint(run, tmp_path / 'out', summary=summary)
    (tmp_path / 'summary.csv').write_text('epoch,eval_top1\n2,99.0\n')  # epoch 2 = the checkpoint's step
    with pytest.raises(ExportError, match="summary.csv describes timm checkpoints; .* is a train-cifar checkpoint"):
        export_checkpoint(run, tmp_path / 'out', summary=tmp_path / 'summary.csv')
    assert not (tmp_path / 'out').exists()
    folder = export_checkpoint(run, tmp_path / 'ok', summary=run / 'summary.json')  # its own: fine
    assert (folder / 'README.md').is_file()


def test_export_refuses_a_run_record_of_another_run(tmp_path, splits):
    """A checkpoint's run record is the one of its own run (same run id), never a copy: another run's run.json
    in its folder would put that run's dataset and metrics on the card."""
    from timm_identity.hub.export import ExportError, export_checkpoint
    run, other = tmp_path / 'run', tmp_path / 'other'
    train(tiny_overrides(run, steps=2, eval_every=2), *splits)
    train(tiny_overrides(other, steps=2, eval_every=2, seed=3), *splits)
    (run / 'run.json').write_bytes((other / 'run.json').read_bytes())
    with pytest.raises(ExportError, match='belongs to run .* but .*run.json is the record of run'):
        export_checkpoint(run, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


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


# ------------------------------------------------------------------ third outside audit: bad input and full disks


def _one_line(err: str) -> str:
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.fixture
def sample_copy(tmp_path, monkeypatch):
    """A copy of the shipped demo sample that ``load_cifar10_sample()`` (and so ``demo``) reads instead."""
    import shutil
    from timm_identity.data import sample_images
    folder = tmp_path / 'samples'
    shutil.copytree(sample_images.samples_dir(), folder)
    monkeypatch.setattr(sample_images, 'samples_dir', lambda: folder)
    return folder


def _edit_record(folder, edit):
    path = folder / 'cifar10_test_sample.json'
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=1) + '\n')


@pytest.mark.parametrize('damage, message', [
    (lambda f: _edit_record(f, lambda m: m['labels'].__setitem__(0, 1)),
     'cifar10_test_sample.json: the labels, class names or test-batch indices differ from the SHA-256 it records'),
    (lambda f: _edit_record(f, lambda m: m['classes'].__setitem__(3, 'dog')),
     'the labels, class names or test-batch indices differ'),
    (lambda f: _edit_record(f, lambda m: m.pop('labels_sha256')), 'cifar10_test_sample.json: no labels_sha256'),
    (lambda f: _edit_record(f, lambda m: m.__setitem__('labels', m['labels'][:-1])), 'labels must be 100 integers'),
    (lambda f: (f / 'cifar10_test_sample.json').write_text('{"count": 100, '),
     'cifar10_test_sample.json: not readable'),
    (lambda f: (f / 'cifar10_test_sample.png').write_bytes((f / 'cifar10_test_sample.png').read_bytes()[:5000]),
     'cifar10_test_sample.png: not readable (image file is truncated'),
    (lambda f: (f / 'cifar10_test_sample.png').write_bytes(b'not a png'), 'cifar10_test_sample.png: not readable'),
])
def test_demo_refuses_a_damaged_sample_in_one_line(sample_copy, capsys, damage, message):
    """Audit 3, item 1: the labels were not checked (an edited label was shown as the truth), and a damaged
    JSON record or PNG was a traceback."""
    damage(sample_copy)
    assert main(['demo']) == 2
    out, err = capsys.readouterr()
    line = _one_line(err)
    assert line.startswith('timm-identity demo: error: ') and message in line and 'damaged' in line, line
    assert out == ''  # checked before anything is printed


def test_demo_sample_records_its_labels(sample_copy):
    from timm_identity.data.sample_images import labels_sha256, load_cifar10_sample
    meta = json.loads((sample_copy / 'cifar10_test_sample.json').read_text())
    assert meta['labels_sha256'] == labels_sha256(meta['labels'], meta['classes'], meta['test_batch_indices'])
    _, labels, classes = load_cifar10_sample()  # the shipped record, as shipped
    assert labels.tolist() == meta['labels'] and classes == meta['classes']


@pytest.mark.parametrize('value', ['0', '-3'])
def test_demo_batch_size_must_be_positive(value, capsys):
    """Audit 3, item 1: `demo --batch-size 0` printed nan."""
    with pytest.raises(SystemExit) as e:
        main(['demo', '--batch-size', value])
    assert e.value.code == 2 and f'--batch-size: must be at least 1, got {value}' in capsys.readouterr().err


@pytest.mark.parametrize('fault', ['full', 'read_only'])
def test_evaluate_output_onto_a_full_or_read_only_disk(tmp_path, tiny_cifar, capsys, monkeypatch, fault):
    """Audit 3, item 2: a traceback, and a full disk left an empty eval.json. Now one line naming the file and
    nothing left behind (an existing file keeps its old content)."""
    import errno
    from timm_identity import atomic_io
    from timm_identity.train import cli as train_cli
    calls = []
    monkeypatch.setattr(train_cli, 'evaluate_checkpoint', lambda *a, **k: calls.append(a) or {'error': 12.5})
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    (out_dir / 'old.json').write_text('{"error": 1.0}\n')
    if fault == 'full':
        def full_disk(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(atomic_io.os, 'fsync', full_disk)
        reason = 'No space left on device'
    elif os.geteuid() != 0:
        out_dir.chmod(0o555)
        reason = 'Permission denied'
    else:  # root writes into a chmod-ed folder: a read-only filesystem as open() reports it
        def read_only(path, *a, **k):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        monkeypatch.setattr(atomic_io, 'open', read_only, raising=False)
        reason = 'Read-only file system'
    try:
        for target in (out_dir / 'new' / 'eval.json', out_dir / 'old.json'):
            argv = ['evaluate', str(tmp_path / 'run'), '--data-dir', tiny_cifar.folder, '--output', str(target)]
            assert main(argv) == 2
            line = _one_line(capsys.readouterr().err)
            assert line.startswith(f'error: --output {target}: cannot write') and reason in line, line
        assert sorted(p.name for p in out_dir.iterdir()) == ['old.json']  # no eval.json, temporary file, folder
        assert (out_dir / 'old.json').read_text() == '{"error": 1.0}\n'
    finally:
        out_dir.chmod(0o755)
    if fault == 'read_only' and os.geteuid() != 0:
        assert not calls  # refused before the evaluation


@pytest.mark.parametrize('error', ['safetensors', 'oserror'])
def test_export_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch, error):
    """Audit 3, item 3: safetensors' write error was a traceback; an OSError named a temporary file; the folders
    made for --output stayed."""
    import errno
    import safetensors.torch
    from safetensors import SafetensorError
    from hub_testutil import tiny_checkpoint, write_model_card
    ckpt, _, summary = tiny_checkpoint(tmp_path)
    card = write_model_card(tmp_path)

    def full_disk(tensors, filename, *a, **k):
        if error == 'safetensors':  # what safetensors raises on a full disk
            raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
    monkeypatch.setattr(safetensors.torch, 'save_file', full_disk)
    dest = tmp_path / 'exports'
    output = dest / 'c10'
    assert main(['export', str(ckpt), '--arch', 'allconv_resnet_cifar.cifar10', *TINY_MODEL_ARGS,
                 '--summary', str(summary), '--model-card', str(card), '--output', str(output)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == (f'timm-identity export: error: --output {output}: cannot write it (No space left on device); '
                    f'nothing was written'), line
    assert not dest.exists()
    assert not [p for p in tmp_path.rglob('*') if p.name.startswith('.')]


@pytest.mark.parametrize('flags, message', [
    (['--pad', '1000000'], '--pad must be less than the 32-pixel image size (0 to 31'),
    (['--pad', '32'], '--pad must be less than the 32-pixel image size'),
    (['--decay-steps', '-3'], '--decay-steps must be positive step numbers'),
    (['--decay-steps', '0', '1'], '--decay-steps must be positive step numbers'),
    (['--decay-steps', '1', '2'], '--decay-steps 2 is not inside the run of --steps 2'),
    (['--warmup-steps', '2'], '--warmup-steps 2 must be less than --steps 2'),
    (['--sched', 'constant', '--warmup-steps', '7'], '--warmup-steps 7 must be less than --steps 2'),
    (['--warmup-steps', '-1'], '--warmup-steps must be an integer >= 0'),
])
def test_train_cifar_pad_and_schedule_limits(tmp_path, tiny_cifar, capsys, flags, message):
    """Audit 3, item 4: --pad 1000000 padded the training set by a million pixels, negative --decay-steps and
    steps past the run were taken, and a warmup longer than the run was refused only for cosine."""
    run = tmp_path / 'run'
    assert main(['train-cifar', '--data-dir', tiny_cifar.folder, '--out-dir', str(run), '--steps', '2', *TINY_RUN,
                 *flags]) == 2
    line = _one_line(capsys.readouterr().err)
    assert message in line, line
    assert not run.exists()


def test_recipe_decay_steps_past_a_short_run_are_fine():
    """Only explicit --decay-steps must lie inside the run: the paper recipe's 30k/50k with --steps 6 is a short
    run (every test's), not an error."""
    from timm_identity.train.config import resolve_config
    assert resolve_config({'steps': 6})['decay_steps'] == [30000, 50000]


@pytest.mark.parametrize('argv, message', [
    (['cifar', '{data}', '--label-type', 'coarse'], '--label-type coarse: only CIFAR-100 has coarse labels'),
    (['cifar', '{data}', '--name', 'a-b'], "--name 'a-b': use only ASCII letters, digits and '_'"),
    (['cifar', '{data}', '--name', 'c10{0..1}'], "--name 'c10{0..1}': use only"),
    (['cifar', '{data}', '--name', ''], "--name '': use only"),
    (['imagenet', '{missing}', '--name', 'in.1k'], "--name 'in.1k': use only"),
])
def test_shards_refuses_coarse_cifar10_and_bad_names_before_writing(tmp_path, tiny_cifar, capsys, argv, message):
    """Audit 3, item 5: coarse labels for CIFAR-10 and a name with '-' were tracebacks (after reading the data)."""
    out = tmp_path / 'shards'
    places = {'{data}': str(tiny_cifar.folder), '{missing}': str(tmp_path / 'no_imagenet')}
    argv = [places.get(a, a) for a in argv]
    assert main(['shards', *argv, '--out', str(out), '--no-progress', '--workers', '1']) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f'timm-identity shards {argv[0]}: error: ') and message in line, line
    assert not out.exists()


def test_publish_dry_run_refuses_a_fifo_without_reading_it(tmp_path, capsys):
    """Audit 3, item 6: a FIFO in the folder hung `publish --dry-run` (reading it waits for a writer)."""
    folder = tmp_path / 'export'
    folder.mkdir()
    (folder / 'config.json').write_text('{"architecture": "allconv_resnet_cifar"}')
    os.mkfifo(folder / 'README.md')

    def hung(signum, frame):
        raise TimeoutError('publish --dry-run hung on the FIFO')
    old = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        assert main(['publish', str(folder), '--repo-id', 'me/model', '--dry-run']) == 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    line = _one_line(capsys.readouterr().err)
    assert line == (f'timm-identity publish: error: Refusing to publish {folder}: README.md is a FIFO (named pipe), '
                    f'not a regular file or folder; remove it. Nothing was read or uploaded.'), line


def test_a_checkpoint_without_its_record_or_with_a_stray_ema_is_not_taken(tmp_path, splits):
    """A checkpoint of this layout records every file it holds: without the record (weights of another run copied
    in, "files" deleted), --resume and export refuse it; an EMA file in a run trained without one is not exported."""
    from timm_identity.hub.export import ExportError, export_checkpoint
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=2, checkpoint_every=2), *splits)
    ckpt = run / 'checkpoints' / 'step_00000002'
    (ckpt / 'model_ema.safetensors').write_bytes((ckpt / 'model.safetensors').read_bytes())  # a stray file
    card = (export_checkpoint(run, tmp_path / 'out') / 'README.md').read_text()
    assert 'step_00000002/model.safetensors), the weights themselves' in card and 'EMA' not in card
    config = json.loads((ckpt / 'config.json').read_text())
    del config['files']
    (ckpt / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ValueError, match='model.safetensors.*record'):
        train({'resume': str(run), 'steps': 4}, *splits)
    with pytest.raises(ExportError, match='model.safetensors.*record'):
        export_checkpoint(run, tmp_path / 'out2')
    assert not (tmp_path / 'out2').exists()


def test_any_failure_of_the_loop_ends_in_the_summary(tmp_path, splits):
    """An error the loop did not foresee (here in the batch; out of memory would be the same) still ends the run
    in its one place: summary.json says it failed and where, then the error is raised."""
    run = tmp_path / 'run'

    def broken(step, x, y):
        if step == 3:
            raise RuntimeError('out of memory (stand-in)')
        return x, y
    with pytest.raises(RuntimeError, match='stand-in'):
        train(tiny_overrides(run, steps=6, checkpoint_every=2), *splits, batch_hook=broken)
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'] == 'failed' and 'RuntimeError: out of memory (stand-in) at step 3' in summary['message']
    assert summary['checkpoint_step'] == 2


@pytest.mark.parametrize('damage, message', [
    (lambda run: (run / 'log.jsonl').write_text((run / 'log.jsonl').read_text() + '{"foo": 1}\n[1]\n'),
     'log.jsonl:3: not a log record'),
    (lambda run: (run / 'run.json').write_text(json.dumps({**json.loads((run / 'run.json').read_text()),
                                                           'config': 1})), 'damaged run record \\(config'),
])
def test_a_damaged_run_record_or_log_is_one_line(tmp_path, splits, capsys, damage, message):
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=2, checkpoint_every=2), *splits)
    damage(run)
    assert main(['export', str(run), '--output', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err


def test_a_checkpoint_moved_aside_to_be_replaced_is_put_back(tmp_path, splits):
    """Killed between the two renames of a re-saved step, the old checkpoint exists only as .old-step_*: the next
    start puts it back instead of deleting the only copy."""
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=4, checkpoint_every=2, keep_checkpoints=0), *splits)
    step4 = run / 'checkpoints' / 'step_00000004'
    weights = (step4 / 'model.safetensors').read_bytes()
    step4.rename(run / 'checkpoints' / '.old-step_00000004-4242')
    train({'resume': str(run / 'checkpoints' / 'step_00000002'), 'steps': 3, 'progress': False, 'plot': False},
          *splits)
    assert (step4 / 'model.safetensors').read_bytes() == weights and not list((run / 'checkpoints').glob('.old-*'))


def test_a_damaged_shipped_file_is_one_line_in_the_demo(tmp_path, monkeypatch, capsys):
    import shutil
    from timm_identity.pretrained.tags import hub_configs_root
    copy = tmp_path / 'hub_configs'
    shutil.copytree(hub_configs_root(), copy)
    weights = next(copy.glob('*.cifar10/model.safetensors'))
    weights.write_bytes(weights.read_bytes()[:-100])
    monkeypatch.setenv('TIMM_IDENTITY_HUB_CONFIGS', str(copy))
    assert main(['demo']) == 2
    err = capsys.readouterr().err
    assert err.startswith('timm-identity demo: error: ') and str(weights) in err and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1
