#!/usr/bin/env python3
"""Test accuracy against training minutes for one or more train-cifar runs (their log.jsonl), as one PNG.

    python tools/plot_time_to_accuracy.py runs/a runs/b --labels "A" "B" --out results/x.png [--goal 90]

Minutes are the run's training wall time at each evaluation: the ``wall_time_s`` of each log record, or, for
logs of older versions without it, the sum of (images in the interval / that interval's images/s), which needs
the run's batch size (``--batch-size``).
"""
import argparse
import json
import sys
from pathlib import Path


def accuracy_vs_minutes(run_dir: Path, batch_size=None):
    """[(minutes, test top-1 accuracy %, step)] at every evaluation of the run."""
    records = [json.loads(line) for line in (run_dir / 'log.jsonl').read_text().splitlines() if line.strip()]
    if batch_size is None and any('wall_time_s' not in r for r in records):
        raise SystemExit(f'{run_dir}/log.jsonl has records without wall_time_s: pass the run\'s --batch-size')
    points, elapsed, prev_step = [], 0.0, 0
    for r in records:
        if 'wall_time_s' not in r:
            elapsed += (r['step'] - prev_step) * batch_size / r['images_per_s']
        prev_step = r['step']
        seconds = r.get('wall_time_s', elapsed)
        if r.get('test_error') is not None:
            points.append((seconds / 60, 100 - r['test_error'], r['step']))
    return points


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('runs', nargs='+', type=Path, help='train-cifar run folders')
    p.add_argument('--labels', nargs='+', help='one legend label per run (default: folder names)')
    p.add_argument('--out', required=True, type=Path, help='PNG to write')
    p.add_argument('--goal', type=float, help='draw a horizontal line at this accuracy (%%)')
    p.add_argument('--title', default='CIFAR test accuracy against training time')
    p.add_argument('--batch-size', type=int, help='the runs\' batch size, for logs without wall_time_s')
    args = p.parse_args(argv)
    labels = args.labels or [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f'--labels: {len(labels)} labels for {len(args.runs)} runs')
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from timm_identity.atomic_io import atomic_savefig
    fig, ax = plt.subplots(figsize=(8, 5))
    for run, label in zip(args.runs, labels):
        points = accuracy_vs_minutes(run, args.batch_size)
        ax.plot([m for m, _, _ in points], [a for _, a, _ in points], marker='o', label=label)
    if args.goal:
        ax.axhline(args.goal, color='tab:gray', linestyle='--', label=f'{args.goal:g} %')
    ax.set_xlabel('training wall time (minutes)')
    ax.set_ylabel('test top-1 accuracy (%), single view')
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    print(atomic_savefig(fig, args.out, dpi=110))
    return 0


if __name__ == '__main__':
    sys.exit(main())
