#!/usr/bin/env python3
"""Images/s of train-cifar's training step (device augmentation + forward + loss + backward + SGD step).

The step is the trainer's own (``train_step``): ``DeviceCifarTrain.next_batch`` (uint8 data on the device,
pad/crop/flip, normalisation), the model from ``timm.create_model``, the optimizer and scheduler from the paper recipe
(``build_optimizer`` / ``build_scheduler``), bf16 autocast / channels_last / torch.compile as in
``train-cifar``. Data: random uint8 images of CIFAR's shape (the speed does not depend on the pixels).
No host synchronisation inside the timed loop; one ``synchronize`` before and after it.

    python benchmarks/train_step.py --device cpu --batch-size 32
    python benchmarks/train_step.py --device cuda --batch-size 128 512 --amp bf16 --channels-last --compile

Prints one JSON line per batch size (and appends them to ``--output`` if given).
"""
import argparse
import json
import sys
import time

import numpy as np
import torch

import timm
import timm_identity  # noqa: F401
from timm_identity.model_kwargs import ParseModelKwargs
from timm_identity.train.device import (configure_backend, device_name, resolve_device, software_versions,
                                       synchronize)
from timm_identity.train.step import build_optimizer, build_scheduler, train_step
from timm_identity.train.device_data import DeviceCifarTrain
from timm_identity.train.recipes import get_recipe

# forward + backward FLOPs of one 32x32 training image of allconv_resnet_cifar (11.8 GFLOP)
PAPER_MODEL_TRAIN_FLOPS = 11.8e9


def bench(args, batch_size, device):
    torch.manual_seed(0)
    recipe = {**get_recipe(args.recipe), 'batch_size': batch_size}
    model = timm.create_model(args.model, num_classes=10, **args.model_kwargs).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe)
    rng = np.random.default_rng(0)
    n = max(args.num_images, batch_size)
    data = DeviceCifarTrain(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n),
                            batch_size, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), device, seed=1,
                            channels_last=args.channels_last)
    step_model = torch.compile(model, mode=args.compile_mode) if args.compile else model
    model.train()

    def step(t):  # the trainer's own step: its lr schedule, data, and train_step with the recipe's smoothing
        scheduler.step_update(t)
        x, y = data.next_batch()
        return train_step(step_model, optimizer, x, y, device, args.amp, recipe['label_smoothing'])[0]

    t0 = time.perf_counter()
    for t in range(args.warmup):
        loss = step(t)
    synchronize(device)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in range(args.warmup, args.warmup + args.iters):
        loss = step(t)
    synchronize(device)
    elapsed = time.perf_counter() - t0
    assert torch.isfinite(loss).item()
    ips = batch_size * args.iters / elapsed
    result = {
        'model': args.model, 'model_kwargs': args.model_kwargs, 'batch_size': batch_size, 'device': str(device),
        'device_name': device_name(device),
        'torch_threads': torch.get_num_threads(), 'amp': args.amp, 'channels_last': args.channels_last,
        'compile': args.compile, 'compile_mode': args.compile_mode, 'recipe': args.recipe, 'warmup_steps': args.warmup,
        'timed_steps': args.iters, 'warmup_s': round(warmup_s, 3), 'timed_s': round(elapsed, 3),
        'ms_per_step': round(1000 * elapsed / args.iters, 2), 'images_per_s': round(ips, 1),
    }
    if args.model == 'allconv_resnet_cifar' and not args.model_kwargs:
        result['tflops_per_s'] = round(ips * PAPER_MODEL_TRAIN_FLOPS / 1e12, 3)
        if args.peak_tflops:
            result['mfu'] = round(result['tflops_per_s'] / args.peak_tflops, 4)
    result['versions'] = software_versions()
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='auto')
    p.add_argument('--batch-size', type=int, nargs='+', default=[32])
    p.add_argument('--model', default='allconv_resnet_cifar')
    p.add_argument('--recipe', default='paper', help='train-cifar recipe for the optimizer, schedule and loss')
    p.add_argument('--model-kwargs', nargs='*', default={}, action=ParseModelKwargs, metavar='KEY=VALUE')
    p.add_argument('--amp', choices=('none', 'bf16'), default='none')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--compile', action='store_true')
    p.add_argument('--compile-mode', default=None)
    p.add_argument('--warmup', type=int, default=3, help='untimed steps first (compile happens here)')
    p.add_argument('--iters', type=int, default=10, help='timed steps')
    p.add_argument('--num-images', type=int, default=4096, help='size of the synthetic training set on the device')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    p.add_argument('--peak-tflops', type=float, default=None, help='for MFU, e.g. 800 (H100 bf16 measured)')
    p.add_argument('--output', help='append the JSON lines to this file')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    configure_backend(device)
    for bs in args.batch_size:
        result = bench(args, bs, device)
        result['argv'] = ['benchmarks/train_step.py', *(argv if argv is not None else sys.argv[1:])]
        line = json.dumps(result)
        print(line, flush=True)
        if args.output:
            with open(args.output, 'a') as f:
                f.write(line + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
