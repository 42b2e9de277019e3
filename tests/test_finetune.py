"""tools/finetune.py on tiny data: backbone from exported weights, new trainable head, loss falls."""
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import timm
from PIL import Image

from timm_identity.hub.export import export_checkpoint
from timm_identity.hub.finetune import build_model, build_parser, finetune

from hub_testutil import TINY, tiny_checkpoint, write_model_card

MODEL_KWARGS = ['depths=(1,1,1)', 'widths=(8,16,32)', 'stem_chs=8']


def _image_folder(root: Path, per_class: int = 12) -> Path:
    """Three colour classes with noise: learnable in a few steps."""
    rng = np.random.default_rng(0)
    colours = {'red': (200, 40, 40), 'green': (40, 200, 40), 'blue': (40, 40, 200)}
    for split, n in (('train', per_class), ('val', 4)):
        for name, colour in colours.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(colour) + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f'{i}.png')
    return root


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ft')
    ckpt, model, _ = tiny_checkpoint(tmp, summary=False)
    source = export_checkpoint(ckpt, tmp / 'pretrained', arch='allconv_resnet_cifar.cifar10', model_args=TINY,
                               model_card=write_model_card(tmp))
    return tmp, source, model, _image_folder(tmp / 'data'), write_model_card(tmp)


def _args(setup, *extra):
    tmp, source, _, data, card = setup
    return build_parser().parse_args([
        '--model', f'local-dir:{source}', '--data-dir', str(data), '--batch-size', '12', '--workers', '0',
        '--lr', '0.05', '--epochs', '4', '--no-aug', '--log-every', '0', '--model-card', str(card), *extra])


def test_backbone_from_exported_weights_and_new_head(setup):
    _, _, source_model, _, _ = setup
    model = build_model(_args(setup), num_classes=3)
    src = source_model.state_dict()
    assert all(torch.equal(model.state_dict()[k], src[k]) for k in src if not k.startswith('fc.'))
    assert isinstance(model.fc, torch.nn.Linear) and model.fc.out_features == 3


def test_finetune_linear_head_loss_falls_and_exports(setup):
    tmp = setup[0]
    result = finetune(_args(setup, '--output', str(tmp / 'ft'), '--tag', 'colours'))
    losses = result['losses']
    assert result['steps'] == len(losses) == 12  # 36 images / batch 12 x 4 epochs
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    assert result['val_top1'] > 60.
    folder = result['output']
    cfg = json.loads((folder / 'config.json').read_text())
    assert cfg['label_names'] == ['blue', 'green', 'red'] and cfg['model_args']['head'] == 'linear'
    assert cfg['pretrained_cfg']['hf_hub_id'] == 'timm-identity/allconv_resnet_cifar.colours'
    reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True)
    assert isinstance(reloaded.fc, torch.nn.Linear) and reloaded.fc.out_features == 3
    assert 'base_model: timm-identity/allconv_resnet_cifar.cifar10' in (folder / 'README.md').read_text()


def test_linear_probe_trains_head_only(setup):
    _, _, source_model, _, _ = setup
    args = _args(setup, '--freeze-backbone', '--max-steps', '3')
    model = build_model(args, num_classes=3)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ['fc.weight', 'fc.bias']
    result = finetune(args)
    assert result['steps'] == 3


def test_tool_help(monkeypatch, capsys):
    tool = Path(__file__).resolve().parents[1] / 'tools' / 'finetune.py'
    monkeypatch.setattr(sys, 'argv', [str(tool), '--help'])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(tool), run_name='__main__')
    out = capsys.readouterr().out
    assert e.value.code == 0 and '--head' in out and '--freeze-backbone' in out


def test_damaged_pretrained_weights_and_bad_model_kwargs_are_one_line_errors(setup, tmp_path, capsys):
    import shutil
    from timm_identity.hub.finetune import main
    _, source, _, data, _ = setup
    damaged = shutil.copytree(source, tmp_path / 'damaged')
    weights = damaged / 'model.safetensors'
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0xFF
    weights.write_bytes(bytes(raw))
    assert main(['--model', f'local-dir:{damaged}', '--data-dir', str(data), '--workers', '0']) == 2
    err = capsys.readouterr().err
    assert f'error: {weights} is damaged' in err and 'Traceback' not in err
    with pytest.raises(SystemExit) as e:
        main(['--model', f'local-dir:{source}', '--data-dir', str(data), '--model-kwargs', 'depths=(1,1'])
    assert e.value.code == 2 and "cannot read '(1,1'" in capsys.readouterr().err


def test_val_split_lacking_a_class_keeps_train_labels(setup, tmp_path):
    """Defect 8: val/ was indexed on its own class folders, so a missing class shifted every label."""
    import shutil
    tmp, _, _, data, _ = setup
    partial = shutil.copytree(data, tmp_path / 'partial')
    shutil.rmtree(partial / 'val' / 'blue')  # train has blue/green/red, val only green/red
    args = _args(setup, '--output', str(tmp_path / 'ft'), '--tag', 'colours')
    args.data_dir = str(partial)
    result = finetune(args)
    full = finetune(_args(setup, '--output', str(tmp_path / 'ft_full'), '--tag', 'colours'))
    assert full['val_top1'] > 60. and result['val_top1'] > 60., (full, result)  # green/red keep indices 1/2
    (partial / 'val' / 'purple').mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(partial / 'val' / 'purple' / '0.png')
    with pytest.raises(ValueError, match=r"val/ has classes that train/ lacks: \['purple'\]"):
        finetune(args)
