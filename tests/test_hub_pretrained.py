"""pretrained=True through the real huggingface_hub / timm code paths, offline, and the new-head path.

The registry test uses the real Table 1 model (13.5M parameters, 54 MB): `pretrained=True` on a registered
tag builds the default architecture, so a tiny stand-in would not load. It exports once into a copy of
hub_configs/ (`--to-hub-configs` writes the weights record) and into a temporary HF cache, then checks in
child processes (the registry is built at import; huggingface_hub reads HF_HUB_OFFLINE / HF_HUB_CACHE when
imported) that the tag is listed as pretrained exactly while its weights can be had, that it loads the
recorded file, then the HF-cache copy, and that a damaged file is refused. About 30-40 s on 2 shared cores.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import timm
from safetensors.torch import save_file

from timm_identity.hub.export import export_checkpoint, hub_configs_dir
from timm_identity.models.fixed_projection import FixedRandomProjection

from hub_testutil import TINY, tiny_checkpoint, write_model_card

CHILD = textwrap.dedent('''
    import json, sys, torch, timm, timm_identity
    from timm_identity.models.fixed_projection import FixedRandomProjection
    torch.set_num_threads(1)
    ref = torch.load(sys.argv[1], weights_only=True)
    x, y = ref['x'], ref['y']
    out = {'pretrained': timm.list_pretrained('allconv*'), 'planned_error': None, 'error': None}
    try:
        m = timm.create_model('allconv_resnet_cifar.cifar10', pretrained=True).eval()
    except Exception as e:
        out['error'] = f'{type(e).__name__}: {e}'
        print(json.dumps(out)); sys.exit(0)
    with torch.no_grad():
        out['tag'] = torch.equal(m(x), y)
        out['file'] = m.pretrained_cfg.get('file')
        out['hf_hub_id'] = m.pretrained_cfg['hf_hub_id']
        h = timm.create_model('hf-hub:timm-identity/allconv_resnet_cifar.cifar10', pretrained=True).eval()
        out['hf_hub_prefix'] = torch.equal(h(x), y)
        d = timm.create_model('local-dir:' + sys.argv[2], pretrained=True).eval()
        out['local_dir'] = torch.equal(d(x), y)
    # what timm's own tests/test_models.py does with every pretrained tag
    timm.create_model('allconv_resnet_cifar.cifar10', pretrained=True, in_chans=1, num_classes=5)
    timm.create_model('allconv_resnet_cifar.cifar10', pretrained=True, in_chans=1, num_classes=0)
    feats = timm.create_model('allconv_resnet_cifar.cifar10', pretrained=True, features_only=True)
    out['features'] = [f.shape[1] for f in feats(x)]
    # fine-tuning: a new head for 5 classes, same backbone
    m5 = timm.create_model('allconv_resnet_cifar.cifar10', pretrained=True, num_classes=5)
    sd, sd5 = m.state_dict(), m5.state_dict()
    out['backbone_same'] = all(torch.equal(sd[k], sd5[k]) for k in sd if not k.startswith('fc.'))
    out['new_head'] = isinstance(m5.fc, FixedRandomProjection) and tuple(m5.fc.weight.shape) == (5, 256)
    try:
        timm.create_model('allconv_resnet_cifar.cifar100', pretrained=True)  # a planned tag
    except RuntimeError as e:
        out['planned_error'] = str(e)
    print(json.dumps(out))
''')


def _child(tmp_path, hub_configs, cache, folder):
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / 'hf_home'),
               HF_ENDPOINT='http://127.0.0.1:9', TIMM_IDENTITY_HUB_CONFIGS=str(hub_configs))
    proc = subprocess.run([sys.executable, '-c', CHILD, str(tmp_path / 'ref.pt'), str(folder)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pretrained_true_through_the_weights_record_real_model(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the child too: same kernels, bit-identical logits
    try:
        torch.manual_seed(0)
        model = timm.create_model('allconv_resnet_cifar').eval()  # Table 1, random init stands in for training
        ckpt = tmp_path / 'model.safetensors'
        save_file(model.state_dict(), str(ckpt))
        hub_configs, cache = tmp_path / 'hub_configs', tmp_path / 'hf_cache'
        shutil.copytree(hub_configs_dir(), hub_configs, ignore=shutil.ignore_patterns('*.safetensors', 'weights.json'))
        folder = export_checkpoint(ckpt, arch='allconv_resnet_cifar.cifar10', to_hub_configs=hub_configs,
                                   to_hf_cache=True, hf_cache_dir=cache, model_card=write_model_card(tmp_path))
        assert folder == hub_configs / 'allconv_resnet_cifar.cifar10'
        exported = shutil.copytree(folder, tmp_path / 'exported')  # for local-dir:, untouched below
        record = json.loads((folder / 'weights.json').read_text())
        assert record['size'] == (folder / 'model.safetensors').stat().st_size and record['published'] is None
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.save(dict(x=x, y=model(x)), tmp_path / 'ref.pt')
    finally:
        torch.set_num_threads(threads)

    # the written hub_configs/<arch>.<tag>/config.json still makes the same registered pretrained cfg
    from timm_identity.pretrained import tags as pretrained_tags
    monkeypatch.setattr(pretrained_tags, '_hub_config_dirs', lambda: [folder])
    cfgs = pretrained_tags.load_hub_configs()
    new, registered = cfgs['allconv_resnet_cifar.cifar10'], model.pretrained_cfg
    assert new['hf_hub_id'] == 'timm-identity/allconv_resnet_cifar.cifar10'
    assert new['file'] == str(folder / 'model.safetensors')
    for key in ('num_classes', 'label_names', 'input_size', 'mean', 'std', 'classifier', 'tag'):
        norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
        assert norm(new[key]) == norm(registered[key]), key

    # 1. weights in the tag folder: listed, loaded from the recorded file
    out = _child(tmp_path, hub_configs, cache, exported)
    assert out['pretrained'] == ['allconv_resnet_cifar.cifar10'], out  # cifar100 / in1k stay planned
    assert out['file'] == str(folder / 'model.safetensors')
    assert out['hf_hub_id'] == 'timm-identity/allconv_resnet_cifar.cifar10'
    assert out['tag'] and out['hf_hub_prefix'] and out['local_dir']
    assert out['features'] == [16, 64, 128, 256] and out['backbone_same'] and out['new_head']
    assert "No pretrained weights for 'allconv_resnet_cifar.cifar100' yet" in out['planned_error']
    assert "'timm-identity/allconv_resnet_cifar.cifar100'" in out['planned_error']

    # 2. a damaged file in the tag folder (same size, other bytes) is refused, naming it
    data = bytearray((folder / 'model.safetensors').read_bytes())
    data[-64:] = bytes(255 - b for b in data[-64:])
    (folder / 'model.safetensors').write_bytes(bytes(data))
    out = _child(tmp_path, hub_configs, cache, exported)
    assert out['error'].startswith('WeightsError') and str(folder / 'model.safetensors') in out['error']

    # 3. no file in the folder, but in the HF cache: still listed, loaded through huggingface_hub
    (folder / 'model.safetensors').unlink()
    out = _child(tmp_path, hub_configs, cache, exported)
    assert out['pretrained'] == ['allconv_resnet_cifar.cifar10'] and out['file'] is None and out['tag']

    # 3b. a damaged blob in the HF cache (64 flipped bytes) is refused too, naming the cached file ...
    from huggingface_hub import try_to_load_from_cache
    cached = os.path.realpath(try_to_load_from_cache('timm-identity/allconv_resnet_cifar.cifar10',
                                                     'model.safetensors', cache_dir=str(cache)))
    good = open(cached, 'rb').read()
    os.chmod(cached, 0o644)
    with open(cached, 'wb') as f:
        f.write(good[:-64] + bytes(255 - b for b in good[-64:]))
    out = _child(tmp_path, hub_configs, cache, exported)
    assert out['error'].startswith('WeightsError') and 'does not match its record' in out['error'], out
    assert os.path.basename(cached) in out['error']
    # ... and putting the export into the cache again repairs it (a blob is checked, not trusted by its name)
    from timm_identity.hub.cache import install_into_hf_cache
    install_into_hf_cache(exported, 'timm-identity/allconv_resnet_cifar.cifar10', cache_dir=cache)
    assert open(cached, 'rb').read() == good
    out = _child(tmp_path, hub_configs, cache, exported)
    assert out['error'] is None and out['tag'], out

    # 4. nowhere (not published, not in the folder, not cached): still listed (the record says weights were made;
    # import never looks into the HF cache), and pretrained=True is our error, naming where it looked
    out = _child(tmp_path, hub_configs, tmp_path / 'empty_cache', exported)
    assert out['pretrained'] == ['allconv_resnet_cifar.cifar10']
    assert "No pretrained weights for 'allconv_resnet_cifar.cifar10' here" in out['error']
    assert 'not published' in out['error'] and 'not in the local Hugging Face cache either' in out['error']


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
