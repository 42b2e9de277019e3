"""argparse helpers shared by every ``timm-identity`` command: value types that reject a wrong argument where
it is parsed (argparse then prints one line naming the flag and exits with code 2), the help formatter, and
the run-environment record that result files carry."""
from __future__ import annotations

import argparse
import math
import platform
import sys
from pathlib import Path

__all__ = ['positive_int', 'non_negative_int', 'positive_float', 'non_negative_float', 'finite_float',
           'int_at_least', 'float_above', 'float_in_range', 'writable_dir', 'DefaultsHelpFormatter', 'environment']


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not {"an integer" if kind is int else "a number"}: {text!r}') from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'must be a finite number, got {text!r}')
    return value


def int_at_least(minimum: int):
    """argparse type factory: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be at least {minimum}, got {value}')
        return value
    parse.__name__ = f'integer >= {minimum}'
    return parse


def float_above(low: float, inclusive: bool = True):
    """argparse type factory: a finite float >= ``low`` (``inclusive``) or > ``low``."""
    def parse(text: str) -> float:
        value = _number(text, float)
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f'must be {"at least" if inclusive else "greater than"} {low:g}, '
                                             f'got {value:g}')
        return value
    parse.__name__ = f'number {">=" if inclusive else ">"} {low:g}'
    return parse


def float_in_range(low: float, high: float):
    """argparse type factory: a finite float in [low, high]."""
    def parse(text: str) -> float:
        value = _number(text, float)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f'must be in [{low:g}, {high:g}], got {value:g}')
        return value
    parse.__name__ = f'number in [{low:g}, {high:g}]'
    return parse


def finite_float(text: str) -> float:
    """argparse type: a finite float (no nan / inf)."""
    return _number(text, float)


positive_int = int_at_least(1)           # an integer >= 1
non_negative_int = int_at_least(0)       # an integer >= 0
positive_float = float_above(0, inclusive=False)   # a finite float > 0
non_negative_float = float_above(0)      # a finite float >= 0


def writable_dir(path, flag: str = '--out', shown=None) -> Path:
    """Prove, before any long work starts, that ``path`` can be made and written: a file is created and removed
    in it, or in its nearest existing parent when it does not exist yet (nothing is left behind). Returns the
    path; ``ValueError`` naming the flag and the folder (or ``shown``: the file to be written there) if not."""
    import tempfile
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, f'{probe} is not a folder')
        with tempfile.NamedTemporaryFile(dir=probe, prefix='.write-test-'):
            pass
    except OSError as e:
        raise ValueError(f'{flag} {shown or path}: cannot write there ({e.strerror or e})') from None
    return path


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, except where there is nothing useful to show (None, on/off switches) or the
    help text already says it."""

    def _get_help_string(self, action):
        text = action.help or ''
        if action.default is None or isinstance(action.default, bool) or '(default' in text:
            return text
        return super()._get_help_string(action)


def environment(args: argparse.Namespace) -> dict:
    """The command line, parsed arguments and software/hardware facts that a result file records."""
    import torch
    return {'command': 'timm-identity ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else None,
            'args': {k: v for k, v in vars(args).items() if k != 'func'},
            'torch': torch.__version__, 'threads': torch.get_num_threads(), 'machine': platform.machine(),
            'python': platform.python_version()}
