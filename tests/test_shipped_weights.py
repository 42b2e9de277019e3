"""The weights that ship in hub_configs/, tested as shipped: the file's SHA-256 (its record's, in the config.json
beside it, and the one recorded here), the config.json's pretrained cfg = the cfg in code, `pretrained=True`
through timm, a known output on the package's real CIFAR-10 sample, and `timm.list_pretrained` listing exactly
the shipped tags. The expected values come from ``tools/record_shipped_outputs.py``, run when the weights were
exported."""
import json
from pathlib import Path

import pytest
import torch
import timm

import timm_identity  # noqa: F401
from timm_identity.data.sample_images import load_cifar10_sample
from timm_identity.pretrained.tags import hub_configs_root as hub_configs_dir
from timm_identity.integrity import sha256_file
from timm_identity.pretrained import recorded_test_results

KNOWN = json.loads((Path(__file__).parent / 'shipped_outputs.json').read_text())


def _sample(cfg):
    images, labels, _ = load_cifar10_sample()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    return (x - torch.tensor(cfg['mean']).view(1, 3, 1, 1)) / torch.tensor(cfg['std']).view(1, 3, 1, 1), labels


def _record(folder):
    return json.loads((folder / 'config.json').read_text())['files']['model.safetensors']


def test_list_pretrained_is_exactly_the_shipped_tags():
    shipped = sorted(d.name for d in hub_configs_dir().iterdir() if (d / 'model.safetensors').is_file())
    assert shipped == sorted(KNOWN) and len(shipped) >= 1
    assert sorted(timm.list_pretrained('allconv*')) == shipped


@pytest.mark.parametrize('tag', sorted(KNOWN))
def test_shipped_config_json_is_the_cfg_in_code(tag):
    """The Hub repo's config.json that ships beside the weights claims what the cfg in code says (the cfg is
    what timm uses; the file goes to the Hub), and records the shipped file."""
    folder = hub_configs_dir() / tag
    config = json.loads((folder / 'config.json').read_text())
    code = timm.models.get_pretrained_cfg(tag).to_dict()
    norm = lambda d: {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}  # noqa: E731
    assert norm(config['pretrained_cfg']) == norm({k: v for k, v in code.items() if k not in ('architecture', 'url')})
    assert config['architecture'] == code['architecture'] == tag.split('.')[0]
    assert config['num_classes'] == code['num_classes'] and config['label_names'] == list(code['label_names'])
    assert sorted(config['files']) == ['model.safetensors']
    assert _record(folder)['size'] == (folder / 'model.safetensors').stat().st_size


@pytest.mark.parametrize('tag', sorted(KNOWN))
def test_shipped_tag_as_shipped(tag):
    folder = hub_configs_dir() / tag
    record = _record(folder)
    assert sha256_file(folder / 'model.safetensors') == record['sha256'] == KNOWN[tag]['sha256']
    model = timm.create_model(tag, pretrained=True).eval()
    assert model.pretrained_cfg['file'] == str(folder / 'model.safetensors')  # the checked, shipped file
    x, _ = _sample(model.pretrained_cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(logits[0], torch.tensor(KNOWN[tag]['logits_of_sample_0']), atol=2e-4)
    predictions = logits.argmax(1).tolist()
    agree = sum(a == b for a, b in zip(predictions, KNOWN[tag]['predictions_on_sample']))
    assert agree >= 99, f'{agree}/100 predictions as recorded'  # a tie may flip with other kernels
    # the card records the full-test-set result measured on these weights
    recorded = recorded_test_results(tag)
    assert recorded['split'] == 'test' and recorded['images'] == 10_000 and 0 < recorded['error'] < 100


def test_shipped_weights_fine_tune_start():
    """The documented fine-tuning start: same backbone, a new trainable head for 20 classes."""
    tag = sorted(KNOWN)[0]
    base = timm.create_model(tag, pretrained=True)
    ft = timm.create_model(tag, pretrained=True, num_classes=20, head='linear')
    sd, sd_ft = base.state_dict(), ft.state_dict()
    assert all(torch.equal(sd[k], sd_ft[k]) for k in sd if not k.startswith('fc.'))
    assert isinstance(ft.fc, torch.nn.Linear) and ft.fc.out_features == 20


def test_shipped_weights_with_a_trainable_head_of_the_same_classes():
    """``head='linear'`` with the weights' own classes: the trainable head starts as the fixed projection they
    were trained with (bias 0), so the model computes what the shipped one does."""
    tag = sorted(KNOWN)[0]
    base = timm.create_model(tag, pretrained=True).eval()
    linear = timm.create_model(tag, pretrained=True, head='linear').eval()
    assert isinstance(linear.fc, torch.nn.Linear) and linear.fc.weight.requires_grad
    assert torch.equal(linear.fc.weight, base.fc.weight) and not linear.fc.bias.any()
    x, _ = _sample(base.pretrained_cfg)
    with torch.no_grad():
        assert torch.allclose(linear(x[:8]), base(x[:8]), atol=1e-5)


@pytest.mark.parametrize('tag', sorted(KNOWN))
def test_shipped_card_lists_each_result_once_with_a_runnable_command_and_the_licence(tag):
    import re
    import shlex
    from huggingface_hub import ModelCard
    card = ModelCard((hub_configs_dir() / tag / 'README.md').read_text())
    results = [(e.metric_name, e.metric_value) for e in card.data.eval_results]
    assert len({v for _, v in results}) == len(results), results  # no number twice in the metadata
    [command] = re.findall(r'^- \*\*Command:\*\* `([^`]*)`', card.text, flags=re.M)
    words = shlex.split(command)
    assert not any(Path(w).is_absolute() for w in words), command  # no path of the machine that trained it
    assert words[words.index('--data-dir') + 1] in ('cifar-10-batches-py', 'cifar-100-python')
    assert card.data.license == 'apache-2.0' and '- **License:** apache-2.0: these weights are released' in card.text
