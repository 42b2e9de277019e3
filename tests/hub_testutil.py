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
    """(checkpoint, model, summary path) of a tiny CIFAR-10 model. ``summary``: a train-cifar run folder as the
    trainer writes it (``tmp_path/run``: run.json, log.jsonl with a final test error of 6.5 % at step 60 and the best,
    6.25 %, at step 40, summary.json, and the checkpoint folder of step 60, which is returned); else a bare
    ``tmp_path/ckpt/model.safetensors`` and no summary."""
    model = tiny_model(seed)
    if not summary:
        ckpt = tmp_path / 'ckpt' / 'model.safetensors'
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), str(ckpt))
        return ckpt, model, None
    from timm_identity.train.checkpoint import hub_config_writer, recorded_weights_sha256, save_checkpoint
    from timm_identity.train.config import resolve_config
    from timm_identity.train.run_record import new_run_record, write_run_record
    run = tmp_path / 'run'
    cfg = resolve_config(dict(model='allconv_resnet_cifar', model_kwargs=dict(TINY), steps=60, out_dir=str(run)))
    record = new_run_record(cfg, {'train_sha256': '0' * 64, 'train_images': 50_000, 'test_sha256': '1' * 64,
                                  'test_images': 10_000}, None)
    record['starts'].append({'step': 0, 'argv': ['timm-identity', 'train-cifar', '--steps', '60'], 'device': 'cpu'})
    run.mkdir(parents=True)
    write_run_record(run, record)
    log = [{'step': 20, 'test_error': 9.0, 'wall_time_s': 1200.0},
           {'step': 40, 'test_error': 6.25, 'wall_time_s': 2400.0},
           {'step': 60, 'test_error': 6.5, 'wall_time_s': 3600.0}]
    (run / 'log.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in log))
    from timm_identity.data.cifar import CIFAR10_CLASSES
    ckpt = save_checkpoint(run, 60, model, {'step': 60},
                           hub_config_writer(model, record['run_id'], (0.49, 0.48, 0.45), (0.25, 0.24, 0.26),
                                             CIFAR10_CLASSES, 60))
    summary_path = run / 'summary.json'
    summary_path.write_text(json.dumps({'run_id': record['run_id'], 'status': 'completed', 'checkpoint_step': 60,
                                        'last_checkpoint': str(ckpt),
                                        'checkpoint_sha256': recorded_weights_sha256(ckpt)}))
    return ckpt, model, summary_path
