"""Run any of timm's scripts (validate.py, benchmark.py, inference.py, train.py, ...) with our models registered.

timm's scripts know only the models of the processes that run them: ``validate.py --model
allconv_resnet_cifar`` (or ``hf-hub:timm-identity/...``, whose config names our architecture) fails with
"Unknown model" unless ``timm_identity`` was imported first. Only ``train.py`` has an option for that
(``--device-modules timm_identity``). This launcher imports ``timm_identity`` and then runs the script as
``__main__``, exactly as ``python SCRIPT ARGS`` would: ``sys.argv`` is ``[SCRIPT, *ARGS]``, the script's
folder is first on ``sys.path``, its exit code is the process's. ::

    timm-identity run-script timm-src/validate.py --model allconv_resnet_cifar.cifar10 --data-dir ...
    python -m timm_identity.run_script timm-src/benchmark.py --model allconv_resnet_imagenet ...
    torchrun --nproc_per_node=8 -m timm_identity.run_script timm-src/train.py ...

Which timm: the *installed* one (the one ``timm_identity`` registered its models with), also when the script
sits in a timm source checkout whose own ``timm/`` folder would otherwise shadow it. When that checkout's
version differs from the installed one, a note says so on stderr (a script may pass arguments that another
timm version does not know).

Under torchrun (several processes), the launcher also makes timm's ``train.py`` run where it otherwise would
not or would count wrongly (:mod:`timm_identity.distributed` says exactly what and why): DDP on CPU (train.py
passes ``device_ids=[cpu]``, which torch refuses; the launcher passes ``None`` for CPU modules and changes nothing
for GPU ones), and, before train.py starts, a check of ``--dataset wds/...`` shards against the run's processes x
loader workers: a layout where distributed validation would not count every image exactly once, or a training
worker would get no shard, is refused with one line naming the fix (exit 2). ``--check`` runs only that check.

Why a launcher and not an automatic import hook (a ``.pth`` file that imports ``timm_identity`` whenever
``timm`` is imported): the launcher changes nothing for any other process, needs no install step, and is
visible in the command line that ran; a hook would run in every Python process of the environment and
change what ``import timm`` does behind the user's back.
"""
import argparse
import re
import runpy
import sys
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

from .cli_args import positive_int
from .distributed import allow_cpu_ddp, record_launch, split_lengths, wds_layout_problems

__all__ = ['run_script', 'check_train_py', 'main']


def _checkout_version(script: Path) -> Optional[str]:
    """The version of the timm source checkout that ``script`` sits in, if it sits in one."""
    version_py = script.parent / 'timm' / 'version.py'
    if not version_py.is_file():
        return None
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", version_py.read_text())
    return match.group(1) if match else None


def _error(message: str) -> NoReturn:
    print(f'timm-identity run-script: error: {message}', file=sys.stderr)
    raise SystemExit(2)


def _train_py_args(path: Path, args: Sequence[str]) -> Optional[argparse.Namespace]:
    """``args`` as timm's train.py itself reads them (its ``_parse_args``: ``-c`` YAML, then the command line),
    or None for a script without that function. Runs the script's top level (imports and parsers) only."""
    namespace = runpy.run_path(str(path), run_name='__timm_identity_check__')
    parse = namespace.get('_parse_args')
    if parse is None or namespace.get('parser') is None:
        return None
    saved = sys.argv
    sys.argv = [str(path), *args]
    try:
        return parse()[0]
    finally:
        sys.argv = saved


def check_train_py(path: Path, args: Sequence[str], world_size: int) -> Tuple[List[str], Optional[dict]]:
    """Problems of a train.py run over webdataset shards with ``world_size`` processes
    (:func:`timm_identity.distributed.wds_layout_problems`), and the record of the launch for its run folder;
    ``([], None)`` for other scripts."""
    if path.name != 'train.py':
        return [], None
    parsed = _train_py_args(path, args)
    if parsed is None:
        return [], None
    record: Dict[str, Any] = {'launcher': 'timm_identity.run_script', 'world_size': world_size,
                              'workers': parsed.workers, 'dataset': parsed.dataset, 'val_split': parsed.val_split}
    data_dir = parsed.data_dir or getattr(parsed, 'data', None)  # train.py takes the folder positionally too
    if not str(parsed.dataset or '').startswith('wds/') or not data_dir:
        return [], record
    problems = wds_layout_problems(data_dir, parsed.train_split, parsed.val_split, world_size, parsed.workers)
    if split_lengths(data_dir, parsed.val_split) is not None and not getattr(parsed, 'val_num_samples', None):
        record['validation_count'] = ('every image of the split exactly once: webdataset shards checked against '
                                      f'{world_size} process(es) x {parsed.workers} loader worker(s)')
    return problems, record


def run_script(script: str, args: Sequence[str], check_only: bool = False, world_size: Optional[int] = None) -> None:
    """Import ``timm_identity`` (registers the models), then run ``script`` as ``__main__`` with ``args``.
    A ``SystemExit`` of the script (its exit code) propagates. ``check_only``: run the checks for
    ``world_size`` processes (default: this process's launch) and stop."""
    path = Path(script)
    if not path.is_file():
        _error(f'{script}: no such file (the path of a timm script, e.g. timm-src/validate.py from a clone of '
               f'huggingface/pytorch-image-models)')
    import timm
    import timm_identity  # noqa: F401  (registers the models with the installed timm)
    checkout = _checkout_version(path)
    if checkout is not None and checkout != timm.__version__:
        print(f'timm-identity run-script: note: {path.name} comes from a timm {checkout} checkout; it runs with '
              f'the installed timm {timm.__version__} ({Path(timm.__file__).parent})', file=sys.stderr)
    sys.path.insert(0, str(path.resolve().parent))
    from timm.utils import world_info_from_env  # the process count torchrun / SLURM / MPI announce (1 outside)
    problems, record = check_train_py(path, args, world_size or world_info_from_env()[2])
    if problems:
        _error('; '.join(problems))
    if check_only:
        return
    allow_cpu_ddp()
    if record is not None:
        record_launch(record)
    sys.argv = [str(path), *args]
    runpy.run_path(str(path), run_name='__main__')


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        'run-script', help="run a timm script (validate.py, benchmark.py, inference.py, train.py) with our "
                           "models registered",
        description=__doc__.split('\n\n')[0] + ' The script runs as `python SCRIPT ARGS` would, with the '
                    'installed timm; its arguments pass unchanged. Under torchrun use '
                    '`torchrun ... -m timm_identity.run_script SCRIPT ARGS`.')
    p.add_argument('--check', action='store_true',
                   help="only check train.py's webdataset shards against --world-size processes, then stop")
    p.add_argument('--world-size', type=positive_int, default=None, metavar='N',
                   help='processes of the run to check for (default: this launch\'s, 1 outside torchrun)')
    p.add_argument('script', help='path of the timm script')
    p.add_argument('args', nargs=argparse.REMAINDER, help='its arguments, unchanged')
    p.set_defaults(func=lambda a: run_script(a.script, a.args, a.check, a.world_size))
    return p


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print('usage: python -m timm_identity.run_script [--check] [--world-size N] SCRIPT [ARGS ...]\n\n'
              + __doc__)
        raise SystemExit(0 if argv else 2)
    check_only, world_size = False, None
    while argv and argv[0] in ('--check', '--world-size'):
        if argv.pop(0) == '--check':
            check_only = True
        elif not argv or not argv[0].isdigit() or int(argv[0]) < 1:
            _error('--world-size needs a positive integer')
        else:
            world_size = int(argv.pop(0))
    if not argv:
        _error('no script given')
    run_script(argv[0], argv[1:], check_only, world_size)


if __name__ == '__main__':
    main()
