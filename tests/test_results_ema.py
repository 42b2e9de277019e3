"""results/ema/: the table in results.md is what results/ema/report.py makes of the committed runs (their own
record, log and summary), and it says what the runs' records say."""
import importlib.util
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / 'results' / 'ema'


def _report():
    spec = importlib.util.spec_from_file_location('ema_report', RESULTS / 'report.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_table_is_made_from_the_committed_runs():
    report = _report()
    runs = [report.read_run(d) for d in sorted((RESULTS / 'runs').iterdir())]
    assert len(runs) == 4 and {(r['steps'], r['ema']) for r in runs} == {(2000, False), (2000, True), (6400, False),
                                                                        (6400, True)}
    assert report.table(runs) in (RESULTS / 'results.md').read_text()


def test_the_ema_runs_follow_the_same_trajectory_as_the_plain_ones():
    """EMA changes no update: the weights of a --model-ema run are evaluated exactly as those of the plain run."""
    for steps in (2000, 6400):
        logs = [[json.loads(line) for line in (RESULTS / 'runs' / f'{ema}_{steps}' / 'log.jsonl').read_text()
                 .splitlines()] for ema in ('no-model-ema', 'model-ema')]
        plain, with_ema = ([(r['step'], r['loss'], r['test_error']) for r in log] for log in logs)
        assert plain == with_ema
