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
from typing import List, Optional, Sequence

__all__ = ['run_script', 'main']


def _checkout_version(script: Path) -> Optional[str]:
    """The version of the timm source checkout that ``script`` sits in, if it sits in one."""
    version_py = script.parent / 'timm' / 'version.py'
    if not version_py.is_file():
        return None
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", version_py.read_text())
    return match.group(1) if match else None


def run_script(script: str, args: Sequence[str]) -> None:
    """Import ``timm_identity`` (registers the models), then run ``script`` as ``__main__`` with ``args``.
    A ``SystemExit`` of the script (its exit code) propagates."""
    path = Path(script)
    if not path.is_file():
        print(f'timm-identity run-script: error: {script}: no such file (the path of a timm script, '
              f'e.g. timm-src/validate.py from a clone of huggingface/pytorch-image-models)', file=sys.stderr)
        raise SystemExit(2)
    import timm
    import timm_identity  # noqa: F401  (registers the models with the installed timm)
    checkout = _checkout_version(path)
    if checkout is not None and checkout != timm.__version__:
        print(f'timm-identity run-script: note: {path.name} comes from a timm {checkout} checkout; it runs with '
              f'the installed timm {timm.__version__} ({Path(timm.__file__).parent})', file=sys.stderr)
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(path.resolve().parent))
    runpy.run_path(str(path), run_name='__main__')


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        'run-script', help="run a timm script (validate.py, benchmark.py, inference.py, train.py) with our "
                           "models registered",
        description=__doc__.split('\n\n')[0] + ' The script runs as `python SCRIPT ARGS` would, with the '
                    'installed timm; its arguments pass unchanged. Under torchrun use '
                    '`torchrun ... -m timm_identity.run_script SCRIPT ARGS`.')
    p.add_argument('script', help='path of the timm script')
    p.add_argument('args', nargs=argparse.REMAINDER, help='its arguments, unchanged')
    p.set_defaults(func=lambda a: run_script(a.script, a.args))
    return p


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print('usage: python -m timm_identity.run_script SCRIPT [ARGS ...]\n\n' + __doc__)
        raise SystemExit(0 if argv else 2)
    run_script(argv[0], argv[1:])


if __name__ == '__main__':
    main()
