"""Shared helpers of the hub tests: a tiny model, its checkpoint, and a minimal MODEL_CARD.md."""
import json
from pathlib import Path

import timm
import timm_identity  # noqa: F401  (registers the models)
from safetensors.torch import save_file

TINY = dict(depths=(1, 1, 1), widths=(8, 16, 32), stem_chs=8)

# stands in for the repository's MODEL_CARD.md (written separately): front matter + placeholders
MODEL_CARD_TEMPLATE = """---
license: apache-2.0
tags:
- residual-networks
---
{{ model_details }}

## About these models

`{{ architecture }}` follows Section 4 of the paper; this one was trained on {{ dataset }}
({{ num_classes }} classes, {{ num_params }} trainable parameters, weights in {{ weights_dtype }}).

```python
braces_in_code = {"stay": "as written"}
```
"""

# summary.csv exactly as timm's train.py (commit aa4b5850) wrote it: `train.py --device-modules timm_identity
# -c configs/cifar10_timm_train.yaml --epochs 2 ...` on tiny CIFAR shards from our shard tool, then the same
# with `--epochs 3 --resume .../last.pth.tar` into the same --output/--experiment (see
# tests/test_train_timm_trainpy.py, which reruns this when TIMM_TRAIN_PY is set): the second start writes its
# header again.
RESUMED_SUMMARY_CSV = (
    'epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\r\n'
    '0,2.3044582843780517,2.29139404296875,0.0,45.0,0.05\r\n'
    '1,2.2924563884735107,2.2668339252471923,10.0,70.0,0.05\r\n'
    'epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\r\n'
    '2,2.2728057861328126,2.2401144027709963,20.0,70.0,0.05\r\n')


def tiny_model(seed: int = 0, **kwargs):
    import torch
    torch.manual_seed(seed)
    return timm.create_model('allconv_resnet_cifar', **{**TINY, **kwargs}).eval()


def write_model_card(tmp_path: Path) -> Path:
    path = tmp_path / 'MODEL_CARD.md'
    path.write_text(MODEL_CARD_TEMPLATE)
    return path


def tiny_checkpoint(tmp_path: Path, seed: int = 0, summary: bool = True):
    """(checkpoint path, model, summary path) of a tiny CIFAR-10 model as our trainer would write it."""
    model = tiny_model(seed)
    ckpt = tmp_path / 'ckpt' / 'model.safetensors'
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(ckpt))
    summary_path = None
    if summary:
        summary_path = tmp_path / 'ckpt' / 'summary.json'
        summary_path.write_text(json.dumps(dict(final_test_error=6.5, best_test_error=6.25, steps=60000,
                                                wall_time_s=3600.0, device='cpu')))
    return ckpt, model, summary_path
