#!/usr/bin/env python3
"""The speedrun table and plot: every run in a folder, ours (train-cifar run folders) and airbench94 (the JSON of
benchmarks/speedrun/airbench_cpu.py), as CIFAR-10 test accuracy against training compute and training minutes.

    python benchmarks/speedrun/report.py benchmarks/speedrun/runs --plot benchmarks/speedrun/speedrun.png

prints the markdown table and the verdicts at the budgets (--minutes, --tflop). Training minutes leave out the
evaluations on both sides (airbench94 times its whitening init and its steps; train-cifar's log has each interval's
images and images/s). Training FLOPs: forward + backward per image (torch FlopCounterMode, one function for both
nets: timm_identity.report.training_flops_per_image) x images seen. Single-view accuracy is the headline; test-time
augmentation is its own column (airbench94: its mirror + translate TTA; ours: `timm-identity evaluate --flip`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional


def _train_cifar_run(run: Path) -> dict:
    """One of our runs: settings (run.json), evaluations and speed (log.jsonl), how it ended (summary.json), and
    its flip-TTA evaluation (flip.json, written by run.sh) if present."""
    from timm_identity.report import run_flops_per_image
    record = json.loads((run / 'run.json').read_text())
    summary = json.loads((run / 'summary.json').read_text())
    if summary['run_id'] != record['run_id'] or summary['status'] != 'completed':
        raise SystemExit(f'{run}: status {summary["status"]!r} (or a summary of another run); run it again')
    cfg = record['config']
    log = [json.loads(line) for line in (run / 'log.jsonl').read_text().splitlines()]
    key = 'ema_test_error' if cfg['model_ema'] else 'test_error'  # what export takes
    curve, seconds, prev = [], 0.0, 0
    for r in log:
        seconds += (r['step'] - prev) * cfg['batch_size'] / r['images_per_s']
        prev = r['step']
        if r.get(key) is not None:
            curve.append({'images': r['step'] * cfg['batch_size'], 'train_time_s': seconds,
                          'test_acc': 1 - r[key] / 100})
    flip = json.loads((run / 'flip.json').read_text()) if (run / 'flip.json').is_file() else None
    if flip is not None and abs(flip['top1'] - 100 * curve[-1]['test_acc']) > 0.05:  # same weights, same view
        raise SystemExit(f'{run}/flip.json: its single-view top-1 {flip["top1"]:.2f} % is not the run\'s final '
                         f'{100 * curve[-1]["test_acc"]:.2f} %: an evaluation of other weights')
    kwargs = ' '.join(f'{k}={v}' for k, v in cfg['model_kwargs'].items())
    return dict(name=run.name, method='ours', what=f"{cfg['model']}{' ' + kwargs if kwargs else ''}, "
                f"recipe {cfg['recipe']}" + (', EMA' if cfg['model_ema'] else ''),
                amp=cfg['amp'], device=record['starts'][0]['device'], images=curve[-1]['images'],
                train_time_s=curve[-1]['train_time_s'], test_acc=curve[-1]['test_acc'],
                test_acc_tta=(flip['flip_top1'] / 100 if flip else None), tta='flip' if flip else None,
                flops_per_image=run_flops_per_image(cfg), curve=curve,
                command=' '.join(['timm-identity', *record['starts'][0]['argv'][1:]]))


def _airbench_run(path: Path) -> dict:
    r = json.loads(path.read_text())
    return dict(name=path.stem, method='airbench94', what=f"airbench {r['airbench_version']} lib_airbench94, "
                f"{r['epochs']} epochs", amp=r['amp'], device=r['device'], images=r['images'],
                train_time_s=r['train_time_s'], test_acc=r['test_acc'], test_acc_tta=r['test_acc_tta'],
                tta='mirror + translate', flops_per_image=r['train_flops_per_image'], curve=r['curve'],
                command=' '.join(['python', *r['argv']]))


def read_runs(root: Path) -> List[dict]:
    runs = [_train_cifar_run(d) for d in sorted(root.iterdir()) if (d / 'run.json').is_file()]
    runs += [_airbench_run(f) for f in sorted(root.glob('*.json'))]
    if not runs:
        raise SystemExit(f'{root}: no runs (train-cifar run folders or airbench_cpu.py JSON files)')
    return runs


def table(runs: List[dict]) -> str:
    rows = ['| run | what | dtype | images seen | GFLOP / image | training TFLOP | training minutes | images/s '
            '| top-1 single view | top-1 with TTA |', '|---|---|---|---|---|---|---|---|---|---|']
    for r in sorted(runs, key=lambda r: (r['method'], r['train_time_s'])):
        tta = f"{100 * r['test_acc_tta']:.2f} % ({r['tta']})" if r['test_acc_tta'] is not None else 'not measured'
        rows.append(f"| {r['name']} | {r['what']} | {r['amp'] if r['amp'] != 'none' else 'fp32'} | {r['images']:,} "
                    f"| {r['flops_per_image'] / 1e9:.3f} | {r['images'] * r['flops_per_image'] / 1e12:,.0f} "
                    f"| {r['train_time_s'] / 60:.1f} | {r['images'] / r['train_time_s']:,.0f} "
                    f"| **{100 * r['test_acc']:.2f} %** | {tta} |")
    return '\n'.join(rows) + '\n'


def best_within(runs: List[dict], method: str, minutes: Optional[float] = None,
                tflop: Optional[float] = None) -> Optional[dict]:
    """The most accurate finished run of ``method`` within the budget (single view), or None; minutes and TFLOP
    compared as the table shows them (0.1 min, whole TFLOP)."""
    fits = [r for r in runs if r['method'] == method
            and (minutes is None or round(r['train_time_s'] / 60, 1) <= minutes)
            and (tflop is None or round(r['images'] * r['flops_per_image'] / 1e12) <= tflop)]
    return max(fits, key=lambda r: r['test_acc'], default=None)


def verdicts(runs: List[dict], minutes: List[float], tflops: List[float]) -> str:
    lines = []
    budgets = [(f'{m:g} training minutes', dict(minutes=m)) for m in minutes]
    budgets += [(f'{t:g} training TFLOP', dict(tflop=t)) for t in tflops]
    for label, budget in budgets:
        ours, theirs = (best_within(runs, m, **budget) for m in ('ours', 'airbench94'))
        said = []
        for name, r in (('ours', ours), ('airbench94', theirs)):
            if r is None:
                over = min((x for x in runs if x['method'] == name), key=lambda x: x['train_time_s'])
                said.append(f'{name}: no run within it (the shortest: {over["name"]}, '
                            f'{100 * over["test_acc"]:.2f} % in {over["train_time_s"] / 60:.1f} min, '
                            f'{over["images"] * over["flops_per_image"] / 1e12:,.0f} TFLOP)')
            else:
                said.append(f'{name} {100 * r["test_acc"]:.2f} % ({r["name"]})')
        if ours and theirs:
            gap = 100 * (ours['test_acc'] - theirs['test_acc'])
            said.append(f'ours {"ahead" if gap > 0 else "behind"} by {abs(gap):.2f} points')
        lines.append(f'- **{label}:** ' + '; '.join(said))
    return '\n'.join(lines) + '\n'


def screen_table(root: Path) -> str:
    """The screens (screen.sh): each run's settings that differ from the run named ``base``, and how it ended."""
    from timm_identity.report import run_flops_per_image
    from timm_identity.train.config import RUNTIME_DEFAULTS
    runs = {d.name: d for d in sorted(root.iterdir()) if (d / 'run.json').is_file()}
    if 'base' not in runs:
        raise SystemExit(f'{root}: no run named base to compare the screens with')
    base = json.loads((runs['base'] / 'run.json').read_text())['config']
    same = {'out_dir', 'time_limit', 'warmup_steps', 'eval_every'}  # set per run by screen.sh from its steps
    rows = ['| screen | changed (from base) | images seen | training TFLOP | minutes (evaluation included) '
            '| images/s | top-1 single view |', '|---|---|---|---|---|---|---|']
    for name, run in runs.items():
        cfg = json.loads((run / 'run.json').read_text())['config']
        summary = json.loads((run / 'summary.json').read_text())
        # a setting added since a run was made is the default it then had (as --resume reads it)
        changed = ', '.join(f'{k} {cfg[k]}' for k in cfg if k not in same
                            and cfg[k] != base.get(k, RUNTIME_DEFAULTS.get(k))) or '-'
        images = summary['steps'] * cfg['batch_size']  # up to its last log point (a diverged run stops early)
        ended = (f"**{100 - summary['final_test_error']:.2f} %**" if summary['status'] == 'completed'
                 else f"{summary['status']}: {summary['message'].split(';')[0]}")
        if summary['status'] == 'completed' and cfg['model_ema']:
            ended += f" (EMA {100 - summary['final_ema_test_error']:.2f} %)"
        ips = summary['images_per_s_median']
        rows.append(f"| {name} | {changed} | {images:,} | "
                    f"{images * run_flops_per_image({**RUNTIME_DEFAULTS, **cfg}) / 1e12:.0f} | "
                    f"{summary['wall_time_s'] / 60:.1f} | {f'{ips:,.0f}' if ips else '-'} | {ended} |")
    return '\n'.join(rows) + '\n'


def plot(runs: List[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from timm_identity.atomic_io import atomic_savefig
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colors = {'ours': 'tab:blue', 'airbench94': 'tab:red'}
    for r in runs:
        xs = {'tflop': [p['images'] * r['flops_per_image'] / 1e12 for p in r['curve']],
              'min': [p['train_time_s'] / 60 for p in r['curve']]}
        ys = [100 * p['test_acc'] for p in r['curve']]
        for ax, x in zip(axes, (xs['tflop'], xs['min'])):
            ax.plot(x, ys, color=colors[r['method']], alpha=0.35, linewidth=1)
            ax.plot(x[-1:], ys[-1:], 'o', color=colors[r['method']])
            ax.annotate(r['name'], (x[-1], ys[-1]), fontsize=7, xytext=(3, -9), textcoords='offset points')
    for ax, label in zip(axes, ('training TFLOP (forward + backward)', 'training minutes (evaluations excluded)')):
        ax.axhline(94, color='gray', linestyle=':', linewidth=1)
        ax.set_xscale('log')
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f'{v:g}'))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which='both')
    axes[0].set_ylabel('CIFAR-10 test top-1 (%), single view')
    axes[0].set_ylim(max(40, min(100 * p['test_acc'] for r in runs for p in r['curve']) - 2), 96)
    handles = [plt.Line2D([], [], color=c, marker='o', label=m) for m, c in colors.items()]
    axes[1].legend(handles=handles, loc='lower right')
    fig.suptitle(f"Speedrun on {runs[0]['device']}: dots = finished runs (each its own schedule), "
                 f"lines = the evaluations during them", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('runs', type=Path, help='folder of the runs (what run.sh wrote)')
    p.add_argument('--plot', type=Path, help='PNG to write')
    p.add_argument('--minutes', type=float, nargs='*', default=[10, 60], help='time budgets for the verdicts')
    p.add_argument('--tflop', type=float, nargs='*', default=[175, 350], help='compute budgets for the verdicts')
    p.add_argument('--screens', type=Path, help="also the table of screen.sh's runs in this folder")
    args = p.parse_args(argv)
    runs = read_runs(args.runs)
    devices = sorted({r['device'] for r in runs})
    if len(devices) != 1:
        raise SystemExit(f'{args.runs}: runs on more than one machine ({devices}); compare on one')
    sys.stdout.write(f'Machine: {devices[0]}\n\n' + table(runs) + '\n' + verdicts(runs, args.minutes, args.tflop))
    if args.screens:
        sys.stdout.write('\nScreens (screen.sh):\n\n' + screen_table(args.screens))
    if args.plot:
        plot(runs, args.plot)
    return 0


if __name__ == '__main__':
    sys.exit(main())
