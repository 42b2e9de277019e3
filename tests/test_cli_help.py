"""Every `timm-identity` (sub-)command's --help: no "(default: None)" / "(default: False)" noise."""
import argparse

from timm_identity.cli import build_parser


def _all_parsers(parser, path=('timm-identity',)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


def test_no_help_shows_a_meaningless_default():
    seen = []
    for path, parser in _all_parsers(build_parser()):
        text = parser.format_help()
        seen.append(' '.join(path))
        for junk in ('(default: None)', '(default: False)', '(default: True)'):
            assert junk not in text, f'{" ".join(path)} --help shows {junk}'
    # the walk reached the nested sub-commands
    assert {'timm-identity theory expressivity', 'timm-identity shards verify', 'timm-identity export'} <= set(seen)
