"""``timm-identity shards``: official CIFAR archives / ImageNet folders -> webdataset shards, and verify.

    timm-identity shards cifar ROOT --dataset cifar10 --out DIR [--no-verify-md5]
    timm-identity shards imagenet ROOT --out DIR [--val-labels FILE]
    timm-identity shards verify DIR [--decode]

(``tools/make_shards.py ...`` is the same without installing the package.)
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import sys
import time
from collections.abc import Callable

from ..cli_args import positive_int
from ..distributed import TRAIN_PY_EVAL_WORKERS_CAP
from .errors import DatasetFormatError, ShardLayoutError

_SIZE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$', re.IGNORECASE)
_UNITS = {'': 1, 'b': 1, 'k': 1e3, 'm': 1e6, 'g': 1e9, 't': 1e12}


def parse_size(text: str) -> int:
    """Bytes from ``'256MB'``, ``'1.5GiB'``, ``'100000'`` (k/M/G/T powers of 1000; with ``i``, 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f'not a size: {text!r} (examples: 100000, 256MB, 1GiB)')
    number, unit = float(match.group(1)), match.group(2).lower()
    scale = 1024 ** 'bkmgt'.index(unit[0]) if 'i' in unit else _UNITS[unit[:1]]
    return int(number * scale)


def _setup_logging() -> None:
    """INFO and up to stderr, unless the caller configured logging already."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')


def positive_size(text: str) -> int:
    """argparse type: a size of at least 1 byte (see :func:`parse_size`)."""
    size = parse_size(text)
    if size < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1 byte, got {text!r}')
    return size


def _add_writer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='dataset folder for the shards and _info.json (created; a rerun resumes in it, '
                             'rewriting the shards whose source content changed or that were damaged)')
    size = parser.add_argument_group('shard size (a shard closes at whichever limit comes first)')
    size.add_argument('--shard-samples', type=positive_int, default=None, metavar='N',
                      help='samples per shard (default 1000 when --shard-bytes is not given)')
    size.add_argument('--shard-bytes', type=positive_size, default=None, metavar='SIZE',
                      help='target bytes per shard, e.g. 256MB or 1GiB (planned from file sizes; for CIFAR '
                           'from the raw pixel size, so PNG shards come out smaller)')
    size.add_argument('--eval-shards', type=positive_int, default=None, metavar='N',
                      help='write every split but train as exactly N shards of equal length (its size must be a '
                           'multiple of N); timm\'s distributed validation counts each image exactly once when N '
                           f'is a multiple of processes x min({TRAIN_PY_EVAL_WORKERS_CAP}, -j) loader workers, e.g. '
                           f'16 for CIFAR on 1, 2, 4 or 8 GPUs')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1), metavar='N',
                        help='processes writing shards in parallel (default: min(8, CPUs) = %(default)s)')
    order = parser.add_mutually_exclusive_group()
    order.add_argument('--seed', type=int, default=0,
                       help='seed of the deterministic shuffle before sharding (default %(default)s)')
    order.add_argument('--no-shuffle', action='store_true', help='keep the source order')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def _writer_kwargs(args: argparse.Namespace) -> dict:
    shard_samples = args.shard_samples
    if shard_samples is None and args.shard_bytes is None:
        shard_samples = 1000
    return dict(shard_samples=shard_samples, shard_bytes=args.shard_bytes, workers=args.workers,
                eval_shards=args.eval_shards,
                seed=None if args.no_shuffle else args.seed, progress=not args.no_progress)


def _clear_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected data problems (missing files, bad md5, wrong layout) end the command with one clear line
    on stderr and exit status 1 instead of a traceback."""
    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (DatasetFormatError, FileNotFoundError) as e:
            print(f'timm-identity shards {args.shards_command}: error: {e}', file=sys.stderr)
            return 1
        except ShardLayoutError as e:  # options the data cannot meet (--eval-shards), found before writing
            print(f'timm-identity shards {args.shards_command}: error: {e}', file=sys.stderr)
            return 2
    return wrapped


def _report_written(info: dict, out_dir: str, seconds: float) -> None:
    total = 0
    for split, entry in info['splits'].items():
        total += entry['num_samples']
        print(f'{split}: {entry["num_samples"]} samples in {len(entry["filenames"])} shards '
              f'({entry["filenames"][0]} .. {entry["filenames"][-1]})')
    print(f'wrote {os.path.join(out_dir, "_info.json")} ({info["num_classes"]} classes) in {seconds:.1f} s')


@_clear_errors
def _run_cifar(args: argparse.Namespace) -> int:
    from .cifar import load_cifar
    from .shards import PixelSample, check_dataset_name, check_out_dir, write_dataset

    if args.label_type == 'coarse' and args.dataset != 'cifar100':
        raise ShardLayoutError(f"--label-type coarse: only CIFAR-100 has coarse labels (its 20 superclasses); "
                               f"use --dataset cifar100, or leave --label-type out for {args.dataset}")
    name = args.name if args.name is not None else (
        args.dataset if args.label_type == 'fine' else f'{args.dataset}_{args.label_type}')
    check_dataset_name(name)
    _setup_logging()
    check_out_dir(args.out)  # before reading the source
    start = time.perf_counter()
    splits, classes = {}, None
    for split in args.splits:
        data = load_cifar(args.root, args.dataset, split, args.label_type, verify_md5=not args.no_verify_md5)
        classes = data.classes
        # key = split and position in the official batch files, so every sample traces back to its source
        splits[split] = [PixelSample(f'{split}_{i:05d}', int(label), pixels)
                         for i, (pixels, label) in enumerate(zip(data.images, data.labels))]
    info = write_dataset(
        splits, args.out, name, classes,
        extra_info={'source': {'dataset': args.dataset, 'label_type': args.label_type, 'image_format': 'png'}},
        **_writer_kwargs(args))
    _report_written(info, args.out, time.perf_counter() - start)
    return 0


@_clear_errors
def _run_imagenet(args: argparse.Namespace) -> int:
    from .imagenet import list_imagenet
    from .shards import check_dataset_name, check_out_dir, write_dataset

    check_dataset_name(args.name)
    _setup_logging()
    check_out_dir(args.out)  # before listing the source
    start = time.perf_counter()
    splits, classes = {}, None
    for split in args.splits:
        listing = list_imagenet(args.root, split, val_labels=args.val_labels)
        classes = listing.classes
        splits[split] = listing.files
    info = write_dataset(splits, args.out, args.name, classes,
                         extra_info={'source': {'dataset': 'imagenet', 'image_format': 'jpg (original bytes)'}},
                         **_writer_kwargs(args))
    _report_written(info, args.out, time.perf_counter() - start)
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from .shards import verify_shards

    _setup_logging()
    start = time.perf_counter()
    report = verify_shards(args.dir, args.splits, decode=args.decode, workers=args.workers,
                           progress=not args.no_progress)
    for split, n in report.num_samples.items():
        counts = report.class_counts[split]
        print(f'{split}: {n} samples in {report.num_shards[split]} shards, {len(counts)} classes, '
              f'{min(counts)}..{max(counts)} samples per class')
    for problem in report.problems:
        print(f'PROBLEM: {problem}', file=sys.stderr)
    print(f'{"OK" if report.ok else f"{len(report.problems)} problem(s)"} ({time.perf_counter() - start:.1f} s)')
    return 0 if report.ok else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``shards`` (with ``cifar``, ``imagenet``, ``verify``) to the ``timm-identity`` command."""
    parser = subparsers.add_parser(
        'shards', help='write / verify webdataset shards (CIFAR, ImageNet) for timm --dataset wds/...',
        description='Write webdataset shards <name>-<split>-NNNNNN.tar plus the _info.json that timm\'s wds '
                    'reader uses (train with: train.py --dataset wds/<name> --data-dir DIR), and verify them. '
                    'Shards are written under hidden .partial names and renamed when complete; _info.json comes '
                    'last; a rerun skips the shards a previous run finished from the same samples and source '
                    'content that are still intact (size and sha256 as recorded), and rewrites the others.')
    sub = parser.add_subparsers(dest='shards_command', metavar='SUBCOMMAND')
    sub.required = True

    cifar = sub.add_parser(
        'cifar', help='official CIFAR-10/100 python archive or folder -> PNG shards',
        description='Shard the official CIFAR-10 / CIFAR-100 "python version" (cifar-10-python.tar.gz, '
                    'cifar-10-batches-py/, or a folder holding either) into lossless PNG samples. Keys are '
                    '<split>_<index in the official batch order>.')
    cifar.add_argument('root', help='cifar-*-python.tar.gz, the unpacked folder, or a folder containing either')
    cifar.add_argument('--dataset', choices=('cifar10', 'cifar100'), default='cifar10',
                       help='which release ROOT holds (default %(default)s)')
    cifar.add_argument('--splits', nargs='+', choices=('train', 'test'), default=['train', 'test'])
    cifar.add_argument('--label-type', choices=('fine', 'coarse'), default='fine',
                       help='CIFAR-100 only: fine (100 classes) or coarse (20 superclasses)')
    cifar.add_argument('--name', default=None,
                       help='dataset name in file names and _info.json: ASCII letters, digits and _ (default: the '
                            'dataset, + "_coarse" for coarse labels)')
    cifar.add_argument('--no-verify-md5', action='store_true',
                       help='skip the official archive md5 check (logged; needed for re-packed archives '
                            'such as the project\'s restored CIFAR-10). Unpacked folders are never md5-checked.')
    _add_writer_options(cifar)
    cifar.set_defaults(func=_run_cifar)

    imagenet = sub.add_parser(
        'imagenet', help='ILSVRC-2012 folders -> shards of the original JPEG bytes',
        description='Shard ImageNet kept as ROOT/train/<wnid>/*.JPEG and ROOT/val/ (class folders, or flat\n'
                    'with --val-labels). Class index = sorted wnid order of train/ (timm\'s). JPEG bytes are\n'
                    'stored unchanged; files that are not JPEG/PNG (by magic bytes) are an error. Keys are\n'
                    'the file names without extension.',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='--val-labels formats, one image per line (image name with or without extension):\n'
               '  ILSVRC2012_val_00000001.JPEG n01751748     (wnid)\n'
               '  ILSVRC2012_val_00000001 65                 (0-based index in sorted-wnid order)\n'
               '  Kaggle LOC_val_solution.csv                (header ImageId,PredictionString)\n'
               'The devkit\'s ILSVRC2012_validation_ground_truth.txt (1-based ILSVRC IDs) is not accepted.')
    imagenet.add_argument('root', help='folder holding train/ and val/')
    imagenet.add_argument('--splits', nargs='+', choices=('train', 'val'), default=['train', 'val'])
    imagenet.add_argument('--val-labels', default=None, metavar='FILE', help='labels file for a flat val/')
    imagenet.add_argument('--name', default='imagenet',
                          help='dataset name: ASCII letters, digits and _ (default %(default)s)')
    _add_writer_options(imagenet)
    imagenet.set_defaults(func=_run_imagenet)

    verify = sub.add_parser(
        'verify', help='read every shard back and check it against _info.json (exit 1 on problems)',
        description='Read every shard of DIR back; check sample counts per shard, split and class against '
                    '_info.json, shard sha256s, .cls values, image magic bytes and unique keys. Every problem '
                    'is printed with its file and sample key; the exit status is 1 if there is any.')
    verify.add_argument('dir', help='dataset folder with _info.json')
    verify.add_argument('--splits', nargs='+', default=None, help='only these splits (default: all)')
    verify.add_argument('--decode', action='store_true', help='also decode every image with PIL (slower)')
    verify.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1), metavar='N',
                        help='processes reading shards in parallel (default %(default)s)')
    verify.add_argument('--no-progress', action='store_true', help='no progress bar')
    verify.set_defaults(func=_run_verify)

    return parser
