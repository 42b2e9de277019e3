#!/usr/bin/env python3
"""Write / verify webdataset shards: the same as ``timm-identity shards ...`` (see ``--help``)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from timm_identity.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(['shards', *sys.argv[1:]]))
