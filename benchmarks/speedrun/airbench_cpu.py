#!/usr/bin/env python3
"""airbench94 (Keller Jordan's CIFAR-10 speedrun, ``pip install airbench==0.1.8``) on a CPU, unchanged.

The installed package is run as it is (its net, data order, flip-every-other-epoch, translate, whitening init,
lookahead, label smoothing, lr schedule, test-time augmentation). It assumes a CUDA device in three places (the net,
the data, the timer); this shim replaces exactly those while ``airbench.train94`` runs, and keeps its log lines:

1. ``make_net94`` ends in ``net.half().cuda()``: ``Module.half`` / ``Module.cuda`` do nothing while it builds the
   net, so it stays float32 on the CPU (``--amp bf16`` then runs its forward under CPU bf16 autocast where a GPU
   runs fp16; the loss and the whitening init's eigendecomposition stay float32, as there).
2. ``CifarLoader`` loads ``cifar10/{train,test}.pt`` onto ``cuda:0`` and keeps the images in fp16: a subclass loads
   them onto the CPU and makes them float32 (the same values: uint8 / 255, rounded to fp16 as airbench does).
   The two ``.pt`` files are written from the official CIFAR-10 archives in ``--work-dir`` (airbench would download
   them through torchvision).
3. ``torch.cuda.Event`` (its training timer) becomes a wall clock; ``torch.cuda.synchronize`` does nothing (CPU
   work is synchronous). airbench's own timer therefore counts what it counts on a GPU: the whitening init and the
   training steps, not the per-epoch evaluations.
4. ``print_training_details`` (its per-epoch log line) is wrapped to also keep each line's numbers, which this
   script writes as JSON: the test accuracy after every epoch (single view) and at the end with its TTA.

    python benchmarks/speedrun/airbench_cpu.py --data-dir /data/cifar-10-batches-py --epochs 9.9 --amp bf16 \\
        --out airbench.json
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from timm_identity.report import training_flops_per_image
from timm_identity.train.device import device_name, software_versions


class WallClockEvent:
    """``torch.cuda.Event(enable_timing=True)`` for CPU work: ``record()`` reads the clock; ``elapsed_time`` in ms."""

    def __init__(self, enable_timing: bool = True, **_):
        self.t = None

    def record(self, *_):
        self.t = time.perf_counter()

    def elapsed_time(self, end: 'WallClockEvent') -> float:
        return 1e3 * (end.t - self.t)


def write_airbench_data(data_dir: str, work_dir: Path, verify_md5: bool) -> None:
    """``work_dir/cifar10/{train,test}.pt`` in airbench's own format (uint8 NHWC images, int64 labels, classes)."""
    from timm_identity.data.cifar import load_cifar
    folder = work_dir / 'cifar10'
    folder.mkdir(parents=True, exist_ok=True)
    for split in ('train', 'test'):
        data = load_cifar(data_dir, 'cifar10', split, verify_md5=verify_md5)
        tmp = folder / f'.{split}.pt.tmp'
        torch.save({'images': torch.from_numpy(data.images), 'labels': torch.from_numpy(data.labels),
                    'classes': list(data.classes)}, tmp)
        os.replace(tmp, folder / f'{split}.pt')


@contextlib.contextmanager
def airbench_on_cpu(records: list, amp: str):
    """While open: airbench's CUDA assumptions replaced as the module docstring lists; each log line's numbers
    appended to ``records``; with ``amp='bf16'`` the net's forward runs under CPU bf16 autocast."""
    import airbench.lib_airbench94 as lib94
    import airbench.utils as utils

    class CpuCifarLoader(utils.CifarLoader):
        def __init__(self, path, *args, gpu='cpu', **kwargs):
            super().__init__(path, *args, gpu=gpu, **kwargs)
            self.images = self.images.float()

    def make_net_on_cpu(*args, **kwargs):
        with mock.patch.object(nn.Module, 'half', lambda self: self), \
                mock.patch.object(nn.Module, 'cuda', lambda self, *a, **k: self):
            net = lib94.make_net94(*args, **kwargs)
        if amp == 'bf16':  # the forward only, as fp16 on a GPU: the whitening init's eigh stays float32
            forward = torch.autocast('cpu', dtype=torch.bfloat16)(net.forward)
            net.forward = lambda x: forward(x).float()
        return net

    original_print = utils.print_training_details

    def print_and_keep(variables, is_final_entry):
        original_print(variables, is_final_entry)
        records.append({k: variables.get(k) for k in ('epoch', 'current_steps', 'batch_size', 'train_loss',
                                                      'train_acc', 'val_acc', 'tta_val_acc', 'total_time_seconds')})

    with mock.patch.object(utils, 'CifarLoader', CpuCifarLoader), \
            mock.patch.object(lib94, 'CifarLoader', CpuCifarLoader), \
            mock.patch.object(utils, 'print_training_details', print_and_keep), \
            mock.patch.object(torch.cuda, 'Event', WallClockEvent), \
            mock.patch.object(torch.cuda, 'synchronize', lambda *a, **k: None):
        yield make_net_on_cpu


def run(epochs: float, amp: str, seed: int) -> dict:
    """Train airbench94 for ``epochs`` (its schedule scaled to them) in the current folder; its numbers."""
    import airbench.lib_airbench94 as lib94
    torch.manual_seed(seed)
    records: list = []
    with airbench_on_cpu(records, amp) as make_net:
        flops_per_image = training_flops_per_image(make_net(), (3, 32, 32))
        torch.manual_seed(seed)
        loader = lib94.CifarLoader('cifar10', train=True, batch_size=lib94.hyp['opt']['batch_size'],
                                   aug=lib94.hyp['aug'], altflip=True)
        model = lib94.train94(train_loader=loader, epochs=epochs, make_net=make_net, run=0)
    per_epoch = [r for r in records if isinstance(r['epoch'], int)]
    final = records[-1]
    return {
        'method': 'airbench94', 'airbench_version': importlib.metadata.version('airbench'), 'epochs': epochs,
        'amp': amp, 'seed': seed,
        'batch_size': lib94.hyp['opt']['batch_size'], 'steps': per_epoch[-1]['current_steps'],
        'images': per_epoch[-1]['current_steps'] * lib94.hyp['opt']['batch_size'],
        'train_time_s': per_epoch[-1]['total_time_seconds'],  # whitening init + training steps
        'tta_eval_time_s': final['total_time_seconds'] - per_epoch[-1]['total_time_seconds'],
        'test_acc': per_epoch[-1]['val_acc'], 'test_acc_tta': final['tta_val_acc'],
        'curve': [{'images': r['current_steps'] * r['batch_size'], 'train_time_s': r['total_time_seconds'],
                   'train_loss': r['train_loss'], 'test_acc': r['val_acc']} for r in per_epoch],
        'num_params': sum(p.numel() for p in model.parameters()),
        'train_flops_per_image': flops_per_image,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', required=True, help='official CIFAR-10 python release (archive or folder)')
    p.add_argument('--no-verify-md5', dest='verify_md5', action='store_false')
    p.add_argument('--epochs', type=float, default=9.9, help="airbench94's schedule length (its default 9.9)")
    p.add_argument('--amp', choices=('none', 'bf16'), default='none', help='bf16: CPU bf16 autocast')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--work-dir', default='runs/airbench-cpu', help="airbench's data folder (its cifar10/*.pt)")
    p.add_argument('--out', required=True, help='result JSON')
    args = p.parse_args(argv)
    if args.epochs <= 0:
        p.error(f'--epochs must be positive, got {args.epochs}')
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    write_airbench_data(args.data_dir, work, args.verify_md5)
    out = Path(args.out).resolve()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        result = run(args.epochs, args.amp, args.seed)
    finally:
        os.chdir(cwd)
    result.update(device=device_name(torch.device('cpu')), threads=torch.get_num_threads(),
                  versions=software_versions(), argv=sys.argv)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + '.tmp')
    tmp.write_text(json.dumps(result, indent=1) + '\n')
    os.replace(tmp, out)
    print(f"airbench94 {args.epochs} epochs: {100 * result['test_acc']:.2f} % single view, "
          f"{100 * result['test_acc_tta']:.2f} % TTA, {result['train_time_s'] / 60:.1f} min training")
    return 0


if __name__ == '__main__':
    sys.exit(main())
