"""Model card rendering: Hub metadata the Hub understands + MODEL_CARD.md with placeholders."""
import json

import pytest
from huggingface_hub import ModelCard

from timm_identity.hub.model_card import Metric, ModelInfo, read_summary, render_model_card

from hub_testutil import MODEL_CARD_TEMPLATE


def _info(**kwargs):
    base = dict(architecture='allconv_resnet_cifar', tag='cifar10', repo_id='timm-identity/allconv_resnet_cifar.cifar10',
                num_classes=10, num_params=13546816, num_fixed=2560, dataset='cifar10',
                metrics=[Metric('error', 6.38, 1, 'final'), Metric('error', 6.1, 1, 'best during training')])
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


def test_read_summary_json_and_timm_csv(tmp_path):
    p = tmp_path / 'summary.json'
    p.write_text(json.dumps(dict(final_test_error=6.5, best_test_error=6.25, final_test_error_top5=0.4,
                                 steps=60000, command='x')))
    metrics, details, _ = read_summary(p)
    assert [(m.topk, m.which, m.error) for m in metrics] == [
        (1, 'final', 6.5), (1, 'best during training', 6.25), (5, 'final', 0.4)]
    assert details == {'steps': 60000}

    p.write_text(json.dumps(dict(final_test_error=0.065, best_test_error=0.06)))
    with pytest.raises(ValueError, match='percent'):
        read_summary(p)

    csv = tmp_path / 'summary.csv'
    csv.write_text('epoch,train_loss,eval_loss,eval_top1,eval_top5\n0,2.0,1.9,60.0,90.0\n1,1.5,1.2,75.5,95.0\n'
                   '2,1.4,1.3,74.0,94.0\n')
    metrics, details, _ = read_summary(csv)
    assert [(m.topk, m.which, m.accuracy) for m in metrics] == [
        (1, 'final', 74.0), (5, 'final', 94.0), (1, 'best during training', 75.5), (5, 'best during training', 95.0)]
    assert details['best epoch'] == '1'
