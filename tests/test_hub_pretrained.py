"""pretrained=True through the real huggingface_hub / timm code paths, offline, and the new-head path.

The tag test uses the real Table 1 model (13.5M parameters, 54 MB): `pretrained=True` on a registered tag builds
the default architecture, so a tiny stand-in would not load. It exports a random init once for the planned tag
`allconv_resnet_cifar.cifar10` with `--to-hub-configs` into a temporary hub_configs folder
(TIMM_IDENTITY_HUB_CONFIGS, read at each load) and with `--to-hf-cache` into a temporary HF cache, then checks
that the tag loads the exported file (checked against the record in the config.json beside it), that `hf-hub:`
and `local-dir:` give the same outputs, that a damaged or truncated file is refused, naming it and its record,
and that without the file the tag is planned again (timm never lists it as pretrained: the cfgs are code).
huggingface_hub runs offline (HF_HUB_OFFLINE, set for the test). About 5-10 s on 2 shared cores.
"""
import json
import os
import shutil

import pytest
import torch
import timm
from safetensors.torch import save_file

from timm_identity.hub.export import export_checkpoint
from timm_identity.integrity import DamagedFileError, file_record
from timm_identity.models.fixed_projection import FixedRandomProjection
from timm_identity.pretrained.tags import HUB_CONFIGS_ENV

from hub_testutil import TINY, tiny_checkpoint, write_model_card

NAME = 'allconv_resnet_cifar.cifar10'
REPO = 'timm-identity/allconv_resnet_cifar.cifar10'


@pytest.fixture
def one_thread():
    """The same kernels for the reference and every reload: bit-identical logits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pretrained_true_on_a_planned_tag_with_exported_weights_real_model(tmp_path, monkeypatch, one_thread):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    hub_configs, cache = tmp_path / 'hub_configs', tmp_path / 'hf_cache'
    hub_configs.mkdir()
    monkeypatch.setenv(HUB_CONFIGS_ENV, str(hub_configs))
    shipped = timm.list_pretrained('allconv*')
    with pytest.raises(RuntimeError, match=f"No pretrained weights for '{NAME}' yet"):
        timm.create_model(NAME, pretrained=True)

    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar').eval()  # Table 1, random init stands in for training
    ckpt = tmp_path / 'ckpt' / 'model.safetensors'
    ckpt.parent.mkdir()
    save_file(model.state_dict(), str(ckpt))
    folder = export_checkpoint(ckpt, arch=NAME, to_hub_configs=hub_configs, to_hf_cache=True,
                               hf_cache_dir=cache, model_card=write_model_card(tmp_path))
    assert folder == hub_configs / NAME
    assert sorted(p.name for p in hub_configs.iterdir()) == [NAME]  # nothing half-written or hidden beside it
    config = json.loads((folder / 'config.json').read_text())
    record = config['files']['model.safetensors']
    assert record == file_record(folder / 'model.safetensors')  # the one record, beside the weights
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    # the exported config.json describes the cfg in code
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    for key in ('num_classes', 'label_names', 'input_size', 'mean', 'std', 'classifier', 'tag'):
        assert norm(config['pretrained_cfg'][key]) == norm(model.pretrained_cfg[key]), key
    assert config['pretrained_cfg']['hf_hub_id'] == REPO
    exported = shutil.copytree(folder, tmp_path / 'exported')  # for local-dir:, untouched below
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x)

    def same(name, **kwargs):
        m = timm.create_model(name, pretrained=True, cache_dir=cache, **kwargs).eval()
        with torch.no_grad():
            return m, torch.equal(m(x), y)

    # 1. weights in the tag folder: loaded from there, checked; timm still lists only the shipped tags
    m, equal = same(NAME)
    assert equal and m.pretrained_cfg['file'] == str(folder / 'model.safetensors')
    assert timm.list_pretrained('allconv*') == shipped and NAME not in shipped
    assert same('allconv_resnet_cifar')[1]  # the bare name: its default tag
    assert same(f'hf-hub:{REPO}')[1] and same(f'local-dir:{exported}')[1]
    # what timm's own tests/test_models.py does with a pretrained tag
    timm.create_model(NAME, pretrained=True, in_chans=1, num_classes=5)
    timm.create_model(NAME, pretrained=True, in_chans=1, num_classes=0)
    feats = timm.create_model(NAME, pretrained=True, features_only=True)
    assert [f.shape[1] for f in feats(x)] == [16, 64, 128, 256]
    # fine-tuning: a new head for 5 classes, same backbone
    m5 = timm.create_model(NAME, pretrained=True, num_classes=5)
    sd, sd5 = m.state_dict(), m5.state_dict()
    assert all(torch.equal(sd[k], sd5[k]) for k in sd if not k.startswith('fc.'))
    assert isinstance(m5.fc, FixedRandomProjection) and tuple(m5.fc.weight.shape) == (5, 256)
    with pytest.raises(RuntimeError, match="No pretrained weights for 'allconv_resnet_cifar.cifar100' yet"):
        timm.create_model('allconv_resnet_cifar.cifar100', pretrained=True)  # another planned tag

    # 2. a damaged file in the tag folder (same size, other bytes), or a truncated one: refused, one line naming it
    weights, good = folder / 'model.safetensors', (folder / 'model.safetensors').read_bytes()
    truncated = (f'is damaged (truncated or overwritten): 4,096 bytes, but {folder / "config.json"} records '
                 f'{record["size"]:,}, sha256 {record["sha256"]}')
    for damaged, says in ((good[:-64] + bytes(255 - b for b in good[-64:]), 'is damaged or was changed'),
                          (good[:4096], truncated)):
        weights.write_bytes(damaged)
        with pytest.raises(DamagedFileError) as e:
            timm.create_model(NAME, pretrained=True)
        assert str(e.value).startswith(f'{weights} {says}') and '\n' not in str(e.value), str(e.value)

    # 3. no file in the folder: the tag is planned again (a planned tag's weights are only those exported into its
    # folder); its Hub form, hf-hub:, still loads from the HF cache
    weights.unlink()
    with pytest.raises(RuntimeError, match=f"No pretrained weights for '{NAME}' yet: .*there is no {weights}"):
        timm.create_model(NAME, pretrained=True)
    assert same(f'hf-hub:{REPO}')[1]

    # 4. a damaged blob in the HF cache (64 flipped bytes) is refused, naming the cached file ...
    from huggingface_hub import try_to_load_from_cache
    cached = try_to_load_from_cache(REPO, 'model.safetensors', cache_dir=str(cache))
    blob = os.path.realpath(cached)
    good = open(blob, 'rb').read()
    os.chmod(blob, 0o644)
    with open(blob, 'wb') as f:
        f.write(good[:-64] + bytes(255 - b for b in good[-64:]))
    with pytest.raises(DamagedFileError) as e:
        timm.create_model(f'hf-hub:{REPO}', pretrained=True, cache_dir=cache)
    assert str(e.value).startswith(f'{cached} is damaged or was changed'), str(e.value)
    # ... and putting the export into the cache again repairs it (a blob is checked, not trusted by its name)
    from timm_identity.hub.cache import install_into_hf_cache
    install_into_hf_cache(exported, REPO, cache_dir=cache)
    assert open(blob, 'rb').read() == good
    assert same(f'hf-hub:{REPO}')[1]


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('tiny')
    ckpt, model, _ = tiny_checkpoint(tmp, summary=False)
    return export_checkpoint(ckpt, tmp / 'export', arch='allconv_resnet_cifar.cifar10', model_args=TINY,
                             model_card=write_model_card(tmp)), model


@pytest.mark.parametrize('head', ['fixed', 'linear'])
def test_new_head_for_num_classes(tiny_folder, head):
    """timm's load_pretrained drops `fc.*` when num_classes differs; our buffer head is rebuilt."""
    folder, source = tiny_folder
    model = timm.create_model('allconv_resnet_cifar.cifar10', pretrained=True, num_classes=7, head=head,
                              pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors')), **TINY)
    sd, src = model.state_dict(), source.state_dict()
    assert all(torch.equal(sd[k], src[k]) for k in src if not k.startswith('fc.'))
    if head == 'fixed':
        assert isinstance(model.fc, FixedRandomProjection) and not list(model.fc.parameters())
        assert torch.equal(model.fc.weight, FixedRandomProjection(32, 7, seed=0).weight)
    else:
        assert isinstance(model.fc, torch.nn.Linear) and model.fc.weight.requires_grad
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    # same through local-dir (config.json's model_args give the tiny architecture)
    model = timm.create_model(f'local-dir:{folder}', pretrained=True, num_classes=7, head=head)
    assert all(torch.equal(model.state_dict()[k], src[k]) for k in src if not k.startswith('fc.'))


def test_missing_local_file_is_not_reported_as_hub_problem(tmp_path):
    with pytest.raises(Exception) as e:
        timm.create_model('allconv_resnet_cifar.cifar10', pretrained=True, **TINY,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / 'nope.safetensors')))
    assert 'Hugging Face Hub repo' not in str(e.value)
