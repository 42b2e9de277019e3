"""CIFAR -> webdataset shards -> timm's wds reader; resume, failures and verify (all on tiny data)."""
import io
import json
import logging
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from timm_identity.cli import main
from timm_identity.data.shards import (
    INFO_NAME, STATE_DIR, PixelSample, plan_shards, verify_shards, write_dataset)
from timm_identity.data.testing import make_tiny_cifar

NUM_TRAIN, NUM_TEST = 24, 10


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return make_tiny_cifar(tmp_path_factory.mktemp('cifar'), 'cifar10', NUM_TRAIN, NUM_TEST, seed=3)


def shard_cifar(root, out, *extra):
    """The CLI, as a user runs it (official-md5 check off: the tiny archive is not the official one)."""
    return main(['shards', 'cifar', str(root), '--out', str(out), '--no-verify-md5', '--no-progress',
                 '--shard-samples', '8', '--workers', '1', *extra])


def finished_looking(out):
    """Final-named shards and _info.json: what a reader would take as finished."""
    return sorted(f for f in os.listdir(out) if f.endswith('.tar') or f == INFO_NAME)


def loader_pixels_and_labels(out, split, is_training=False, batch_size=5):
    import timm.data
    dataset = timm.data.create_dataset('wds/cifar10', root=str(out), split=split, is_training=is_training,
                                       batch_size=batch_size)
    loader = timm.data.create_loader(
        dataset, input_size=(3, 32, 32), batch_size=batch_size, is_training=is_training, no_aug=True,
        use_prefetcher=False, mean=(0., 0., 0.), std=(1., 1., 1.), crop_pct=1.0, num_workers=0)
    images, labels = [], []
    for x, y in loader:
        images.append(torch.round(x * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_round_trip_through_timm_create_dataset_and_loader(tiny, tmp_path):
    out = tmp_path / 'shards'
    assert shard_cifar(tiny.archive, out, '--no-shuffle') == 0
    info = json.loads((out / INFO_NAME).read_text())
    assert info['classes'] == tiny.splits['train'].classes
    train = info['splits']['train']
    assert train['filenames'] == [f'cifar10-train-{i:06d}.tar' for i in range(3)]
    assert train['shard_lengths'] == [8, 8, 8] and train['num_samples'] == NUM_TRAIN
    assert info['splits']['test']['shard_lengths'] == [8, 2]
    assert train['class_counts'] == np.bincount(tiny.splits['train'].labels, minlength=10).tolist()

    with tarfile.open(out / 'cifar10-test-000001.tar') as tar:
        assert tar.getnames() == ['test_00008.cls', 'test_00008.png', 'test_00009.cls', 'test_00009.png']
        assert tar.extractfile('test_00009.cls').read() == b'%d' % tiny.splits['test'].labels[9]

    for split in ('train', 'test'):  # eval mode keeps the shard order: exact pixels (PNG is lossless), labels
        images, labels = loader_pixels_and_labels(out, split)
        np.testing.assert_array_equal(images, tiny.splits[split].images)
        np.testing.assert_array_equal(labels, tiny.splits[split].labels)


def test_shuffled_shards_train_in_timm_training_mode(tiny, tmp_path):
    out = tmp_path / 'shards'
    assert shard_cifar(tiny.archive, out, '--seed', '7') == 0
    images, labels = loader_pixels_and_labels(out, 'train', is_training=True, batch_size=4)
    # training mode shuffles; with 24 = 6 batches of 4 every sample comes exactly once per epoch
    got = sorted((int(y), im.tobytes()) for im, y in zip(images, labels))
    want = sorted((int(y), im.tobytes()) for im, y in zip(tiny.splits['train'].images, tiny.splits['train'].labels))
    assert got == want


def test_seed_gives_deterministic_shards(tiny, tmp_path):
    for run in ('a', 'b', 'c'):
        assert shard_cifar(tiny.folder, tmp_path / run, '--splits', 'train', '--seed', '1' if run != 'c' else '2') == 0
    first = [(tmp_path / r / 'cifar10-train-000000.tar').read_bytes() for r in 'abc']
    assert first[0] == first[1] and first[0] != first[2]
    with tarfile.open(tmp_path / 'a' / 'cifar10-train-000000.tar') as tar:
        keys = [n.split('.')[0] for n in tar.getnames()[::2]]
    assert keys != [f'train_{i:05d}' for i in range(8)] and len(set(keys)) == 8


def test_rerun_skips_finished_shards_and_redoes_the_rest(tiny, tmp_path):
    out = tmp_path / 'shards'
    assert shard_cifar(tiny.archive, out) == 0
    info_before = (out / INFO_NAME).read_bytes()
    stamps = {f: os.stat(out / f).st_mtime_ns for f in finished_looking(out) if f.endswith('.tar')}
    # a shard that a crash left finished-looking but without its state, and one without its tar
    os.remove(out / STATE_DIR / 'cifar10-train-000001.tar.json')
    os.remove(out / 'cifar10-test-000000.tar')
    assert shard_cifar(tiny.archive, out) == 0
    rewritten = {f for f, t in stamps.items() if os.stat(out / f).st_mtime_ns != t}
    assert rewritten == {'cifar10-train-000001.tar', 'cifar10-test-000000.tar'}
    assert (out / INFO_NAME).read_bytes() == info_before  # same shards, same bytes, same sha256s
    assert verify_shards(out, progress=False).ok


def shard_mtimes(out):
    return {f: os.stat(out / f).st_mtime_ns for f in finished_looking(out) if f.endswith('.tar')}


def test_rerun_with_other_pixels_same_labels_rewrites_the_changed_shards(tiny, tmp_path, caplog):
    out = tmp_path / 'shards'
    assert shard_cifar(tiny.folder, out, '--no-shuffle') == 0
    before = shard_mtimes(out)
    # the same release with other pixels (same keys and labels) in data_batch_1 = train samples 0..4
    changed = tmp_path / 'changed'
    shutil.copytree(tiny.folder, changed)
    with open(changed / 'data_batch_1', 'rb') as f:
        batch = pickle.load(f, encoding='bytes')
    batch[b'data'] = 255 - batch[b'data']
    with open(changed / 'data_batch_1', 'wb') as f:
        pickle.dump(batch, f, protocol=2)

    with caplog.at_level(logging.INFO, logger='timm_identity.data.shards'):
        assert shard_cifar(changed, out, '--no-shuffle') == 0
    assert {f for f, t in before.items() if shard_mtimes(out)[f] != t} == {'cifar10-train-000000.tar'}
    assert ('cifar10/train: rewriting 1 shard(s) in %s: their source images changed since they were written' % out
            in caplog.text)
    images, labels = loader_pixels_and_labels(out, 'train')
    np.testing.assert_array_equal(images[:5], 255 - tiny.splits['train'].images[:5])
    np.testing.assert_array_equal(images[5:], tiny.splits['train'].images[5:])
    assert verify_shards(out, progress=False).ok


def test_rerun_rewrites_a_shard_damaged_after_writing(tiny, tmp_path, caplog):
    out = tmp_path / 'shards'
    assert shard_cifar(tiny.archive, out) == 0
    info_before = (out / INFO_NAME).read_bytes()
    shard = out / 'cifar10-train-000002.tar'
    data = bytearray(shard.read_bytes())
    data[3000:3064] = bytes(64)  # same size, other bytes (inside the first PNG)
    shard.write_bytes(bytes(data))
    before = shard_mtimes(out)
    with caplog.at_level(logging.INFO, logger='timm_identity.data.shards'):
        assert shard_cifar(tiny.archive, out) == 0
    assert {f for f, t in before.items() if shard_mtimes(out)[f] != t} == {shard.name}
    assert 'the shard file changed or was damaged after writing (size or sha256 differs' in caplog.text
    assert (out / INFO_NAME).read_bytes() == info_before
    assert verify_shards(out, decode=True, progress=False).ok


def test_out_naming_a_file_is_a_clear_error(tiny, tmp_path, capsys):
    file = tmp_path / 'notes.txt'
    file.write_text('not a folder')
    for out in (file, file / 'shards'):
        assert shard_cifar(tiny.archive, out) == 1
        err = capsys.readouterr().err
        assert f'timm-identity shards cifar: error: {out}: is' in err and 'not a folder' in err
        assert 'Traceback' not in err
    assert file.read_text() == 'not a folder'


def test_verify_names_a_missing_path_or_a_file(tiny, tmp_path, capsys):
    missing = tmp_path / 'nowhere'
    assert main(['shards', 'verify', str(missing), '--no-progress']) == 1
    assert f'PROBLEM: {missing}: no such folder' in capsys.readouterr().err
    out = tmp_path / 'shards'
    assert shard_cifar(tiny.archive, out) == 0
    shard = out / 'cifar10-test-000000.tar'
    assert main(['shards', 'verify', str(shard), '--no-progress']) == 1
    err = capsys.readouterr().err
    assert f'PROBLEM: {shard}: is a file, not a dataset folder' in err and f'give its folder {out}' in err
    assert '_info.json: missing' not in err


def test_changed_plan_rewrites_and_removes_stale_shards(tiny, tmp_path):
    out = tmp_path / 'shards'
    assert shard_cifar(tiny.archive, out, '--splits', 'train') == 0
    assert main(['shards', 'cifar', str(tiny.archive), '--out', str(out), '--no-verify-md5', '--no-progress',
                 '--shard-samples', '20', '--splits', 'train']) == 0
    assert finished_looking(out) == [INFO_NAME, 'cifar10-train-000000.tar', 'cifar10-train-000001.tar']
    assert json.loads((out / INFO_NAME).read_text())['splits']['train']['shard_lengths'] == [20, 4]
    assert verify_shards(out, progress=False).ok


def test_parallel_workers_write_the_same_shards(tiny, tmp_path):
    assert shard_cifar(tiny.archive, tmp_path / 'one') == 0
    assert shard_cifar(tiny.archive, tmp_path / 'two', '--workers', '2') == 0
    assert (tmp_path / 'one' / INFO_NAME).read_bytes() == (tmp_path / 'two' / INFO_NAME).read_bytes()


def test_bad_source_fails_cleanly_leaving_nothing_finished(tiny, tmp_path, capsys):
    truncated = tmp_path / 'cifar-10-python.tar.gz'
    truncated.write_bytes(Path(tiny.archive).read_bytes()[:5000])
    out = tmp_path / 'shards'
    assert shard_cifar(truncated, out) == 1
    assert f'shards cifar: error: {truncated}: cannot read the archive, it is truncated' in capsys.readouterr().err
    assert main(['shards', 'cifar', str(tiny.archive), '--out', str(out)]) == 1
    assert f'error: {tiny.archive}: md5 ' in capsys.readouterr().err
    assert not out.exists() or finished_looking(out) == []


def test_failing_sample_mid_split_leaves_no_partial_and_no_info(tmp_path):
    class Broken(PixelSample):
        def to_wds(self):
            raise OSError('disk on fire')

    pixels = np.zeros((32, 32, 3), np.uint8)
    samples = [PixelSample(f's{i}', 0, pixels) for i in range(10)] + [Broken('bad', 0, pixels)]
    with pytest.raises(Exception, match=r"cifar10-train-000002\.tar: failed writing sample 'bad' .*disk on fire"):
        write_dataset({'train': samples}, tmp_path, 'cifar10', ['a'], shard_samples=4, seed=None, progress=False)
    # the two complete shards stay (a rerun reuses them); the broken one is gone, no _info.json
    assert finished_looking(tmp_path) == ['cifar10-train-000000.tar', 'cifar10-train-000001.tar']
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.partial')]
    assert 'missing' in verify_shards(tmp_path, progress=False).problems[0]


def test_verify_reports_corrupt_shards_by_file_and_key(tiny, tmp_path, capsys):
    out = tmp_path / 'shards'
    assert shard_cifar(tiny.archive, out, '--no-shuffle') == 0
    assert main(['shards', 'verify', str(out), '--decode', '--no-progress']) == 0
    assert 'train: 24 samples in 3 shards' in capsys.readouterr().out

    # truncate one shard, rewrite another with a bad label and a non-PNG image
    shard0 = out / 'cifar10-train-000000.tar'
    shard0.write_bytes(shard0.read_bytes()[:7000])
    shard2 = out / 'cifar10-test-000001.tar'
    with tarfile.open(shard2) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard2, 'w') as tar:
        for m, data in members:
            if m.name == 'test_00008.cls':
                data = b'12'
            if m.name == 'test_00009.png':
                data = b'GIF89a' + data[6:]
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))

    assert main(['shards', 'verify', str(out), '--no-progress']) == 1
    err = capsys.readouterr().err
    assert f"{shard0}: unreadable after key 'train_00000'" in err
    assert f'{shard0}: 1 samples, _info.json says 8' in err
    assert f"{shard2}: key 'test_00008': .cls 12 outside [0, 10)" in err
    assert f"{shard2}: key 'test_00009': .png does not start with PNG magic bytes" in err
    assert 'sha256' in err and 'class_counts differ' in err


def test_verify_without_info_json_fails(tmp_path):
    report = verify_shards(tmp_path, progress=False)
    assert not report.ok and 'is not a shard folder (no _info.json, no .tar shards)' in report.problems[0]
    (tmp_path / 'cifar10-train-000000.tar').write_bytes(b'')
    report = verify_shards(tmp_path, progress=False)
    assert not report.ok and 'missing (an unfinished' in report.problems[0]


def test_plan_shards_by_bytes():
    samples = [PixelSample(str(i), 0, np.zeros((32, 32, 3), np.uint8)) for i in range(10)]
    size = samples[0].size_estimate
    assert [len(s) for s in plan_shards(samples, None, 3 * size)] == [3, 3, 3, 1]
    assert [len(s) for s in plan_shards(samples, 2, 3 * size)] == [2] * 5
    assert [len(s) for s in plan_shards(samples, None, 1)] == [1] * 10  # oversize sample: own shard


def test_parse_size():
    from timm_identity.data.cli import parse_size
    assert parse_size('1000') == 1000 and parse_size('256MB') == 256_000_000
    assert parse_size('1.5GiB') == 3 * 2 ** 29 and parse_size('64k') == 64_000
    with pytest.raises(Exception, match='not a size'):
        parse_size('lots')


def test_help_of_every_command(capsys):
    for argv in (['shards'], ['shards', 'cifar'], ['shards', 'imagenet'], ['shards', 'verify']):
        with pytest.raises(SystemExit) as e:
            main([*argv, '--help'])
        assert e.value.code == 0
        assert 'usage: timm-identity shards' in capsys.readouterr().out


def test_tools_make_shards_script(tmp_path):
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(__file__), '..', 'tools', 'make_shards.py')
    result = subprocess.run([sys.executable, script, 'verify', str(tmp_path), '--no-progress'],
                            capture_output=True, text=True)
    assert result.returncode == 1 and '_info.json: missing' in result.stderr
