"""What the launcher (:mod:`timm_identity.run_script`) adds to timm's scripts when they run as several processes.

Two things, both for timm's unmodified ``train.py`` under ``torchrun``:

1. **DDP on CPU** (:func:`allow_cpu_ddp`). ``train.py`` wraps the model as
   ``DistributedDataParallel(model, device_ids=[device])`` whatever the device; for a CPU module torch refuses
   that (``ValueError: DistributedDataParallel device_ids and output_device arguments only work with
   single-device/multiple-device GPU modules``): a CPU module must be given ``device_ids=None``. The launcher
   wraps ``DistributedDataParallel.__init__`` so that a ``device_ids`` made only of CPU devices, for a module
   whose parameters are all on CPU, is passed on as ``None`` (and ``output_device`` too). That is the whole
   change: any other call, every GPU call included (``device_ids=[cuda:N]``), reaches torch unchanged.
   Gradients are then all-reduced over gloo, the backend timm picks for CPU.

2. **Webdataset shards that timm's reader can split** (:func:`wds_layout_problems`). timm's ``wds/`` reader
   deals shards out to the ``ranks x loader workers`` of a run (shard ``i`` to worker ``i mod n``) and, in a
   distributed run, cuts or repeats each worker's stream to ``ceil(samples / n)`` samples (``with_epoch``).
   So distributed validation counts every image exactly once only when each of those workers holds the same
   number of validation samples; otherwise some shards are read twice and others partly, and the top-1 in
   ``summary.csv`` (and from there in an exported card) is not the split's. A worker that holds no training
   shard at all loops for ever. The launcher checks the layout in ``_info.json`` before train.py starts and
   refuses a run that would do either, naming the fix (``timm-identity shards ... --eval-shards N``, another
   ``-j``, or another process count). train.py validates with ``min(2, workers)`` loader workers per rank in
   distributed wds runs; that rule is read here from train.py's source as of timm 1.0 (the opt-in test
   tests/test_timm_ddp.py runs the real script at ``-j 4``, where another rule would miscount).
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence

import torch

__all__ = ['allow_cpu_ddp', 'wds_layout_problems', 'worker_sample_counts', 'split_lengths',
           'record_launch', 'read_launch_record', 'LAUNCH_RECORD', 'TRAIN_PY_EVAL_WORKERS_CAP']

TRAIN_PY_EVAL_WORKERS_CAP = 2  # train.py: eval_workers = min(2, args.workers) for distributed wds/tfds runs
LAUNCH_RECORD = 'timm_identity_launch.json'  # what the launcher writes into train.py's run folder


def _is_cpu(device: Any) -> bool:
    try:
        return torch.device(device).type == 'cpu'
    except (RuntimeError, TypeError):
        return False


def allow_cpu_ddp() -> None:
    """Let ``DistributedDataParallel(cpu_module, device_ids=[cpu])`` (what timm's train.py does on CPU) work,
    by passing ``device_ids=None`` for it, as torch requires for CPU modules. Any other call is unchanged.
    Idempotent."""
    ddp = torch.nn.parallel.DistributedDataParallel
    if getattr(ddp.__init__, '_timm_identity_cpu_ddp', False):
        return
    original = ddp.__init__

    @functools.wraps(original)
    def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
        if (device_ids and all(_is_cpu(d) for d in device_ids)
                and all(p.device.type == 'cpu' for p in module.parameters())):
            device_ids, output_device = None, None
        original(self, module, device_ids, output_device, *args, **kwargs)

    __init__._timm_identity_cpu_ddp = True  # type: ignore[attr-defined]
    ddp.__init__ = __init__  # type: ignore[method-assign]


def worker_sample_counts(shard_lengths: Sequence[int], num_workers: int) -> List[int]:
    """Samples each of ``num_workers`` global loader workers holds when shard ``i`` goes to worker
    ``i mod num_workers`` (timm's ``ReaderWds._split_by_node_and_worker``)."""
    counts = [0] * num_workers
    for i, n in enumerate(shard_lengths):
        counts[i % num_workers] += int(n)
    return counts


def split_lengths(data_dir: str, split: Optional[str]) -> Optional[List[int]]:
    """The shard lengths of ``split`` as ``data_dir/_info.json`` records them, or None when they cannot be known
    from it (no readable ``_info.json``, the split not in it, e.g. a brace pattern or a remote folder)."""
    if not split:
        return None
    try:
        info = json.loads((Path(data_dir) / '_info.json').read_text())
        lengths = info['splits'][split]['shard_lengths']
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [int(n) for n in lengths] if isinstance(lengths, list) else None


def wds_layout_problems(data_dir: str, train_split: Optional[str], val_split: Optional[str], world_size: int,
                        workers: int, eval_workers: Optional[int] = None) -> List[str]:
    """What makes timm's ``wds/`` reader read the shards in ``data_dir`` wrongly for this run: a training
    worker without shards (it never ends its epoch), ``-j 0`` with several processes (every process then reads
    the same samples), or, when ``world_size > 1``, validation workers holding different sample counts (images
    read twice or not at all). ``eval_workers`` defaults to train.py's ``min(2, workers)``. Empty when the layout
    is fine or cannot be read from ``_info.json`` (:func:`split_lengths`; then nothing was checked)."""
    problems = []
    if world_size > 1 and workers < 1:
        problems.append(f'{world_size} processes over webdataset shards need loader workers (-j 1 or more): with '
                        f'-j 0 timm\'s reader does not split the shards, and every process reads the same samples')
        return problems
    train_workers = world_size * max(1, workers)
    lengths = split_lengths(data_dir, train_split)
    if lengths is not None and len(lengths) < train_workers:
        problems.append(
            f"split '{train_split}' of {data_dir} has {len(lengths)} shards for {world_size} process(es) x "
            f"{max(1, workers)} loader worker(s) = {train_workers}: a worker without a shard never ends its epoch. "
            f"Write it with more shards (timm-identity shards ... --shard-samples N) or use fewer processes / -j")
    lengths = split_lengths(data_dir, val_split)
    if world_size < 2 or lengths is None:
        return problems
    eval_workers = min(TRAIN_PY_EVAL_WORKERS_CAP, workers) if eval_workers is None else eval_workers
    n = world_size * eval_workers
    counts = worker_sample_counts(lengths, n)
    if len(set(counts)) > 1:
        total = sum(lengths)
        divisors = [k for k in range(n, total + 1, n) if total % k == 0]
        fix = (f'rewrite it with `timm-identity shards ... --eval-shards {divisors[0]}` (equal shards, a multiple '
               f'of {n})' if divisors else
               f'no equal split into a multiple of {n} shards exists for {total} samples: use another -j or process '
               f'count, or validate in one process (timm-identity evaluate, or validate.py)')
        problems.append(
            f"distributed validation would not count split '{val_split}' ({total} samples in {len(lengths)} "
            f"shards) exactly once: its {world_size} process(es) x {eval_workers} loader worker(s) would hold "
            f"{min(counts)} to {max(counts)} samples, and timm's reader cuts or repeats each to "
            f"{-(-total // n)}; {fix}")
    return problems


def record_launch(record: dict) -> None:
    """Have process 0 write ``record`` (how the launcher started and checked the run) as ``LAUNCH_RECORD`` into
    the run folder train.py creates, the moment it creates it (``timm.utils.get_outdir``, which train.py calls
    once for its output folder). ``timm-identity export`` reads it beside ``summary.csv``."""
    import timm.utils

    from .atomic_io import atomic_write_text
    _, rank, _ = timm.utils.world_info_from_env()  # the rank torchrun / SLURM / MPI gave this process
    original = timm.utils.get_outdir
    if getattr(original, '_timm_identity_record', False):
        return

    @functools.wraps(original)
    def get_outdir(path, *paths, **kwargs):
        out = original(path, *paths, **kwargs)
        if rank == 0:
            atomic_write_text(os.path.join(out, LAUNCH_RECORD), json.dumps(record, indent=1) + '\n')
        return out

    get_outdir._timm_identity_record = True  # type: ignore[attr-defined]
    timm.utils.get_outdir = get_outdir


def read_launch_record(run_dir: Path) -> Optional[dict]:
    """The launcher's record in a train.py run folder, or None when the run was not started through it."""
    try:
        record = json.loads((Path(run_dir) / LAUNCH_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
