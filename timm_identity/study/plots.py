"""Figures of the study (matplotlib, Agg backend: no display needed), written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter  # noqa: E402

from ..atomic_io import atomic_savefig  # noqa: E402

FLOOR = 1e-9  # where an exact 0 (zero init: every branch is 0) is drawn on a log axis


def _save(fig: plt.Figure, path: str | Path) -> Path:
    if not fig.get_layout_engine():
        fig.tight_layout()
    return atomic_savefig(fig, path, dpi=110)


def _style(variant: str) -> Dict[str, Any]:
    base = variant[:-3] if variant.endswith('_bn') else variant
    colours = {'paper': 'C0', 'standard': 'C3', 'zero': 'C2', 'fixup': 'C1', 'gate': 'C4',
               'linear_head': 'C5', 'proj': 'C6'}
    return dict(color=colours.get(base, 'C7'), ls='--' if variant.endswith('_bn') else '-',
                marker='o', ms=3.5, lw=1.6)


def _same_curves(a: Sequence[Dict[str, Any]], b: Sequence[Dict[str, Any]], keys: Sequence[str], rtol: float) -> bool:
    if [r['blocks'] for r in a] != [r['blocks'] for r in b]:
        return False
    for ra, rb in zip(a, b):
        for key in keys:
            va, vb = ra[key], rb[key]
            if (va is None) != (vb is None) or (va is not None and abs(va - vb) > rtol * max(abs(va), abs(vb))):
                return False
    return True


def plot_signal(records: Sequence[Dict[str, Any]], path: str | Path, rtol: float = 0.1) -> Path:
    """Three log-log panels against the number of residual blocks: median ||branch||/||stream||, logit
    RMS and ||grad W_stem||; one line per variant (dashed: with batch norm). Variants whose three curves agree
    within ``rtol`` everywhere share one line and one legend entry ('zero = fixup = ...'), so that no line
    hides another. Non-finite points are left out (the line stops)."""
    panels = [('branch_ratio_median', 'median over blocks of ||branch|| / ||stream||'),
              ('logit_rms', 'logit RMS (output scale)'),
              ('stem_grad_norm', '||d loss / d W_stem|| (gradient at the first layer)')]
    keys = [k for k, _ in panels]
    curves = {}
    for variant in dict.fromkeys(r['variant'] for r in records):
        curves[variant] = sorted((r for r in records if r['variant'] == variant), key=lambda r: r['blocks'])
    groups: list = []
    for variant, rows in curves.items():
        group = next((g for g in groups if _same_curves(curves[g[0]], rows, keys, rtol)), None)
        if group is None:
            groups.append([variant])
        else:
            group.append(variant)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for ax, (key, title) in zip(axes, panels):
        for i, group in enumerate(groups):
            pts = [(r['blocks'], r[key]) for r in curves[group[0]] if r[key] is not None]
            if key == 'branch_ratio_median':
                pts = [(b, max(v, FLOOR)) for b, v in pts]
            if pts:  # earlier groups on top, later ones with bigger markers: a line that coincides stays visible
                style = {**_style(group[0]), 'marker': 'osD^v<>p'[i % 8], 'ms': 3.5 + 1.2 * i, 'zorder': 20 - i}
                ax.plot(*zip(*pts), label=' ≈ '.join(group), **style)
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('residual blocks (L)')
        ax.set_title(title, fontsize=10)
        ax.grid(True, which='both', alpha=0.3)
    axes[0].axhline(1.0, color='k', lw=0.8, alpha=0.5)
    axes[0].text(0.02, 0.02, f'exactly 0 (branch starts at 0): drawn at {FLOOR:g}', transform=axes[0].transAxes,
                 fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='center right', fontsize=8, title=f'(≈: within {rtol:.0%} everywhere)',
               title_fontsize=7)
    fig.suptitle('At initialisation, on real CIFAR-10 images (solid: no batch norm, dashed: batch norm)', fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    return _save(fig, path)


def plot_training(rows: Sequence[Dict[str, Any]], path: str | Path) -> Path:
    """Top row: training loss against step, one panel per depth; bottom: final test error per variant and
    depth (bars; an 'x' marks a run that diverged)."""
    depths = sorted({r['blocks'] for r in rows})
    variants = list(dict.fromkeys(r['variant'] for r in rows))
    fig = plt.figure(figsize=(max(5 * len(depths), 10), 8.5))  # wide enough for the title with one depth
    grid = fig.add_gridspec(2, len(depths))
    for col, blocks in enumerate(depths):
        ax = fig.add_subplot(grid[0, col])
        for r in (r for r in rows if r['blocks'] == blocks):
            style = {**_style(r['variant']), 'marker': None}
            if r['curve']['step']:
                label = r['variant'] + (' (diverged)' if r['diverged'] else '')
                ax.plot(r['curve']['step'], r['curve']['loss'], label=label, **style)
        ax.set_yscale('log')
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):  # 1.8, not 1.8 x 10^0
            axis(FormatStrFormatter('%.1f'))
        ax.set_title(f'{blocks} residual blocks: training loss', fontsize=10)
        ax.set_xlabel('step')
        ax.grid(True, which='both', alpha=0.3)
        if col == 0:
            ax.legend(fontsize=7, ncol=2)
    ax = fig.add_subplot(grid[1, :])
    width = 0.8 / len(depths)
    for j, blocks in enumerate(depths):
        for i, variant in enumerate(variants):
            row = next((r for r in rows if r['variant'] == variant and r['blocks'] == blocks), None)
            if row is None:
                continue
            xpos = i + (j - (len(depths) - 1) / 2) * width
            if row['diverged']:
                ax.plot(xpos, 90, 'kx', ms=9)
            else:
                ax.bar(xpos, row['final_test_error'], width, color=plt.cm.viridis(j / max(1, len(depths) - 1) * 0.85),
                       label=f'{blocks} blocks' if i == 0 else None)
    ax.axhline(90, color='k', lw=0.6, ls=':')
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(variants, fontsize=9)
    ax.set_ylabel('test error after the budget (%)')
    ax.set_title("test error (x: diverged; dotted line: chance, 90 %)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis='y', alpha=0.3)
    fig.suptitle('Short training runs on real CIFAR-10: same steps, data order and seed for every run', fontsize=11)
    return _save(fig, path)
