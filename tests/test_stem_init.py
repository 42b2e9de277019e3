"""--stem-init whiten: the patch-whitening init of the first conv (timm_identity.models.stem_init), alone and as
train-cifar applies it (to the run's training images, recorded in run.json, refused with --init-from)."""
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import timm_identity  # noqa: F401
from timm_identity.models.stem_init import whiten_conv_
from timm_identity.train.cifar_trainer import WHITEN_IMAGES, train
from timm_identity.train.device_data import channel_stats, normalize_uint8

from train_helpers import TINY_MODEL_KWARGS, learnable_split, tiny_overrides


def _output_covariance(conv, x):
    y = F.conv2d(x, conv.weight).transpose(0, 1).reshape(conv.out_channels, -1)  # the patches the init saw
    return (y @ y.T) / y.shape[1]


def test_whitened_stem_outputs_are_decorrelated_with_unit_variance():
    torch.manual_seed(0)
    mix = torch.randn(3, 3)  # correlated colour channels of different scales
    x = torch.einsum('ij,njhw->nihw', mix, torch.randn(200, 3, 16, 16))
    x = x + 0.5 * x.roll(1, dims=-1)  # and correlated neighbours
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    with torch.no_grad():
        conv.bias.fill_(1.0)
    before = _output_covariance(conv, x).detach()
    whiten_conv_(conv, x)
    cov = _output_covariance(conv, x).detach()
    assert torch.allclose(cov, torch.eye(16), atol=2e-3), cov.diag()
    assert not torch.allclose(before, torch.eye(16), atol=0.1)  # the standard init does not do this
    assert torch.count_nonzero(conv.bias) == 0


def test_whiten_refuses_what_it_cannot_whiten():
    with pytest.raises(ValueError, match='at most in_chans x k x k = 27'):
        whiten_conv_(torch.nn.Conv2d(3, 28, 3), torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match='normalised float images'):
        whiten_conv_(torch.nn.Conv2d(3, 8, 3), torch.zeros(2, 8, 8, 3, dtype=torch.uint8))


def test_train_cifar_whitens_the_stem_from_its_training_images(tmp_path):
    train_split, test_split = learnable_split(64, seed=0), learnable_split(16, seed=1)
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=1, lr=1e-12, warmup_steps=0, stem_init='whiten', checkpoint_every=1),
          train_split, test_split)  # one update at lr 1e-12: the checkpoint holds the init
    saved = load_file(str(run / 'checkpoints' / 'step_00000001' / 'model.safetensors'))['stem.weight']
    expected = timm.create_model('allconv_resnet_cifar', num_classes=10, **TINY_MODEL_KWARGS).stem
    mean, std = channel_stats(train_split.images)
    whiten_conv_(expected, normalize_uint8(torch.from_numpy(train_split.images[:WHITEN_IMAGES]),
                                           torch.tensor(mean), torch.tensor(std)))
    assert torch.allclose(saved, expected.weight.detach(), atol=1e-5)
    assert json.loads((run / 'run.json').read_text())['config']['stem_init'] == 'whiten'


def test_stem_init_with_init_from_is_refused(tmp_path):
    with pytest.raises(ValueError, match='--stem-init whiten inits a new model'):
        train(tiny_overrides(tmp_path / 'run', stem_init='whiten', init_from='allconv_resnet_cifar_w16_d3.cifar10'),
              learnable_split(16, seed=0), learnable_split(16, seed=1))
    assert not (tmp_path / 'run').exists()
