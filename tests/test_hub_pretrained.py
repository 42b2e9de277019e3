"""pretrained=True through the real huggingface_hub / timm code paths, offline, and the new-head path.

The registry test uses the real Table 1 model (13.5M parameters, 54 MB): `pretrained=True` on a registered
tag builds the default architecture, so a tiny stand-in would not load. It costs 10-15 s on 2 shared CPU
cores (one export, five model builds and a few forward passes on 2 images). A subprocess is needed because huggingface_hub reads
HF_HUB_OFFLINE / HF_HUB_CACHE when it is imported.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import timm
from safetensors.torch import save_file

from timm_identity.hub.export import export_checkpoint
from timm_identity.models.fixed_projection import FixedRandomProjection

from hub_testutil import TINY, tiny_checkpoint, write_model_card

CHILD = textwrap.dedent('''
    import json, sys, torch, timm, timm_identity
    from timm_identity.models.fixed_projection import FixedRandomProjection
    torch.set_num_threads(1)
    ref = torch.load(sys.argv[1], weights_only=True)
    x, y = ref['x'], ref['y']
    out = {}
    def same(name, **kw):
        m = timm.create_model(name, pretrained=True, **kw).eval()
        with torch.no_grad():
            return m, torch.equal(m(x), y)
    m, out['tag'] = same('allconv_resnet_cifar.cifar10')
    out['hf_hub_id'] = m.pretrained_cfg['hf_hub_id']
    _, out['hf_hub_prefix'] = same('hf-hub:timm-identity/allconv_resnet_cifar.cifar10')
    _, out['local_dir'] = same('local-dir:' + sys.argv[2])
    # fine-tuning: a new head for 5 classes, same backbone
    m5 = timm.create_model('allconv_resnet_cifar.cifar10', pretrained=True, num_classes=5)
    sd, sd5 = m.state_dict(), m5.state_dict()
    out['backbone_same'] = all(torch.equal(sd[k], sd5[k]) for k in sd if not k.startswith('fc.'))
    out['new_head'] = isinstance(m5.fc, FixedRandomProjection) and tuple(m5.fc.weight.shape) == (5, 256)
    try:
        timm.create_model('allconv_resnet_cifar.cifar100', pretrained=True)  # not in the cache
    except RuntimeError as e:
        out['error'] = str(e)
    print(json.dumps(out))
''')


def test_pretrained_true_offline_from_hf_cache_real_model(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the child too: same kernels, bit-identical logits
    try:
        torch.manual_seed(0)
        model = timm.create_model('allconv_resnet_cifar').eval()  # Table 1, random init stands in for training
        ckpt = tmp_path / 'model.safetensors'
        save_file(model.state_dict(), str(ckpt))
        cache = tmp_path / 'hf_cache'
        folder = export_checkpoint(ckpt, arch='allconv_resnet_cifar.cifar10', to_hub_configs=tmp_path / 'hub_configs',
                                   to_hf_cache=True, hf_cache_dir=cache, model_card=write_model_card(tmp_path))
        assert folder == tmp_path / 'hub_configs' / 'allconv_resnet_cifar.cifar10'
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.save(dict(x=x, y=model(x)), tmp_path / 'ref.pt')
    finally:
        torch.set_num_threads(threads)

    # the written hub_configs/<arch>.<tag>/config.json still makes the same registered pretrained cfg
    from timm_identity.models import allconv_resnet
    monkeypatch.setattr(allconv_resnet, '_hub_config_dirs', lambda: [folder])
    cfgs = allconv_resnet.load_hub_configs()
    timm.models.generate_default_cfgs({k: allconv_resnet._cfg(**v) for k, v in cfgs.items()})
    new, registered = cfgs['allconv_resnet_cifar.cifar10'], model.pretrained_cfg
    for key in ('hf_hub_id', 'num_classes', 'label_names', 'input_size', 'mean', 'std', 'classifier', 'tag'):
        norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
        assert norm(new[key]) == norm(registered[key]), key

    repo = cache / 'models--timm-identity--allconv_resnet_cifar.cifar10'
    commit = (repo / 'refs' / 'main').read_text()
    assert sorted(p.name for p in (repo / 'snapshots' / commit).iterdir()) == [
        'README.md', 'config.json', 'model.safetensors']

    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / 'hf_home'),
               HF_ENDPOINT='http://127.0.0.1:9')
    proc = subprocess.run([sys.executable, '-c', CHILD, str(tmp_path / 'ref.pt'), str(folder)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['tag'] and out['hf_hub_prefix'] and out['local_dir']
    assert out['hf_hub_id'] == 'timm-identity/allconv_resnet_cifar.cifar10'
    assert out['backbone_same'] and out['new_head']
    error = out['error']
    assert "'timm-identity/allconv_resnet_cifar.cifar100'" in error
    assert 'timm-identity publish' in error and 'local-dir:' in error and 'pretrained_cfg_overlay' in error


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
