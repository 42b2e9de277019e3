"""train-cifar's gradient clipping (--clip-grad / --clip-mode, timm's dispatch_clip_grad) and its -c/--config YAML
(timm train.py's convention: the file gives the settings, the command line overrides them)."""
import json

import pytest
import timm
import torch
import yaml

import timm_identity  # noqa: F401
from timm_identity.cli import main
from timm_identity.train.step import clipped_parameters, train_step

from train_helpers import TINY_MODEL_KWARGS, TINY_RUN

CPU = torch.device('cpu')


def _grads(clip_grad=None, clip_mode='norm', head='fixed'):
    """Each parameter's gradient as one train_step of a fresh tiny model leaves it: clipped when asked."""
    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar', num_classes=10, head=head, **TINY_MODEL_KWARGS)
    if head == 'linear':
        torch.nn.init.normal_(model.get_classifier().weight, std=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 10
    train_step(model, optimizer, x, y, CPU, clip_grad=clip_grad, clip_mode=clip_mode)
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _flat(grads):
    return torch.cat([g.flatten() for g in grads.values()])


def test_clip_by_norm_bounds_the_total_gradient_norm():
    free, clipped = _flat(_grads()), _flat(_grads(1e-3))
    assert free.norm() > 1e-2
    assert clipped.norm() == pytest.approx(1e-3, rel=1e-4)
    assert torch.allclose(clipped / clipped.norm(), free / free.norm(), atol=1e-6)  # direction kept


def test_clip_by_value_caps_each_entry():
    free, clipped = _flat(_grads()), _flat(_grads(1e-4, 'value'))
    assert free.abs().max() > 1e-4 and clipped.abs().max() == pytest.approx(1e-4, rel=1e-6)
    small = free.abs() < 1e-4
    assert torch.equal(clipped[small], free[small])  # entries under the cap are untouched


def test_adaptive_clipping_leaves_the_trainable_classifier_out():
    free, clipped = _grads(head='linear'), _grads(1e-3, 'agc', head='linear')
    head = {n for n in free if n.startswith('fc.')}
    assert head and all(torch.equal(free[n], clipped[n]) for n in head)
    assert any(clipped[n].norm() < 0.5 * free[n].norm() for n in free if n not in head)
    model = timm.create_model('allconv_resnet_cifar', **TINY_MODEL_KWARGS)  # the fixed head has no parameters
    assert clipped_parameters(model, 'agc') == list(model.parameters())


def test_config_file_gives_settings_and_the_command_line_wins(tmp_path, tiny_cifar):
    config = tmp_path / 'run.yaml'
    config.write_text(yaml.safe_dump({'steps': 50, 'lr': 0.02, 'warmup_steps': 1, 'clip_grad': 2.0,
                                      'clip_mode': 'agc', 'verify_md5': False,
                                      'model_kwargs': {'head': 'linear', **TINY_MODEL_KWARGS}}))
    out = tmp_path / 'run'
    assert main(['train-cifar', '-c', str(config), '--data-dir', tiny_cifar.folder, '--out-dir', str(out),
                 '--steps', '3', '--eval-every', '3', *[a for a in TINY_RUN if a not in
                 ('--model-kwargs', 'depths=(1,1,1)', 'widths=(8,16,32)', 'stem_chs=8')]]) == 0
    cfg = json.loads((out / 'run.json').read_text())['config']
    got = (cfg['steps'], cfg['lr'], cfg['warmup_steps'], cfg['clip_grad'], cfg['clip_mode'])
    assert got == (3, 0.02, 1, 2.0, 'agc')  # steps from the command line, the rest from the file
    assert cfg['model_kwargs']['head'] == 'linear' and cfg['verify_md5'] is False


@pytest.mark.parametrize('text, message', [
    ('lrr: 0.1\n', "unknown setting(s) ['lrr']"),
    ('- lr\n', 'expected a mapping of settings'),
    ('lr: [\n', 'not valid YAML'),
    ('clip_grad: -1\n', '--clip-grad must be a finite number > 0'),
    ('clip_mode: l2\n', "--clip-mode must be one of 'norm', 'value', 'agc'"),
    ('decay_steps: 30000\n', 'decay_steps must be a list of step numbers'),
    ('model_kwargs: head=linear\n', 'model_kwargs must be a mapping'),
])
def test_bad_config_files_are_one_line_errors(tmp_path, tiny_cifar, capsys, text, message):
    config = tmp_path / 'bad.yaml'
    config.write_text(text)
    out = tmp_path / 'run'
    assert main(['train-cifar', '-c', str(config), '--data-dir', tiny_cifar.folder, '--out-dir', str(out),
                 *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists(), err


def test_missing_config_file(tmp_path, tiny_cifar, capsys):
    assert main(['train-cifar', '-c', str(tmp_path / 'no.yaml'), '--data-dir', tiny_cifar.folder, *TINY_RUN]) == 2
    assert 'no.yaml: cannot read it' in capsys.readouterr().err
