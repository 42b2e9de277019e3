"""The descendants of the paper's idea as model options: the SkipInit/ReZero branch gate and Fixup."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import timm
import timm_identity  # noqa: F401  (registers the models)
from timm_identity.models.residual_block import AllConvResidualBlock, ScalarBias, ScalarScale, fixup_std

TINY = dict(depths=(1, 1, 1), widths=(8, 16, 32), stem_chs=8)


def _blocks(model):
    return [b for s in model.stages for b in s]


def test_defaults_have_no_gate_or_fixup_parameters():
    keys = timm.create_model('allconv_resnet_cifar', **TINY).state_dict().keys()
    assert not [k for k in keys if any(n in k for n in ('gate', 'bias1a', 'bias1b', 'bias2a', 'bias2b', 'scale'))]


@pytest.mark.parametrize('init', ['paper', 'standard'])
def test_branch_gate_starts_at_zero_and_makes_each_block_its_shortcut(init):
    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar', branch_gate=True, init=init, **TINY)
    gates = [b.gate for b in _blocks(model)]
    assert all(isinstance(g, ScalarScale) and torch.equal(g.weight, torch.zeros(1)) for g in gates)
    assert sum(k.endswith('gate.weight') for k in model.state_dict()) == 3
    x = torch.randn(2, 3, 32, 32)
    h = model.stem(x)
    for block in _blocks(model):
        assert torch.std(block.conv1.weight) > 0  # the convs keep their init; only the gate is 0
        out = block(h)
        assert torch.equal(out, block.shortcut(h))
        h = out
    F.cross_entropy(model(x), torch.tensor([1, 2])).backward()
    assert all(g.weight.grad.abs().item() > 0 for g in gates)  # the gates learn from the first step


def test_fixup_init_is_the_papers_recipe():
    torch.manual_seed(0)
    depths, widths = (2, 2, 2), (32, 64, 128)
    model = timm.create_model('allconv_resnet_cifar', init='fixup', depths=depths, widths=widths, stem_chs=16)
    L = sum(depths)
    for block in _blocks(model):
        c = block.conv1.out_channels
        assert torch.count_nonzero(block.conv2.weight) == 0
        n = block.conv1.weight.numel()
        expected = math.sqrt(2 / (9 * c)) / math.sqrt(L)
        assert fixup_std(3, c, L) == pytest.approx(expected)
        assert block.conv1.weight.std().item() == pytest.approx(expected, rel=4 / math.sqrt(n) + 0.01)
        for name in ('bias1a', 'bias1b', 'bias2a', 'bias2b'):
            assert isinstance(getattr(block, name), ScalarBias) and getattr(block, name).bias.item() == 0
        assert block.scale.weight.item() == 1.0
        assert torch.count_nonzero(block.conv1.bias) == 0
    # the fixed random head is not zeroed (it is never trained); a trainable linear head is
    paper = timm.create_model('allconv_resnet_cifar', depths=depths, widths=widths, stem_chs=16)
    assert torch.equal(model.fc.weight, paper.fc.weight)
    linear = timm.create_model('allconv_resnet_cifar', init='fixup', head='linear', **TINY)
    assert torch.count_nonzero(linear.fc.weight) == 0 and torch.count_nonzero(linear.fc.bias) == 0


@pytest.mark.parametrize('shortcut', ['avgpool', 'proj'])
def test_fixup_block_computes_the_reference_formula(shortcut):
    torch.manual_seed(0)
    block = AllConvResidualBlock(4, 8, stride=2, shortcut=shortcut, init='fixup', num_blocks=3)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # every scalar away from its init
    x = torch.randn(2, 4, 8, 8)
    b = x + block.bias1a.bias
    branch = F.conv2d(b, block.conv1.weight, block.conv1.bias, stride=2, padding=1)
    branch = F.relu(branch + block.bias1b.bias) + block.bias2a.bias
    branch = F.conv2d(branch, block.conv2.weight, block.conv2.bias, padding=1) * block.scale.weight + block.bias2b.bias
    if shortcut == 'avgpool':
        short = F.pad(F.avg_pool2d(b, 2), (0, 0, 0, 0, 0, 4))  # the shape-changing shortcut sees x + bias1a
    else:
        short = F.conv2d(b, block.shortcut.weight, stride=2)
    assert torch.allclose(block(x), short + branch, atol=1e-6)
    same = AllConvResidualBlock(8, 8, init='fixup', num_blocks=3)
    with torch.no_grad():
        same.bias1a.bias.fill_(0.5)
    y = torch.randn(1, 8, 4, 4)
    assert torch.allclose(same(y), y, atol=1e-6)  # an identity shortcut gets plain x (Fixup's code)


def test_fixup_needs_the_depth():
    with pytest.raises(ValueError, match='needs num_blocks'):
        AllConvResidualBlock(4, 4, init='fixup')


def test_batch_norm_variant_has_a_norm_after_every_conv():
    model = timm.create_model('allconv_resnet_cifar', init='fixup', norm_layer='batchnorm2d', branch_gate=True, **TINY)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 6
    model(torch.randn(2, 3, 32, 32)).sum().backward()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize('kwargs', [dict(branch_gate=True), dict(init='fixup', shortcut='proj', head='linear')])
def test_options_script_trace_features_and_round_trip(kwargs, tmp_path):
    from timm.models import save_for_hf
    from test_models import _timm_fx_model
    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar', **TINY, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # gates and scalars away from their init
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(torch.jit.script(model)(x), ref, atol=1e-6)
        (fx_out,) = _timm_fx_model(model)(x).values()
        assert torch.allclose(fx_out, ref, atol=1e-6)
    feats = timm.create_model('allconv_resnet_cifar', features_only=True, **TINY, **kwargs)
    assert [f.shape[1] for f in feats(x)] == [8, 8, 16, 32]
    save_for_hf(model, tmp_path, safe_serialization=True)
    args = json.loads((tmp_path / 'config.json').read_text())['model_args']
    assert all(args[k] == v for k, v in kwargs.items())
    reloaded = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x), ref)
