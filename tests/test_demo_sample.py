"""The CIFAR-10 test-image sample that ships with the package, and `timm-identity demo` using it."""
import json
import shutil

import numpy as np
import pytest

from timm_identity.data.sample_images import (
    SAMPLE_JSON, SAMPLE_PNG, samples_dir, load_cifar10_sample, select_sample, write_cifar10_sample,
)


def test_shipped_sample_is_100_images_10_per_class_and_checked():
    images, labels, classes = load_cifar10_sample()
    assert images.shape == (100, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [10] * 10
    assert classes[:3] == ['airplane', 'automobile', 'bird'] and len(classes) == 10
    assert (samples_dir() / SAMPLE_PNG).stat().st_size < 400_000  # a few hundred KB in the package


def test_sample_round_trip_and_damage_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(40) % 4
    indices = select_sample(labels, per_class=3)
    assert labels[indices].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    write_cifar10_sample(images, labels, ['a', 'b', 'c', 'd'], indices, tmp_path)
    got, got_labels, classes = load_cifar10_sample(tmp_path)
    assert np.array_equal(got, images[indices]) and got_labels.tolist() == labels[indices].tolist()
    meta = json.loads((tmp_path / SAMPLE_JSON).read_text())
    meta['pixels_sha256'] = '0' * 64
    (tmp_path / SAMPLE_JSON).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match='pixels differ from the SHA-256'):
        load_cifar10_sample(tmp_path)
    with pytest.raises(ValueError, match='every class needs at least 11 images'):
        select_sample(labels, per_class=11)
    shutil.rmtree(tmp_path)
    with pytest.raises(ValueError, match='not readable'):
        load_cifar10_sample(tmp_path)
