"""``timm-identity study {signal,train}``: identity matters, measured on real CIFAR-10.

``signal``: signal propagation at init over depth x variant (no training); writes ``signal.json``,
``signal.png`` and ``signal_table.md``. ``train``: short runs of the project's trainer over variant x depth
at reduced width; writes ``<name>.json``, ``<name>.png`` and ``<name>_table.md`` (``--full``: the paper's
net and recipe, for a GPU). Every file is written under a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, Sequence

from ..atomic_io import atomic_write_text, write_json
from ..cli_args import DefaultsHelpFormatter, environment, positive_int, writable_dir
from .variants import PAPER_WIDTHS, REDUCED_WIDTHS, SIGNAL_VARIANTS, TRAIN_VARIANTS, VARIANTS

__all__ = ['add_parser', 'signal_table', 'training_table']


def _load(args: argparse.Namespace, split: str):
    from timm_identity.data.cifar import load_cifar
    return load_cifar(args.data_dir, 'cifar10', split, verify_md5=args.verify_md5)


def _fmt(value, spec: str = '.2g') -> str:
    return 'non-finite' if value is None else format(value, spec)


def signal_table(records: Sequence[Dict[str, Any]]) -> str:
    """Markdown: one table per measure, variants x number of blocks."""
    depths = sorted({r['blocks'] for r in records})
    variants = list(dict.fromkeys(r['variant'] for r in records))
    by = {(r['variant'], r['blocks']): r for r in records}
    out = []
    for key, title in (('branch_ratio_median', 'median ||branch|| / ||stream||'),
                       ('branch_ratio_max', 'max ||branch|| / ||stream||'),
                       ('logit_rms', 'logit RMS'), ('stem_grad_norm', '||grad W_stem||')):
        out.append(f'**{title}** (columns: residual blocks)\n')
        out.append('| variant | ' + ' | '.join(str(d) for d in depths) + ' |')
        out.append('|---|' + '---|' * len(depths))
        for v in variants:
            out.append(f'| {v} | ' + ' | '.join(_fmt(by[(v, d)][key]) if (v, d) in by else '' for d in depths) + ' |')
        out.append('')
    return '\n'.join(out)


def training_table(rows: Sequence[Dict[str, Any]]) -> str:
    """Markdown: test error (%) after the budget, variants x depth; 'diverged (step N)' where the loss became
    non-finite."""
    depths = sorted({r['blocks'] for r in rows})
    variants = list(dict.fromkeys(r['variant'] for r in rows))
    by = {(r['variant'], r['blocks']): r for r in rows}

    def cell(r):
        if r is None:
            return ''
        if r['diverged']:
            return f"diverged (loss non-finite at step {r['diverged_at_step']})"
        if r['status'] != 'completed':
            return f"unfinished ({r['status']} at step {r['steps']})"
        return f"{r['final_test_error']:.1f} ({r['final_train_loss']:.2f})"
    lines = ['| variant | what | ' + ' | '.join(f'{d} blocks' for d in depths) + ' |',
             '|---|---|' + '---|' * len(depths)]
    for v in variants:
        lines.append(f'| `{v}` | {VARIANTS[v][1]} | ' + ' | '.join(cell(by.get((v, d))) for d in depths) + ' |')
    return '\n'.join(lines) + '\n'


def run_signal(args: argparse.Namespace) -> int:
    import torch
    from ..train.device_data import channel_stats, normalize_uint8
    from .plots import plot_signal
    from .signal_propagation import signal_sweep
    try:
        out = writable_dir(args.out)
        train_split = _load(args, 'train')
        if args.images > len(train_split.labels):
            raise ValueError(f'--images {args.images}: the training split has only {len(train_split.labels):,} '
                             f'images')
    except (FileNotFoundError, ValueError) as e:
        print(f'timm-identity study signal: error: {e}', file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    mean, std = channel_stats(train_split.images)
    x = normalize_uint8(torch.from_numpy(train_split.images[:args.images]), torch.tensor(mean), torch.tensor(std))
    y = torch.from_numpy(train_split.labels[:args.images])
    records = signal_sweep(args.variants, args.blocks_per_stage, x, y, args.widths, args.stem_chs, args.seed)
    files = [write_json(out / 'signal.json', {
        'images': f'CIFAR-10 train[:{args.images}] from {args.data_dir}, normalised with the train set mean/std',
        'widths': args.widths, 'seconds': time.perf_counter() - t0, 'environment': environment(args),
        'records': records})]
    files.append(plot_signal(records, out / 'signal.png'))
    atomic_write_text(out / 'signal_table.md', signal_table(records))
    files.append(out / 'signal_table.md')
    print(signal_table(records))
    print('wrote ' + ', '.join(map(str, files)))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from timm_identity.data.cifar import CifarSplit
    from .plots import plot_training
    from .training_grid import run_grid
    from timm_identity.train.device import resolve_device
    if args.full:
        widths, blocks, steps = PAPER_WIDTHS, args.blocks_per_stage or [9], args.steps or 60_000
        eval_every, test_images, device = args.eval_every or 2_000, None, args.device or 'cuda'
    else:
        widths, blocks, steps = args.widths, args.blocks_per_stage or [1, 3, 6], args.steps or 200
        eval_every, test_images, device = args.eval_every or max(1, steps // 2), args.test_images, args.device or 'auto'
    name = args.name or ('training_full' if args.full else 'training')
    try:
        resolve_device(device)  # a device this machine lacks is an error before any data is read
        train_split, test_split = _load(args, 'train'), _load(args, 'test')
    except (FileNotFoundError, ValueError) as e:
        print(f'timm-identity study train: error: {e}', file=sys.stderr)
        return 2
    if test_images is not None:
        test_split = CifarSplit(test_split.images[:test_images], test_split.labels[:test_images], test_split.classes)
    t0 = time.perf_counter()
    try:
        rows = run_grid(args.variants, blocks, train_split, test_split, Path(args.work_dir), widths, steps,
                        stem_chs=args.stem_chs, seed=args.seed, eval_every=eval_every, log_every=args.log_every,
                        device=device)
    except ValueError as e:  # e.g. --device cuda on a machine without one
        print(f'timm-identity study train: error: {e}', file=sys.stderr)
        return 2
    out = Path(args.out)
    files = [write_json(out / f'{name}.json', {
        'test_set': f'CIFAR-10 test[:{len(test_split.labels)}] (the first images of the official test batch)',
        'widths': list(widths), 'steps': steps, 'seed': args.seed, 'recipe': 'paper',
        'seconds': time.perf_counter() - t0,  # this invocation (finished runs reused from --work-dir take ~0 s)
        'runs_wall_time_s': sum(r['wall_time_s'] for r in rows),  # what the runs took when they ran
        'environment': environment(args), 'rows': rows})]
    files.append(plot_training(rows, out / f'{name}.png'))
    atomic_write_text(out / f'{name}_table.md', training_table(rows))
    files.append(out / f'{name}_table.md')
    print(training_table(rows))
    print('wrote ' + ', '.join(map(str, files)))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    study = subparsers.add_parser(
        'study', help='identity matters, measured: depth x init x normalisation on real CIFAR-10',
        description='Signal propagation at init and short training runs over depth, init (paper / standard / '
                    'zero / Fixup / SkipInit-ReZero gate), batch norm, head and shortcut, on real CIFAR-10.')
    sub = study.add_subparsers(dest='study_command', metavar='PART')
    sub.required = True

    def common(p):
        p.add_argument('--data-dir', required=True,
                       help='the official CIFAR-10 python release: cifar-10-python.tar.gz, cifar-10-batches-py/ '
                            'or a folder holding one')
        p.add_argument('--no-verify-md5', dest='verify_md5', action='store_false',
                       help='do not check the official archive md5 (for rebuilt archives)')
        p.add_argument('--out', default='results/study', help='results folder')
        p.add_argument('--stem-chs', type=positive_int, default=16, help='stem output channels')
        p.add_argument('--seed', type=int, default=0, help='model init (and, for train, data order)')

    fmt = DefaultsHelpFormatter
    sig = sub.add_parser('signal', formatter_class=fmt, help='signal propagation at init (no training)',
                         description='Per-block ||branch||/||stream||, logit RMS and the gradient norm at the stem '
                                     'of freshly built nets on a batch of real CIFAR-10 training images, for every '
                                     'variant and depth. Writes signal.json, signal.png, signal_table.md.')
    common(sig)
    sig.add_argument('--variants', nargs='+', choices=sorted(VARIANTS), default=list(SIGNAL_VARIANTS),
                     metavar='VARIANT',
                     help=f'from: {", ".join(VARIANTS)}')
    sig.add_argument('--blocks-per-stage', type=positive_int, nargs='+', default=[1, 3, 9, 27, 81],
                     help='blocks in each of the 3 stages (3..243 residual blocks)')
    sig.add_argument('--widths', type=positive_int, nargs=3, default=list(REDUCED_WIDTHS), help='stage widths')
    sig.add_argument('--images', type=positive_int, default=128, help='CIFAR-10 training images in the batch')
    sig.set_defaults(func=run_signal)

    tr = sub.add_parser('train', formatter_class=fmt, help='short training runs over variant x depth',
                        description="Train every variant at every depth with the project's trainer and the paper's "
                                    'recipe (SGD momentum 0.9, batch 128, lr 0.05, wd 1e-4 on conv weights), the same '
                                    'steps, data order and seed for all; report the test error after the budget and '
                                    'whether the loss diverged. Default: widths 16/32/64, 1, 3 and 6 blocks per stage, '
                                    '200 steps, the first 2,000 test images (about 45 min on 2 CPU cores). '
                                    '--full: the '
                                    "paper's net (widths 64/128/256, 9 blocks per stage) and full recipe (60k steps, "
                                    'lr x0.1 at 30k and 50k) on the full test set, on a GPU.')
    common(tr)
    tr.add_argument('--variants', nargs='+', choices=sorted(VARIANTS), default=list(TRAIN_VARIANTS), metavar='VARIANT',
                    help=f'from: {", ".join(VARIANTS)}')
    tr.add_argument('--blocks-per-stage', type=positive_int, nargs='+',
                    help='blocks in each of the 3 stages (default 1 3 6; --full: 9)')
    tr.add_argument('--widths', type=positive_int, nargs=3, default=list(REDUCED_WIDTHS),
                    help='stage widths (ignored with --full: 64 128 256)')
    tr.add_argument('--steps', type=positive_int, help='updates per run (default 200; --full: 60000)')
    tr.add_argument('--eval-every', type=positive_int,
                    help='test evaluations (and checkpoints) every N steps (default steps/2; --full: 2000)')
    tr.add_argument('--log-every', type=positive_int, default=25, help='training-loss record every N steps')
    tr.add_argument('--test-images', type=positive_int, default=2000,
                    help='evaluate on the first N official test images (--full: all 10,000)')
    tr.add_argument('--work-dir', default='runs/study',
                    help='run folders (log.jsonl, summary.json, checkpoint): finished runs with the same settings '
                         'are reused, unfinished ones resumed')
    tr.add_argument('--device', help="'auto' (default: cuda if available), 'cpu', 'cuda' (--full default)")
    tr.add_argument('--name', help="file stem of the results (default 'training'; --full: 'training_full')")
    tr.add_argument('--full', action='store_true',
                    help="the paper's net and recipe: widths 64/128/256, 9 blocks per stage, 60k steps, "
                         "full test set, cuda")
    tr.set_defaults(func=run_train)
