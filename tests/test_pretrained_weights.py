"""The pretrained tags: cfgs in code (``import timm_identity`` reads no file), and where ``pretrained=True`` finds
their weights, checked against the one record (``config.json["files"]`` beside them): the tag folder, the Hub /
HF cache for a shipped tag, ``local-dir:``, ``hf-hub:``, the caller's own file. Every refusal is one line naming
the file, a ``DamagedFileError``. Offline (huggingface_hub's HF_HUB_OFFLINE, set per test); the shipped
1 MB weights stand in wherever a tag's default architecture is not needed."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest
import torch
import timm
from safetensors.torch import load_file

import timm_identity  # noqa: F401
from timm_identity.hub.cache import install_into_hf_cache
from timm_identity.integrity import DamagedFileError, sha256_file
from timm_identity.pretrained.tags import HUB_CONFIGS_ENV, hub_repo_id

# the package's own tag folders (hub_configs_root() follows $TIMM_IDENTITY_HUB_CONFIGS, which tests here set)
PACKAGE = Path(str(resources.files('timm_identity.hub_configs')))
SHIPPED = ['allconv_resnet_cifar_w16_d3.cifar10', 'allconv_resnet_cifar_w16_d3.cifar100',
           'allconv_resnet_cifar_w16_d3.speedrun_cifar10', 'allconv_resnet_cifar_w16_d3.speedrun_cifar100']
TAG, OTHER = SHIPPED[:2]
REPO = hub_repo_id(TAG)


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)


@pytest.fixture
def hub_configs(tmp_path, monkeypatch):
    """A copy of the shipped tag folders as $TIMM_IDENTITY_HUB_CONFIGS (read at each load), to damage."""
    root = tmp_path / 'hub_configs'
    for name in SHIPPED:
        shutil.copytree(PACKAGE / name, root / name)
    monkeypatch.setenv(HUB_CONFIGS_ENV, str(root))
    return root


def _record(folder: Path):
    return json.loads((folder / 'config.json').read_text())['files']['model.safetensors']


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert '\n' not in text, text
    return text


def _same_weights(model, path):
    sd = load_file(str(path))
    return all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


# --- cfgs in code ---------------------------------------------------------------------------------------------

def test_registry_is_code():
    assert timm.list_models('allconv*', include_tags=True) == [
        'allconv_resnet_cifar.cifar10', 'allconv_resnet_cifar.cifar100', 'allconv_resnet_cifar_w16_d3.cifar10',
        'allconv_resnet_cifar_w16_d3.cifar100', 'allconv_resnet_cifar_w16_d3.speedrun_cifar10',
        'allconv_resnet_cifar_w16_d3.speedrun_cifar100', 'allconv_resnet_imagenet.in1k']
    assert timm.list_pretrained('allconv*') == SHIPPED
    for name in timm.list_models('allconv*', include_tags=True):
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.hf_hub_id == (hub_repo_id(name) if name in SHIPPED else None), name  # one rule for the repo


def test_import_reads_no_file(tmp_path, monkeypatch):
    """``import timm_identity`` opens and lists no file of hub_configs/ (the package's, or the override's) and
    works with garbage there: a half-written export folder, a tag folder whose config.json is ``{``."""
    garbage = tmp_path / 'hub_configs'
    (garbage / '.allconv_resnet_cifar.cifar10.tmp-1').mkdir(parents=True)
    (garbage / '.allconv_resnet_cifar.cifar10.tmp-1' / 'config.json').write_text('{"archi')
    (garbage / 'bad.tag').mkdir()
    (garbage / 'bad.tag' / 'config.json').write_text('{')
    (garbage / TAG).mkdir()
    (garbage / TAG / 'config.json').write_text('{')
    code = textwrap.dedent('''
        import json, os, sys
        roots = [os.path.realpath(p) for p in sys.argv[1:]]
        seen = []
        def hook(event, args):
            watched = event in ('open', 'os.listdir', 'os.scandir') and args
            if watched and isinstance(args[0], (str, bytes, os.PathLike)):
                path = os.path.realpath(os.fsdecode(args[0]))
                if any(path == r or path.startswith(r + os.sep) for r in roots):
                    seen.append((event, path))
        sys.addaudithook(hook)
        import timm, timm_identity
        names = timm.list_models('allconv*', include_tags=True)
        pretrained = timm.list_pretrained('allconv*')
        cfg = timm.models.get_pretrained_cfg('allconv_resnet_cifar_w16_d3.cifar10').to_dict()
        print(json.dumps({'seen': seen, 'names': names, 'pretrained': pretrained, 'mean': cfg['mean']}))
    ''')
    for env in ({}, {HUB_CONFIGS_ENV: str(garbage)}, {HUB_CONFIGS_ENV: str(tmp_path / 'missing')}):
        proc = subprocess.run([sys.executable, '-c', code, str(PACKAGE), str(garbage)],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out['seen'] == [], out['seen']
        assert len(out['names']) == 7 and out['pretrained'] == SHIPPED
        assert out['mean'] == [0.4913996786199794, 0.48215840840152385, 0.44653091445986]
    # ... and with the garbage as hub_configs, the tags build; pretrained=True reads the tag's folder only
    shutil.copy(PACKAGE / TAG / 'model.safetensors', garbage / TAG)
    monkeypatch.setenv(HUB_CONFIGS_ENV, str(garbage))
    assert timm.create_model('allconv_resnet_cifar.cifar100').num_classes == 100
    with pytest.raises(DamagedFileError, match=f'{garbage / TAG / "config.json"}: not readable as JSON'):
        timm.create_model(TAG, pretrained=True)


def test_missing_override_folder_is_a_clear_error_at_load(tmp_path, monkeypatch):
    monkeypatch.setenv(HUB_CONFIGS_ENV, str(tmp_path / 'missing'))
    timm.create_model(TAG)  # no weights: nothing to look up
    with pytest.raises(ValueError, match=f'{HUB_CONFIGS_ENV}={tmp_path / "missing"}: not a folder'):
        timm.create_model(TAG, pretrained=True)


# --- a shipped tag: its folder, then its Hub repo through the HF cache ------------------------------------------

def test_shipped_tag_loads_the_checked_file_of_its_folder(hub_configs):
    model = timm.create_model(TAG, pretrained=True)
    assert model.pretrained_cfg['file'] == str(hub_configs / TAG / 'model.safetensors')
    assert _same_weights(model, PACKAGE / TAG / 'model.safetensors')
    features = timm.create_model(TAG, pretrained=True, features_only=True)
    assert [f.shape[1] for f in features(torch.zeros(1, 3, 32, 32))] == [16, 16, 32, 64]


@pytest.mark.parametrize('damage', ['truncated', 'swapped', 'flipped'])
def test_damaged_shipped_file_is_refused_not_missing(hub_configs, damage):
    weights, record = hub_configs / TAG / 'model.safetensors', _record(hub_configs / TAG)
    if damage == 'truncated':
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == 'swapped':  # another tag's weights (and size)
        shutil.copy(hub_configs / OTHER / 'model.safetensors', weights)
    else:  # the same size, other bytes
        data = bytearray(weights.read_bytes())
        data[-64:] = bytes(255 - b for b in data[-64:])
        weights.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError) as e:
        timm.create_model(TAG, pretrained=True)
    line = _one_line(e.value)
    assert line.startswith(f'{weights} is damaged') and str(hub_configs / TAG / 'config.json') in line
    assert record['sha256'] in line and ('1,079,488' in line or damage == 'flipped')


def test_shipped_file_without_its_record_is_refused(hub_configs):
    config = json.loads((hub_configs / TAG / 'config.json').read_text())
    del config['files']
    (hub_configs / TAG / 'config.json').write_text(json.dumps(config))
    with pytest.raises(DamagedFileError, match=r'records no size and sha256 for it') as e:
        timm.create_model(TAG, pretrained=True)
    assert _one_line(e.value).startswith(str(hub_configs / TAG / 'model.safetensors'))
    (hub_configs / TAG / 'config.json').unlink()
    with pytest.raises(DamagedFileError, match=r'records no size and sha256 for it'):
        timm.create_model(TAG, pretrained=True)


def test_shipped_tag_without_its_file_comes_from_the_hf_cache_checked_against_its_record(
        hub_configs, tmp_path, offline):
    (hub_configs / TAG / 'model.safetensors').unlink()
    cache = tmp_path / 'hf_cache'
    snapshot = install_into_hf_cache(PACKAGE / TAG, REPO, cache_dir=cache)
    model = timm.create_model(TAG, pretrained=True, cache_dir=cache)
    assert 'file' not in model.pretrained_cfg and model.pretrained_cfg['hf_hub_id'] == REPO
    assert _same_weights(model, PACKAGE / TAG / 'model.safetensors')

    # other weights under the repo, recorded by their own config.json: refused by the tag's record
    shutil.rmtree(cache)
    snapshot = install_into_hf_cache(PACKAGE / OTHER, REPO, cache_dir=cache)
    with pytest.raises(DamagedFileError) as e:
        timm.create_model(TAG, pretrained=True, cache_dir=cache)
    line = _one_line(e.value)
    assert line.startswith(f'{snapshot / "model.safetensors"} is damaged')
    assert f'{hub_configs / TAG / "config.json"} records 1,079,488' in line
    assert _record(hub_configs / TAG)['sha256'] in line
    # hf-hub: names the repo, whose own config.json is the record then
    timm.create_model(f'hf-hub:{REPO}', pretrained=True, cache_dir=cache)

    # nowhere: the Hub cannot be read offline; one clear error naming the file, the repo and what to do
    shutil.rmtree(cache)
    with pytest.raises(RuntimeError, match=r"not reachable: .*model.safetensors is not here, the Hugging Face Hub "
                                           r"repo 'timm-identity/allconv_resnet_cifar_w16_d3.cifar10'") as e:
        timm.create_model(TAG, pretrained=True, cache_dir=cache)
    assert 'the package ships them as' in str(e.value)


def test_weights_downloaded_now_are_checked_after_the_load(hub_configs, tmp_path, monkeypatch, offline):
    """Not in the HF cache before the load: timm downloads them; the downloaded copy is checked after it."""
    import timm.models._hub as timm_hub  # the download timm's load_state_dict_from_hf calls (a stand-in here)
    (hub_configs / TAG / 'model.safetensors').unlink()
    cache = tmp_path / 'hf_cache'

    damaged = _damaged_copy(tmp_path)  # loads (the bytes changed are tensor data), but is not what was shipped

    def download(repo_id, filename, revision=None, cache_dir=None, **kwargs):  # a "download" of other bytes
        snapshot = install_into_hf_cache(damaged, repo_id, cache_dir=cache_dir)
        return str(snapshot / filename)
    monkeypatch.setattr(timm_hub, 'hf_hub_download', download)
    with pytest.raises(DamagedFileError, match=r'is damaged or was changed after it was written') as e:
        timm.create_model(TAG, pretrained=True, cache_dir=cache)
    assert _one_line(e.value).startswith(str(cache)) and str(hub_configs / TAG / 'config.json') in str(e.value)


# --- a planned tag: weights only once exported into hub_configs -----------------------------------------------

def test_planned_tag_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(HUB_CONFIGS_ENV, str(tmp_path))
    with pytest.raises(RuntimeError) as e:
        timm.create_model('allconv_resnet_imagenet.in1k', pretrained=True)
    text = str(e.value)
    assert text.startswith("No pretrained weights for 'allconv_resnet_imagenet.in1k' yet: no weights have been "
                           f"trained and exported for it (there is no {tmp_path / 'allconv_resnet_imagenet.in1k'}")
    assert "'timm-identity/allconv_resnet_imagenet.in1k'" in text and '--to-hub-configs' in text


def test_planned_tag_with_weights_in_its_folder_loads_them_checked(tmp_path, monkeypatch):
    """What `export --to-hub-configs` leaves (tests/test_hub_pretrained.py runs the export itself): the folder's
    config.json records the file; a file without a record, or another file, is refused."""
    from safetensors.torch import save_file
    from timm_identity.integrity import record_files
    name = 'allconv_resnet_cifar.cifar100'
    monkeypatch.setenv(HUB_CONFIGS_ENV, str(tmp_path))
    folder = tmp_path / name
    folder.mkdir()
    torch.manual_seed(0)
    source = timm.create_model(name)
    save_file(source.state_dict(), str(folder / 'model.safetensors'))
    with pytest.raises(DamagedFileError, match='records no size and sha256 for it'):
        timm.create_model(name, pretrained=True)
    (folder / 'config.json').write_text(json.dumps({'architecture': 'allconv_resnet_cifar'}))
    record_files(folder, ['model.safetensors'])
    model = timm.create_model(name, pretrained=True)
    assert model.pretrained_cfg['file'] == str(folder / 'model.safetensors')
    assert _same_weights(model, folder / 'model.safetensors')
    assert model.num_classes == 100 and 'hf_hub_id' not in model.pretrained_cfg
    with open(folder / 'model.safetensors', 'r+b') as f:
        f.seek(-8, os.SEEK_END)
        f.write(b'\xff' * 8)
    with pytest.raises(DamagedFileError, match=f'{folder / "model.safetensors"} is damaged or was changed'):
        timm.create_model(name, pretrained=True)


# --- local-dir:, hf-hub:, the caller's file: the same record, the same refusal -----------------------------------

def _damaged_copy(tmp_path, name=TAG):
    folder = shutil.copytree(PACKAGE / name, tmp_path / 'export')
    data = bytearray((folder / 'model.safetensors').read_bytes())
    data[-64] ^= 0xFF
    (folder / 'model.safetensors').write_bytes(bytes(data))
    return folder


def test_local_dir_refuses_weights_that_differ_from_their_record(tmp_path):
    folder = _damaged_copy(tmp_path)
    for call in (lambda: timm.create_model(f'local-dir:{folder}', pretrained=True),
                 lambda: timm.create_model(TAG, pretrained=True,
                                           pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors')))):
        with pytest.raises(DamagedFileError) as e:
            call()
        assert _one_line(e.value).startswith(f'{folder / "model.safetensors"} is damaged or was changed')
    timm.create_model(f'local-dir:{folder}')  # no weights loaded: nothing to check


def test_train_cifar_init_from_refuses_them_too(tmp_path):
    """train-cifar --init-from local-dir:DIR builds through the same pretrained=True, so it refuses them."""
    from timm_identity.train.cifar_trainer import train
    from train_helpers import learnable_split, tiny_overrides
    folder = _damaged_copy(tmp_path)
    split = learnable_split(16, seed=0)
    with pytest.raises(ValueError, match=f'{folder / "model.safetensors"} is damaged or was changed'):
        train(tiny_overrides(tmp_path / 'run', steps=1, init_from=f'local-dir:{folder}', model_kwargs={}), split, split)


def test_hf_hub_refuses_a_damaged_cached_copy(tmp_path, offline):
    cache = tmp_path / 'hf_cache'
    snapshot = install_into_hf_cache(PACKAGE / TAG, 'someone/w16', cache_dir=cache)
    assert _same_weights(timm.create_model('hf-hub:someone/w16', pretrained=True, cache_dir=cache),
                         PACKAGE / TAG / 'model.safetensors')
    blob = (snapshot / 'model.safetensors').resolve()
    data = bytearray(blob.read_bytes())
    data[-64] ^= 0xFF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError) as e:
        timm.create_model('hf-hub:someone/w16', pretrained=True, cache_dir=cache)
    assert _one_line(e.value).startswith(f'{snapshot / "model.safetensors"} is damaged or was changed')
    assert str(snapshot / 'config.json') in str(e.value)


# --- publish records nothing locally ---------------------------------------------------------------------------

def test_publish_uploads_the_tag_folder_and_writes_nothing_there(tmp_path, monkeypatch):
    from timm_identity.hub import publish as publish_mod
    from test_hub_publish import CLOSED, FAKE_TOKEN, RecordingApi
    folder = shutil.copytree(PACKAGE / TAG, tmp_path / TAG)
    before = {p.name: sha256_file(p) for p in folder.iterdir()}
    RecordingApi.calls = []
    monkeypatch.setattr(publish_mod, 'HfApi', RecordingApi)
    out = []
    url = publish_mod.publish(folder, REPO, token=FAKE_TOKEN, endpoint=CLOSED, echo=out.append)
    assert url == 'https://hub.local/commit/abc' and out[-1] == f'Done: {url}'
    assert sorted(RecordingApi.calls[-1][1]['allow_patterns']) == ['README.md', 'config.json', 'model.safetensors']
    assert {p.name: sha256_file(p) for p in folder.iterdir()} == before
