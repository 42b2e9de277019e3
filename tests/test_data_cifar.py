"""load_cifar on tiny releases written in the official format (timm_identity.data.testing)."""
import dataclasses
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from timm_identity.data import cifar
from timm_identity.data.cifar import CIFAR_LAYOUTS, file_md5, load_cifar
from timm_identity.data.errors import ChecksumError, DatasetFormatError
from timm_identity.data.testing import make_tiny_cifar


@pytest.fixture(scope='module')
def tiny10(tmp_path_factory):
    return make_tiny_cifar(tmp_path_factory.mktemp('c10'), 'cifar10', num_train=12, num_test=5, seed=1)


@pytest.fixture(scope='module')
def tiny100(tmp_path_factory):
    return make_tiny_cifar(tmp_path_factory.mktemp('c100'), 'cifar100', num_train=7, num_test=3, seed=2)


@pytest.fixture
def official_md5_is(monkeypatch):
    """Pretend a tiny archive's md5 is the official one, so the md5 check passes."""
    def patch(dataset, archive):
        layout = dataclasses.replace(CIFAR_LAYOUTS[dataset], archive_md5=file_md5(archive))
        monkeypatch.setitem(CIFAR_LAYOUTS, dataset, layout)
    return patch


def assert_same(loaded, expected):
    assert loaded.images.dtype == np.uint8 and loaded.images.shape == expected.images.shape
    assert loaded.images.flags['C_CONTIGUOUS']
    np.testing.assert_array_equal(loaded.images, expected.images)
    assert loaded.labels.dtype == np.int64
    np.testing.assert_array_equal(loaded.labels, expected.labels)
    assert loaded.classes == expected.classes


@pytest.mark.parametrize('split', ['train', 'test'])
def test_cifar10_folder_archive_and_parent_all_read_the_same(tiny10, official_md5_is, split):
    official_md5_is('cifar10', tiny10.archive)
    expected = tiny10.splits[split]
    assert_same(load_cifar(tiny10.folder, 'cifar10', split), expected)
    assert_same(load_cifar(tiny10.archive, 'cifar10', split), expected)
    assert_same(load_cifar(os.path.dirname(tiny10.folder), 'cifar10', split), expected)


def test_cifar10_pixels_are_hwc_from_official_chw_rows(tiny10):
    # official rows are 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    with open(os.path.join(tiny10.folder, 'data_batch_1'), 'rb') as f:
        row = pickle.load(f, encoding='bytes')[b'data'][0]
    image = load_cifar(tiny10.folder, 'cifar10', 'train').images[0]
    assert image[0, 1, 0] == row[1] and image[1, 0, 1] == row[1024 + 32] and image[31, 31, 2] == row[3071]


def test_cifar100_fine_and_coarse(tiny100, official_md5_is):
    official_md5_is('cifar100', tiny100.archive)
    fine = load_cifar(tiny100.archive, 'cifar100', 'train', label_type='fine')
    assert_same(fine, tiny100.splits['train'])
    assert len(fine.classes) == 100
    coarse = load_cifar(tiny100.folder, 'cifar100', 'test', label_type='coarse')
    np.testing.assert_array_equal(coarse.labels, tiny100.coarse_labels['test'])
    assert coarse.classes == [f'coarse_{i:02d}' for i in range(20)]


def test_wrong_md5_is_rejected_naming_the_file(tiny10):
    with pytest.raises(ChecksumError, match=r'cifar-10-python\.tar\.gz: md5 [0-9a-f]{32} is not the official'):
        load_cifar(tiny10.archive, 'cifar10', 'train')


def test_md5_check_off_reads_and_warns(tiny10, caplog, monkeypatch):
    monkeypatch.setattr(cifar, '_MD5_OFF_LOGGED', set())
    with caplog.at_level(logging.WARNING, logger=cifar.__name__):
        loaded = load_cifar(tiny10.archive, 'cifar10', 'test', verify_md5=False)
        load_cifar(tiny10.archive, 'cifar10', 'train', verify_md5=False)
    assert_same(loaded, tiny10.splits['test'])
    assert 'md5 check is OFF' in caplog.text and tiny10.archive in caplog.text
    assert caplog.text.count('md5 check is OFF') == 1  # once per archive, not once per split read


def test_truncated_archive_is_a_clear_error(tiny10, tmp_path):
    truncated = tmp_path / 'cifar-10-python.tar.gz'
    data = Path(tiny10.archive).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match=r'truncated'):
        load_cifar(truncated, 'cifar10', 'train', verify_md5=False)
    with pytest.raises(ChecksumError):  # with the check on, the md5 catches it first
        load_cifar(truncated, 'cifar10', 'train')


def test_missing_batch_file_is_named(tiny10, tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    shutil.copytree(tiny10.folder, folder)
    os.remove(folder / 'data_batch_3')
    with pytest.raises(FileNotFoundError, match=r'data_batch_3: missing CIFAR file'):
        load_cifar(tmp_path, 'cifar10', 'train')
    assert len(load_cifar(tmp_path, 'cifar10', 'test')) == 5  # the test split does not need it


def test_nothing_there(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'no CIFAR release found; expected cifar-100-python/'):
        load_cifar(tmp_path, 'cifar100')
    with pytest.raises(FileNotFoundError, match='no such file'):
        load_cifar(tmp_path / 'nope.tar.gz')


def test_archive_of_the_other_dataset_is_a_layout_error(tiny100):
    with pytest.raises(DatasetFormatError, match=r'no member cifar-10-batches-py/batches\.meta.*cifar-100-python'):
        load_cifar(tiny100.archive, 'cifar10', 'train', verify_md5=False)


def test_wrong_keys_and_shapes_are_named(tiny10, tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    shutil.copytree(tiny10.folder, folder)
    with open(folder / 'test_batch', 'rb') as f:
        batch = pickle.load(f, encoding='bytes')

    broken = dict(batch)
    del broken[b'labels']
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump(broken, f)
    with pytest.raises(DatasetFormatError, match=r"test_batch: missing key 'labels'"):
        load_cifar(folder, 'cifar10', 'test')

    broken = {**batch, b'data': batch[b'data'][:, :100]}
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump(broken, f)
    with pytest.raises(DatasetFormatError, match=r"test_batch: key 'data' should be uint8 of shape \(N, 3072\)"):
        load_cifar(folder, 'cifar10', 'test')

    broken = {**batch, b'labels': [10] * len(batch[b'labels'])}
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump(broken, f)
    with pytest.raises(DatasetFormatError, match=r"test_batch: key 'labels' has labels in \[10, 10\], outside"):
        load_cifar(folder, 'cifar10', 'test')


def test_pickle_that_is_not_cifar_is_refused(tiny10, tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    shutil.copytree(tiny10.folder, folder)
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump({b'data': os.getcwd}, f)  # would resolve posix.getcwd when loaded
    with pytest.raises(DatasetFormatError, match=r'test_batch: not a readable CIFAR pickle .*refusing to load'):
        load_cifar(folder, 'cifar10', 'test')


@pytest.mark.parametrize('kwargs, message', [
    (dict(dataset='mnist'), 'dataset must be one of'),
    (dict(split='val'), 'split must be one of'),
    (dict(label_type='coarse'), "label_type must be one of \\['fine'\\] for cifar10"),
])
def test_bad_arguments(tiny10, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_cifar(tiny10.folder, **kwargs)
