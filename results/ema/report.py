#!/usr/bin/env python3
"""The table of results/ema/: each run's final test error of the weights and of their EMA (both measured in the
EMA runs, on the same trajectory), wall time and speed, read from the runs' own record, log and summary.

    python results/ema/report.py results/ema/runs > results/ema/results.md

tests/test_results_ema.py checks that results.md is what this prints for the committed runs.
"""
import json
import sys
from pathlib import Path


def read_run(run: Path) -> dict:
    """One run: its settings (run.json), its evaluations (log.jsonl) and how it ended (summary.json)."""
    record = json.loads((run / 'run.json').read_text())
    if not (run / 'summary.json').is_file():
        raise SystemExit(f'{run}: no summary.json (still running, or stopped before its end)')
    summary = json.loads((run / 'summary.json').read_text())
    log = map(json.loads, (run / 'log.jsonl').read_text().splitlines())
    evals = [r for r in log if r.get('test_error') is not None]
    if summary['status'] != 'completed' or summary['run_id'] != record['run_id']:
        raise SystemExit(f'{run}: status {summary["status"]!r} (or a summary of another run); run it again')
    return dict(run=run.name, steps=summary['steps'], epochs=summary['epochs'], ema=record['config']['model_ema'],
                decay=record['config']['model_ema_decay'], minutes=summary['wall_time_s'] / 60,
                images_per_s=summary['images_per_s_median'], curve=[(r['step'], r['test_error'],
                                                                     r.get('ema_test_error')) for r in evals])


def table(runs: list) -> str:
    rows = ['| steps (epochs) | `--model-ema` | wall time | images/s (median) | test error: the weights | '
            'test error: their EMA | at the evaluations (steps: weights / EMA) |',
            '|---|---|---|---|---|---|---|']
    for r in sorted(runs, key=lambda r: (r['steps'], r['ema'])):
        _, err, ema = r['curve'][-1]
        points = ', '.join(f'{s:,}: {e:.2f}' + (f' / {m:.2f}' if m is not None else '') for s, e, m in r['curve'])
        rows.append(f"| {r['steps']:,} ({r['epochs']:.1f}) | {'on' if r['ema'] else 'off'} "
                    f"| {r['minutes']:.1f} min | {r['images_per_s']:,.0f} | {err:.2f} % "
                    f"| {f'{ema:.2f} %' if ema is not None else '-'} | {points} |")
    return '\n'.join(rows) + '\n'


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ('-h', '--help'):
        print(__doc__.strip())
        return 0 if argv[:1] in (['-h'], ['--help']) else 2
    root = Path(argv[0])
    runs = [read_run(d) for d in sorted(root.iterdir()) if (d / 'run.json').is_file()]
    if not runs:
        raise SystemExit(f'{root}: no run folders (with run.json)')
    sys.stdout.write(table(runs))
    return 0


if __name__ == '__main__':
    sys.exit(main())
