"""``timm_identity.study``: the signal measures against a hand computation, the training grid on tiny data,
the tables, plots and the CLI (with its errors)."""
import json

import pytest
import torch
import torch.nn.functional as F

import timm
import timm_identity  # noqa: F401  (registers the models)
from timm_identity.cli import main as cli_main
from timm_identity.data.testing import make_tiny_cifar
from timm_identity.study.cli import training_table
from timm_identity.study.signal_propagation import measure_signal, signal_sweep
from timm_identity.study.training_grid import run_grid
from timm_identity.study.variants import VARIANTS, model_kwargs

from train_helpers import learnable_split


def test_every_variant_builds_the_named_network():
    for name in VARIANTS:
        model = timm.create_model('allconv_resnet_cifar', **model_kwargs(name, 1, (4, 4, 8), 4))
        blocks = [b for s in model.stages for b in s]
        assert len(blocks) == 3
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == name.endswith('_bn')
        assert all(hasattr(b.gate, 'weight') for b in blocks) == name.startswith('gate')
        assert all(hasattr(b.bias1a, 'bias') for b in blocks) == name.startswith('fixup')
        assert isinstance(model.fc, torch.nn.Linear) == (name == 'linear_head')
        assert isinstance(blocks[-1].shortcut, torch.nn.Conv2d) == (name == 'proj')
    assert model_kwargs('paper', 2, (8, 16, 32), 8) == dict(depths=(2, 2, 2), widths=(8, 16, 32), stem_chs=8,
                                                            init='paper')
    with pytest.raises(ValueError, match="unknown study variant 'nope'"):
        model_kwargs('nope', 1)


def test_signal_measures_match_a_hand_computation():
    """Two stages (identity shortcut, then avg-pool + zero-pad with stride 2), written out with F.conv2d."""
    torch.manual_seed(0)
    model = timm.create_model('allconv_resnet_cifar', depths=(1, 1), widths=(4, 8), strides=(1, 2), stem_chs=4,
                              num_classes=3, init='standard')
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    got = measure_signal(model, x, y)

    w_stem = model.stem.weight.detach().clone().requires_grad_(True)
    h = F.conv2d(x, w_stem, model.stem.bias, padding=1)
    ratios = []
    for block, stride in zip([model.stages[0][0], model.stages[1][0]], (1, 2)):
        c1, c2 = block.conv1, block.conv2
        inner = F.relu(F.conv2d(h, c1.weight, c1.bias, stride=stride, padding=1))
        branch = F.conv2d(inner, c2.weight, c2.bias, padding=1)
        stream = h if stride == 1 else F.pad(F.avg_pool2d(h, 2), (0, 0, 0, 0, 0, 4))
        ratios.append((branch.norm() / stream.norm()).item())
        h = stream + branch
    logits = h.mean((2, 3)) @ model.fc.weight.T
    loss = F.cross_entropy(logits, y)
    (grad,) = torch.autograd.grad(loss, w_stem)
    assert got['branch_ratio'] == pytest.approx(ratios, rel=1e-5)
    assert got['logit_rms'] == pytest.approx(logits.pow(2).mean().sqrt().item(), rel=1e-5)
    assert got['stem_grad_norm'] == pytest.approx(grad.norm().item(), rel=1e-5)
    assert got['loss'] == pytest.approx(loss.item(), rel=1e-6)
    assert 0.1 < min(ratios)  # a standard init: the measure is not trivially 0


def test_signal_sweep_orders_the_inits():
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    records = signal_sweep(['paper', 'standard', 'zero', 'gate'], [1, 2], x, y, widths=(8, 8, 16), stem_chs=8,
                           progress=False)
    by = {(r['variant'], r['blocks']): r for r in records}
    assert sorted(by) == sorted((v, b) for v in ('paper', 'standard', 'zero', 'gate') for b in (3, 6))
    for blocks in (3, 6):
        assert len(by[('paper', blocks)]['branch_ratio']) == blocks
        assert by[('zero', blocks)]['branch_ratio_max'] == 0 and by[('gate', blocks)]['branch_ratio_max'] == 0
        assert 0 < by[('paper', blocks)]['branch_ratio_max'] < 0.05 < by[('standard', blocks)]['branch_ratio_median']


def _grid(tmp_path, variants, **kw):
    train, test = learnable_split(32, 0), learnable_split(16, 1)
    return run_grid(variants, [1], train, test, tmp_path / 'runs', widths=(4, 4, 8), steps=3, stem_chs=4,
                    log_every=1, eval_every=3, device='cpu', progress=False,
                    recipe_overrides=dict(batch_size=8, eval_batch_size=16, **kw))


def test_training_grid_runs_writes_and_reuses_finished_runs(tmp_path):
    rows = _grid(tmp_path, ['paper', 'fixup'])
    assert [(r['variant'], r['blocks'], r['status'], r['steps']) for r in rows] == [
        ('paper', 3, 'completed', 3), ('fixup', 3, 'completed', 3)]
    assert all(r['test_images'] == 16 and 0 <= r['final_test_error'] <= 100 for r in rows)
    assert rows[0]['curve']['step'] == [1, 2, 3] and rows[0]['curve']['eval_step'] == [3]
    summary = tmp_path / 'runs' / 'paper-3blocks' / 'summary.json'
    stamp = summary.stat().st_mtime_ns
    again = _grid(tmp_path, ['paper'])
    assert summary.stat().st_mtime_ns == stamp and again[0]['final_test_error'] == rows[0]['final_test_error']
    _grid(tmp_path, ['paper'], lr=0.01)  # other settings: trained again
    assert summary.stat().st_mtime_ns != stamp
    table = training_table(rows)
    assert '| `paper` |' in table and '| `fixup` |' in table and '3 blocks' in table


def test_training_grid_resumes_an_unfinished_run_exactly(tmp_path):
    train, test = learnable_split(32, 0), learnable_split(16, 1)

    def grid(root, **kw):
        return run_grid(['paper'], [1], train, test, root, widths=(4, 4, 8), steps=4, stem_chs=4, log_every=1,
                        eval_every=2, device='cpu', progress=False, recipe_overrides=dict(batch_size=8, **kw))
    (whole,) = grid(tmp_path / 'a')
    (stopped,) = grid(tmp_path / 'b', time_limit=1e-9)  # the trainer's time limit: checkpoint at step 1, stop
    assert stopped['status'] == 'time_limit' and stopped['steps'] == 1
    (resumed,) = grid(tmp_path / 'b')
    summary = json.loads((tmp_path / 'b' / 'paper-3blocks' / 'summary.json').read_text())
    record = json.loads((tmp_path / 'b' / 'paper-3blocks' / 'run.json').read_text())
    assert summary['status'] == 'completed' and [s['step'] for s in record['starts']] == [0, 1]
    assert resumed['curve']['loss'] == whole['curve']['loss']
    assert resumed['final_test_error'] == whole['final_test_error']


def test_training_grid_records_divergence(tmp_path):
    (row,) = _grid(tmp_path, ['standard'], lr=1e12)
    assert row['diverged'] and row['status'] == 'nonfinite_loss' and row['final_test_error'] is None
    assert 1 <= row['diverged_at_step'] <= 3
    assert f"diverged (loss non-finite at step {row['diverged_at_step']})" in training_table([row])


@pytest.fixture(scope='module')
def tiny_release(tmp_path_factory):
    return make_tiny_cifar(tmp_path_factory.mktemp('cifar'), num_train=130, num_test=10, archive=False).folder


def test_cli_signal_and_train_write_their_results(tiny_release, tmp_path, capsys):
    out = tmp_path / 'results'
    common = ['--data-dir', tiny_release, '--out', str(out), '--stem-chs', '4']
    assert cli_main(['study', 'signal', *common, '--variants', 'paper', 'zero', '--blocks-per-stage', '1', '2',
                     '--widths', '4', '4', '8', '--images', '4']) == 0
    signal = json.loads((out / 'signal.json').read_text())
    assert len(signal['records']) == 4 and (out / 'signal.png').stat().st_size > 0
    assert '| zero | 0 | 0 |' in (out / 'signal_table.md').read_text()
    assert cli_main(['study', 'train', *common, '--variants', 'paper', 'gate', '--blocks-per-stage', '1',
                     '--widths', '4', '4', '8', '--steps', '2', '--test-images', '5', '--device', 'cpu',
                     '--work-dir', str(tmp_path / 'runs')]) == 0
    result = json.loads((out / 'training.json').read_text())
    assert [r['variant'] for r in result['rows']] == ['paper', 'gate'] and result['rows'][0]['test_images'] == 5
    assert result['runs_wall_time_s'] == pytest.approx(sum(r['wall_time_s'] for r in result['rows']))
    assert result['runs_wall_time_s'] > 0
    assert (out / 'training.png').stat().st_size > 0 and '| `gate` |' in (out / 'training_table.md').read_text()
    assert not [p for p in out.iterdir() if p.name.startswith('.')]  # no temporary files left
    capsys.readouterr()


def test_cli_errors_are_one_line(tiny_release, tmp_path, capsys):
    assert cli_main(['study', 'signal', '--data-dir', str(tmp_path / 'missing'), '--out', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('timm-identity study signal: error:') and 'missing' in err and 'Traceback' not in err
    assert cli_main(['study', 'train', '--data-dir', tiny_release, '--full', '--out', str(tmp_path / 'r'),
                     '--work-dir', str(tmp_path / 'runs'), '--device', 'cuda']) == 2 or torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert 'CUDA is not available' in capsys.readouterr().err
        assert not (tmp_path / 'r').exists() and not list((tmp_path / 'runs').glob('*/checkpoints'))
    for bad in (['--blocks-per-stage', '0'], ['--variants', 'nope'], ['--widths', '4', '4']):
        with pytest.raises(SystemExit) as e:
            cli_main(['study', 'train', '--data-dir', tiny_release, *bad])
        assert e.value.code == 2
    assert 'must be at least 1' in capsys.readouterr().err
