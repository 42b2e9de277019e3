"""Figures for the theory experiments (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic_io import atomic_savefig  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> Path:
    fig.tight_layout()
    return atomic_savefig(fig, path, dpi=130)


def plot_norm_decay(curves: Sequence[dict], path: str | Path) -> Path:
    """Theorem 2.1: ``max_i ||A_i||`` of the constructed optimum against depth ``l`` (log-log), with the
    bound ``2 (sqrt(pi) + sqrt(3 gamma))^2 / l`` (and ``3 gamma / l`` for PSD ``R``).

    Each curve: ``{'gamma', 'label', 'depths', 'max_norm', 'bound', 'psd': bool}``; one panel per ``psd``."""
    kinds = sorted({bool(c['psd']) for c in curves})
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.6), squeeze=False)
    for ax, psd in zip(axes[0], kinds):
        gammas = sorted({c['gamma'] for c in curves if bool(c['psd']) == psd})
        colours = {g: plt.cm.viridis(i / max(1, len(gammas) - 1) * 0.85) for i, g in enumerate(gammas)}
        drawn_bound = set()
        for c in (c for c in curves if bool(c['psd']) == psd):
            style = {'svd': '-o', 'polar': '-s', 'psd': '-o'}[c['method']]
            ax.loglog(c['depths'], c['max_norm'], style, ms=3, lw=1.2, color=colours[c['gamma']],
                      label=f"{c['label']}", alpha=0.9 if c['method'] != 'polar' else 0.6)
            if c['gamma'] not in drawn_bound:
                ax.loglog(c['depths'], c['bound'], '--', lw=1, color=colours[c['gamma']])
                drawn_bound.add(c['gamma'])
        ax.set_xlabel('depth l')
        ax.set_ylabel('max_i ||A_i||  (spectral)')
        ax.set_title('PSD R: A_j = R^(1/l) - I  (dashed: 3γ/l)' if psd
                     else 'general R, det R > 0  (dashed: 2(√π+√(3γ))²/l)', fontsize=10)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle('Theorem 2.1: a global optimum with |||A||| = O(1/l)', fontsize=11)
    return _save(fig, path)


def plot_loss_curves(runs: Sequence[dict], path: str | Path) -> Path:
    """Gradient descent on the population risk: ``f(A) - C_opt`` against step, one panel per depth.

    Each run: ``{'depth', 'label', 'parameterisation', 'init_scale', 'steps', 'excess_risk'}``."""
    depths = sorted({r['depth'] for r in runs})
    cols = min(2, len(depths))
    rows = math.ceil(len(depths) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False, sharey=True)
    labels = sorted({r['label'] for r in runs}, key=lambda s: (not s.startswith('residual'), s))
    colours = {lab: f'C{i}' for i, lab in enumerate(labels)}
    for ax, depth in zip(axes.flat, depths):
        for r in (r for r in runs if r['depth'] == depth):
            y = [max(v, 1e-32) for v in r['excess_risk']]
            from_zero = r['parameterisation'] == 'standard' and r['init_scale'] == 0
            ax.semilogy(r['steps'], y, lw=1.6, color=colours[r['label']], label=r['label'],
                        ls='--' if from_zero else '-', zorder=3 if from_zero else 2)
        ax.set_title(f'depth l = {depth}', fontsize=10)
        ax.set_xlabel('gradient step')
        ax.grid(True, which='both', alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel('f(A) - C_opt')
    for ax in list(axes.flat)[len(depths):]:
        ax.axis('off')
    axes.flat[0].legend(fontsize=7)
    fig.suptitle('Residual (I + A_l)...(I + A_1) vs standard A_l...A_1, gradient descent', fontsize=11)
    return _save(fig, path)


def plot_interpolation(margins: Sequence[float], errors: Sequence[float], title: str, path: str | Path) -> Path:
    """Theorem 3.2 construction: histograms of the Lemma B.1 margins (per moved point) and of the per-input
    error ``max_c |output - label|`` (log10)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    tiny = 1e-18
    axes[0].hist([math.log10(max(m, tiny)) for m in margins], bins=50, color='C0')
    axes[0].set_xlabel('log10 margin  (||α_i||² − b_i)')
    axes[0].set_ylabel('points')
    axes[0].set_title('Lemma B.1 margin of each moved point', fontsize=10)
    axes[1].hist([math.log10(max(e, tiny)) for e in errors], bins=50, color='C1')
    axes[1].set_xlabel(f'log10 max_c |output − one-hot|  (0 shown as {tiny:g})')
    axes[1].set_title('fit on every training input', fontsize=10)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)
