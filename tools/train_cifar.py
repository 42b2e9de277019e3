#!/usr/bin/env python3
"""Train on CIFAR with the paper's recipe: the same as ``timm-identity train-cifar ARGS``."""
import sys

from timm_identity.cli import main

if __name__ == '__main__':
    sys.exit(main(['train-cifar', *sys.argv[1:]]))
