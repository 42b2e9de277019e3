#!/usr/bin/env python3
"""Fine-tune a pretrained timm-identity model on another labelled set; see --help.

The logic lives in ``timm_identity.hub.finetune`` (tested there); this is the runnable entry point.
"""
import sys

from timm_identity.hub.finetune import main

if __name__ == '__main__':
    sys.exit(main())
