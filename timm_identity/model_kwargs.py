"""``--model-kwargs KEY=VALUE ...``: the one parser for every command that takes extra model arguments.

Like timm's ``ParseKwargs``, values are Python literals (``depths=(1,1,1)``, ``stem_chs=8``,
``drop_path_rate=0.1``) and a bare word is a string (``head=linear``). Unlike it, a value that is
meant as a literal but does not parse (``depths=(1,1``) is an error, not silently the string ``'(1,1'``.
"""
import argparse
import ast
from typing import Any, Dict, Optional, Sequence

__all__ = ['parse_model_kwargs', 'ParseModelKwargs']

# a value starting with one of these, or holding one of _LITERAL_CHARS, is meant as a literal
_LITERAL_START = tuple('([{\'"+-.0123456789')
_LITERAL_CHARS = set('()[]{},\'"')


def parse_model_kwargs(items: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``['depths=(1,1,1)', 'stem_chs=8', 'head=linear']`` -> dict; raises ValueError naming a bad item."""
    kwargs: Dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ValueError(f'--model-kwargs expects key=value items, got {item!r}')
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError) as e:
            if not value or value.startswith(_LITERAL_START) or _LITERAL_CHARS & set(value):
                why = e.msg if isinstance(e, SyntaxError) else 'not a Python literal'
                raise ValueError(f'--model-kwargs {item}: cannot read {value!r} as a Python value ({why}); '
                                 f'write it as a literal, e.g. depths="(1,1,1)", or a bare word such as '
                                 f'head=linear') from None
            kwargs[key] = value  # a bare word: head=linear
    return kwargs


class ParseModelKwargs(argparse.Action):
    """argparse action (``nargs='*'``) storing :func:`parse_model_kwargs` of the items; a bad item is an
    argparse error (usage + one line, exit status 2)."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            setattr(namespace, self.dest, parse_model_kwargs(values))
        except ValueError as e:
            raise argparse.ArgumentError(self, str(e)) from None
