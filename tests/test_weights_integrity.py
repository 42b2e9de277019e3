"""Weights files we write carry their sha256; damaged, truncated or foreign files are one-line errors under
`train-cifar --resume`, `evaluate` and `export`; exports and checkpoints get ordinary (umask) file modes;
bad `--model-kwargs` and missing paths are clear errors."""
import json
import os
import shutil
import stat

import pytest
import torch

from timm_identity.cli import main
from timm_identity.data.testing import make_tiny_cifar
from timm_identity.integrity import record_files, sha256_file
from timm_identity.model_kwargs import parse_model_kwargs

from train_helpers import TINY_MODEL_ARGS, TINY_RUN


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class _umask:
    def __init__(self, mask):
        self.mask = mask

    def __enter__(self):
        self.old = os.umask(self.mask)

    def __exit__(self, *exc):
        os.umask(self.old)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(tiny CIFAR, run folder) of a 4-step train-cifar run with checkpoints at steps 2 and 4, made under
    umask 022."""
    root = tmp_path_factory.mktemp('integrity')
    cifar = make_tiny_cifar(root / 'cifar', num_train=40, num_test=20)
    with _umask(0o022):
        assert main(['train-cifar', '--data-dir', cifar.folder, '--out-dir', str(root / 'run'), '--steps', '4',
                     '--checkpoint-every', '2', '--keep-checkpoints', '0', *TINY_RUN]) == 0
    return cifar, root / 'run'


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of the trained run folder, to damage."""
    return trained[0], shutil.copytree(trained[1], tmp_path / 'run')


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith(('error:', 'timm-identity export: error:'))]
    assert len(lines) == 1 and 'Traceback' not in err, err
    return lines[0]


def test_checkpoint_records_sha256_and_has_ordinary_modes(trained):
    _, run = trained
    ckpt = run / 'checkpoints' / 'step_00000004'
    files = json.loads((ckpt / 'config.json').read_text())['files']
    for name in ('model.safetensors', 'train_state.pt'):
        assert files[name] == {'size': (ckpt / name).stat().st_size, 'sha256': sha256_file(ckpt / name)}
    # safetensors' save_file writes 0o600: a checkpoint is as readable as any other file the run writes
    assert {p.name: _mode(p) for p in ckpt.iterdir()} == {
        'model.safetensors': 0o644, 'config.json': 0o644, 'train_state.pt': 0o644}
    assert _mode(ckpt) == 0o755


def test_flipped_bytes_are_refused_by_evaluate_export_and_resume(run, tmp_path, capsys):
    cifar, run = run
    weights = run / 'checkpoints' / 'step_00000004' / 'model.safetensors'
    data = bytearray(weights.read_bytes())
    data[-2000:-1936] = bytes(b ^ 0xFF for b in data[-2000:-1936])  # 64 bytes inside the tensor data
    weights.write_bytes(bytes(data))

    assert main(['evaluate', str(run), '--data-dir', cifar.folder, '--device', 'cpu']) == 2
    line = _one_line_error(capsys)
    assert f'{weights} is damaged or was changed after it was written' in line
    assert main(['export', str(run), '--output', str(tmp_path / 'export')]) == 2
    assert f'{weights} is damaged' in _one_line_error(capsys) and not (tmp_path / 'export').exists()
    assert main(['train-cifar', '--resume', str(run), '--no-progress', '--no-plot']) == 2
    line = _one_line_error(capsys)
    older = run / 'checkpoints' / 'step_00000002'
    assert f'{weights} is damaged' in line
    assert f'the newest intact checkpoint is step_00000002: resume from it with --resume {older}' in line
    # and that advice works: the run continues from step 2 and rewrites step 4
    assert main(['train-cifar', '--resume', str(older), '--no-progress', '--no-plot']) == 0
    assert main(['evaluate', str(run), '--data-dir', cifar.folder, '--device', 'cpu']) == 0


def test_truncated_train_state_names_the_file_and_the_intact_checkpoint(run, capsys):
    _, run = run
    state = run / 'checkpoints' / 'step_00000004' / 'train_state.pt'
    state.write_bytes(state.read_bytes()[:5000])
    assert main(['train-cifar', '--resume', str(run), '--no-progress']) == 2
    line = _one_line_error(capsys)
    assert f'{state} is damaged (truncated or overwritten): 5,000 bytes' in line and 'step_00000002' in line

    # a checkpoint whose records are gone is not taken (a checkpoint of this layout records every file it holds)
    config = state.parent / 'config.json'
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != 'files'}))
    assert main(['train-cifar', '--resume', str(run), '--no-progress']) == 2
    line = _one_line_error(capsys)
    assert 'model.safetensors' in line and 'record' in line and '--resume' in line and 'step_00000002' in line

    for ckpt in ('step_00000002', 'step_00000004'):  # nothing intact is left
        (run / 'checkpoints' / ckpt / 'train_state.pt').write_bytes(b'')
    assert main(['train-cifar', '--resume', str(run), '--no-progress']) == 2
    assert 'no intact checkpoint is left' in _one_line_error(capsys)


class _Evil:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['EVIL_MARKER'], 'w').write('pickle code ran')",))


def test_malicious_train_state_is_refused_with_a_clear_message(run, tmp_path, monkeypatch, capsys):
    _, run = run
    ckpt = run / 'checkpoints' / 'step_00000004'
    torch.save({'step': 4, 'payload': _Evil()}, ckpt / 'train_state.pt')
    record_files(ckpt, ['model.safetensors', 'train_state.pt'])  # even with a matching record
    marker = tmp_path / 'ran'
    monkeypatch.setenv('EVIL_MARKER', str(marker))
    assert main(['train-cifar', '--resume', str(run), '--no-progress']) == 2
    line = _one_line_error(capsys)
    assert f'{ckpt / "train_state.pt"}: refused to load' in line and 'exec' in line and 'step_00000002' in line
    assert not marker.exists()


def test_damaged_safetensors_header_is_one_line(run, tmp_path, capsys):
    cifar, run = run
    bare = tmp_path / 'bare.safetensors'  # no config.json beside it: nothing recorded, the header is read
    data = bytearray((run / 'checkpoints' / 'step_00000004' / 'model.safetensors').read_bytes())
    data[8:40] = b'#' * 32
    bare.write_bytes(bytes(data))
    assert main(['evaluate', str(bare), '--data-dir', cifar.folder, '--model', 'allconv_resnet_cifar',
                 *TINY_MODEL_ARGS]) == 2
    assert f'{bare}: not a readable safetensors file' in _one_line_error(capsys)
    assert main(['export', str(bare), '--arch', 'allconv_resnet_cifar.cifar10', '--output', str(tmp_path / 'o')]) == 2
    assert f'{bare}: not a readable safetensors file' in _one_line_error(capsys)


def test_export_records_sha256_and_follows_the_umask(trained, tmp_path):
    _, run = trained
    with _umask(0o027):
        assert main(['export', str(run), '--output', str(tmp_path / 'export')]) == 0
    folder = tmp_path / 'export'
    record = json.loads((folder / 'config.json').read_text())['files']['model.safetensors']
    assert record['sha256'] == sha256_file(folder / 'model.safetensors')
    assert _mode(folder) == 0o750  # mkdtemp's 0o700 before
    assert {p.name: _mode(p) for p in folder.iterdir()} == {
        'model.safetensors': 0o640, 'config.json': 0o640, 'README.md': 0o640}


def test_evaluate_missing_path_and_wrong_model(trained, tmp_path, capsys):
    cifar, run = trained
    for missing in (str(tmp_path / 'no_run'), 'no_weights.safetensors'):
        assert main(['evaluate', missing, '--data-dir', cifar.folder]) == 2
        line = _one_line_error(capsys)
        assert f'{missing}: no such file or folder' in line and 'unknown model' not in line
    weights = run / 'checkpoints' / 'step_00000004' / 'model.safetensors'
    assert main(['evaluate', str(weights), '--data-dir', cifar.folder, '--model', 'allconv_resnet_cifar']) == 2
    line = _one_line_error(capsys)
    assert f'{weights} does not fit the model' in line and 'stem.weight (8, 3, 3, 3) vs (16, 3, 3, 3)' in line
    assert 'pass the --model and --model-kwargs it was trained with' in line


def test_model_kwargs_that_do_not_parse_are_errors(trained, tmp_path, capsys):
    assert parse_model_kwargs(['depths=(1,1,1)', 'head=linear', 'drop_rate=0.1', 'act=nn.GELU']) == dict(
        depths=(1, 1, 1), head='linear', drop_rate=0.1, act='nn.GELU')
    for bad in ('depths=(1,1', 'widths=[8,16', 'name="x', 'stem_chs=8x', 'head=', 'a=b,c'):
        with pytest.raises(ValueError, match='cannot read'):
            parse_model_kwargs([bad])
    cifar, run = trained
    argv = ['--model-kwargs', 'depths=(1,1', 'widths=(8,16,32)']
    assert main(['train-cifar', '--data-dir', cifar.folder, '--out-dir', str(tmp_path / 'r'), '--steps', '1',
                 '--device', 'cpu', *argv]) == 2
    assert "--model-kwargs depths=(1,1: cannot read '(1,1'" in _one_line_error(capsys)
    assert not (tmp_path / 'r').exists()
    weights = run / 'checkpoints' / 'step_00000004' / 'model.safetensors'
    assert main(['evaluate', str(weights), '--data-dir', cifar.folder, '--model', 'allconv_resnet_cifar', *argv]) == 2
    assert "cannot read '(1,1'" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as exit_:  # export: an argparse error
        main(['export', str(weights), '--output', str(tmp_path / 'o'), *argv])
    assert exit_.value.code == 2 and "cannot read '(1,1'" in capsys.readouterr().err


def test_evaluate_checks_weights_already_in_the_hf_cache(trained, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants
    from timm_identity.hub.cache import install_into_hf_cache
    cifar, run = trained
    assert main(['export', str(run), '--output', str(tmp_path / 'export')]) == 0
    cache = tmp_path / 'hf_cache'
    snapshot = install_into_hf_cache(tmp_path / 'export', 'someone/tiny', cache_dir=cache)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
    blob = (snapshot / 'model.safetensors').resolve()
    data = bytearray(blob.read_bytes())
    data[-64] ^= 0xFF
    blob.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(['evaluate', 'hf-hub:someone/tiny', '--data-dir', cifar.folder, '--device', 'cpu']) == 2
    assert f'{snapshot / "model.safetensors"} is damaged' in _one_line_error(capsys)
