"""A stand-in for timm's train.py (not in the pip package), copied by tests/test_distributed.py to a folder as
``train.py``: the same command-line shape (``_parse_args`` over ``parser`` / ``config_parser``), the same
distributed set-up (``timm.utils.init_distributed_device``), the same data path (``create_dataset('wds/...')``,
``create_loader``, ``min(2, workers)`` loader workers for distributed validation) and DDP built exactly as
train.py builds it (``ClassificationTask.prepare_distributed(device_ids=[device])``). It trains a few SGD steps,
validates (batch sizes summed over ranks, batch by batch, as train.py reduces its metrics), and writes what the
test checks:
each rank's final weights, rank 0's checkpoint and the validation counts.

``--no-ddp`` skips DDP and training (validation only), so the plain script can also run under torchrun
without the launcher, to show what timm's reader does with a layout the launcher refuses."""
import argparse
import importlib
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import timm
from timm import utils
from timm.data import create_dataset, create_loader
from timm.task import ClassificationTask

config_parser = argparse.ArgumentParser(add_help=False)
config_parser.add_argument('-c', '--config', default='')
parser = argparse.ArgumentParser(description='train.py stand-in')
parser.add_argument('data', nargs='?', metavar='DIR', const=None, help='the data folder, as train.py takes it too')
parser.add_argument('--dataset', default='')
parser.add_argument('--data-dir', default=None)
parser.add_argument('--train-split', default='train')
parser.add_argument('--val-split', default='validation')
parser.add_argument('--model', default='allconv_resnet_cifar')
parser.add_argument('--model-kwargs', default='{}', help='JSON')
parser.add_argument('--num-classes', type=int, default=10)
parser.add_argument('-b', '--batch-size', type=int, default=4)
parser.add_argument('-j', '--workers', type=int, default=2)
parser.add_argument('--steps', type=int, default=3)
parser.add_argument('--lr', type=float, default=0.05)
parser.add_argument('--device', default='cpu')
parser.add_argument('--seed', type=int, default=42)
parser.add_argument('--output', required=True)
parser.add_argument('--no-ddp', action='store_true')
parser.add_argument('--device-modules', nargs='*', default=None)


def _parse_args():
    args_config, remaining = config_parser.parse_known_args()
    args = parser.parse_args(remaining)
    return args, json.dumps(vars(args))


def _train(args, model, device):
    loader = create_loader(
        create_dataset(args.dataset, root=args.data_dir, split=args.train_split, is_training=True,
                       batch_size=args.batch_size, seed=args.seed),
        input_size=(3, 32, 32), batch_size=args.batch_size, is_training=True, no_aug=True,
        num_workers=args.workers, distributed=args.distributed, use_prefetcher=False, device=device,
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    task = ClassificationTask(model, criterion=torch.nn.CrossEntropyLoss(), device=device, verbose=False)
    task.prepare_distributed(device_ids=[device])  # what train.py does, on every device
    ddp = task.get_trainable_module()
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    step = 0
    while step < args.steps:
        for x, y in loader:
            loss = F.cross_entropy(ddp(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == args.steps:
                break
    return type(ddp).__name__


def _validate(args, model, device):
    workers = min(2, args.workers) if args.distributed else args.workers  # train.py's rule for wds
    loader = create_loader(
        create_dataset(args.dataset, root=args.data_dir, split=args.val_split, is_training=False,
                       batch_size=args.batch_size),
        input_size=(3, 32, 32), batch_size=args.batch_size, is_training=False, num_workers=workers,
        distributed=args.distributed, use_prefetcher=False, device=device, crop_pct=1.0,
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    seen = 0
    model.eval()
    with torch.no_grad():
        for x, y in loader:  # a rank with fewer batches than another would hang here, as in train.py
            model(x.to(device))
            n = torch.tensor(float(len(y)))
            if args.distributed:
                torch.distributed.all_reduce(n)
            seen += int(n.item())
    return seen


def main():
    args, _ = _parse_args()
    if args.data and not args.data_dir:  # as train.py
        args.data_dir = args.data
    for module in args.device_modules or ():
        importlib.import_module(module)
    device = utils.init_distributed_device(args)
    torch.manual_seed(args.seed)
    model = timm.create_model(args.model, num_classes=args.num_classes, **json.loads(args.model_kwargs)).to(device)
    wrapper = None if args.no_ddp else _train(args, model, device)
    seen = _validate(args, model, device)
    os.makedirs(args.output, exist_ok=True)
    if args.rank == 0:  # train.py's call that creates its run folder, made by the primary process only (as there:
        utils.get_outdir(args.output, 'run')  # timm's get_outdir is not safe for two processes at once)
    if not args.no_ddp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(args.output, f'rank{args.rank}.safetensors'))
    if args.rank == 0:
        if not args.no_ddp:
            torch.save({'arch': args.model, 'state_dict': model.state_dict()},
                       os.path.join(args.output, 'checkpoint.pth.tar'))
        with open(os.path.join(args.output, 'result.json'), 'w') as f:
            json.dump({'world_size': args.world_size, 'wrapper': wrapper, 'eval_images_counted': seen}, f)
    if args.distributed:
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
