"""tools/finetune_report.py on tiny runs: the table, the JSON records and the curves come from the runs' own
summaries and logs, and a run that did not finish its steps is refused."""
import json
import runpy
import sys
from pathlib import Path

import pytest

from timm_identity.train.cifar_trainer import train

from train_helpers import learnable_split, tiny_overrides

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'finetune_report.py'


def _report(argv):
    old = sys.argv
    sys.argv = [str(TOOL), *argv]
    try:
        runpy.run_path(str(TOOL), run_name='__main__')
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = old


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('ft_runs')
    splits = learnable_split(32, seed=0), learnable_split(20, seed=1)
    for name, steps in (('coarse_scratch_4', 4), ('coarse_pretrained_4', 4)):
        train(tiny_overrides(root / name, steps=steps, eval_every=2), *splits, argv=['timm-identity', 'train-cifar'])
    return root


def test_report_tables_what_the_runs_recorded(runs, tmp_path):
    assert _report([str(runs), '--out', str(tmp_path / 'out')]) == 0
    results = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert [r['run'] for r in results] == ['coarse_pretrained_4', 'coarse_scratch_4']
    for r in results:
        summary = json.loads((runs / r['run'] / 'summary.json').read_text())
        assert r['test_top1'] == pytest.approx(100 - summary['final_test_error'])
        assert r['steps'] == 4 and r['test_images'] == 20 and [s for s, _, _ in r['curve']] == [2, 4]
    table = (tmp_path / 'out' / 'results.md').read_text()
    assert f"| {results[1]['test_top1']:.2f} % |" in table and 'from scratch (random init)' in table
    assert (tmp_path / 'out' / 'curves.png').stat().st_size > 10_000
    assert (tmp_path / 'out' / 'runs' / 'coarse_scratch_4' / 'log.jsonl').is_file()


def test_report_refuses_an_unfinished_run(runs, tmp_path):
    import shutil
    bad = tmp_path / 'runs'
    shutil.copytree(runs / 'coarse_scratch_4', bad / 'fine_scratch_8')  # named for 8 steps, ran 4
    message = _report([str(bad), '--out', str(tmp_path / 'out')])
    assert "fine_scratch_8: status 'completed' at step 4 of 8" in message
    assert not (tmp_path / 'out').exists()
