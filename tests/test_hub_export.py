"""timm-identity export: checkpoint -> Hub-form folder (tiny model, CPU, no network)."""
import argparse
import json

import pytest
import torch
import timm
from huggingface_hub import ModelCard
from safetensors import safe_open

from timm_identity.cli import main as cli_main
from timm_identity.hub.export import ExportError, export_checkpoint

from hub_testutil import RESUMED_SUMMARY_CSV, TINY, tiny_checkpoint, tiny_model, write_model_card

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _export(tmp_path, ckpt, **kwargs):
    kwargs.setdefault('model_card', write_model_card(tmp_path))
    return export_checkpoint(ckpt, tmp_path / 'out', arch='allconv_resnet_cifar.cifar10', model_args=TINY, **kwargs)


def test_export_folder_is_hub_form_and_reloads_identically(tmp_path):
    ckpt, model, summary = tiny_checkpoint(tmp_path)
    folder = _export(tmp_path, ckpt, summary=summary)
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    # nothing else left beside it (the temporary folder was renamed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['MODEL_CARD.md', 'out', 'run']

    cfg = json.loads((folder / 'config.json').read_text())
    assert cfg['architecture'] == 'allconv_resnet_cifar'
    assert cfg['num_classes'] == 10 and len(cfg['label_names']) == 10 and cfg['label_names'][0] == 'airplane'
    assert cfg['pretrained_cfg']['hf_hub_id'] == 'timm-identity/allconv_resnet_cifar.cifar10'
    assert cfg['pretrained_cfg']['tag'] == 'cifar10'
    assert cfg['model_args']['depths'] == [1, 1, 1] and cfg['model_args']['head'] == 'fixed'

    with safe_open(str(folder / 'model.safetensors'), framework='pt') as f:
        assert 'fc.weight' in f.keys()  # the fixed projection travels with the weights
        assert f.get_tensor('stem.weight').dtype == torch.float32

    reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(X), model(X))

    card = ModelCard((folder / 'README.md').read_text())
    assert card.data.library_name == 'timm'
    # the model-index lists only what was measured on these weights: the final evaluation; the best test
    # error during training (at another step, so of other weights) is in the text, labelled
    assert {e.metric_name: e.metric_value for e in card.data.eval_results} == {'Top-1 accuracy (final)': 93.5}
    assert ('| best during training, step 40 (picked by its test split error): other weights than these | 6.25 | '
            '93.75 |' in card.text)


def test_export_timm_train_checkpoint_uses_ema_and_weights_only(tmp_path):
    model, ema = tiny_model(0), tiny_model(1)
    ckpt = tmp_path / 'model_best.pth.tar'
    # what timm's train.py saves: DDP-prefixed keys, an argparse.Namespace, optimizer state ...
    torch.save(dict(
        epoch=1, arch='allconv_resnet_cifar', metric=91.0, version=2,
        state_dict={f'module.{k}': v for k, v in model.state_dict().items()},
        state_dict_ema=ema.state_dict(), optimizer={'state': {}, 'param_groups': []},
        args=argparse.Namespace(model='allconv_resnet_cifar', model_kwargs=dict(TINY), lr=0.05),
    ), ckpt)
    folder = export_checkpoint(ckpt, tmp_path / 'ema', tag='cifar10', model_card=write_model_card(tmp_path))
    out = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(out(X), ema(X))
    assert 'EMA weights' in (folder / 'README.md').read_text()

    folder = export_checkpoint(ckpt, tmp_path / 'raw', tag='cifar10', use_ema=False,
                               model_card=write_model_card(tmp_path))
    out = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(out(X), model(X))

    # train.py's run folder: model_best.pth.tar with summary.csv (eval_top1 of the last and the best epoch)
    (tmp_path / 'summary.csv').write_text('epoch,train_loss,eval_loss,eval_top1,eval_top5\n'
                                          '0,2.0,1.9,80.0,99.0\n1,1.5,1.4,91.0,99.5\n2,1.4,1.4,90.5,99.5\n')
    folder = export_checkpoint(tmp_path, tmp_path / 'run', tag='cifar10', model_card=write_model_card(tmp_path))
    card = ModelCard((folder / 'README.md').read_text())
    results = {e.metric_name: e.metric_value for e in card.data.eval_results}
    # model_best.pth.tar is from epoch 1, the best row: only that row is these weights' result
    assert results == {'Top-1 accuracy (best during training)': 91.0, 'Top-5 accuracy (best during training)': 99.5}
    assert '| final, epoch 2: other weights than these | 9.50 | 90.50 |' in card.text
    assert '| best during training, epoch 1 (picked by its' in card.text
    with torch.no_grad():
        assert torch.equal(timm.create_model(f'local-dir:{folder}', pretrained=True).eval()(X), ema(X))


class _Evil:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle code ran')",))


def test_untrusted_pickle_is_refused_not_run(tmp_path):
    ckpt = tmp_path / 'evil.pth'
    torch.save(dict(state_dict=tiny_model().state_dict(), payload=_Evil()), ckpt)
    with pytest.raises(ExportError, match='weights_only'):
        export_checkpoint(ckpt, tmp_path / 'out', arch='allconv_resnet_cifar.cifar10', model_args=TINY)
    assert not (tmp_path / 'out').exists()


def test_fp16_export(tmp_path):
    ckpt, model, _ = tiny_checkpoint(tmp_path, summary=False)
    folder = _export(tmp_path, ckpt, fp16=True)  # export checks the reload against the fp16-rounded model
    with safe_open(str(folder / 'model.safetensors'), framework='pt') as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    assert 'float16' in (folder / 'README.md').read_text()
    reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(X), model(X), rtol=1e-2, atol=1e-3)


def test_failed_export_leaves_nothing_and_existing_output_is_kept(tmp_path):
    ckpt, _, _ = tiny_checkpoint(tmp_path, summary=False)
    with pytest.raises(ExportError, match='does not fit'):  # wrong architecture arguments
        export_checkpoint(ckpt, tmp_path / 'out', arch='allconv_resnet_cifar.cifar10', model_args=dict(stem_chs=4))
    assert not (tmp_path / 'out').exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]

    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('old')
    with pytest.raises(ExportError, match='--overwrite'):
        _export(tmp_path, ckpt)
    assert (tmp_path / 'out' / 'keep.txt').read_text() == 'old'
    folder = _export(tmp_path, ckpt, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]


def test_to_hub_configs_refuses_a_non_default_architecture(tmp_path):
    ckpt, _, _ = tiny_checkpoint(tmp_path, summary=False)
    with pytest.raises(ExportError, match='registered default architecture'):
        export_checkpoint(ckpt, arch='allconv_resnet_cifar.cifar10', model_args=TINY, to_hub_configs=tmp_path / 'hc')
    assert not (tmp_path / 'hc').exists()


def test_new_tag_and_wrong_class_count(tmp_path):
    ckpt, _, _ = tiny_checkpoint(tmp_path, summary=False)
    with pytest.raises(ExportError, match='100'):
        export_checkpoint(ckpt, tmp_path / 'x', arch='allconv_resnet_cifar.cifar100', model_args=TINY)
    folder = export_checkpoint(ckpt, tmp_path / 'new', arch='allconv_resnet_cifar.run2', model_args=TINY,
                               dataset='cifar10', model_card=write_model_card(tmp_path))
    cfg = json.loads((folder / 'config.json').read_text())
    assert cfg['pretrained_cfg']['hf_hub_id'] == 'timm-identity/allconv_resnet_cifar.run2'
    assert 'hf-hub:timm-identity/allconv_resnet_cifar.run2' in (folder / 'README.md').read_text()


def test_cli_export_and_errors(tmp_path, capsys):
    ckpt, _, summary = tiny_checkpoint(tmp_path)
    card = write_model_card(tmp_path)
    argv = ['export', str(ckpt), '--arch', 'allconv_resnet_cifar.cifar10', '--model-kwargs', 'depths=(1,1,1)',
            'widths=(8,16,32)', 'stem_chs=8', '--summary', str(summary), '--model-card', str(card),
            '--output', str(tmp_path / 'cli')]
    assert cli_main(argv) == 0
    assert 'model.safetensors' in capsys.readouterr().out
    assert cli_main(argv) == 2  # exists, no --overwrite
    assert '--overwrite' in capsys.readouterr().err
    assert cli_main(['export', str(tmp_path / 'missing.safetensors'), '--arch', 'allconv_resnet_cifar.cifar10',
                     '--output', str(tmp_path / 'o2')]) == 2
    assert 'missing.safetensors: no such file or folder' in capsys.readouterr().err


def test_export_accepts_train_cifar_run_folder_and_checkpoint_folder(tmp_path):
    """What train-cifar writes is what export takes, with no --arch: the run folder (its newest checkpoint) or one
    checkpoint folder; architecture, model arguments, mean/std and label names come from the checkpoint's
    config.json, the dataset (the default tag) and metrics from the run's record and log."""
    from timm_identity.train.cifar_trainer import train
    from train_helpers import CLASSES, learnable_split, tiny_overrides
    run = tmp_path / 'run'
    summary = train(tiny_overrides(run, steps=2, eval_every=1, keep_checkpoints=0),
                    learnable_split(32, seed=0), learnable_split(16, seed=1))
    card = write_model_card(tmp_path)
    trained = timm.create_model(f'local-dir:{run / "checkpoints" / "step_00000002"}', pretrained=True).eval()

    for i, source in enumerate((run, run / 'checkpoints' / 'step_00000002')):
        folder = export_checkpoint(source, tmp_path / f'out{i}', model_card=card)
        cfg = json.loads((folder / 'config.json').read_text())
        assert cfg['architecture'] == 'allconv_resnet_cifar' and cfg['model_args']['depths'] == [1, 1, 1]
        assert cfg['pretrained_cfg']['tag'] == 'cifar10'  # the run's dataset
        assert cfg['pretrained_cfg']['mean'] == trained.pretrained_cfg['mean']  # the run's normalisation
        assert cfg['label_names'] == CLASSES
        reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
        with torch.no_grad():
            assert torch.equal(reloaded(X), trained(X))
        card_data = ModelCard((folder / 'README.md').read_text()).data
        errors = {e.metric_name: e.metric_value for e in card_data.eval_results}
        assert errors['Top-1 accuracy (final)'] == pytest.approx(100 - summary['final_test_error'])

    # an older checkpoint folder: the run's log up to its step (its weights' test error at step 1), not the run's
    # final metrics; --arch picks a registered tag
    folder = export_checkpoint(run / 'checkpoints' / 'step_00000001', tmp_path / 'old', model_card=card,
                               arch='allconv_resnet_cifar.cifar10')
    assert json.loads((folder / 'config.json').read_text())['pretrained_cfg']['tag'] == 'cifar10'
    step1 = json.loads((run / 'log.jsonl').read_text().splitlines()[0])
    assert step1['step'] == 1
    errors = {e.metric_name: e.metric_value for e in ModelCard((folder / 'README.md').read_text()).data.eval_results}
    assert errors['Top-1 accuracy (final)'] == pytest.approx(100 - step1['test_error'])

    assert cli_main(['export', str(run), '--output', str(tmp_path / 'cli'), '--model-card', str(card)]) == 0
    assert cli_main(['export', str(tmp_path / 'nothing'), '--output', str(tmp_path / 'x')]) == 2
    assert cli_main(['export', str(tmp_path / 'old'), '--output', str(tmp_path / 'x')]) == 0  # a Hub folder too


def test_export_cli_missing_label_names_file_is_a_clear_error(tmp_path, capsys):
    ckpt, _, _ = tiny_checkpoint(tmp_path, summary=False)
    assert cli_main(['export', str(ckpt), '--arch', 'allconv_resnet_cifar.cifar10', '--label-names',
                     str(tmp_path / 'labels.txt'), '--output', str(tmp_path / 'out')]) == 2
    assert 'labels.txt' in capsys.readouterr().err and not (tmp_path / 'out').exists()


def test_export_names_the_base_model_of_a_train_py_fine_tune(tmp_path, capsys):
    """timm train.py runs record --pretrained --model NAME in args.yaml: the card's base_model comes from it;
    --base-model gives or overrides it; a bare --pretrained-path records none."""
    import yaml
    run = tmp_path / 'run'
    run.mkdir()
    torch.save(dict(epoch=0, arch='allconv_resnet_cifar', state_dict=tiny_model(0).state_dict(),
                    args=argparse.Namespace(model='allconv_resnet_cifar', model_kwargs=dict(TINY))),
               run / 'model_best.pth.tar')
    (run / 'summary.csv').write_text('epoch,eval_top1\n0,50.0\n')
    card = write_model_card(tmp_path)
    for args, base in [(dict(model='allconv_resnet_cifar_w16_d3.cifar10', pretrained=True),
                        'timm-identity/allconv_resnet_cifar_w16_d3.cifar10'),
                       (dict(model='hf-hub:someone/my-net', pretrained=True), 'someone/my-net'),
                       (dict(model='allconv_resnet_cifar', pretrained=True, pretrained_path='/w.pth'), None),
                       (dict(model='allconv_resnet_cifar', pretrained=False), None)]:
        (run / 'args.yaml').write_text(yaml.safe_dump(args))
        folder = export_checkpoint(run, tmp_path / 'out', tag='ft', model_card=card, overwrite=True)
        assert ModelCard((folder / 'README.md').read_text()).data.base_model == base, args
    from timm_identity.cli import main
    assert main(['export', str(run), '--tag', 'ft', '--base-model', 'me/base', '--dataset', 'cifar100',
                 '--model-card', str(card), '--output', str(tmp_path / 'cli')]) == 0, capsys.readouterr().err
    data = ModelCard((tmp_path / 'cli' / 'README.md').read_text()).data
    assert data.base_model == 'me/base' and data.datasets == ['uoft-cs/cifar100']


def test_export_timm_run_folder_after_resume(tmp_path):
    """A timm train.py run folder after `--resume` (summary.csv with a second header row, as a real resume
    wrote it): exported, and the card says what the folder records and nothing else."""
    import yaml
    run, shards = tmp_path / 'run', tmp_path / 'shards'
    run.mkdir()
    shards.mkdir()
    (shards / '_info.json').write_text(json.dumps({'name': 'cifar10', 'splits': {'test': {'num_samples': 20}}}))
    model = tiny_model(0)
    torch.save(dict(epoch=1, arch='allconv_resnet_cifar', metric=10.0, state_dict=model.state_dict(),
                    args=argparse.Namespace(model='allconv_resnet_cifar', model_kwargs=dict(TINY))),
               run / 'model_best.pth.tar')
    (run / 'summary.csv').write_bytes(RESUMED_SUMMARY_CSV.encode())
    (run / 'args.yaml').write_text(yaml.safe_dump(dict(
        model='allconv_resnet_cifar', opt='momentum', lr=0.05, batch_size=8, sched='multistep', epochs=3,
        dataset='wds/cifar10', data_dir=str(shards), val_split='test', resume=str(run / 'last.pth.tar'))))
    folder = export_checkpoint(run, tmp_path / 'out', tag='cifar10', model_card=write_model_card(tmp_path))
    card = ModelCard((folder / 'README.md').read_text())
    results = {(e.dataset_split, e.metric_name): e.metric_value for e in card.data.eval_results}
    assert results == {('test', 'Top-1 accuracy (these weights (epoch 1))'): 10.0,  # model_best is epoch 1 here
                       ('test', 'Top-5 accuracy (these weights (epoch 1))'): 70.0}
    assert ('| final = best during training, epoch 2 (best picked by its test split error): other weights than these '
            '| 80.00 | 20.00 | 30.00 |') in card.text
    text = card.text
    assert '- **Trainer:** timm train.py' in text and '- **Length:** 3 epochs of 3 planned (summary.csv)' in text
    assert '- **Recipe:** model allconv_resnet_cifar, opt momentum, lr 0.05, batch_size 8' in text
    assert '- **Command:** not recorded' in text
    assert f'- **Evaluated on:** CIFAR-10 `test` split, 20 images (count from {shards / "_info.json"}' in text
    assert '- **Exported weights:** epoch 1 (model_best.pth.tar' in text
    # not started through the launcher: whether validation counted every image once is not known, and said so
    assert '- **Evaluation counted:** not checked: the run was not started through `python -m timm_identity' in text
    # started through it: its record in the run folder says how the count was checked
    from timm_identity.distributed import LAUNCH_RECORD
    for record, expect in [({'world_size': 2, 'validation_count': 'every image of the split exactly once: x'},
                            'every image of the split exactly once: x'),
                           ({'world_size': 1, 'dataset': 'cifar10'}, 'every image of the split exactly once (one'),
                           ({'world_size': 4, 'dataset': 'imagefolder'}, 'not exactly once: 4 processes'),
                           ({'world_size': 4, 'dataset': 'wds/cifar10'}, 'not checked: 4 processes over webdataset')]:
        (run / LAUNCH_RECORD).write_text(json.dumps(record))
        folder = export_checkpoint(run, tmp_path / 'out', tag='cifar10', model_card=write_model_card(tmp_path),
                                   overwrite=True)
        assert f'- **Evaluation counted:** {expect}' in (folder / 'README.md').read_text()
    assert "paper's recipe" not in (folder / 'config.json').read_text()

    (run / 'summary.csv').write_text('epoch,eval_top1\n0,nope\n')  # any error names the file
    with pytest.raises(ExportError, match=str(run / 'summary.csv')):
        export_checkpoint(run, tmp_path / 'out2', tag='cifar10', model_card=write_model_card(tmp_path))


def test_card_of_a_short_run_claims_no_paper_recipe(tmp_path):
    """A 16-step train-cifar run exported under the registered tag (whose own description is the published
    weights' "trained ... with the paper's recipe"): the card gives the run's recipe, length and test split."""
    from timm_identity.train.cifar_trainer import train
    from train_helpers import learnable_split, tiny_overrides
    run = tmp_path / 'run'
    train(tiny_overrides(run, steps=16, eval_every=8), learnable_split(32, seed=0), learnable_split(20, seed=1),
          argv=['timm-identity', 'train-cifar', '--steps', '16'])
    folder = export_checkpoint(run, tmp_path / 'out', arch='allconv_resnet_cifar.cifar10',
                               model_card=write_model_card(tmp_path))
    description = json.loads((folder / 'config.json').read_text())['pretrained_cfg']['description']
    assert "paper's recipe" not in description and 'train-cifar; 16 optimizer steps of 16 planned' in description
    card = ModelCard((folder / 'README.md').read_text())
    assert "paper's recipe" not in card.text
    assert '- **Recipe:** `paper` (timm_identity/train/recipes.py), changed: batch_size 16 (recipe: 128), ' \
           'steps 16 (recipe: 60000)' in card.text
    assert '- **Command:** `timm-identity train-cifar --steps 16`' in card.text
    assert '- **Evaluated on:** CIFAR-10 `test` split, 20 images' in card.text
    assert '- **Exported weights:** step 16 (step_00000016/model.safetensors)' in card.text
    assert {e.dataset_split for e in card.data.eval_results} == {'test'}

    # an earlier checkpoint folder: the run as of step 8, with the test error of its weights
    ckpt8 = run / 'checkpoints' / 'step_00000008'
    record = next(r for r in map(json.loads, (run / 'log.jsonl').read_text().splitlines()) if r['step'] == 8)
    folder = export_checkpoint(ckpt8, tmp_path / 'old', model_card=write_model_card(tmp_path),
                               arch='allconv_resnet_cifar.cifar10')
    card = ModelCard((folder / 'README.md').read_text())
    assert '- **Length:** 8 optimizer steps of 16 planned (' in card.text
    assert 'epochs), a checkpoint during the run' in card.text
    assert '- **Evaluated on:** CIFAR-10 `test` split, 20 images' in card.text
    assert '- **Exported weights:** step 8 (step_00000008/model.safetensors)' in card.text
    top1 = [e for e in card.data.eval_results if e.metric_name == 'Top-1 accuracy (final)']
    assert [round(100 - e.metric_value, 4) for e in top1] == [round(record['test_error'], 4)]


def test_a_bare_weights_file_with_the_summary_of_its_checkpoint(tmp_path):
    """A copy of a checkpoint's weights with the run's summary.json: the summary names the checkpoint, whose sha256
    the file must have; it is then exported as that checkpoint of its run (architecture, tag and card from there)."""
    ckpt, _, summary = tiny_checkpoint(tmp_path)
    bare = tmp_path / 'copy.safetensors'
    bare.write_bytes((ckpt / 'model.safetensors').read_bytes())
    folder = export_checkpoint(bare, tmp_path / 'out', summary=summary, model_card=write_model_card(tmp_path))
    assert json.loads((folder / 'config.json').read_text())['pretrained_cfg']['tag'] == 'cifar10'
    assert '| final, step 60 | 6.50 |' in (folder / 'README.md').read_text()
    other = tiny_checkpoint(tmp_path / 'other', seed=1, summary=False)[0]
    with pytest.raises(ExportError, match=f'does not describe this checkpoint: its weights sha256 .* of {other}'):
        export_checkpoint(other, tmp_path / 'out2', summary=summary, arch='allconv_resnet_cifar.cifar10')
    assert not (tmp_path / 'out2').exists()
