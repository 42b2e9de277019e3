#!/usr/bin/env python3
"""Write the CIFAR-10 test-image sample that ships with the package (timm_identity/data/samples/).

    python tools/make_demo_sample.py --data-dir /data/cifar-10-batches-py [--no-verify-md5]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from timm_identity.data.cifar import load_cifar
from timm_identity.data.sample_images import select_sample, write_cifar10_sample


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--data-dir', required=True, help='official CIFAR-10 python release (archive or folder)')
    p.add_argument('--no-verify-md5', dest='verify_md5', action='store_false')
    p.add_argument('--per-class', type=int, default=10)
    p.add_argument('--out', default=str(Path(__file__).resolve().parents[1] / 'timm_identity' / 'data' / 'samples'))
    args = p.parse_args(argv)
    test = load_cifar(args.data_dir, 'cifar10', 'test', verify_md5=args.verify_md5)
    indices = select_sample(np.asarray(test.labels), args.per_class)
    for path in write_cifar10_sample(test.images, np.asarray(test.labels), test.classes, indices, args.out):
        print(f'{path}: {path.stat().st_size:,} bytes')
    return 0


if __name__ == '__main__':
    sys.exit(main())
