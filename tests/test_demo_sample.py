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


def test_demo_classifies_the_sample_with_every_shipped_cifar10_tag(capsys):
    """README's first command: the shipped CIFAR-10 weights at work on the shipped real test images."""
    import timm
    import torch
    from timm_identity.cli import main
    from timm_identity.pretrained import recorded_test_results
    assert main(['demo']) == 0
    out = capsys.readouterr().out
    tags = [t for t in timm.list_pretrained('allconv*') if timm.models.get_pretrained_cfg(t).num_classes == 10]
    assert tags, 'no CIFAR-10 tag has weights'
    images, labels, _ = load_cifar10_sample()
    for tag in tags:
        model = timm.create_model(tag, pretrained=True).eval()
        cfg = model.pretrained_cfg
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
        x = (x - torch.tensor(cfg['mean']).view(1, 3, 1, 1)) / torch.tensor(cfg['std']).view(1, 3, 1, 1)
        with torch.no_grad():
            right = int((model(x).argmax(1).numpy() == labels).sum())
        recorded = recorded_test_results(tag)
        line = next(line for line in out.splitlines() if f"timm.create_model('{tag}', pretrained=True)" in line)
        assert f'{right}/100 right' in line and f"top-1 error {recorded['error']:.2f} %" in line, line
        assert f"({recorded['images']:,} images)" in line
    assert 'Identity at init' in out and 'allconv_resnet_cifar_w16_d3' in out
