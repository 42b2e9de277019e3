"""timm's own validate.py, benchmark.py, inference.py and train.py on our models, through our launcher
(``python -m timm_identity.run_script SCRIPT ARGS``), on tiny data made by our tools, on CPU.

Opt-in: set TIMM_SRC to a timm source checkout (the scripts are not in timm's pip package, and CI cannot
fetch them). tests/test_run_script.py checks the launcher itself with a stand-in script always.

    TIMM_SRC=/path/to/pytorch-image-models python -m pytest -q tests/test_timm_scripts.py

What must hold: plain ``python validate.py`` does not know our models (why the launcher exists); through the
launcher, validate.py on our CIFAR shards gives the same top-1 / top-5 / loss as ``timm-identity evaluate``
on the official archive, for a train-cifar checkpoint (``local-dir:``) and for a checkpoint that timm's
train.py wrote, and for a fine-tune to CIFAR-100's superclasses (which also reloads offline through ``hf-hub:``);
train.py --pretrained fine-tunes from a Hub-form folder with a new head; benchmark.py reports
our model's parameter count; inference.py predicts what the checkpoint's model predicts in-process (inference.py
needs pandas, which is not a dependency of ours: skipped without it).
"""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from timm_identity.cli import main as cli_main
from timm_identity.data.testing import make_tiny_cifar, make_tiny_imagenet

from train_helpers import TINY_MODEL_ARGS, TINY_MODEL_KWARGS

REPO = Path(__file__).resolve().parents[1]
TIMM_SRC = Path(os.environ.get('TIMM_SRC', '') or '/nonexistent')

pytestmark = pytest.mark.skipif(
    not (TIMM_SRC / 'validate.py').is_file(),
    reason='TIMM_SRC is not set to a timm source checkout (git clone https://github.com/huggingface/pytorch-image-models)')

LAUNCHER = ['-m', 'timm_identity.run_script']
MODEL_KWARGS = ['--model-kwargs', *TINY_MODEL_ARGS[1:]]


def _run(args, cwd, ok=True):
    env = {**os.environ, 'OMP_NUM_THREADS': '2', 'PYTHONUNBUFFERED': '1'}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    if ok:
        assert proc.returncode == 0, out[-4000:]
    return proc, out


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Tiny official-format CIFAR-10, its shards (our shard tool), and a 4-step train-cifar checkpoint."""
    root = tmp_path_factory.mktemp('timm_scripts')
    tiny = make_tiny_cifar(root / 'cifar', num_train=64, num_test=40)
    shards = root / 'shards'
    assert cli_main(['shards', 'cifar', tiny.folder, '--out', str(shards), '--shard-samples', '20',
                     '--no-progress', '--workers', '1']) == 0
    run = root / 'run'
    assert cli_main(['train-cifar', '--data-dir', tiny.folder, '--no-verify-md5', '--out-dir', str(run),
                     '--steps', '4', '--batch-size', '16', '--device', 'cpu', '--no-progress',
                     *TINY_MODEL_ARGS]) == 0
    ckpt = run / 'checkpoints' / (run / 'checkpoints' / 'latest').read_text().strip()
    return dict(root=root, cifar=tiny.folder, shards=shards, ckpt=ckpt)


def _results_row(path):
    """The one row of a results file that validate.py / benchmark.py write (CSV by default)."""
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 1, rows
    return {k: v if k in ('model', 'interpolation') else float(v) for k, v in rows[0].items()}


def _evaluate(source, cifar, out, *extra):
    assert cli_main(['evaluate', str(source), '--data-dir', cifar, '--no-verify-md5', '--device', 'cpu',
                     '--output', str(out), *extra]) == 0
    return json.loads(out.read_text())


def _validate(model_args, data, tmp):
    """validate.py on the test shards in one batch; its results file and the batch loss it prints."""
    results = tmp / 'validate.csv'
    _, out = _run([*LAUNCHER, str(TIMM_SRC / 'validate.py'), '--data-dir', str(data['shards']),
                   '--dataset', 'wds/cifar10', '--split', 'test', '--device', 'cpu', '-b', '64', '-j', '1',
                   '--results-file', str(results), *model_args], cwd=tmp)
    loss = float(re.search(r'Loss:\s+([\d.]+)', out).group(1))
    return _results_row(results), loss


def test_plain_validate_py_does_not_know_our_models(data, tmp_path):
    proc, out = _run([str(TIMM_SRC / 'validate.py'), '--data-dir', str(data['shards']), '--dataset', 'wds/cifar10',
                      '--split', 'test', '--device', 'cpu', '--model', 'allconv_resnet_cifar'], tmp_path, ok=False)
    assert proc.returncode != 0 and 'Unknown model' in out


def test_validate_py_matches_evaluate_for_a_train_cifar_checkpoint(data, tmp_path):
    # the checkpoint folder is a Hub-form folder: its config.json carries the model args and mean/std
    got, loss = _validate(['--model', f"local-dir:{data['ckpt']}", '--pretrained'], data, tmp_path)
    ref = _evaluate(data['ckpt'], data['cifar'], tmp_path / 'evaluate.json')
    assert ref['num_images'] == 40
    assert (got['top1'], got['top5']) == (ref['top1'], ref['top5'])
    assert abs(loss - ref['loss']) < 1e-3  # validate.py prints 4 decimals


def test_train_py_through_the_launcher_then_validate_py(data, tmp_path):
    # train.py needs no --device-modules under the launcher
    _run([*LAUNCHER, str(TIMM_SRC / 'train.py'), '-c', str(REPO / 'configs' / 'cifar10_timm_train.yaml'),
          '--data-dir', str(data['shards']), '--device', 'cpu', *MODEL_KWARGS, '--epochs', '1', '-b', '16',
          '-j', '1', '--no-prefetcher', '--output', str(tmp_path / 'out'), '--experiment', 'tiny'], cwd=tmp_path)
    ckpt = tmp_path / 'out' / 'tiny' / 'last.pth.tar'
    # the preprocessing of the config, given to validate.py as arguments (it has no -c)
    prep = ['--mean', '0.4914', '0.4822', '0.4465', '--std', '0.2470', '0.2435', '0.2616', '--crop-pct', '1.0',
            '--img-size', '32', '--interpolation', 'bilinear']
    got, loss = _validate(['--model', 'allconv_resnet_cifar', *MODEL_KWARGS, '--num-classes', '10',
                           '--checkpoint', str(ckpt), *prep], data, tmp_path)
    # the same weights through our own reader of the official archive
    from safetensors.torch import save_file
    state = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    save_file(state, str(tmp_path / 'weights.safetensors'))
    ref = _evaluate(tmp_path / 'weights.safetensors', data['cifar'], tmp_path / 'evaluate.json',
                    '--model', 'allconv_resnet_cifar', *MODEL_KWARGS,
                    '--mean', '0.4914', '0.4822', '0.4465', '--std', '0.2470', '0.2435', '0.2616')
    assert (got['top1'], got['top5']) == (ref['top1'], ref['top5'])
    assert abs(loss - ref['loss']) < 1e-3


def test_train_py_fine_tunes_from_pretrained_weights(data, tmp_path):
    """The documented fine-tuning path on data of any kind: train.py --pretrained from a Hub-form folder, a new
    trainable head for other classes (--num-classes, head=linear). With a vanishing lr (train.py reads lr 0 as "not
    given") the saved backbone must be the source's, which shows that train.py started from those weights and not
    from a fresh init."""
    from safetensors.torch import load_file
    _run([*LAUNCHER, str(TIMM_SRC / 'train.py'), '-c', str(REPO / 'configs' / 'cifar10_timm_train.yaml'),
          '--data-dir', str(data['shards']), '--device', 'cpu', '--model', f"local-dir:{data['ckpt']}",
          '--pretrained', '--num-classes', '20', '--model-kwargs', 'head=linear', '--lr', '1e-12',
          '--weight-decay', '0',
          '--epochs', '1', '-b', '16', '-j', '1', '--no-prefetcher', '--output', str(tmp_path / 'out'),
          '--experiment', 'ft'], cwd=tmp_path)
    state = torch.load(tmp_path / 'out' / 'ft' / 'last.pth.tar', map_location='cpu', weights_only=False)['state_dict']
    source = load_file(str(data['ckpt'] / 'model.safetensors'))
    backbone = [k for k in source if not k.startswith('fc.')]
    assert backbone and all(torch.allclose(state[k], source[k], rtol=0, atol=1e-7) for k in backbone)
    assert state['fc.weight'].shape[0] == 20 and state['fc.bias'].shape == (20,)


def test_fine_tuned_export_end_to_end(data, tmp_path):
    """A fine-tune to CIFAR-100's 20 superclasses (train-cifar --init-from a CIFAR-10 checkpoint) exported with its
    base model in the card, into a temporary HF cache: it reloads offline through hf-hub: as through local-dir:, and
    validate.py on coarse-label shards gives what `timm-identity evaluate --label-type coarse` gives."""
    from huggingface_hub import ModelCard
    tiny = make_tiny_cifar(tmp_path / 'c100', dataset='cifar100', num_train=64, num_test=40)
    shards = tmp_path / 'c100_shards'
    assert cli_main(['shards', 'cifar', tiny.folder, '--dataset', 'cifar100', '--label-type', 'coarse', '--out',
                     str(shards), '--shard-samples', '20', '--no-progress', '--workers', '1']) == 0
    base = tmp_path / 'base'  # the CIFAR-10 weights as exported for their Hub repo
    assert cli_main(['export', str(data['ckpt']), '--arch', 'allconv_resnet_cifar.cifar10', '--output', str(base)]) == 0
    run = tmp_path / 'ft'
    assert cli_main(['train-cifar', '--data-dir', tiny.folder, '--dataset', 'cifar100', '--label-type', 'coarse',
                     '--no-verify-md5', '--init-from', f'local-dir:{base}', '--model-kwargs', 'head=linear',
                     '--out-dir', str(run), '--steps', '4', '--batch-size', '16', '--device', 'cpu',
                     '--no-progress']) == 0
    cache, repo = tmp_path / 'hf_cache', 'someone/allconv_resnet_cifar.c100_coarse_ft'
    env = {**os.environ, 'HF_HUB_CACHE': str(cache), 'HF_HUB_OFFLINE': '1'}
    export = tmp_path / 'export'
    proc = subprocess.run([sys.executable, '-m', 'timm_identity', 'export', str(run), '--arch',
                           'allconv_resnet_cifar.c100_coarse_ft', '--repo-id', repo, '--output', str(export),
                           '--to-hf-cache'], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = ModelCard((export / 'README.md').read_text())
    assert card.data.base_model == 'timm-identity/allconv_resnet_cifar.cifar10'
    assert "- **Evaluated on:** CIFAR-100 (its 20 superclasses, the coarse labels) `test` split, 40 images" in card.text
    child = ('import sys, torch, timm, timm_identity\n'
             "x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))\n"
             "a = timm.create_model('hf-hub:' + sys.argv[1], pretrained=True).eval()\n"
             "b = timm.create_model('local-dir:' + sys.argv[2], pretrained=True).eval()\n"
             "assert a.num_classes == 20 and torch.equal(a(x), b(x)), 'hf-hub: and local-dir: differ'\n")
    proc = subprocess.run([sys.executable, '-c', child, repo, str(export)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = tmp_path / 'validate.csv'
    _, out = _run([*LAUNCHER, str(TIMM_SRC / 'validate.py'), '--data-dir', str(shards),
                   '--dataset', 'wds/cifar100_coarse', '--split', 'test', '--device', 'cpu', '-b', '64', '-j', '1',
                   '--results-file', str(results), '--model', f'local-dir:{export}', '--pretrained'], cwd=tmp_path)
    got = _results_row(results)
    ref = _evaluate(export, tiny.folder, tmp_path / 'evaluate.json', '--label-type', 'coarse')
    assert ref['num_images'] == 40 and ref['label_type'] == 'coarse'
    assert (got['top1'], got['top5']) == (ref['top1'], ref['top5'])
    assert abs(float(re.search(r'Loss:\s+([\d.]+)', out).group(1)) - ref['loss']) < 1e-3


def test_benchmark_py(tmp_path):
    import timm
    import timm_identity  # noqa: F401
    results = tmp_path / 'bench.csv'
    _run([*LAUNCHER, str(TIMM_SRC / 'benchmark.py'), '--model', 'allconv_resnet_cifar', *MODEL_KWARGS,
          '--bench', 'both', '--device', 'cpu', '-b', '8', '--num-warm-iter', '1', '--num-bench-iter', '5',
          '--results-file', str(results)], cwd=tmp_path)
    got = _results_row(results)
    params = sum(p.numel() for p in timm.create_model('allconv_resnet_cifar', **TINY_MODEL_KWARGS).parameters())
    assert got['param_count'] == round(params / 1e6, 2) and got['infer_img_size'] == 32
    assert got['infer_samples_per_sec'] > 0 and got['train_samples_per_sec'] > 0


def test_inference_py_predicts_what_the_checkpoint_predicts(data, tmp_path):
    pytest.importorskip('pandas', reason="timm's inference.py needs pandas (pip install pandas)")
    import timm
    import timm_identity  # noqa: F401
    from PIL import Image
    from timm.data import create_transform, resolve_data_config
    make_tiny_imagenet(tmp_path / 'jpegs', num_train_per_class=1, num_val_per_class=2, size=40)
    folder = tmp_path / 'jpegs' / 'val'
    _run([*LAUNCHER, str(TIMM_SRC / 'inference.py'), '--data-dir', str(folder), '--model',
          f"local-dir:{data['ckpt']}", '--pretrained', '--device', 'cpu', '-b', '4', '-j', '1', '--topk', '3',
          '--include-index', '--results-file', str(tmp_path / 'preds.csv'), '--no-console-results'], cwd=tmp_path)
    rows = {r['filename']: r for r in csv.DictReader(open(tmp_path / 'preds.csv'))}
    files = sorted(folder.rglob('*.JPEG'))
    assert sorted(rows) == sorted(f.name for f in files) and len(files) == 6
    model = timm.create_model(f"local-dir:{data['ckpt']}", pretrained=True).eval()
    transform = create_transform(**resolve_data_config(model=model))
    labels = model.pretrained_cfg['label_names']
    with torch.no_grad():
        for f in files:
            probs = model(transform(Image.open(f).convert('RGB'))[None]).softmax(-1)[0]
            top = probs.topk(3)
            row = rows[f.name]
            assert [int(i) for i in row['index'].strip('[]').split()] == top.indices.tolist()
            assert re.findall(r"'([^']*)'", row['label']) == [labels[i] for i in top.indices.tolist()]
            got = torch.tensor([float(p) for p in row['prob'].strip('[]').split()])
            torch.testing.assert_close(got, top.values, rtol=0, atol=1e-5)
