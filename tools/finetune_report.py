#!/usr/bin/env python3
"""Table and curves of the fine-tuning comparison that ``results/finetune/run.sh`` runs.

    python tools/finetune_report.py runs/finetune --out results/finetune

Reads every run folder named ``<labels>_<start>_<steps>`` (labels: fine / coarse; start: pretrained /
scratch / probe) and writes, into ``--out``: ``results.json`` (one record per run), ``results.md`` (the
table), ``curves.png`` (test accuracy against steps, one panel per label set) and a copy of each run's
``summary.json`` and ``log.jsonl`` under ``runs/<name>/``.
"""
import argparse
import json
import re
import shutil
import sys
from pathlib import Path

NAME = re.compile(r'^(fine|coarse)_(pretrained|scratch|probe)_(\d+)$')
LABELS = {'fine': 'CIFAR-100 (100 classes)', 'coarse': 'CIFAR-100 superclasses (20)'}
STARTS = {'pretrained': 'from CIFAR-10 weights, all layers trained',
          'scratch': 'from scratch (random init)',
          'probe': 'linear probe (CIFAR-10 backbone frozen)'}


def read_run(run: Path) -> dict:
    """One run's result: its final full-test-set evaluation, steps, wall time and speed, and its curve."""
    labels, start, steps = NAME.match(run.name).groups()
    summary = json.loads((run / 'summary.json').read_text())
    record = json.loads((run / 'run.json').read_text())  # the run's settings, data and command lines
    if summary.get('run_id') != record['run_id']:
        raise SystemExit(f'{run}: summary.json is not of the run its run.json records (another run\'s copy?)')
    if summary['status'] != 'completed' or summary['final_step'] != int(steps):
        raise SystemExit(f'{run}: status {summary["status"]!r} at step {summary["final_step"]} of {steps}; '
                         f'rerun it (results/finetune/run.sh skips finished runs only)')
    log = [json.loads(line) for line in (run / 'log.jsonl').read_text().splitlines() if line.strip()]
    curve = [(r['step'], 100 - r['test_error'], r['wall_time_s']) for r in log if r.get('test_error') is not None]
    final = next(r for r in reversed(log) if r.get('test_error') is not None)
    return dict(run=run.name, labels=labels, start=start, steps=int(steps), test_top1=100 - summary['final_test_error'],
                test_top5=final.get('test_top5'), test_images=record['data']['test_images'],
                minutes=summary['wall_time_s'] / 60, images_per_s=summary['images_per_s_median'],
                epochs=summary['epochs'], command=' '.join(['timm-identity', *record['starts'][-1]['argv'][1:]]),
                curve=curve)


def table(results: list) -> str:
    rows = ['| labels | start | steps (epochs) | test top-1 | test top-5 | minutes | images/s |',
            '|---|---|---|---|---|---|---|']
    for r in results:
        rows.append(f"| {LABELS[r['labels']]} | {STARTS[r['start']]} | {r['steps']:,} ({r['epochs']:.1f}) "
                    f"| {r['test_top1']:.2f} % | {r['test_top5']:.2f} % | {r['minutes']:.1f} "
                    f"| {r['images_per_s']:,.0f} |")
    return '\n'.join(rows) + '\n'


def plot(results: list, out: Path) -> Path:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from timm_identity.atomic_io import atomic_savefig
    present = [labels for labels in LABELS if any(r['labels'] == labels for r in results)]
    fig, axes = plt.subplots(1, len(present), figsize=(6 * len(present), 4.5), squeeze=False)
    colours = dict(pretrained='tab:blue', scratch='tab:orange', probe='tab:green')
    for ax, labels in zip(axes[0], present):
        longest = max(r['steps'] for r in results if r['labels'] == labels)
        for r in results:
            if r['labels'] != labels:
                continue
            steps = [s for s, _, _ in r['curve']]
            acc = [a for _, a, _ in r['curve']]
            if r['steps'] == longest:
                ax.plot(steps, acc, marker='o', color=colours[r['start']], label=f"{STARTS[r['start']]}")
            else:
                ax.plot(steps, acc, linestyle=':', marker='.', color=colours[r['start']],
                        label=f"{r['start']}, {r['steps']:,}-step schedule")
        ax.set_title(LABELS[labels])
        ax.set_xlabel('optimizer steps (batch 128)')
        ax.set_ylabel('test top-1 accuracy (%), full test set')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle('allconv_resnet_cifar_w16_d3: fine-tuned from CIFAR-10 weights vs from scratch vs linear probe')
    fig.tight_layout()
    return atomic_savefig(fig, out, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('runs', type=Path, help='folder holding the run folders of results/finetune/run.sh')
    p.add_argument('--out', type=Path, required=True, help='folder for results.json, results.md, curves.png')
    args = p.parse_args(argv)
    runs = sorted(d for d in args.runs.iterdir() if d.is_dir() and NAME.match(d.name)) if args.runs.is_dir() else []
    if not runs:
        p.error(f'{args.runs}: no run folders named <fine|coarse>_<pretrained|scratch|probe>_<steps>')
    order = {k: i for i, k in enumerate([*LABELS, *STARTS])}
    results = sorted((read_run(r) for r in runs), key=lambda r: (order[r['labels']], r['steps'], order[r['start']]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'results.json').write_text(json.dumps(results, indent=1) + '\n')
    (args.out / 'results.md').write_text(table(results))
    for r in runs:
        (args.out / 'runs' / r.name).mkdir(parents=True, exist_ok=True)
        for f in ('run.json', 'summary.json', 'log.jsonl'):
            shutil.copyfile(r / f, args.out / 'runs' / r.name / f)
    print(table(results))
    print(plot(results, args.out / 'curves.png'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
