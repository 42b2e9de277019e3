"""The ``timm-identity`` command: one entry point, one sub-command per tool.

Each tool module defines ``add_parser(subparsers)``, which adds its sub-command and sets
``func`` (called with the parsed arguments) as the parser's default.
"""
import argparse
import importlib
import sys

# (module that defines add_parser) in the order `--help` lists them
COMMAND_MODULES = (
    'timm_identity.report',
    'timm_identity.data.cli',
    'timm_identity.train.cli',
    'timm_identity.hub.cli',
    'timm_identity.theory.cli',
    'timm_identity.study.cli',
    'timm_identity.run_script',
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='timm-identity',
        description='Hardt & Ma, "Identity Matters in Deep Learning" (ICLR 2017) as timm models, '
                    'trainers and runnable theory.',
    )
    from timm_identity import __version__
    parser.add_argument('--version', action='version', version=f'timm-identity {__version__}')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['run-script'] and len(argv) > 1 and argv[1] not in ('-h', '--help'):
        # the script's arguments go through exactly as given (argparse's REMAINDER would drop a '--')
        from timm_identity.run_script import run_script
        run_script(argv[1], argv[2:])
        return 0
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == '__main__':
    sys.exit(main())
