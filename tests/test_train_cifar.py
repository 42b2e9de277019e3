"""The CIFAR trainer on the tiny model and tiny data, on CPU: learning, schedule, weight decay, head,
resume, NaN guard, augmentation, config handling."""
import dataclasses
import json
import shutil
import math

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

import timm_identity  # noqa: F401
from timm_identity.integrity import sha256_file
from timm_identity.train.checkpoint import resolve_checkpoint
from timm_identity.train.evaluate import evaluate_model, load_for_eval
from timm_identity.train.cifar_trainer import NonFiniteLossError, train
from timm_identity.train.config import resolve_config
from timm_identity.train.step import build_optimizer, build_scheduler
from timm_identity.train.device_data import DeviceCifarTrain, channel_stats
from timm_identity.train.recipes import RECIPES, get_recipe

from train_helpers import TINY_MODEL_KWARGS, learnable_split, tiny_overrides

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def splits():
    return learnable_split(128, seed=0), learnable_split(40, seed=1)


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / 'log.jsonl').read_text().splitlines()]


def _tiny_model():
    torch.manual_seed(0)
    return timm.create_model('allconv_resnet_cifar', num_classes=10, **TINY_MODEL_KWARGS)


def test_paper_recipe_is_the_papers():
    r = RECIPES['paper']
    assert (r['opt'], r['momentum'], r['batch_size'], r['lr'], r['weight_decay']) == ('momentum', 0.9, 128, 0.05, 1e-4)
    schedule = (r['sched'], tuple(r['decay_steps']), r['decay_rate'], r['steps'])
    assert schedule == ('multistep', (30000, 50000), 0.1, 60000)
    assert (r['warmup_steps'], r['label_smoothing'], r['augment'], r['pad'], r['hflip']) == (0, 0.0, True, 4, True)
    # the resolved default config is the paper's, and a flag overrides one value only
    cfg = resolve_config({})
    assert cfg['recipe'] == 'paper' and cfg['lr'] == 0.05 and cfg['model'] == 'allconv_resnet_cifar'
    cfg = resolve_config({'lr': 0.1})
    assert cfg['lr'] == 0.1 and cfg['batch_size'] == 128
    assert resolve_config({'recipe': 'fast'})['batch_size'] == RECIPES['fast']['batch_size']
    with pytest.raises(ValueError, match='unknown recipe'):
        resolve_config({'recipe': 'nope'})


def test_paper_optimizer_is_classical_momentum_sgd():
    opt = build_optimizer(_tiny_model(), get_recipe('paper'))
    assert type(opt) is torch.optim.SGD
    assert all(g['momentum'] == 0.9 and g['nesterov'] is False and g['lr'] == 0.05 for g in opt.param_groups)


def test_lr_schedule_hits_paper_values_at_step_boundaries():
    opt = build_optimizer(_tiny_model(), get_recipe('paper'))
    sched = build_scheduler(opt, get_recipe('paper'))
    expected = {0: 0.05, 29_999: 0.05, 30_000: 0.005, 49_999: 0.005, 50_000: 0.0005, 59_999: 0.0005}
    for t, lr in expected.items():
        sched.step_update(t)
        assert all(math.isclose(g['lr'], lr, rel_tol=1e-12) for g in opt.param_groups), (t, opt.param_groups[0]['lr'])


def test_cosine_schedule_warmup_and_end():
    cfg = get_recipe('fast')
    opt = build_optimizer(_tiny_model(), cfg)
    sched = build_scheduler(opt, cfg)
    sched.step_update(0)
    assert math.isclose(opt.param_groups[0]['lr'], cfg['warmup_lr'])
    sched.step_update(cfg['warmup_steps'])
    assert math.isclose(opt.param_groups[0]['lr'], cfg['lr'])
    sched.step_update(cfg['steps'])
    assert opt.param_groups[0]['lr'] <= cfg['min_lr'] + 1e-9


def test_weight_decay_touches_conv_weights_only():
    model = _tiny_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('.bias'):
                p.fill_(0.5)
    cfg = {**get_recipe('paper'), 'lr': 0.1, 'weight_decay': 0.01}
    opt = build_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in opt.param_groups if g['weight_decay'] > 0 for p in g['params']}
    conv_weights = {n for n, p in model.named_parameters() if p.ndim == 4}
    assert decayed == conv_weights and len(conv_weights) == 7  # stem + 3 blocks x 2 convs
    assert sum(len(g['params']) for g in opt.param_groups) == len(list(model.parameters()))
    # behaviour: with zero gradients one step shrinks conv weights by (1 - lr*wd) and leaves biases alone
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        if n in conv_weights:
            torch.testing.assert_close(p, before[n] * (1 - 0.1 * 0.01), rtol=1e-6, atol=0)
        else:
            assert torch.equal(p, before[n]), n
    # the fixed head is a buffer: no optimizer group holds it
    assert 'fc.weight' not in dict(model.named_parameters()) and 'fc.weight' in dict(model.named_buffers())


def test_loss_falls_and_head_never_changes(tmp_path, splits):
    run = tmp_path / 'run'
    head0 = _tiny_model().fc.weight.clone()
    summary = train(tiny_overrides(run, steps=40, log_every=5, eval_every=20, plot=True, lr=0.02),
                    *splits)
    log = _log(run)
    assert [r['step'] for r in log] == list(range(5, 41, 5))
    assert log[-1]['loss'] < 0.5 * log[0]['loss'], [r['loss'] for r in log]
    assert summary['status'] == 'completed' and summary['steps'] == 40
    assert summary['final_test_error'] == log[-1]['test_error'] < 50.0
    assert summary['best_test_error'] == min(r['test_error'] for r in log if r['test_error'] is not None)
    assert (run / 'curves.png').stat().st_size > 1000 and (run / 'summary.json').is_file()
    ckpt = resolve_checkpoint(run)
    assert ckpt.name == 'step_00000040'
    weights = load_file(str(ckpt / 'model.safetensors'))
    assert torch.equal(weights['fc.weight'], head0)  # the head is saved, and untouched by training
    stem0 = _tiny_model().stem.weight
    assert not torch.equal(weights['stem.weight'], stem0)  # while the convs did train
    # the checkpoint folder is a timm Hub folder that reloads to the same function
    model = timm.create_model(f'local-dir:{ckpt}', pretrained=True)
    assert torch.equal(model.fc.weight, head0)
    assert tuple(model.pretrained_cfg['mean']) == pytest.approx(channel_stats(splits[0].images)[0])


def test_multistep_lr_in_the_loop(tmp_path, splits):
    train(tiny_overrides(tmp_path / 'run', decay_steps=(2, 4)), *splits)
    lrs = [r['lr'] for r in _log(tmp_path / 'run')]
    assert lrs == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005], rel=1e-12)


def test_resume_equals_uninterrupted(tmp_path, splits):
    kw = dict(steps=6, checkpoint_every=3, keep_checkpoints=0, decay_steps=(2, 4), log_every=1)
    full = tmp_path / 'full'
    train(tiny_overrides(full, **kw), *splits)
    resumed = tmp_path / 'resumed'
    shutil.copytree(full, resumed)  # the same run, to continue from its step 3 in its own folder
    ckpt3 = resumed / 'checkpoints' / 'step_00000003'
    summary = train({'resume': str(ckpt3), 'progress': False, 'plot': False}, *splits)
    record = json.loads((resumed / 'run.json').read_text())
    assert summary['run_id'] == record['run_id'] and [s['step'] for s in record['starts']] == [0, 3]
    a, b = _log(full), _log(resumed)[3:]
    assert [r['step'] for r in b] == [4, 5, 6]
    for ra, rb in zip(a[3:], b):
        keys = ('step', 'loss', 'lr', 'train_acc')
        assert [ra[k] for k in keys] == [rb[k] for k in keys]
    wa = load_file(str(full / 'checkpoints/step_00000006/model.safetensors'))
    wb = load_file(str(resume_dir := resolve_checkpoint(resumed)) + '/model.safetensors')
    assert resume_dir.name == 'step_00000006'
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_other_settings(tmp_path, splits):
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=2, checkpoint_every=2), *splits)
    with pytest.raises(ValueError, match='cannot resume with different settings.*lr'):
        train({'resume': str(run), 'lr': 0.1}, *splits)
    with pytest.raises(FileExistsError, match='already holds a run'):
        train(tiny_overrides(run, steps=2), *splits)


def test_resume_stays_in_its_run_with_its_data(tmp_path, splits):
    """A resumed run continues in its own folder, on its own training and test data, and only forward."""
    run, other = tmp_path / 'run', tmp_path / 'other'
    train(tiny_overrides(run, steps=2, checkpoint_every=2), *splits)
    train(tiny_overrides(other, steps=2, checkpoint_every=2, seed=1), *splits)
    before = {p: p.read_bytes() for p in other.rglob('*') if p.is_file()}
    with pytest.raises(ValueError, match='continues the run in its own folder'):
        train({'resume': str(run / 'checkpoints' / 'step_00000002'), 'out_dir': str(other)}, *splits)
    assert {p: p.read_bytes() for p in other.rglob('*') if p.is_file()} == before  # untouched
    test2 = dataclasses.replace(splits[1], labels=(splits[1].labels + 1) % 10)
    with pytest.raises(ValueError, match='the test data differ'):
        train({'resume': str(run), 'progress': False}, splits[0], test2)
    with pytest.raises(ValueError, match='--steps 1 is below the checkpoint.s step 2'):
        train({'resume': str(run), 'steps': 1}, *splits)
    # a checkpoint moved into another run's folder is not that run's
    shutil.copytree(run / 'checkpoints' / 'step_00000002', other / 'checkpoints' / 'step_00000009')
    with pytest.raises(ValueError, match='belongs to run'):
        train({'resume': str(other / 'checkpoints' / 'step_00000009')}, *splits)


def test_nan_guard_fires_on_poisoned_batch_and_keeps_last_good_checkpoint(tmp_path, splits):
    run = tmp_path / 'run'

    def poison(step, x, y):  # the 5th update (step index 4) gets a NaN image batch
        return (x * float('nan'), y) if step == 4 else (x, y)

    with pytest.raises(NonFiniteLossError, match='non-finite.*at step 5.*step_00000004'):
        train(tiny_overrides(run, steps=8, checkpoint_every=2, log_every=3), *splits, batch_hook=poison)
    assert resolve_checkpoint(run).name == 'step_00000004'
    assert not (run / 'checkpoints' / 'step_00000006').exists()
    weights = load_file(str(resolve_checkpoint(run) / 'model.safetensors'))
    assert all(torch.isfinite(v).all() for v in weights.values())
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'] == 'nonfinite_loss' and 'step 5' in summary['message']
    assert all(math.isfinite(r['loss']) for r in _log(run))


def test_nan_guard_fires_on_divergence(tmp_path, splits):
    # an absurd lr makes the weights (and then the loss) blow up with nothing poisoned by hand
    with pytest.raises(NonFiniteLossError, match='non-finite'):
        train(tiny_overrides(tmp_path / 'run', lr=1e30, steps=20, log_every=20, checkpoint_every=20), *splits)
    assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_device_augmentation_is_pad_crop_flip_and_covers_each_epoch(splits):
    train_split = splits[0]
    images = train_split.images[:24]
    data = DeviceCifarTrain(images, train_split.labels[:24], batch_size=5, mean=(0, 0, 0), std=(1, 1, 1),
                            device=torch.device('cpu'), seed=3)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    seen, flips, offsets = [], 0, set()
    for _ in range(24):  # 5 epochs of 24 images in batches of 5 (batches cross epoch ends)
        idx = data.next_indices()
        crops = data.augment_uint8(idx).numpy()
        for i, crop in zip(idx.tolist(), crops):
            matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                       if np.array_equal(crop, (padded[i, dy:dy + 32, dx:dx + 32, :][:, ::-1] if f
                                                else padded[i, dy:dy + 32, dx:dx + 32, :]))]
            assert matches, 'augmented image is not a crop (or flipped crop) of the zero-padded original'
            flips += matches[0][2]
            offsets.add(matches[0][:2])
        seen.extend(idx.tolist())
    for epoch in range(5):
        assert sorted(seen[epoch * 24:(epoch + 1) * 24]) == list(range(24))
    assert 0.3 < flips / 120 < 0.7 and len(offsets) > 30
    x, y = data.next_batch()
    assert x.dtype == torch.float32 and x.shape == (5, 3, 32, 32) and y.dtype == torch.int64


def test_normalisation_uses_training_set_channel_stats(splits):
    mean, std = channel_stats(splits[0].images)
    data = DeviceCifarTrain(splits[0].images, splits[0].labels, 128, mean, std, torch.device('cpu'), augment=False)
    x, _ = data.next_batch()
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (x.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3


def test_data_state_from_another_device_type_warns_and_reseeds(splits):
    kw = dict(batch_size=8, mean=(0, 0, 0), std=(1, 1, 1), device=torch.device('cpu'))
    a = DeviceCifarTrain(splits[0].images, splits[0].labels, seed=1, **kw)
    a.next_indices()
    state = {**a.state_dict(), 'device_type': 'cuda'}  # as if saved on a GPU
    b = DeviceCifarTrain(splits[0].images, splits[0].labels, seed=1, **kw)
    with pytest.warns(UserWarning, match='saved on cuda'):
        b.load_state_dict(state, seed_after_move=7)
    assert b.cursor == a.cursor and torch.equal(b.perm, a.perm)
    assert b.generator.initial_seed() == 7


def test_time_limit_checkpoints_and_resume_finishes_the_same_run(tmp_path, splits):
    kw = dict(steps=5, decay_steps=(2, 4))
    train(tiny_overrides(tmp_path / 'full', **kw), *splits)
    limited = tmp_path / 'limited'
    # a budget that is over after the first step: evaluate, checkpoint at step 1, stop cleanly
    summary = train(tiny_overrides(limited, time_limit=1e-9, **kw), *splits)
    assert summary['status'] == 'time_limit' and summary['steps'] == 1 and '--resume' in summary['message']
    assert resolve_checkpoint(limited).name == 'step_00000001' and summary['final_test_error'] is not None
    resumed = train({'resume': str(limited), 'progress': False, 'plot': False}, *splits)
    assert resumed['status'] == 'completed' and resumed['steps'] == 5  # the limit is not inherited
    a, b = _log(tmp_path / 'full'), _log(limited)
    assert [(r['step'], r['loss'], r['lr']) for r in a] == [(r['step'], r['loss'], r['lr']) for r in b]


def test_warm_start_from_exported_weights_and_linear_probe(tmp_path, splits):
    """--init-from: the backbone starts from the given weights, with a new classifier for this dataset's
    classes; --freeze-backbone trains the classifier only; the export names the base model."""
    import dataclasses
    from timm_identity.hub.export import export_checkpoint
    source_run = tmp_path / 'source'
    train(tiny_overrides(source_run, steps=2, checkpoint_every=2), *splits)
    folder = export_checkpoint(source_run, tmp_path / 'exported', arch='allconv_resnet_cifar.cifar10')
    source = load_file(str(folder / 'model.safetensors'))
    five = [dataclasses.replace(s, labels=s.labels % 5, classes=s.classes[:5]) for s in splits]  # another label set
    probe = tmp_path / 'probe'
    summary = train(tiny_overrides(probe, steps=3, checkpoint_every=3, init_from=f'local-dir:{folder}',
                                   freeze_backbone=True, model_kwargs=dict(head='linear')), *five)
    assert summary['status'] == 'completed'
    assert json.loads((probe / 'run.json').read_text())['config']['model'] == 'allconv_resnet_cifar'
    tuned = load_file(str(resolve_checkpoint(probe) / 'model.safetensors'))
    backbone = [k for k in source if not k.startswith('fc.')]
    assert backbone and all(torch.equal(tuned[k], source[k]) for k in backbone)  # frozen: exactly the source
    assert tuned['fc.weight'].shape == (5, 32) and 'fc.bias' in tuned
    full = tmp_path / 'full'
    train(tiny_overrides(full, steps=3, checkpoint_every=3, init_from=f'local-dir:{folder}'), *five)
    moved = load_file(str(resolve_checkpoint(full) / 'model.safetensors'))
    assert not all(torch.equal(moved[k], source[k]) for k in backbone)  # fine-tuned: the backbone trains
    card = (export_checkpoint(probe, tmp_path / 'probe_export', arch='allconv_resnet_cifar.five') / 'README.md')
    # an exported folder on this machine is not a Hub repo: no base_model claimed; the run records which weights
    assert 'base_model' not in card.read_text()
    record = json.loads((probe / 'run.json').read_text())
    assert record['base_model'] is None
    assert record['init_weights'] == {'folder': str(folder.resolve()),
                                      'sha256': sha256_file(folder / 'model.safetensors')}
    with pytest.raises(ValueError, match='leaves nothing to train'):
        train(tiny_overrides(tmp_path / 'fixed', steps=1, init_from=f'local-dir:{folder}', freeze_backbone=True),
              *five)
    with pytest.raises(ValueError, match='--freeze-backbone trains the classifier of pretrained weights'):
        train(tiny_overrides(tmp_path / 'nothing', steps=1, freeze_backbone=True), *five)


def test_model_ema_is_evaluated_checkpointed_resumed_and_exported(tmp_path, splits):
    """--model-ema: timm's ModelEmaV3 of the weights, evaluated beside them, saved in each checkpoint (with its
    sha256), continued exactly by --resume, and what export takes by default (the card says so)."""
    from timm_identity.hub.export import export_checkpoint
    kw = dict(steps=6, checkpoint_every=3, eval_every=3, keep_checkpoints=0, model_ema=True, model_ema_decay=0.9)
    full = tmp_path / 'full'
    summary = train(tiny_overrides(full, **kw), *splits)
    evals = [r for r in _log(full) if r['test_error'] is not None]
    assert [r['step'] for r in evals] == [3, 6] and all(r['ema_test_error'] is not None for r in evals)
    assert summary['final_ema_test_error'] == evals[-1]['ema_test_error']
    ckpt = full / 'checkpoints' / 'step_00000006'
    ema, raw = load_file(str(ckpt / 'model_ema.safetensors')), load_file(str(ckpt / 'model.safetensors'))
    assert not torch.equal(ema['stem.weight'], raw['stem.weight']) and torch.equal(ema['fc.weight'], raw['fc.weight'])
    record = json.loads((ckpt / 'config.json').read_text())['files']['model_ema.safetensors']
    assert record['sha256'] == sha256_file(ckpt / 'model_ema.safetensors')
    resumed = tmp_path / 'resumed'
    shutil.copytree(full, resumed)
    train({'resume': str(resumed / 'checkpoints' / 'step_00000003'), 'progress': False, 'plot': False}, *splits)
    again = load_file(str(resumed / 'checkpoints' / 'step_00000006' / 'model_ema.safetensors'))
    assert all(torch.equal(again[k], ema[k]) for k in ema)  # the EMA continues exactly
    folder = export_checkpoint(full, tmp_path / 'export')
    exported = load_file(str(folder / 'model.safetensors'))
    assert all(torch.equal(exported[k], ema[k]) for k in ema)
    card = (folder / 'README.md').read_text()
    assert 'the EMA of the weights (timm ModelEmaV3, decay up to 0.9)' in card
    final_row = next(line for line in card.splitlines() if line.startswith('| final'))
    assert 'step 6' in final_row and f"| {evals[-1]['ema_test_error']:.2f} |" in final_row  # the EMA's evaluation
    # the checkpoint's EMA file evaluates as the run evaluated it (the model and mean/std of its folder)
    test_images = torch.from_numpy(splits[1].images)
    model = load_for_eval(str(ckpt / 'model_ema.safetensors'))
    cfg = model.pretrained_cfg
    result = evaluate_model(model.eval(), test_images, torch.from_numpy(splits[1].labels), torch.tensor(cfg['mean']),
                            torch.tensor(cfg['std']), 64)
    assert result['error'] == pytest.approx(evals[-1]['ema_test_error'], abs=1e-4)
    plain = export_checkpoint(full, tmp_path / 'plain', use_ema=False)
    assert all(torch.equal(load_file(str(plain / 'model.safetensors'))[k], raw[k]) for k in raw)
    assert 'the weights themselves (the run also kept an EMA' in (plain / 'README.md').read_text()


def test_base_model_is_a_hub_repo_or_none():
    """A card's base_model names a Hub repo that holds the weights: an hf-hub: name's, a shipped tag's; never a
    local folder or a planned tag (whose repo has no weights)."""
    from timm_identity.train.sources import base_model_id
    assert base_model_id('hf-hub:someone/net@v2') == 'someone/net'
    assert base_model_id('allconv_resnet_cifar_w16_d3.cifar10') == 'timm-identity/allconv_resnet_cifar_w16_d3.cifar10'
    assert base_model_id('allconv_resnet_cifar.cifar10') is None
    assert base_model_id('local-dir:/x/y') is None and base_model_id('runs/c10') is None


def test_a_resume_that_changes_settings_keeps_the_first_start_and_says_what_changed(tmp_path, splits):
    """The run record keeps the settings the run started with; a resume's changes (a longer run) are in its start
    entry, so a checkpoint from before them is described as it was made."""
    from timm_identity.hub.export import export_checkpoint
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=4, checkpoint_every=2, keep_checkpoints=0), *splits)
    train({'resume': str(run), 'steps': 6, 'progress': False, 'plot': False}, *splits)
    record = json.loads((run / 'run.json').read_text())
    assert record['config']['steps'] == 4 and record['starts'][1]['changed']['steps'] == 6
    assert record['starts'][0]['changed'] == {}
    card = (export_checkpoint(run / 'checkpoints' / 'step_00000004', tmp_path / 'four') / 'README.md').read_text()
    assert '4 optimizer steps of 4 planned' in card
    card = (export_checkpoint(run, tmp_path / 'six') / 'README.md').read_text()
    assert '6 optimizer steps of 6 planned' in card
