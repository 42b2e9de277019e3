#!/usr/bin/env python3
"""Reproduce Table 2 (CIFAR-10 / CIFAR-100) on a remote GPU machine, in three phases.

    stage    (local machine) tar the compressed CIFAR parts (a folder with restore_cifar.py) into <= 56 MiB
                             pieces in .data/ and the wheels the GPU machine lacks into .whl/ (both git-ignored),
                             and print the remote calls that carry them over and start the `gpu` phase;
    gpu      (GPU machine)   restore the official archives from .data/ (or use --data-dir), train with
                             `timm-identity train-cifar` (the paper's recipe by default) for at most
                             --time-limit minutes, resuming the run folder if it holds a checkpoint, and
                             pack what comes back into --out: summary.json, log.jsonl, config.json and
                             the fp32 weights as safetensors shards of at most 15 MB (for transfers limited
                             to 8 files of 16 MiB each);
    collect  (local machine) merge the shards into one model.safetensors, evaluate it here on the full
                             test set with `timm-identity evaluate`, check the result against the GPU's,
                             and write results/table2/<dataset>-<recipe>/ (optionally also export the
                             weights into hub_configs/ with `timm-identity export --to-hub-configs`).

A dry run on CPU (tiny step count, tiny model) exercises all of it:

    python tools/reproduce_table2.py gpu --dataset cifar10 --data-dir /tmp/cifar --device cpu --steps 4 \\
        --train-args "--model-kwargs depths=(1,1,1) widths=(8,16,32) stem_chs=8" --out /tmp/t2 --run-dir /tmp/t2run
    python tools/reproduce_table2.py collect /tmp/t2 --data-dir /tmp/cifar --results /tmp/t2res
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
LAYOUTS = {'cifar10': 'cifar-10-batches-py', 'cifar100': 'cifar-100-python'}
DEVICE_FILE_LIMIT, DEVICE_FILE_BYTES = 8, 16 * 2 ** 20
SHARD_SIZE = '15MB'
PACKED_FILES = ('run.json', 'summary.json', 'log.jsonl', 'config.json')


def _cli(argv: Sequence[str]) -> int:
    if str(REPO) not in sys.path:  # run from the checkout, installed or not
        sys.path.insert(0, str(REPO))
    from timm_identity.cli import main
    return main(list(argv))


# ---- stage (local machine) ---------------------------------------------------------------------------------

PART_BYTES = 56 * 2 ** 20  # a dataset's tar parts: two carry calls of <= 64 MiB each, checkout included


def stage(args: argparse.Namespace) -> int:
    """Tar each dataset's CIFAR parts (+ restore_cifar.py) into <= 56 MiB pieces in .data/ and the timm
    wheel the GPU machine lacks into .whl/ (both git-ignored); print the remote-call plan."""
    src = Path(args.shared_data)
    if not (src / 'restore_cifar.py').is_file():
        raise SystemExit(f'error: {src} has no restore_cifar.py; pass --shared-data <path of shared/data>')
    data = REPO / '.data'
    data.mkdir(exist_ok=True)
    for dataset in args.datasets:
        if not sorted(data.glob(f'{dataset}.tar.*')):
            _pack_data_parts(src, dataset, data)
    wheels = REPO / '.whl'
    wheels.mkdir(exist_ok=True)
    import timm
    pip = [sys.executable, '-m', 'pip']
    # the GPU machine's image has an older timm; this package itself runs from the carried checkout
    subprocess.run(pip + ['download', '-q', '--no-deps', '-d', str(wheels), f'timm=={timm.__version__}'], check=True)

    env = ('python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && '
           'export PYTHONPATH=/tmp/site:$PWD || exit;')
    print('Device calls, back to back (the machine stays warm ~30 s between calls and keeps carried files; '
          'if a listing shows an earlier part missing, it went cold: start over):')
    n = 0
    for dataset in args.datasets:
        parts = sorted(p.name for p in data.glob(f'{dataset}.tar.*'))
        for i, part in enumerate(parts):
            n += 1
            carry = [f'.data/{part}'] + (['.whl'] if n == 1 else [])
            print(f'{n}. carry {carry}\n   command: ls -la .data' + (
                '' if i < len(parts) - 1 else
                f'; {env} setsid nohup python3 tools/reproduce_table2.py gpu --dataset {dataset} '
                f'--time-limit {args.time_limit} --out /tmp/packed/{dataset} --train-args "{args.train_args}" '
                f'> /tmp/{dataset}.log 2>&1 < /dev/null &'))
    print('Then keep the machine warm with `sleep N; tail -n 3 /tmp/*.log runs/*/log.jsonl` calls; when a run '
          'has packed, a call `cp /tmp/packed/<dataset>/* $OUT/` brings it back (at most 8 files a call).')
    print('Finally, here: python tools/reproduce_table2.py collect <files_at> --data-dir <official archives> --export')
    return 0


def _pack_data_parts(src: Path, dataset: str, data: Path) -> List[Path]:
    """``src/restore_cifar.py`` + ``src/<dataset>/`` -> ``data/<dataset>.tar.NN`` of at most PART_BYTES each."""
    import tarfile
    tmp = data / f'.{dataset}.tar.tmp'
    with tarfile.open(tmp, 'w') as tar:  # the zips are compressed already
        tar.add(src / 'restore_cifar.py', arcname='restore_cifar.py')
        tar.add(src / dataset, arcname=dataset)
    parts = []
    with open(tmp, 'rb') as f:
        for i, chunk in enumerate(iter(lambda: f.read(PART_BYTES), b'')):
            parts.append(data / f'{dataset}.tar.{i:02d}')
            parts[-1].write_bytes(chunk)
    tmp.unlink()
    return parts


def _unpack_data_parts(dataset: str) -> None:
    """.data/<dataset>.tar.NN (from `stage`) -> .data/<dataset>/ and .data/restore_cifar.py."""
    import tarfile
    parts = sorted((REPO / '.data').glob(f'{dataset}.tar.*'))
    if not parts or (REPO / '.data' / dataset / 'zips').is_dir():
        return
    joined = REPO / '.data' / f'.{dataset}.tar.joined'
    with open(joined, 'wb') as out:
        for part in parts:
            out.write(part.read_bytes())
    with tarfile.open(joined) as tar:
        tar.extractall(REPO / '.data', filter='data')
    joined.unlink()


# ---- gpu (GPU machine; CPU for a dry run) -------------------------------------------------------------------

def _restore(dataset: str, root: Path) -> Path:
    if not (root / LAYOUTS[dataset]).is_dir():
        _unpack_data_parts(dataset)
        restore = REPO / '.data' / 'restore_cifar.py'
        zips = REPO / '.data' / dataset / 'zips'
        missing = [p for p in (restore, zips / 'test-0.zip', REPO / '.data' / dataset / 'parts') if not p.exists()]
        missing += [zips / f'train-{i}.zip' for i in range(4) if not (zips / f'train-{i}.zip').exists()]
        if missing:
            raise SystemExit('error: cannot restore CIFAR, missing ' + ', '.join(str(p) for p in missing) +
                             ' (carry them first: see `reproduce_table2.py stage`), or pass --data-dir')
        subprocess.run([sys.executable, str(restore), str(root), dataset], check=True)
    return root


def pack(run_dir: Path, out: Path) -> List[Path]:
    """Newest checkpoint + logs of ``run_dir`` -> ``out``, weights sharded under the device's file limits."""
    import torch
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import load_file
    from timm_identity.integrity import record_files
    from timm_identity.train.checkpoint import CONFIG_FILE, MODEL_FILE, resolve_checkpoint

    ckpt = resolve_checkpoint(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ('run.json', 'summary.json', 'log.jsonl'):
        shutil.copy2(run_dir / name, out / name)
    shutil.copy2(ckpt / CONFIG_FILE, out / CONFIG_FILE)  # names the run and step of the weights
    state = {k: v.to(torch.float32).contiguous() for k, v in load_file(str(ckpt / MODEL_FILE)).items()}
    save_torch_state_dict(state, out, filename_pattern='model{suffix}.safetensors', max_shard_size=SHARD_SIZE)
    record_files(out, sorted(p.name for p in out.glob('model*.safetensors')))  # each shard's sha256, for unpack
    files = sorted(p for p in out.iterdir() if p.is_file())
    too_big = [f'{p.name} ({p.stat().st_size} B)' for p in files if p.stat().st_size > DEVICE_FILE_BYTES]
    if len(files) > DEVICE_FILE_LIMIT or too_big:
        raise SystemExit(f'error: {out} holds {len(files)} files (limit {DEVICE_FILE_LIMIT}); too big: {too_big}')
    return files


def gpu(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir) if args.data_dir else _restore(args.dataset, Path(args.restore_to))
    run_dir = Path(args.run_dir or REPO / 'runs' / f'table2-{args.dataset}-{args.recipe}')
    common = ['--time-limit', str(args.time_limit), '--no-progress',
              *(['--device', args.device] if args.device else [])]
    if (run_dir / 'checkpoints').is_dir():
        argv = ['train-cifar', '--resume', str(run_dir), *common]
    else:
        argv = ['train-cifar', '--dataset', args.dataset, '--data-dir', str(data_dir), '--no-verify-md5',
                '--recipe', args.recipe, '--out-dir', str(run_dir), *common,
                *(['--steps', str(args.steps)] if args.steps else []), *args.train_args]
    print('timm-identity ' + ' '.join(argv), flush=True)
    code = _cli(argv)
    if code != 0:
        return code
    files = pack(run_dir, Path(args.out))
    summary = json.loads((run_dir / 'summary.json').read_text())
    print(json.dumps({k: summary.get(k) for k in (
        'status', 'steps', 'final_test_error', 'best_test_error', 'best_step', 'wall_time_s',
        'images_per_s_median')}, indent=2))
    print('packed: ' + ', '.join(f'{p.name} ({p.stat().st_size / 1e6:.1f} MB)' for p in files))
    return 0


# ---- collect (this machine) -------------------------------------------------------------------------------

def unpack(packed: Path, dest: Path) -> Path:
    """Shards + config from ``gpu`` -> the checkpoint folder ``dest`` (config.json + model.safetensors, written as the
    trainer wrote it: the same bytes, so the same sha256 as the run's summary records)."""
    from safetensors.torch import load_file, save_file
    from timm_identity.integrity import DamagedFileError, check_weights_file, record_files
    index_file = packed / 'model.safetensors.index.json'
    if index_file.is_file():
        shards = sorted(set(json.loads(index_file.read_text())['weight_map'].values()))
    elif (packed / 'model.safetensors').is_file():
        shards = ['model.safetensors']
    else:
        raise SystemExit(f'error: {packed} holds neither model.safetensors.index.json nor model.safetensors')
    state = {}
    for shard in shards:
        try:
            check_weights_file(packed / shard)  # against the sha256 that `pack` recorded in config.json
        except DamagedFileError as e:
            raise SystemExit(f'error: {e}') from None
        state.update(load_file(str(packed / shard)))
    dest.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dest / 'model.safetensors'), metadata={'format': 'pt'})
    shutil.copy2(packed / 'config.json', dest / 'config.json')
    record_files(dest, ['model.safetensors'])  # the merged file
    return dest


def unpack_run(packed: Path, run_dir: Path) -> Path:
    """The packed run as a run folder (its record, log and summary, and the checkpoint in its place): what
    ``timm-identity export`` reads. Returns the checkpoint folder."""
    from timm_identity.train.run_record import checkpoint_run_id
    _, step = checkpoint_run_id(packed)
    ckpt = unpack(packed, run_dir / 'checkpoints' / f'step_{step:08d}')
    for name in ('run.json', 'summary.json', 'log.jsonl'):
        shutil.copy2(packed / name, run_dir / name)
    return ckpt


def collect(args: argparse.Namespace) -> int:
    packed = Path(args.packed)
    missing = [n for n in PACKED_FILES if not (packed / n).is_file()]
    if missing:
        raise SystemExit(f'error: {packed} lacks {missing}: is it the files folder of a `gpu` run?')
    summary = json.loads((packed / 'summary.json').read_text())
    cfg = json.loads((packed / 'run.json').read_text())['config']
    results = Path(args.results or REPO / 'results' / 'table2' / f"{cfg['dataset']}-{cfg['recipe']}")
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = unpack_run(packed, Path(tmp) / 'run')
        eval_json = results / 'evaluate_here.json'
        code = _cli(['evaluate', str(ckpt), '--data-dir', args.data_dir, '--dataset', cfg['dataset'],
                     '--no-verify-md5', '--device', 'cpu', '--output', str(eval_json)])
        if code != 0:
            return code
        if args.export:  # the checkpoint of its run: architecture, tag (the dataset) and card from the run record
            code = _cli(['export', str(ckpt), '--to-hub-configs', *([args.hub_configs] if args.hub_configs else [])])
            if code != 0:
                return code
    for name in ('run.json', 'summary.json', 'log.jsonl'):
        shutil.copy2(packed / name, results / name)
    from timm_identity.train.plots import plot_curves
    records = [json.loads(line) for line in (packed / 'log.jsonl').read_text().splitlines() if line.strip()]
    plot_curves(records, results / 'curves.png', title=f"{cfg['model']} on {cfg['dataset']}")
    here = json.loads(eval_json.read_text())
    gpu_error, here_error = summary['final_test_error'], here['error']
    agree = gpu_error is not None and abs(gpu_error - here_error) <= args.tolerance
    print(f"test error: GPU {gpu_error} %, here {here_error} % -> {'agree' if agree else 'DIFFER'} "
          f"(tolerance {args.tolerance} points); results in {results}")
    return 0 if agree else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='phase', required=True)
    p = sub.add_parser('stage', help='local machine: stage data + wheels, print the remote calls')
    p.add_argument('--datasets', nargs='+', default=['cifar10', 'cifar100'], choices=sorted(LAYOUTS))
    p.add_argument('--shared-data', default=str(SHARED_DATA),
                   help='folder with restore_cifar.py and the compressed CIFAR parts (default: ../shared/data)')
    p.add_argument('--time-limit', type=float, default=24, help='minutes of training before a run stops (resumable)')
    p.add_argument('--train-args', default='--amp bf16 --channels-last --compile', metavar='"FLAGS"',
                   help='train-cifar flags for the gpu phase (default: bf16 autocast, channels_last, torch.compile)')
    p.set_defaults(func=stage)

    p = sub.add_parser('gpu', help='GPU machine: restore data, train (resumable), pack results into --out')
    p.add_argument('--dataset', choices=sorted(LAYOUTS), required=True)
    p.add_argument('--recipe', default='paper', help='train-cifar recipe (default: paper)')
    p.add_argument('--data-dir', help='official CIFAR archives (default: restore them from .data/)')
    p.add_argument('--restore-to', default='/tmp/cifar', help='where to restore the archives (default /tmp/cifar)')
    p.add_argument('--run-dir', help='run folder (default runs/table2-<dataset>-<recipe>); resumed if it has one')
    p.add_argument('--out', default=os.environ.get('OUT'), help='folder for what comes back (default $OUT)')
    p.add_argument('--time-limit', type=float, default=8.5, help='minutes of training in this call (default 8.5)')
    p.add_argument('--steps', type=int, help='override the recipe\'s steps (dry runs)')
    p.add_argument('--device', help='train-cifar --device (default auto)')
    p.add_argument('--train-args', type=shlex.split, default=[], metavar='"FLAGS"',
                   help='further train-cifar flags for a new run, as one quoted string, '
                        'e.g. "--amp bf16 --channels-last --compile"')
    p.set_defaults(func=gpu)

    p = sub.add_parser('collect', help='local machine: merge shards, evaluate here, write results/table2/')
    p.add_argument('packed', help='the files folder a `gpu` call brought back')
    p.add_argument('--data-dir', required=True, help='official CIFAR archives')
    p.add_argument('--results', help='results folder (default results/table2/<dataset>-<recipe>)')
    p.add_argument('--tolerance', type=float, default=0.05, help='allowed difference in test error points')
    p.add_argument('--export', action='store_true', help='also export the weights into hub_configs/')
    p.add_argument('--hub-configs', help='hub_configs folder for --export (default: this checkout\'s)')
    p.set_defaults(func=collect)

    args = parser.parse_args(argv)
    if args.phase == 'gpu' and not args.out:
        parser.error('--out is required (or $OUT set)')
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
