"""timm-identity publish: local checks, dry run, errors without token / network. Nothing leaves the machine:
the Hub API is replaced by a recorder, or pointed at a closed local port."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from timm_identity.hub import publish as publish_mod
from timm_identity.hub.export import export_checkpoint
from timm_identity.hub.publish import PublishError, check_repo_names, collect_upload, publish

from hub_testutil import TINY, tiny_checkpoint, write_model_card

CLOSED = 'http://127.0.0.1:9'  # discard port: connection refused, nothing sent anywhere
FAKE_TOKEN = 'hf_FakeTokenForTests0123456789'


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('pub')
    ckpt, _, summary = tiny_checkpoint(tmp)
    return export_checkpoint(ckpt, tmp / 'export', arch='allconv_resnet_cifar.cifar10', model_args=TINY,
                             summary=summary, model_card=write_model_card(tmp), repo_id='me/model')


class NoNetwork:
    def __init__(self, *a, **k):
        raise AssertionError('HfApi must not be used here')


def test_dry_run_lists_exact_files_without_network(folder, monkeypatch):
    monkeypatch.setattr(publish_mod, 'HfApi', NoNetwork)
    monkeypatch.setattr(publish_mod, 'get_token', lambda: None)
    lines = []
    assert publish(folder, 'me/model', revision='v1', dry_run=True, endpoint=CLOSED, echo=lines.append) is None
    text = '\n'.join(lines)
    assert f'{CLOSED}/me/model' in text and 'revision v1' in text and 'DRY RUN' in text
    for name in ('config.json', 'model.safetensors', 'README.md'):
        data = (folder / name).read_bytes()
        assert f'{len(data):,} bytes  sha256 {hashlib.sha256(data).hexdigest()}' in text
    assert '3 files' in text and 'none found' in text


def _copy(folder, dst):
    dst.mkdir()
    for p in folder.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize('name', ['pytorch_model.bin', 'model.pth', 'model.pt', 'ckpt.pth.tar', 'x.pkl'])
def test_refuses_pickle_weights(folder, tmp_path, name):
    bad = _copy(folder, tmp_path / 'bad')
    torch.save({'w': torch.zeros(1)}, bad / name)
    with pytest.raises(PublishError, match='only safetensors'):
        collect_upload(bad)


def test_refuses_fake_safetensors_missing_files_and_hidden(folder, tmp_path):
    bad = _copy(folder, tmp_path / 'fake')
    torch.save({'w': torch.zeros(1)}, bad / 'model.safetensors')  # a pickle under a safetensors name
    with pytest.raises(PublishError, match='model.safetensors is damaged'):  # not what config.json records
        collect_upload(bad)
    config = json.loads((bad / 'config.json').read_text())
    (bad / 'config.json').write_text(json.dumps({k: v for k, v in config.items() if k != 'files'}))
    with pytest.raises(PublishError, match='not a readable safetensors file'):  # nothing recorded: the header
        collect_upload(bad)
    bad = _copy(folder, tmp_path / 'flipped')
    data = bytearray((bad / 'model.safetensors').read_bytes())
    data[-10] ^= 0xFF  # one byte of tensor data
    (bad / 'model.safetensors').write_bytes(bytes(data))
    with pytest.raises(PublishError, match='model.safetensors is damaged or was changed after it was written'):
        collect_upload(bad)
    bad = _copy(folder, tmp_path / 'incomplete')
    (bad / 'README.md').unlink()
    (bad / '.secret').write_text('x')
    with pytest.raises(PublishError) as e:
        collect_upload(bad)
    assert 'README.md: missing' in str(e.value) and '.secret: hidden' in str(e.value)


def test_no_token_is_a_clear_error(folder, monkeypatch):
    monkeypatch.setattr(publish_mod, 'HfApi', NoNetwork)
    monkeypatch.setattr(publish_mod, 'get_token', lambda: None)
    with pytest.raises(PublishError, match='hf auth login.*HF_TOKEN'):
        publish(folder, 'me/model', endpoint=CLOSED, echo=lambda s: None)


def test_offline_mode_is_a_clear_error(folder, monkeypatch):
    monkeypatch.setattr(publish_mod, 'HfApi', NoNetwork)
    monkeypatch.setattr(publish_mod.constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(PublishError, match='HF_HUB_OFFLINE'):
        publish(folder, 'me/model', token=FAKE_TOKEN, endpoint=CLOSED, echo=lambda s: None)


def test_unreachable_endpoint_cli_never_prints_token(folder, tmp_path):
    """The real command and the real huggingface_hub, HF_ENDPOINT on a closed local port."""
    env = dict(os.environ, HF_ENDPOINT=CLOSED, HF_TOKEN=FAKE_TOKEN, HF_HOME=str(tmp_path / 'hf'))
    env.pop('HF_HUB_OFFLINE', None)
    cmd = 'import sys; from timm_identity.cli import main; sys.exit(main())'  # what the console script runs
    proc = subprocess.run([sys.executable, '-c', cmd, 'publish', str(folder), '--repo-id', 'me/model'],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'Cannot reach the Hub at http://127.0.0.1:9' in proc.stderr and 'Nothing was uploaded' in proc.stderr
    assert FAKE_TOKEN not in proc.stdout + proc.stderr
    assert 'Uploading' not in proc.stdout


class RecordingApi:
    calls = []

    def __init__(self, endpoint=None, token=None, **kwargs):
        self.calls.append(('init', endpoint, token == FAKE_TOKEN))

    def whoami(self):
        self.calls.append(('whoami',))
        return {'name': 'tester'}

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(('create_repo', repo_id, private, exist_ok))
        return type('RepoUrl', (), {'repo_id': repo_id})()

    def create_branch(self, repo_id, branch, exist_ok=False):
        self.calls.append(('create_branch', repo_id, branch))

    def upload_folder(self, **kwargs):
        self.calls.append(('upload_folder', kwargs))
        return type('CommitInfo', (), {'commit_url': 'https://hub.local/commit/abc'})()


def test_publish_flow_with_recorded_api(folder, monkeypatch):
    RecordingApi.calls = []
    monkeypatch.setattr(publish_mod, 'HfApi', RecordingApi)
    out = []
    url = publish(folder, 'me/model', private=True, revision='v1', token=FAKE_TOKEN, endpoint=CLOSED,
                  echo=out.append)
    assert url == 'https://hub.local/commit/abc'
    names = [c[0] for c in RecordingApi.calls]
    assert names == ['init', 'whoami', 'create_repo', 'create_branch', 'upload_folder']
    assert RecordingApi.calls[0] == ('init', CLOSED, True)
    assert RecordingApi.calls[2] == ('create_repo', 'me/model', True, True)
    upload = RecordingApi.calls[4][1]
    assert upload['revision'] == 'v1' and upload['repo_id'] == 'me/model'
    assert sorted(upload['allow_patterns']) == ['README.md', 'config.json', 'model.safetensors']
    assert FAKE_TOKEN not in '\n'.join(out)


def test_refuses_a_folder_exported_for_another_repo(folder, monkeypatch, tmp_path):
    """config.json's hf_hub_id and the card's hf-hub: names must be the repo it goes to."""
    monkeypatch.setattr(publish_mod, 'HfApi', NoNetwork)
    config = json.loads((folder / 'config.json').read_text())
    assert config['pretrained_cfg']['hf_hub_id'] == 'me/model'
    assert 'hf-hub:me/model' in (folder / 'README.md').read_text()
    check_repo_names(folder, 'me/model')  # the repo it was exported for
    with pytest.raises(PublishError) as e:
        publish(folder, 'other/model', dry_run=True, token=FAKE_TOKEN, endpoint=CLOSED, echo=lambda s: None)
    message = str(e.value)
    assert "exported for 'me/model'" in message and '--repo-id other/model --output DIR' in message
    assert 'Nothing was uploaded' in message
    card_only = _copy(folder, tmp_path / 'card_only')  # a card that names another repo than config.json
    readme = card_only / 'README.md'
    readme.write_text(readme.read_text().replace('hf-hub:me/model', 'hf-hub:someone/else'))
    with pytest.raises(PublishError, match="exported for 'someone/else'"):
        check_repo_names(card_only, 'me/model')


def test_refuses_symlinks(folder, tmp_path):
    """A symlinked file (e.g. to a token file outside the folder) is never uploaded."""
    linked = _copy(folder, tmp_path / 'linked')
    secret = tmp_path / 'token.txt'
    secret.write_text('hf_secret')
    (linked / 'notes.txt').symlink_to(secret)
    with pytest.raises(PublishError, match='notes.txt: a symbolic link'):
        collect_upload(linked)
    inner = _copy(folder, tmp_path / 'inner')
    (inner / 'extra.md').symlink_to(inner / 'README.md')  # even one that stays inside
    with pytest.raises(PublishError, match='extra.md: a symbolic link'):
        collect_upload(inner)
