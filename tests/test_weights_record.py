"""The weights record (hub_configs/<arch>.<tag>/weights.json) that decides which tags timm lists as pretrained:
written by `export --to-hub-configs`, updated by `publish`, read at import (tests/test_hub_pretrained.py runs the
whole path with the real model in child processes)."""
import json

import pytest

from timm_identity.hub import publish as publish_mod
from timm_identity.hub.export import export_checkpoint
from timm_identity.hub.publish import publish
from timm_identity.integrity import sha256_file
from timm_identity.pretrained import weights_record as wr

from hub_testutil import TINY, tiny_checkpoint, write_model_card
from test_hub_publish import CLOSED, FAKE_TOKEN, RecordingApi


@pytest.fixture()
def tag_folder(tmp_path):
    """A tag folder as `export --to-hub-configs` leaves it (tiny model: the record does not care)."""
    ckpt, _, _ = tiny_checkpoint(tmp_path, summary=False)
    folder = export_checkpoint(ckpt, tmp_path / 'hub_configs' / 'allconv_resnet_cifar.cifar10',
                               arch='allconv_resnet_cifar.cifar10',
                               model_args=TINY, model_card=write_model_card(tmp_path))
    wr.write_record(folder, 'timm-identity/allconv_resnet_cifar.cifar10', source=str(ckpt))
    return folder


def test_status_follows_where_the_weights_are(tag_folder, tmp_path, monkeypatch):
    repo = 'timm-identity/allconv_resnet_cifar.cifar10'
    looked_up = []
    monkeypatch.setattr(wr, 'cached_weights', lambda *a, **k: looked_up.append(a))  # never at import / status
    record = wr.read_record(tag_folder)
    assert record['sha256'] == sha256_file(tag_folder / 'model.safetensors') and record['published'] is None
    status = wr.weights_status(tag_folder, repo)
    assert status.available and status.local_file == tag_folder / 'model.safetensors'

    assert not wr.weights_status(tmp_path, repo).available  # no record: planned
    (tag_folder / 'model.safetensors').rename(tmp_path / 'moved.safetensors')
    status = wr.weights_status(tag_folder, repo)  # only the HF cache can have them: looked up at load time
    assert status.available and status.cache_only and status.repo_id == repo and status.local_file is None
    assert 'not published' in status.reason and not looked_up
    assert not wr.weights_status(tag_folder, None).available  # no repo to look under: nowhere
    (tmp_path / 'moved.safetensors').rename(tag_folder / 'model.safetensors')


def test_verify_refuses_a_changed_file(tag_folder):
    weights = tag_folder / 'model.safetensors'
    wr.verify_weights_file(weights, tag_folder)
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(wr.WeightsError, match=f'{weights}: does not match its record'):
        wr.verify_weights_file(weights, tag_folder)


def test_bad_record_is_a_clear_error(tmp_path):
    (tmp_path / 'weights.json').write_text('{"file": "model.safetensors"}')
    with pytest.raises(wr.WeightsError, match='weights.json: not a valid weights record'):
        wr.read_record(tmp_path)


def test_publish_marks_the_record_and_does_not_upload_it(tag_folder, monkeypatch):
    RecordingApi.calls = []
    monkeypatch.setattr(publish_mod, 'HfApi', RecordingApi)
    out = []
    repo = 'timm-identity/allconv_resnet_cifar.cifar10'  # the repo the folder was exported for
    publish(tag_folder, repo, token=FAKE_TOKEN, endpoint=CLOSED, echo=out.append)
    upload = RecordingApi.calls[-1][1]
    assert sorted(upload['allow_patterns']) == ['README.md', 'config.json', 'model.safetensors']
    published = json.loads((tag_folder / 'weights.json').read_text())['published']
    assert published == {'repo_id': repo, 'revision': 'main', 'commit_url': 'https://hub.local/commit/abc'}
    (tag_folder / 'model.safetensors').unlink()  # a clone without the file: the Hub copy counts
    assert wr.weights_status(tag_folder, repo).available
