"""Shared bits of the training tests: a tiny learnable CIFAR-like split and the tiny model's settings."""
import numpy as np

from timm_identity.data.cifar import CifarSplit

TINY_MODEL_KWARGS = dict(depths=(1, 1, 1), widths=(8, 16, 32), stem_chs=8)
TINY_MODEL_ARGS = ['--model-kwargs', 'depths=(1,1,1)', 'widths=(8,16,32)', 'stem_chs=8']
# train-cifar / evaluate flags of a tiny, quiet CPU run of the tiny model
TINY_RUN = ['--device', 'cpu', *TINY_MODEL_ARGS, '--batch-size', '8', '--eval-batch-size', '16',
            '--no-progress', '--no-plot']
CLASSES = [f'class_{i}' for i in range(10)]


def learnable_split(n: int, seed: int) -> CifarSplit:
    """``n`` 32x32 images whose class is visible: a class colour plus noise (so a tiny net learns fast)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % 10
    colours = np.random.default_rng(123).integers(30, 226, size=(10, 3))
    noise = rng.integers(-30, 31, size=(n, 32, 32, 3))
    images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return CifarSplit(images=images, labels=labels, classes=list(CLASSES))


def tiny_overrides(out_dir, **kw):
    """Settings for a tiny, fast, deterministic CPU run of the tiny model."""
    base = dict(
        out_dir=str(out_dir), device='cpu', model_kwargs=dict(TINY_MODEL_KWARGS), batch_size=16, steps=6,
        eval_every=1000, log_every=1, progress=False, plot=False, eval_batch_size=64,
    )
    base.update(kw)
    return base
