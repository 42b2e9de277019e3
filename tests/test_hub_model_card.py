"""Model card rendering: Hub metadata the Hub understands + MODEL_CARD.md with placeholders."""

import pytest
from huggingface_hub import ModelCard

from timm_identity.hub.model_card import ModelInfo, render_model_card
from timm_identity.hub.training_sources import (
    Metric, TrainingRecord, read_timm_summary, read_timm_summary_csv, train_cifar_source,
)

from hub_testutil import MODEL_CARD_TEMPLATE, RESUMED_SUMMARY_CSV


def _info(**kwargs):
    base = dict(architecture='allconv_resnet_cifar', tag='cifar10',
                repo_id='timm-identity/allconv_resnet_cifar.cifar10',
                num_classes=10, num_params=13546816, num_fixed=2560, dataset='cifar10',
                metrics=[Metric('error', 6.38, 1, 'final'), Metric('error', 6.1, 1, 'best during training')],
                training=TrainingRecord(eval_split='test', eval_images=10000))
    base.update(kwargs)
    return ModelInfo(**base)


def test_metadata_and_placeholders():
    text = render_model_card(_info(), MODEL_CARD_TEMPLATE)
    card = ModelCard(text)
    data = card.data
    assert data.library_name == 'timm' and data.license == 'apache-2.0'
    assert data.pipeline_tag == 'image-classification'
    assert {'image-classification', 'timm', 'residual-networks', 'arxiv:1611.04231'} <= set(data.tags)
    assert data.datasets == ['uoft-cs/cifar10']
    results = {(e.dataset_type, e.dataset_split, e.metric_type, e.metric_name): e.metric_value
               for e in data.eval_results}
    assert results == {('uoft-cs/cifar10', 'test', 'accuracy', 'Top-1 accuracy (final)'): 93.62,
                       ('uoft-cs/cifar10', 'test', 'accuracy', 'Top-1 accuracy (best during training)'): 93.9}
    body = card.text
    assert '{{' not in body.replace('{"stay"', '')
    assert 'trained on CIFAR-10\n(10 classes, 13,546,816 trainable parameters, weights in float32)' in body
    assert body.index('# allconv_resnet_cifar.cifar10') < body.index('## About these models')
    assert '| final | 6.38 | 93.62 | - |' in body
    assert 'braces_in_code = {"stay": "as written"}' in body


def test_details_first_when_template_does_not_place_them():
    text = render_model_card(_info(weights_dtype='float16'), '# Common text\n\nShared by all models.\n')
    body = ModelCard(text).text
    assert body.index('# allconv_resnet_cifar.cifar10') < body.index('# Common text')
    assert 'float16' in body


def test_unknown_placeholder_is_an_error():
    with pytest.raises(ValueError, match="model_nmae"):
        render_model_card(_info(), 'Hello {{ model_nmae }}')


def test_no_metrics_no_model_index():
    card = ModelCard(render_model_card(_info(metrics=[]), None))
    assert card.data.eval_results is None
    assert 'No measured results' in card.text


def _run_record(steps=60000, test_images=10000):
    """A train-cifar run record (run.json) as the trainer writes it, for the readers of runs."""
    from timm_identity.train.config import resolve_config
    from timm_identity.train.run_record import new_run_record
    record = new_run_record(resolve_config(dict(steps=steps)), {'train_sha256': '0' * 64, 'train_images': 50_000,
                                                                 'test_sha256': '1' * 64, 'test_images': test_images},
                            None)
    record['starts'].append({'step': 0, 'argv': ['timm-identity', 'train-cifar'], 'device': 'cpu'})
    return record


def test_train_cifar_source_reads_the_log_up_to_the_step():
    records = [dict(step=30000, test_error=7.0, test_top5=99.1), dict(step=40000, test_error=6.25),
               dict(step=60000, test_error=6.5, test_top5=99.6), dict(step=70000, test_error=5.0)]
    read = train_cifar_source(_run_record(), records, 60000, ema=False, status='completed')
    assert [(m.topk, m.which, m.error, m.step, m.of_these_weights) for m in read.metrics] == [
        (1, 'final', 6.5, 60000, True), (5, 'final', pytest.approx(0.4), 60000, True),
        (1, 'best during training', 6.25, 40000, False)]  # step 70000 is after these weights
    assert read.training.length == '60,000 optimizer steps of 60,000 planned (153.60 epochs)'
    assert read.training.eval_split == 'test' and read.training.eval_images == 10000
    ema = train_cifar_source(_run_record(), [dict(step=60000, test_error=6.5, ema_test_error=6.0)], 60000, ema=True,
                             status='completed')
    assert [(m.which, m.error) for m in ema.metrics] == [('final', 6.0)]  # the EMA's evaluation, for EMA weights


def test_read_timm_summary_csv(tmp_path):
    csv = tmp_path / 'summary.csv'
    csv.write_text('epoch,train_loss,eval_loss,eval_top1,eval_top5\n0,2.0,1.9,60.0,90.0\n1,1.5,1.2,75.5,95.0\n'
                   '2,1.4,1.3,74.0,94.0\n')
    read = read_timm_summary(csv)
    assert [(m.topk, m.which, m.accuracy, m.step) for m in read.metrics] == [
        (1, 'final', 74.0, 2), (5, 'final', 94.0, 2), (1, 'best during training', 75.5, 1),
        (5, 'best during training', 95.0, 1)]
    assert read.details == {'final epoch': 2, 'best epoch': 1} and read.training.length == '3 epochs (summary.csv)'
    assert read.training.eval_split is None  # no args.yaml beside it: the split is not recorded


def test_timm_summary_csv_of_a_resumed_run(tmp_path):
    csv = tmp_path / 'summary.csv'
    csv.write_bytes(RESUMED_SUMMARY_CSV.encode())
    assert [r['epoch'] for r in read_timm_summary_csv(csv)] == [0, 1, 2]
    read = read_timm_summary(csv)
    # the best epoch is the final one: each number once, the final marked as also the best
    assert [(m.topk, m.which, m.accuracy, m.also_best) for m in read.metrics] == [
        (1, 'final', 20.0, True), (5, 'final', 70.0, True)]
    assert read.training.length == '3 epochs (summary.csv)'


def test_timm_summary_csv_partial_rows_and_restarts(tmp_path, caplog):
    header = 'epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\r\n'
    csv = tmp_path / 'summary.csv'
    # killed while writing epoch 2's row (no line end), then resumed from epoch 0's checkpoint: the new
    # start's header lands on the partial row's line, and epochs 1.. are trained again
    csv.write_bytes((header + '0,2.0,1.9,60.0,90.0,0.05\r\n1,1.5,1.2,75.5,95.0,0.05\r\n2,1.4,1.'
                     + header + '1,1.6,1.3,70.0,93.0,0.05\r\n2,1.3,1.1,72.0,94.0,0.05\r\n3,1.2,1.0,7').encode())
    rows = read_timm_summary_csv(csv)
    assert [(r['epoch'], r['eval_top1']) for r in rows] == [(0, 60.0), (1, 70.0), (2, 72.0)]
    assert f'{csv}: skipped partial row(s) on line(s) [4, 7]' in caplog.text
    read = read_timm_summary(csv)
    assert [(m.which, m.accuracy, m.also_best) for m in read.metrics if m.topk == 1] == [('final', 72.0, True)]
    for text, match in [('0,2.0,1.9,60.0,90.0\r\n', 'line 1|:1: a row before any header'),
                        ('epoch,train_loss\r\n0,2.0\r\n', 'no rows with an eval_top1 column')]:
        csv.write_bytes(text.encode())
        with pytest.raises(ValueError, match=str(csv)):
            read_timm_summary(csv)


def test_card_says_only_what_the_source_records():
    text = render_model_card(_info(tag='cifar10_paper', metrics=[Metric('error', 40.0, 1, 'final')],
                                   training=TrainingRecord()), None)
    card = ModelCard(text)
    assert card.data.eval_results[0].dataset_split is None  # never `split: test` by default
    assert 'split: test' not in text
    for key in ('Trainer', 'Recipe', 'Command', 'Length', 'Exported weights', 'Evaluated on'):
        assert f'- **{key}:** not recorded' in card.text
    assert '| CIFAR-10 (split not recorded) |' in card.text
    assert "paper's recipe" not in text

    training = TrainingRecord(trainer='timm train.py', recipe='opt momentum, lr 0.05', length='3 epochs',
                              eval_split='validation', eval_images=200, eval_images_source='/data/_info.json')
    card = ModelCard(render_model_card(_info(training=training), None))
    assert card.data.eval_results[0].dataset_split == 'validation'
    assert '- **Evaluated on:** CIFAR-10 `validation` split, 200 images (count from /data/_info.json)' in card.text
    assert '| CIFAR-10 `validation` split, 200 images |' in card.text
    assert '- **Command:** not recorded' in card.text and '- **Length:** 3 epochs' in card.text


def test_model_index_lists_only_results_of_these_weights():
    """A best test error at another step than the exported weights is in the text (with its step and the
    split it was picked on), never in the model-index metadata."""
    records = [dict(step=2500, test_error=7.5), dict(step=3000, test_error=8.0)]
    read = train_cifar_source(_run_record(steps=3000), records, 3000, ema=False, status='completed')
    assert [(m.which, m.step, m.of_these_weights) for m in read.metrics] == [
        ('final', 3000, True), ('best during training', 2500, False)]
    card = ModelCard(render_model_card(_info(metrics=read.metrics, training=read.training), None))
    assert [(e.metric_name, e.metric_value) for e in card.data.eval_results] == [('Top-1 accuracy (final)', 92.0)]
    assert '| final, step 3,000 | 8.00 | 92.00 | - |' in card.text
    assert ('| best during training, step 2,500 (picked by its test split error): other weights than these '
            '| 7.50 | 92.50 | - |') in card.text
    assert "Only the rows measured on these weights are in the card's metadata" in card.text
    records = [dict(step=2500, test_error=8.5), dict(step=3000, test_error=8.0)]
    read = train_cifar_source(_run_record(steps=3000), records, 3000, ema=False, status='completed')
    assert all(m.of_these_weights for m in read.metrics)  # the best is the final step: these weights


def test_card_usage_names_the_package_and_only_what_it_installs():
    import importlib
    import re
    text = ModelCard(render_model_card(_info(), None)).text
    assert 'https://github.com/timm-identity/timm-identity' in text
    assert 'must be imported before `timm.create_model` is given one of its names, `hf-hub:` names included' in text
    blocks = '\n'.join(re.findall(r'```.*?```', text, flags=re.S))
    assert 'import timm_identity' in blocks and 'tools/' not in text
    assert 'timm-identity train-cifar --init-from NAME' in text and 'timm-identity run-script TIMM_SRC/train.py' in text
    modules = set(re.findall(r'(?:python -m |import )(timm_identity[\w.]*)', text))
    assert modules == {'timm_identity'}
    for module in modules:  # each is part of the installed package
        importlib.import_module(module)


def test_a_best_that_is_the_final_point_is_listed_once():
    records = [dict(step=34000, test_error=8.9), dict(step=36000, test_error=8.65)]
    read = train_cifar_source(_run_record(steps=36000), records, 36000, ema=False, status='completed')
    card = ModelCard(render_model_card(_info(metrics=read.metrics, training=read.training), None))
    assert [(e.metric_name, e.metric_value) for e in card.data.eval_results] == [('Top-1 accuracy (final)', 91.35)]
    rows = [line for line in card.text.splitlines() if line.startswith('| final')]
    assert rows == ['| final = best during training, step 36,000 (best picked by its test split error) | 8.65 | 91.35 '
                    '| - |'] and '| best during training' not in card.text


def test_card_commands_run_elsewhere_and_the_license_is_stated():
    from timm_identity.hub.training_sources import portable_command, train_cifar_record
    words, note = portable_command(['timm-identity', 'train-cifar', '--data-dir', '/tmp/x/cifar-10-batches-py',
                                    '--steps', '5'])
    assert words == ['timm-identity', 'train-cifar', '--data-dir', 'cifar-10-batches-py', '--steps', '5']
    assert note == 'run it in the folder that holds `cifar-10-batches-py`, the official release'
    assert portable_command(['x', '--data-dir=/d/cifar-100-python'])[0] == ['x', '--data-dir=cifar-100-python']
    assert portable_command(['x', '--data-dir', 'data/c10']) == (['x', '--data-dir', 'data/c10'], None)
    record = train_cifar_record({'recipe': 'paper'}, 5, None, ['/venv/bin/timm-identity', 'train-cifar',
                                                               '--data-dir', '/tmp/c/cifar-10-batches-py'])
    assert record.command.startswith('`timm-identity train-cifar --data-dir cifar-10-batches-py` (run it in')
    text = ModelCard(render_model_card(_info(training=record), None)).text
    assert '/tmp/' not in text
    assert '- **License:** apache-2.0: these weights are released under it' in text
