"""``curves.png`` of a ``train-cifar`` run."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

from ..atomic_io import atomic_savefig

__all__ = ['plot_curves']


def plot_curves(records: Sequence[Dict[str, Any]], path: Path, title: str = '') -> None:
    """PNG of the training loss and lr, and of the train / test error, against the step."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = [r['step'] for r in records]
    ax_loss.plot(steps, [r['loss'] for r in records], label='train loss')
    ax_loss.set_xlabel('step')
    ax_loss.set_ylabel('loss')
    ax_loss.set_yscale('log')
    ax_lr = ax_loss.twinx()
    ax_lr.plot(steps, [r['lr'] for r in records], color='tab:gray', linestyle='--', label='lr')
    ax_lr.set_ylabel('lr')
    ax_lr.set_yscale('log')
    ax_loss.legend(loc='upper right')
    ax_err.plot(steps, [r['train_error'] for r in records], label='train error (augmented batches)')
    evals = [r for r in records if r.get('test_error') is not None]
    if evals:
        ax_err.plot([r['step'] for r in evals], [r['test_error'] for r in evals], marker='o', label='test error')
    ax_err.set_xlabel('step')
    ax_err.set_ylabel('top-1 error (%)')
    ax_err.legend()
    ax_err.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
