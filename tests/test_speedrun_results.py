"""benchmarks/speedrun/: results.md is what report.py makes of the committed runs (their own records, logs,
summaries, flip evaluations and airbench JSON), the README's speedrun rows say what those runs say, and the
speedrun_cpu recipe is the one the runs used."""
import importlib.util
import json
from pathlib import Path

import pytest

from timm_identity.train.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]
SPEEDRUN = ROOT / 'benchmarks' / 'speedrun'


@pytest.fixture(scope='module')
def report():
    spec = importlib.util.spec_from_file_location('speedrun_report', SPEEDRUN / 'report.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def runs(report):
    return report.read_runs(SPEEDRUN / 'runs')


def test_results_md_is_made_from_the_committed_runs(report, runs):
    text = (SPEEDRUN / 'results.md').read_text()
    assert report.table(runs) in text
    assert report.verdicts(runs, [10, 60], [175, 350]) in text
    assert report.screen_table(SPEEDRUN / 'screens') in text
    assert {r['method'] for r in runs} == {'ours', 'airbench94'}
    assert len({r['device'] for r in runs}) == 1  # one machine


def test_our_runs_use_the_speedrun_recipe_and_no_normalisation(runs):
    for run in (SPEEDRUN / 'runs').iterdir():
        if not (run / 'run.json').is_file():
            continue
        cfg = json.loads((run / 'run.json').read_text())['config']
        assert cfg['recipe'] == 'speedrun_cpu' and cfg['model'] == 'allconv_resnet_cifar_w16_d3'
        assert 'norm_layer' not in cfg['model_kwargs']
        same = {k for k, v in RECIPES['speedrun_cpu'].items() if k not in ('steps', 'warmup_steps', 'eval_every')}
        assert all(cfg[k] == (list(v) if isinstance(v, tuple) else v) for k, v in RECIPES['speedrun_cpu'].items()
                   if k in same)


def test_readme_rows_say_what_the_runs_say(runs):
    readme = (ROOT / 'README.md').read_text()
    for r in runs:
        if r['name'] in ('ours_350tflop', 'airbench94_9.9ep'):
            assert f"{100 * r['test_acc']:.2f} %" in readme, r['name']
