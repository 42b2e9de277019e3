"""The paper's all-conv residual nets as timm models: architecture facts, init, and the timm API."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import timm
import timm.optim
import timm_identity  # noqa: F401  (registers the models)
from timm_identity.cli import main as cli_main
from timm_identity.pretrained.tags import hub_configs_root as hub_configs_dir
from timm_identity.models import AllConvResNet
from timm_identity.pretrained.tags import hub_repo_id
from timm_identity.models.fixed_projection import FixedRandomProjection
from timm_identity.models.residual_block import AllConvResidualBlock, AvgPoolPadShortcut
from timm_identity.report import block_residual_ratios, summarize

TINY = dict(depths=(1, 1, 1), widths=(8, 16, 32), stem_chs=8)


@pytest.fixture(scope='module')
def cifar_net():
    torch.manual_seed(0)
    return timm.create_model('allconv_resnet_cifar').eval()


@pytest.fixture(scope='module')
def imagenet_net():
    torch.manual_seed(0)
    return timm.create_model('allconv_resnet_imagenet').eval()


def _conv_counts(model):
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return len(convs), sum(m.weight.numel() for m in convs), sum(m.bias.numel() for m in convs if m.bias is not None)


# --- registry and pretrained cfgs -------------------------------------------------------------------------

def test_registry_lists_models_and_tags():
    assert timm.list_models('allconv*') == ['allconv_resnet_cifar', 'allconv_resnet_cifar_w16_d3',
                                            'allconv_resnet_imagenet']
    assert timm.list_models('allconv*', include_tags=True) == [
        'allconv_resnet_cifar.cifar10', 'allconv_resnet_cifar.cifar100', 'allconv_resnet_cifar_w16_d3.cifar10',
        'allconv_resnet_cifar_w16_d3.cifar100', 'allconv_resnet_cifar_w16_d3.speedrun_cifar10',
        'allconv_resnet_cifar_w16_d3.speedrun_cifar100', 'allconv_resnet_imagenet.in1k']
    # hub_configs/ holds a folder (the Hub repo's form) for exactly the tags that ship weights
    folders = sorted(p.name for p in hub_configs_dir().iterdir() if p.is_dir() and not p.name.startswith(('.', '_')))
    assert folders == timm.list_pretrained('allconv*')


def test_cpu_sized_member_differs_from_table_1_only_in_channels_and_blocks():
    small, table1 = timm.create_model('allconv_resnet_cifar_w16_d3'), timm.create_model('allconv_resnet_cifar')
    assert [len(s) for s in small.stages] == [3, 3, 3] and [len(s) for s in table1.stages] == [9, 9, 9]
    assert [s[0].conv2.out_channels for s in small.stages] == [16, 32, 64]
    assert [s[0].conv2.out_channels for s in table1.stages] == [64, 128, 256]
    assert type(small.fc) is type(table1.fc) and not list(small.fc.parameters())  # the fixed random projection
    assert small.stem.out_channels == table1.stem.out_channels == 16
    assert type(small.stages[1][0].shortcut) is type(table1.stages[1][0].shortcut)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout, nn.MaxPool2d)) for m in small.modules())
    assert _conv_counts(small) == (19, 267_696, 688)
    w = small.stages[2][1].conv1.weight  # paper init: sigma = 1/(k^2 c) with c = 64 output channels
    assert abs(w.std().item() * (9 * 64) - 1) < 0.03


def test_pretrained_list_says_only_what_has_weights():
    """A tag is pretrained only when its cfg has an hf_hub_id: the tags that ship weights
    (tests/test_shipped_weights.py); a planned tag (e.g. in1k: ImageNet cannot be trained here) is not listed, has
    no hf_hub_id, and pretrained=True on it is our clear error instead of timm's random weights
    (tests/test_pretrained_weights.py: with weights exported into its folder it loads them)."""
    pretrained = set(timm.list_pretrained('allconv*'))
    for name in timm.list_models('allconv*', include_tags=True):
        assert (name in pretrained) == ('hf_hub_id' in timm.models.get_pretrained_cfg(name).to_dict())
    assert 'allconv_resnet_imagenet.in1k' not in pretrained
    with pytest.raises(RuntimeError, match=r"No pretrained weights for 'allconv_resnet_imagenet.in1k' yet: no weights "
                                           r"have been trained .*'timm-identity/allconv_resnet_imagenet.in1k'"):
        timm.create_model('allconv_resnet_imagenet.in1k', pretrained=True)
    if 'allconv_resnet_cifar.cifar10' not in pretrained:  # the default tag of the bare name
        with pytest.raises(RuntimeError, match="No pretrained weights for 'allconv_resnet_cifar.cifar10'"):
            timm.create_model('allconv_resnet_cifar', pretrained=True)


@pytest.mark.parametrize('name, num_classes, hub_id, mean0', [
    ('allconv_resnet_cifar', 10, 'timm-identity/allconv_resnet_cifar.cifar10', 0.4914),
    ('allconv_resnet_cifar.cifar10', 10, 'timm-identity/allconv_resnet_cifar.cifar10', 0.4914),
    ('allconv_resnet_cifar.cifar100', 100, 'timm-identity/allconv_resnet_cifar.cifar100', 0.5071),
])
def test_create_by_name_and_tag(name, num_classes, hub_id, mean0):
    model = timm.create_model(name, **TINY)
    cfg = model.pretrained_cfg
    assert model.num_classes == num_classes and model(torch.randn(1, 3, 32, 32)).shape == (1, num_classes)
    tag = f"allconv_resnet_cifar.{cfg['tag']}"
    assert hub_repo_id(tag) == hub_id and cfg.get('hf_hub_id') in (None, hub_id)  # planned (or shipped) repo
    assert cfg['input_size'] == (3, 32, 32) and cfg['crop_pct'] == 1.0
    assert cfg['mean'][0] == mean0 and len(cfg['label_names']) == num_classes
    assert timm.data.resolve_data_config({}, model=model)['input_size'] == (3, 32, 32)


def test_imagenet_cfg():
    cfg = timm.models.get_pretrained_cfg('allconv_resnet_imagenet.in1k').to_dict()
    assert cfg['num_classes'] == 1000 and cfg['input_size'] == (3, 224, 224)
    assert cfg['mean'] == timm.data.IMAGENET_DEFAULT_MEAN


def test_unknown_tag_is_a_clear_error():
    with pytest.raises(RuntimeError, match='Invalid pretrained tag \\(nonexistent\\) for allconv_resnet_cifar'):
        timm.create_model('allconv_resnet_cifar.nonexistent')


# --- architecture facts (Table 1, Section 4) --------------------------------------------------------------

def test_cifar_net_is_table_1(cifar_net):
    n_convs, weights, biases = _conv_counts(cifar_net)
    assert (n_convs, weights, biases) == (55, 13_538_736, 8_080)
    assert sum(p.numel() for p in cifar_net.parameters() if p.requires_grad) == 13_546_816
    blocks = [b for s in cifar_net.stages for b in s]
    assert [len(s) for s in cifar_net.stages] == [9, 9, 9] and len(blocks) == 27
    assert [(b.conv1.in_channels, b.conv1.out_channels, b.conv1.stride[0]) for b in blocks[::9]] == [
        (16, 64, 1), (64, 128, 2), (128, 256, 2)]
    assert all(b.conv2.stride == (1, 1) for b in blocks)
    assert (cifar_net.stem.in_channels, cifar_net.stem.out_channels, cifar_net.stem.kernel_size) == (3, 16, (3, 3))
    # shape-changing shortcuts are parameter-free avgpool + zero padding; all others are identities
    assert [type(b.shortcut) for b in blocks[::9]] == [AvgPoolPadShortcut] * 3
    assert all(isinstance(b.shortcut, nn.Identity) for i, b in enumerate(blocks) if i % 9)
    assert cifar_net.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 256, 8, 8)


def test_no_batchnorm_dropout_or_maxpool(cifar_net, imagenet_net):
    forbidden = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.Dropout, nn.MaxPool2d)
    for model in (cifar_net, imagenet_net):
        assert not [m for m in model.modules() if isinstance(m, forbidden)]


def test_imagenet_net_counts(imagenet_net):
    n_convs, weights, biases = _conv_counts(imagenet_net)
    assert weights == 35_251_392 and biases == 10_688
    trainable = sum(p.numel() for p in imagenet_net.parameters() if p.requires_grad)
    assert abs(trainable - 35.7e6) / 35.7e6 < 0.02
    assert [len(s) for s in imagenet_net.stages] == [3, 4, 6, 3, 3]
    assert imagenet_net.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_gmacs_within_budget():
    cifar, imagenet = summarize('allconv_resnet_cifar'), summarize('allconv_resnet_imagenet')
    # forward MACs of Table 1's convs at 32x32, counted by hand: sum over convs of k*k*c_in*c_out*H*W
    by_hand = 32 * 32 * (9 * 3 * 16 + 9 * 16 * 64 + 17 * 9 * 64 * 64) + 16 * 16 * (9 * 64 * 128 + 17 * 9 * 128 * 128) \
        + 8 * 8 * (9 * 128 * 256 + 17 * 9 * 256 * 256) + 256 * 10
    assert abs(cifar.gmacs * 1e9 - by_hand) < 1e5  # pooling/padding MACs aside
    assert imagenet.gmacs < 1.5 * 3.6


def test_proj_shortcut_option_adds_1x1_convs():
    model = timm.create_model('allconv_resnet_cifar', shortcut='proj')
    n_convs, weights, _ = _conv_counts(model)
    assert (n_convs, weights) == (58, 13_538_736 + 41_984)


def test_norm_and_dropout_options():
    model = timm.create_model('allconv_resnet_cifar', norm_layer='batchnorm2d', drop_rate=0.2, **TINY)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 6
    assert isinstance(model.head_drop, nn.Dropout)


# --- identity parameterisation and init -------------------------------------------------------------------

def test_zero_residual_convs_make_every_block_its_shortcut():
    model = timm.create_model('allconv_resnet_cifar', init='zero').eval()
    for block in (b for s in model.stages for b in s):
        assert all(torch.count_nonzero(p) == 0 for p in (block.conv1.weight, block.conv1.bias, block.conv2.weight))
    x = torch.randn(3, 3, 32, 32)
    h = model.stem(x)
    for block in (b for s in model.stages for b in s):
        out = block(h)
        assert torch.equal(out, block.shortcut(h))
        h = out
    # the whole body is then stem -> pool/pad: channels beyond the stem's 16 are exactly zero
    feats = model.forward_features(x)
    assert torch.equal(feats[:, 16:], torch.zeros_like(feats[:, 16:]))
    assert torch.allclose(feats[:, :16], nn.functional.avg_pool2d(model.stem(x), 4), atol=1e-6)


def test_paper_init_keeps_blocks_near_identity(cifar_net):
    torch.manual_seed(1)
    ratios = block_residual_ratios(cifar_net, torch.randn(4, 3, 32, 32))
    assert len(ratios) == 27 and max(ratios) < 5e-3  # measured ~1.2e-3
    standard = block_residual_ratios(timm.create_model('allconv_resnet_cifar', init='standard').eval(),
                                     torch.randn(4, 3, 32, 32))
    assert min(standard) > 100 * max(ratios)  # the standard init does not start near the identity


def test_init_statistics(cifar_net):
    for block in (b for s in cifar_net.stages for b in s):
        for conv in (block.conv1, block.conv2):
            k, c = conv.kernel_size[0], conv.out_channels
            assert conv.weight.std().item() == pytest.approx(1 / (k * k * c), rel=0.03)
            assert abs(conv.weight.mean().item()) < 0.05 / (k * k * c)
            assert torch.count_nonzero(conv.bias) == 0
    stem = cifar_net.stem
    assert stem.weight.std().item() == pytest.approx(1 / (3 * 16 ** 0.5), rel=0.15)  # 432 samples


# --- the fixed random projection head ---------------------------------------------------------------------

def test_head_is_a_fixed_saved_buffer(cifar_net):
    fc = cifar_net.get_classifier()
    assert isinstance(fc, FixedRandomProjection) and fc.weight.shape == (10, 256)
    assert not list(fc.parameters()) and 'fc.weight' in cifar_net.state_dict()
    assert not any(n.startswith('fc.') for n, _ in cifar_net.named_parameters())
    assert fc.weight.std().item() == pytest.approx(1 / 16, rel=0.1)
    # deterministic from its seed, independent of the global RNG
    torch.manual_seed(123)
    assert torch.equal(timm.create_model('allconv_resnet_cifar', **TINY).fc.weight[:, :32],
                       FixedRandomProjection(32, 10, seed=0).weight)
    optimizer = timm.optim.create_optimizer_v2(cifar_net, 'sgd', lr=0.1, weight_decay=1e-4)
    assert all(p is not fc.weight for g in optimizer.param_groups for p in g['params'])


def test_head_gets_no_gradient_and_stays_fixed():
    model = timm.create_model('allconv_resnet_cifar', **TINY)
    before = model.fc.weight.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    assert model.fc.weight.grad is None and torch.equal(model.fc.weight, before)
    assert model.stem.weight.grad is not None


def test_forward_head_and_reset_classifier():
    model = timm.create_model('allconv_resnet_cifar', **TINY)
    feats = model.forward_features(torch.randn(2, 3, 32, 32))
    assert model.forward_head(feats, pre_logits=True).shape == (2, 32)
    assert torch.equal(model.forward_head(feats), model.fc(model.forward_head(feats, pre_logits=True)))
    model.reset_classifier(5)
    assert isinstance(model.fc, FixedRandomProjection) and model.fc.weight.shape == (5, 32) and model.num_classes == 5
    model.reset_classifier(7, head='linear')
    assert isinstance(model.fc, nn.Linear) and model.fc.weight.requires_grad
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 32)
    linear = timm.create_model('allconv_resnet_cifar', head='linear', num_classes=4, **TINY)
    assert isinstance(linear.get_classifier(), nn.Linear)
    with pytest.raises(ValueError, match="Unknown head 'mlp'"):
        timm.create_model('allconv_resnet_cifar', head='mlp', **TINY)


# --- timm API ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name, size, channels, reductions', [
    ('allconv_resnet_cifar', 32, [16, 64, 128, 256], [1, 1, 2, 4]),
    ('allconv_resnet_imagenet', 64, [64, 64, 128, 256, 512, 512], [2, 4, 8, 16, 32, 32]),
])
def test_features_only(name, size, channels, reductions):
    model = timm.create_model(name, features_only=True)
    assert model.feature_info.channels() == channels and model.feature_info.reduction() == reductions
    outs = model(torch.randn(1, 3, size, size))
    assert [o.shape[1] for o in outs] == channels
    assert [size // o.shape[-1] for o in outs] == reductions
    picked = timm.create_model(name, features_only=True, out_indices=(-1,))
    assert picked.feature_info.channels() == channels[-1:]


def test_forward_intermediates_match_features_only():
    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar', **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    final, inter = model.forward_intermediates(x)
    assert torch.equal(final, model.forward_features(x)) and [t.shape[1] for t in inter] == [8, 8, 16, 32]
    assert len(model.forward_intermediates(x, indices=2, intermediates_only=True)) == 2


def test_grad_checkpointing_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar', depths=(2, 2, 2), widths=(8, 16, 32), stem_chs=8)
    x = torch.randn(2, 3, 32, 32)
    model(x).square().sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    model(x).square().sum().backward()
    for p, g in zip(model.parameters(), ref):
        assert torch.allclose(p.grad, g, atol=1e-7, rtol=1e-5)


def test_group_matcher_groups_stem_and_blocks():
    model = timm.create_model('allconv_resnet_cifar')
    fine = timm.models.group_parameters(model, model.group_matcher())
    coarse = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    assert len(fine) == 1 + 27 and len(coarse) == 1 + 3
    # layer-wise lr decay, which uses the matcher, builds one group pair per layer
    groups = timm.optim.create_optimizer_v2(model, 'sgd', lr=0.1, layer_decay=0.9).param_groups
    assert len({g['lr_scale'] for g in groups}) == 28


@pytest.mark.parametrize('in_chans', [1, 4])
def test_in_chans(in_chans):
    model = timm.create_model('allconv_resnet_cifar', in_chans=in_chans, **TINY)
    assert model.stem.in_channels == in_chans and model(torch.randn(2, in_chans, 32, 32)).shape == (2, 10)


def test_clear_input_errors():
    model = timm.create_model('allconv_resnet_cifar', **TINY)
    with pytest.raises(ValueError, match='built for 3 input channels but got 1.*in_chans=1'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='2x2 pixels is too small .* at least 4'):
        model(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match='4-D NCHW'):
        model(torch.randn(3, 32, 32))
    imagenet = timm.create_model('allconv_resnet_imagenet', depths=(1,) * 5, widths=(8,) * 5, stem_chs=8)
    with pytest.raises(ValueError, match='at least 32'):
        imagenet(torch.randn(1, 3, 16, 16))
    assert imagenet(torch.randn(1, 3, 33, 47)).shape == (1, 1000)  # odd sizes are fine


def test_state_dict_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar', **TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # move away from init so that a reload has something to prove
    save_file(model.state_dict(), tmp_path / 'model.safetensors')
    torch.manual_seed(1)
    other = timm.create_model('allconv_resnet_cifar', head_seed=7, **TINY).eval()
    x = torch.randn(4, 3, 32, 32)
    assert not torch.equal(other(x), model(x))
    other.load_state_dict(load_file(tmp_path / 'model.safetensors'))
    assert torch.equal(other(x), model(x))


def test_pretrained_file_with_other_head_goes_through_timm_filter(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model('allconv_resnet_cifar', **TINY)
    save_file(source.state_dict(), tmp_path / 'model.safetensors')
    target = timm.create_model('allconv_resnet_cifar', pretrained=True, num_classes=5, **TINY,
                               pretrained_cfg_overlay=dict(file=str(tmp_path / 'model.safetensors')))
    assert target.fc.weight.shape == (5, 32)
    source_sd = source.state_dict()
    assert all(torch.equal(v, source_sd[k]) for k, v in target.state_dict().items() if not k.startswith('fc.'))
    same = timm.create_model('allconv_resnet_cifar', pretrained=True, **TINY,
                             pretrained_cfg_overlay=dict(file=str(tmp_path / 'model.safetensors')))
    assert torch.equal(same.fc.weight, source.fc.weight)


def test_torch_export_of_cifar_net(cifar_net):
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(cifar_net, (x,))
    assert torch.equal(exported.module()(x), cifar_net(x))


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar', **TINY).eval()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_arch_cli_json(capsys):
    assert cli_main(['arch', 'allconv_resnet_cifar', '--json']) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary['conv_count'], summary['conv_weights'], summary['conv_biases']) == (55, 13_538_736, 8_080)
    assert summary['fixed_head_entries'] == 2560 and summary['trainable_params'] == 13_546_816
    with pytest.raises(SystemExit):
        cli_main(['arch', 'allconv_resnet_cifar', '--input-size', '32,32'])


def test_model_class_is_exported():
    assert isinstance(timm.create_model('allconv_resnet_cifar', **TINY), AllConvResNet)
    assert isinstance(timm.create_model('allconv_resnet_cifar', **TINY).stages[0][0], AllConvResidualBlock)


def test_reset_classifier_updates_timm_reconstruction_args(tmp_path):
    from timm.models import save_for_hf
    model = timm.create_model('allconv_resnet_cifar', **TINY)
    model.reset_classifier(7, head='linear')
    save_for_hf(model, tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['num_classes'] == 7 and config['model_args']['head'] == 'linear'
    reloaded = timm.create_model(f'local-dir:{tmp_path}')
    assert isinstance(reloaded.fc, nn.Linear) and reloaded.fc.weight.shape == (7, 32)


@pytest.mark.parametrize('shortcut', ['avgpool', 'proj'])
def test_autocast_keeps_the_residual_stream_fp32(shortcut):
    """Under bf16 autocast the convs run in bf16 but the stream and the residual add stay fp32, so a fresh
    block's tiny branch (~1e-3 of the stream, below bf16's ~4e-3 resolution) survives the add."""
    torch.manual_seed(0)
    block = AllConvResidualBlock(16, 32, stride=2, shortcut=shortcut).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        ref_branch = block(x) - block.shortcut(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = block(x)
            shortcut_out = block.shortcut(x).float()
    assert out.dtype == torch.float32
    branch = out - shortcut_out
    assert ref_branch.abs().max() < 1e-2 * shortcut_out.abs().max()  # the branch is tiny at init
    # bf16 convs give a few-% error on the branch; a bf16 stream would have quantised it to ~100 %
    assert (branch - ref_branch).norm() / ref_branch.norm() < 0.05

    model = timm.create_model('allconv_resnet_cifar', depths=(2, 2, 2), widths=(8, 16, 32), stem_chs=8).eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        final, feats = model.forward_intermediates(torch.randn(2, 3, 32, 32))
    assert all(f.dtype == torch.float32 for f in feats) and final.dtype == torch.float32


# --- the timm model-test contract (timm's tests/test_models.py; CI has no timm checkout, so the contract is
# restated here; tests/test_timm_model_suite.py runs timm's real suite when TIMM_SRC is given) ----------------

@pytest.mark.parametrize('name, size, pool', [('allconv_resnet_cifar', 32, (8, 8)),
                                             ('allconv_resnet_imagenet', 64, (2, 2))])
def test_no_pool_no_classifier_gives_the_unpooled_map(name, size, pool):
    kw = TINY if name == 'allconv_resnet_cifar' else dict(depths=(1,) * 5, widths=(8,) * 5, stem_chs=8)
    model = timm.create_model(name, **kw).eval()
    x = torch.randn(2, 3, size, size)
    pre = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(0)
    assert model(x).shape == pre.shape == (2, model.num_features)   # pooled, flat
    model.reset_classifier(0, '')
    assert model(x).shape == (2, model.num_features, *pool)         # the NCHW map, pool_size spatial
    direct = timm.create_model(name, num_classes=0, global_pool='', **kw).eval()
    assert direct(x).shape == (2, direct.num_features, *pool)
    assert timm.create_model(name).pretrained_cfg['pool_size'] == (8, 8) if name.endswith('cifar') else True


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_gives_the_same_outputs_and_errors():
    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar', **TINY).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-6)
    with pytest.raises(Exception, match='built for 3 input channels but got 1'):
        scripted(torch.randn(1, 1, 32, 32))


def _timm_fx_model(model, train=False):
    """What timm's FX path does (``features_only=True, feature_cls='fx'``, timm's FX tests): torchvision's
    feature extractor with timm's leaf modules and notrace (autowrap) functions."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    from timm.models import get_notrace_functions, get_notrace_modules
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=tracer_kwargs).train(train)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_fx_trace_forward_backward_script_and_input_checks():
    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar', head='linear', num_classes=6, **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    fx = _timm_fx_model(model)
    with torch.no_grad():
        (out,) = fx(x).values()
        assert torch.equal(out, model(x))
        (scripted_out,) = torch.jit.script(fx)(x).values()
        assert torch.allclose(scripted_out, out, atol=1e-6)
    with pytest.raises(ValueError, match='built for 3 input channels but got 1'):
        fx(torch.randn(1, 1, 32, 32))  # the check survives tracing (an FX leaf)
    fx_train = _timm_fx_model(model.train(), train=True)
    (out,) = fx_train(x).values()
    out.mean().backward()
    assert all(p.grad is not None for p in fx_train.parameters())
    feats = timm.create_model('allconv_resnet_cifar', features_only=True, feature_cls='fx', **TINY)
    assert [f.shape[1] for f in feats(x)] == [8, 8, 16, 32]


def test_device_and_dtype_factory_kwargs_and_reset_classifier_keep_them():
    """timm 1.0.31's model contract: create_model(device=..., dtype=...) creates every tensor there, and
    reset_classifier builds the new head on the model's device, in its dtype and mode."""
    import timm
    meta = timm.create_model('allconv_resnet_cifar', device='meta', dtype=torch.float32)
    assert {t.device.type for t in [*meta.parameters(), *meta.buffers()]} == {'meta'}
    half = timm.create_model('allconv_resnet_cifar', depths=(1, 1, 1), dtype=torch.bfloat16).eval()
    assert {t.dtype for t in [*half.parameters(), *half.buffers()]} == {torch.bfloat16}
    ref = timm.create_model('allconv_resnet_cifar', depths=(1, 1, 1))
    assert torch.equal(half.fc.weight, ref.fc.weight.to(torch.bfloat16))  # the same fixed projection
    for head in ('fixed', 'linear'):
        half.reset_classifier(5, head=head)
        tensors = [*half.fc.parameters(), *half.fc.buffers()]
        assert tensors and all(t.dtype == torch.bfloat16 for t in tensors) and not half.fc.training
    with pytest.raises(TypeError):
        timm.create_model('allconv_resnet_cifar', not_a_model_arg=1)
