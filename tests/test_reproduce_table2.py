"""tools/reproduce_table2.py: the GPU phase packs a run under the device's file limits, and the collect
phase merges it back and re-evaluates it to the same test error (a CPU dry run with a tiny model)."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from timm_identity.data.testing import make_tiny_cifar
from timm_identity.hub.export import export_checkpoint
from timm_identity.integrity import sha256_file
from timm_identity.train.checkpoint import resolve_checkpoint

from train_helpers import TINY_MODEL_ARGS

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'reproduce_table2.py'


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('reproduce_table2', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_gpu_then_collect(tool, tmp_path, monkeypatch):
    make_tiny_cifar(tmp_path / 'data', 'cifar10', num_train=40, num_test=20, archive=False)
    monkeypatch.setattr(tool, 'SHARD_SIZE', '20KB')  # several shards from the tiny model, as the real one gives 4
    out, run = tmp_path / 'out', tmp_path / 'run'
    train_args = ' '.join(TINY_MODEL_ARGS) + ' --batch-size 8 --eval-every 3'
    assert tool.main(['gpu', '--dataset', 'cifar10', '--data-dir', str(tmp_path / 'data'), '--device', 'cpu',
                      '--steps', '3', '--train-args', train_args, '--out', str(out), '--run-dir', str(run)]) == 0
    files = sorted(p.name for p in out.iterdir())
    shards = [f for f in files if f.startswith('model-')]
    assert len(shards) >= 2 and 'model.safetensors.index.json' in files and len(files) <= tool.DEVICE_FILE_LIMIT
    assert {'run.json', 'summary.json', 'log.jsonl', 'config.json'} <= set(files)

    results = tmp_path / 'results'
    assert tool.main(['collect', str(out), '--data-dir', str(tmp_path / 'data'), '--results', str(results)]) == 0
    here = json.loads((results / 'evaluate_here.json').read_text())
    summary = json.loads((results / 'summary.json').read_text())
    assert here['error'] == pytest.approx(summary['final_test_error'], abs=1e-6) and (results / 'curves.png').is_file()
    merged = tool.unpack(out, tmp_path / 'merged')
    original = load_file(str(resolve_checkpoint(run) / 'model.safetensors'))
    weights = load_file(str(merged / 'model.safetensors'))
    assert weights.keys() == original.keys() and all(torch.equal(weights[k], original[k]) for k in original)
    # the run unpacked as a run folder exports as the run's own checkpoint: the merged file has the trainer's bytes
    ckpt = tool.unpack_run(out, tmp_path / 'unpacked')
    assert sha256_file(ckpt / 'model.safetensors') == summary['checkpoint_sha256']
    folder = export_checkpoint(ckpt, tmp_path / 'export')
    assert json.loads((folder / 'config.json').read_text())['pretrained_cfg']['tag'] == 'cifar10'
    assert 'step 3 (step_00000003/model.safetensors)' in (folder / 'README.md').read_text()


def test_gpu_phase_without_data_says_what_to_carry(tool, tmp_path, monkeypatch):
    monkeypatch.setattr(tool, 'REPO', tmp_path)
    with pytest.raises(SystemExit, match='cannot restore CIFAR, missing .*restore_cifar.py.*--data-dir'):
        tool.main(['gpu', '--dataset', 'cifar10', '--out', str(tmp_path / 'out'), '--restore-to', str(tmp_path / 'r')])
    assert not (tmp_path / 'out').exists()


def test_collect_rejects_a_folder_that_is_not_a_gpu_run(tool, tmp_path):
    with pytest.raises(SystemExit, match='lacks .*summary.json'):
        tool.main(['collect', str(tmp_path), '--data-dir', str(tmp_path)])


def test_data_parts_round_trip(tool, tmp_path, monkeypatch):
    """stage's tar parts (each under the device's per-call limit) unpack to the same files on the device."""
    src = tmp_path / 'shared'
    (src / 'cifar10' / 'zips').mkdir(parents=True)
    (src / 'restore_cifar.py').write_text('print("restore")\n')
    payload = bytes(range(256)) * 40
    (src / 'cifar10' / 'zips' / 'train-0.zip').write_bytes(payload)
    monkeypatch.setattr(tool, 'PART_BYTES', 4096)
    monkeypatch.setattr(tool, 'REPO', tmp_path / 'repo')
    (tmp_path / 'repo' / '.data').mkdir(parents=True)
    parts = tool._pack_data_parts(src, 'cifar10', tmp_path / 'repo' / '.data')
    assert len(parts) >= 3 and all(p.stat().st_size <= 4096 for p in parts)
    tool._unpack_data_parts('cifar10')
    assert (tmp_path / 'repo' / '.data' / 'cifar10' / 'zips' / 'train-0.zip').read_bytes() == payload
    assert (tmp_path / 'repo' / '.data' / 'restore_cifar.py').is_file()
