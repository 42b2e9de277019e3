"""Short training runs over variant x depth, all with the same recipe, steps, data order and seed.

Each run is one call of the project's own trainer (:func:`timm_identity.train.cifar_trainer.train`): the
paper's recipe (SGD momentum 0.9, batch 128, lr 0.05, weight decay 1e-4 on conv weights, standard
augmentation), cut to ``steps`` updates, on data held on the device. Its run folder (``log.jsonl``,
``summary.json``, the newest checkpoint, written at every evaluation) lands in
``work_dir/<variant>-<blocks>blocks``. A run whose loss becomes non-finite is stopped by the trainer and
recorded as diverged (with the step). A rerun reuses a finished run whose settings are the same and resumes
an unfinished one from its checkpoint (the trainer's exact resume), so an interrupted grid continues where
it stopped; a run folder with other settings is trained again from the start.
"""
from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ..integrity import DamagedFileError
from ..train.cifar_trainer import NonFiniteLossError, train
from ..train.run_record import RunRecordError, log_records, read_run_record
from .variants import model_kwargs

__all__ = ['run_settings', 'run_grid', 'grid_row']


def run_settings(variant: str, blocks_per_stage: int, widths: Sequence[int], stem_chs: int, steps: int,
                 seed: int, eval_every: int, log_every: int, device: str, recipe: str = 'paper',
                 **recipe_overrides: Any) -> Dict[str, Any]:
    """The trainer overrides of one run (everything but the output folder)."""
    return dict(
        recipe=recipe, model='allconv_resnet_cifar',
        model_kwargs=model_kwargs(variant, blocks_per_stage, widths, stem_chs),
        steps=steps, seed=seed, eval_every=eval_every, log_every=log_every, device=device,
        checkpoint_every=eval_every, keep_checkpoints=1, progress=False, plot=False, **recipe_overrides)


# settings that do not change what a run computes
_NOT_COMPUTED = ('progress', 'plot', 'checkpoint_every', 'keep_checkpoints')


def _same_settings(run_dir: Path, settings: Dict[str, Any]) -> bool:
    """Whether the run in ``run_dir`` (its record) was made with ``settings``."""
    try:
        record = read_run_record(run_dir)
    except RunRecordError:
        return False
    cfg = json.loads(json.dumps(record['config'])) if record else {}
    wanted = json.loads(json.dumps(settings))
    return bool(record) and all(cfg.get(k) == v for k, v in wanted.items() if k not in _NOT_COMPUTED)


def _resumable(run_dir: Path, settings: Dict[str, Any]) -> bool:
    """An unfinished run of the same settings with a checkpoint to continue from."""
    return (run_dir / 'checkpoints' / 'latest').is_file() and _same_settings(run_dir, settings)


def _first_nonfinite_step(summary: Dict[str, Any]) -> Optional[int]:
    """The update whose loss was first non-finite, from the trainer's message ('... at step N ...'); else
    the last logged step (the trainer saw it by then)."""
    match = re.search(r'at step (\d+)', summary.get('message', ''))
    return int(match.group(1)) if match else summary['steps']


def grid_row(variant: str, blocks: int, summary: Dict[str, Any], run_dir: Path) -> Dict[str, Any]:
    """One table row (and the curves) from a finished run's ``summary.json`` and ``log.jsonl``."""
    records = log_records(run_dir)
    diverged = summary['status'] == 'nonfinite_loss'
    return {
        'variant': variant, 'blocks': blocks, 'status': summary['status'], 'diverged': diverged,
        'diverged_at_step': _first_nonfinite_step(summary) if diverged else None,
        'steps': summary['steps'], 'target_steps': read_run_record(run_dir)['config']['steps'],
        'final_test_error': None if diverged else summary['final_test_error'],
        'best_test_error': summary['best_test_error'],
        'final_train_loss': records[-1]['loss'] if records else None,
        'test_images': read_run_record(run_dir)['data']['test_images'], 'wall_time_s': summary['wall_time_s'],
        'message': summary.get('message', ''),
        'curve': {'step': [r['step'] for r in records], 'loss': [r['loss'] for r in records],
                  'eval_step': [r['step'] for r in records if r.get('test_error') is not None],
                  'test_error': [r['test_error'] for r in records if r.get('test_error') is not None]},
    }


def run_grid(
        variants: Iterable[str],
        blocks_per_stage: Iterable[int],
        train_split,
        test_split,
        work_dir: Path,
        widths: Sequence[int],
        steps: int,
        stem_chs: int = 16,
        seed: int = 0,
        eval_every: Optional[int] = None,
        log_every: int = 25,
        device: str = 'auto',
        recipe: str = 'paper',
        recipe_overrides: Optional[Dict[str, Any]] = None,
        progress: bool = True,
) -> List[Dict[str, Any]]:
    """Train every (variant, depth) and return one :func:`grid_row` each, in order."""
    from tqdm import tqdm
    work_dir = Path(work_dir)
    configs = [(v, n) for n in blocks_per_stage for v in variants]
    rows = []
    bar = tqdm(configs, desc='study runs', unit='run', disable=not progress, dynamic_ncols=True)
    for variant, n in bar:
        blocks = n * len(widths)
        bar.set_postfix_str(f'{variant}, {blocks} blocks')
        settings = run_settings(variant, n, widths, stem_chs, steps, seed, eval_every or steps,
                                min(log_every, steps), device, recipe, **(recipe_overrides or {}))
        run_dir = work_dir / f'{variant}-{blocks}blocks'
        summary_path = run_dir / 'summary.json'
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        if not (summary and summary.get('status') in ('completed', 'nonfinite_loss')
                and _same_settings(run_dir, settings)):
            resume = _resumable(run_dir, settings)
            if not resume and run_dir.exists():  # a run of other settings, or one with nothing to resume from
                shutil.rmtree(run_dir)
            try:
                try:
                    summary = train({**settings, 'out_dir': str(run_dir), 'resume': str(run_dir) if resume else None},
                                    train_split=train_split, test_split=test_split)
                except (DamagedFileError, FileNotFoundError) as e:
                    if not resume:
                        raise
                    warnings.warn(f'cannot resume {run_dir} ({e}); training it again from the start')
                    shutil.rmtree(run_dir)
                    summary = train({**settings, 'out_dir': str(run_dir)}, train_split=train_split,
                                    test_split=test_split)
            except NonFiniteLossError:
                summary = json.loads(summary_path.read_text())
        rows.append(grid_row(variant, blocks, summary, run_dir))
    return rows
