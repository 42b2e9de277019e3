"""``timm-identity train-cifar`` and ``timm-identity evaluate``: the command lines of :mod:`.cifar_trainer` and
:mod:`.evaluate`. A wrong argument or a run that cannot start is one line on stderr and exit code 2; a loss
that became non-finite, 3; an interrupt, 130."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..atomic_io import atomic_write_text, missing_folders, remove_made_folders
from ..cli_args import finite_float, positive_float, positive_int, writable_dir
from ..model_kwargs import parse_model_kwargs
from .cifar_trainer import NonFiniteLossError, train
from .evaluate import evaluate_checkpoint
from .recipes import RECIPES
from .config import STEM_INITS
from .step import CLIP_MODES

__all__ = ['add_parser']


def add_parser(subparsers) -> None:
    _add_train_parser(subparsers)
    _add_evaluate_parser(subparsers)
    _add_upgrade_parser(subparsers)


def _add_upgrade_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        'upgrade-run', help='convert a train-cifar run folder of the earlier layout (run_config.json) to this one',
        description='Convert a train-cifar run folder written by an earlier version (run_config.json, a run.json '
                    'in every checkpoint) to this version\'s layout (one run.json per run, checkpoints naming it), '
                    'so that export and --resume take it. The run\'s data are read again: the training set must be '
                    'the run\'s, and the test set\'s fingerprint is recorded.')
    p.add_argument('run_dir', metavar='RUN', help='the run folder')
    p.add_argument('--data-dir', required=True, help='the official CIFAR archives the run was trained on')
    p.add_argument('--no-verify-md5', dest='verify_md5', action='store_false')
    p.set_defaults(func=_run_upgrade)
    return p


def _run_upgrade(args: argparse.Namespace) -> int:
    from .upgrade import upgrade_run
    try:
        path = upgrade_run(Path(args.run_dir), args.data_dir, args.verify_md5)
    except (ValueError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'upgraded: {path}')
    return 0


def _add_train_parser(subparsers) -> argparse.ArgumentParser:
    recipes = '; '.join(f"{name}: batch {r['batch_size']}, {r['opt']}, lr {r['lr']}, {r['sched']}, "
                        f"{r['steps']} steps, label smoothing {r['label_smoothing']}" for name, r in RECIPES.items())
    p = subparsers.add_parser(
        'train-cifar', epilog=CONFIG_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train on CIFAR-10/100 with the paper's recipe (or a named one)",
        description="Train an all-conv residual net on CIFAR-10/100 from the official archives. The default "
                    "recipe is the paper's (SGD momentum 0.9, batch 128, wd 1e-4 on conv weights, lr 0.05 x0.1 "
                    "at 30k and 50k steps, 60k steps). Every recipe value below is a flag that overrides it. "
                    f"Recipes: {recipes}.",
    )
    p.add_argument('-c', '--config', metavar='YAML',
                   help="settings from a YAML file, as timm's train.py takes them (keys: these flags' names with "
                        "'_' for '-'); the command line overrides it")
    g = p.add_argument_group('data and model')
    g.add_argument('--data-dir', help='official CIFAR python release: cifar-10-python.tar.gz, '
                                      'cifar-10-batches-py/ or a folder holding one (same for CIFAR-100)')
    g.add_argument('--dataset', choices=('cifar10', 'cifar100'), help='default cifar10')
    g.add_argument('--no-verify-md5', dest='verify_md5', action='store_const', const=False,
                   help='do not check the official archive md5 (for rebuilt archives)')
    g.add_argument('--label-type', choices=('fine', 'coarse'),
                   help="CIFAR-100: 'fine' (100 classes, default) or 'coarse' (the 20 superclasses)")
    g.add_argument('--model', help='timm model name (default allconv_resnet_cifar)')
    g.add_argument('--init-from', metavar='NAME',
                   help='start from pretrained weights (fine-tuning): a tag such as '
                        'allconv_resnet_cifar_w16_d3.cifar10, hf-hub:ID, local-dir:DIR, or the path of an exported '
                        'folder, a train-cifar run or checkpoint folder; the classifier is new when the number of '
                        'classes differs (--model-kwargs head=linear for a trainable one)')
    g.add_argument('--freeze-backbone', action='store_const', const=True, default=None,
                   help='with --init-from: train the classifier only (a linear probe; needs head=linear)')
    g.add_argument('--stem-init', choices=STEM_INITS,
                   help="how the first conv starts: 'model' (default: the model's own init) or 'whiten' (its "
                        "filters = the leading principal directions of 3x3 patches of 5,000 training images, each "
                        "scaled to unit variance: a data-dependent init, not a normalisation)")
    g.add_argument('--model-kwargs', nargs='*', metavar='KEY=VALUE',
                   help='extra timm.create_model arguments, e.g. depths="(1,1,1)" widths="(8,16,32)" stem_chs=8')
    g = p.add_argument_group('recipe (defaults: the chosen --recipe)')
    g.add_argument('--recipe', choices=sorted(RECIPES), help='named recipe (default paper)')
    g.add_argument('--opt', help="timm optimizer ('momentum' = SGD classical momentum, 'sgd' = Nesterov)")
    g.add_argument('--momentum', type=float)
    g.add_argument('--batch-size', '-b', type=int)
    g.add_argument('--lr', type=float)
    g.add_argument('--weight-decay', '--wd', type=float, help='on conv weights only')
    g.add_argument('--steps', type=int, help='optimizer updates in total')
    g.add_argument('--sched', choices=('multistep', 'cosine', 'constant'))
    g.add_argument('--decay-steps', type=int, nargs='*', help='multistep: updates at which lr *= decay-rate')
    g.add_argument('--decay-rate', type=float)
    g.add_argument('--warmup-steps', type=int)
    g.add_argument('--warmup-lr', type=float)
    g.add_argument('--min-lr', type=float, help='cosine: final lr')
    g.add_argument('--label-smoothing', type=float)
    g.add_argument('--augment', action=argparse.BooleanOptionalAction, default=None,
                   help='random crop + flip (on by default)')
    g.add_argument('--pad', type=int, help='zero padding before the random 32x32 crop (4)')
    g.add_argument('--hflip', action=argparse.BooleanOptionalAction, default=None)
    g.add_argument('--eval-every', type=int, help='evaluate on the full test set every N steps')
    g.add_argument('--clip-grad', type=positive_float, metavar='X',
                   help="clip gradients before each update (off by default): total norm X ('norm'), each value to "
                        "+-X ('value'), or NFNet's adaptive clipping with ratio X ('agc', classifier left out)")
    g.add_argument('--clip-mode', choices=CLIP_MODES, help="with --clip-grad (default 'norm')")
    g.add_argument('--model-ema', action=argparse.BooleanOptionalAction, default=None,
                   help="keep timm's ModelEmaV3 of the weights (off by default): evaluated beside them, checkpointed "
                        "(model_ema.safetensors) and what export takes by default")
    g.add_argument('--model-ema-decay', type=float, metavar='D',
                   help='the EMA decay, reached after a warmup of min(D, 1 - (1 + t)^(-2/3)) at update t '
                        '(default 0.9998)')
    _add_run_flags(p.add_argument_group('run'))
    p.set_defaults(func=_run_train)
    return p


def _add_run_flags(g) -> None:
    """The flags of how a run runs (where, on what, how often it logs and saves), not what it computes."""
    g.add_argument('--seed', type=int, help='model init and data order (default 0)')
    g.add_argument('--out-dir', help='run folder (default runs/train-cifar-<dataset>-<recipe>-<time>)')
    g.add_argument('--resume', metavar='PATH', help='continue a run, in its own folder: the run folder (its newest '
                                                 'checkpoint) or one of its checkpoint folders')
    g.add_argument('--log-every', type=int, help='log record every N steps (default 100)')
    g.add_argument('--checkpoint-every', type=int, help='default: at every evaluation')
    g.add_argument('--keep-checkpoints', type=int, help='newest checkpoints kept (default 2; 0 keeps all)')
    g.add_argument('--eval-batch-size', type=int, help='default 1000')
    g.add_argument('--device', help="'auto' (default: cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument('--amp', choices=('none', 'bf16'), help='bf16 autocast (default none)')
    g.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=None)
    g.add_argument('--compile', action=argparse.BooleanOptionalAction, default=None, help='torch.compile the model')
    g.add_argument('--compile-mode', help="torch.compile mode, e.g. 'max-autotune' or 'reduce-overhead'")
    g.add_argument('--no-progress', dest='progress', action='store_const', const=False, help='no progress bar')
    g.add_argument('--no-plot', dest='plot', action='store_const', const=False, help='no curves.png')
    g.add_argument('--time-limit', type=float, metavar='MINUTES',
                   help='stop after this much wall time at the next step: evaluate, checkpoint, write the summary '
                        '(status "time_limit") and exit 0; --resume continues (for machines rented by the minute)')


CONFIG_EPILOG = """\
-c/--config YAML, e.g.
  recipe: fast_cpu
  model: allconv_resnet_cifar_w16_d3
  channels_last: true
  lr: 0.05
  decay_steps: [30000, 50000]
  model_kwargs: {head: linear}     # or a list: ["head=linear"]
Keys are the flags' destination names (--no-verify-md5 is verify_md5: false); an unknown key is an error."""

_NOT_SETTINGS = ('func', 'command', 'argument_default', 'config')


def _apply_config_file(args: argparse.Namespace) -> None:
    """Fill the settings the command line left unset from ``args.config`` (timm train.py's ``-c``: the file gives
    defaults, the command line wins)."""
    import yaml
    path = Path(args.config)
    try:
        settings = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f'-c {path}: cannot read it ({e.strerror})') from None
    except yaml.YAMLError as e:
        raise ValueError(f'-c {path}: not valid YAML ({str(e).splitlines()[0]})') from None
    if not isinstance(settings, dict):
        raise ValueError(f'-c {path}: expected a mapping of settings (key: value), got {type(settings).__name__}')
    known = set(vars(args)) - set(_NOT_SETTINGS)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"-c {path}: unknown setting(s) {unknown} (keys are train-cifar's flags with '_' for "
                         f"'-', e.g. batch_size, weight_decay)")
    for key, value in settings.items():  # every value is checked, also those the command line overrides
        if key == 'model_kwargs':
            if isinstance(value, dict):
                value = [f'{k}={v!r}' for k, v in value.items()]
            elif not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ValueError(f'-c {path}: model_kwargs must be a mapping (head: linear) or a list of '
                                 f'"key=value" strings, got {value!r}')
        if key == 'decay_steps' and not (isinstance(value, list) and all(isinstance(v, int) for v in value)):
            raise ValueError(f'-c {path}: decay_steps must be a list of step numbers, e.g. [30000, 50000], '
                             f'got {value!r}')
        if getattr(args, key) is None:  # not given on the command line
            setattr(args, key, value)


def _run_train(args: argparse.Namespace) -> int:
    if args.config:
        try:
            _apply_config_file(args)
        except ValueError as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
    overrides = {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS}
    if overrides.get('decay_steps') is not None:
        overrides['decay_steps'] = tuple(overrides['decay_steps'])
    try:
        if overrides.get('model_kwargs') is not None:
            overrides['model_kwargs'] = parse_model_kwargs(overrides['model_kwargs'])
        summary = train(overrides, argv=sys.argv)
    except NonFiniteLossError as e:
        print(f'error: {e}', file=sys.stderr)
        return 3
    except KeyboardInterrupt as e:  # Ctrl-C: 130; SIGTERM (the trainer raises it as an interrupt): 143
        print('error: interrupted; the run folder\'s summary.json (when the run had started) says where it stopped '
              'and how to resume it', file=sys.stderr)
        return 143 if str(e) == 'SIGTERM' else 130
    except (ValueError, OSError) as e:  # bad settings or data; a folder that cannot be written (read-only, full)
        where = f' ({e.filename})' if isinstance(e, OSError) and e.filename and str(e.filename) not in str(e) else ''
        print(f'error: {e}{where}', file=sys.stderr)
        return 2
    keys = ('status', 'steps', 'final_test_error', 'best_test_error', 'best_step', 'final_ema_test_error',
            'best_ema_test_error', 'best_ema_step', 'wall_time_s', 'images_per_s_median')
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    print(f"run folder: {summary['run_dir']}", file=sys.stderr)
    return 0


def _add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        'evaluate', help='top-1 error of a checkpoint / Hub folder on the full CIFAR test set',
        description='Evaluate saved weights on the full CIFAR-10/100 test set (official archives). SOURCE: a '
                    'Hub-format folder (config.json + model.safetensors, e.g. a train-cifar checkpoint), a '
                    'train-cifar run folder (newest checkpoint), a .safetensors file (in such a folder, e.g. a '
                    'checkpoint\'s model_ema.safetensors, the EMA of its weights; elsewhere with --model), or a timm '
                    'name such as local-dir:PATH / hf-hub:ID / allconv_resnet_cifar.<tag>.')
    p.add_argument('source', metavar='SOURCE')
    p.add_argument('--data-dir', required=True, help='official CIFAR python release (archive or folder)')
    p.add_argument('--dataset', choices=('cifar10', 'cifar100'), help='default: from the number of classes')
    p.add_argument('--label-type', choices=('fine', 'coarse'),
                   help="CIFAR-100's 100 classes ('fine') or 20 superclasses ('coarse'); default: from the model's "
                        "number of classes (for a bare .safetensors file with --dataset cifar100: fine)")
    p.add_argument('--no-verify-md5', dest='verify_md5', action='store_false')
    p.add_argument('--model', help='architecture of a bare .safetensors file')
    p.add_argument('--model-kwargs', nargs='*', metavar='KEY=VALUE', default=None)
    p.add_argument('--mean', type=finite_float, nargs=3, help='override the normalisation mean (0..1 scale)')
    p.add_argument('--std', type=positive_float, nargs=3, help='override the normalisation std (0..1 scale, > 0)')
    p.add_argument('--batch-size', type=positive_int, default=1000)
    p.add_argument('--device', default='auto')
    p.add_argument('--amp', choices=('none', 'bf16'), default='none')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--flip', action='store_true', help='also report test-time flip (logits averaged over each '
                                                      'image and its mirror) as flip_top1 / flip_error ...')
    p.add_argument('--output', help='also write the result JSON here')
    p.set_defaults(func=_run_evaluate)
    return p


def _check_output_file(path: Path) -> None:
    """Before the evaluation: ``--output`` names a file (not a folder) that can be written where it goes (a file
    is made and removed in its folder, or in the nearest existing folder above it). ValueError if not."""
    if path.is_dir():
        raise ValueError(f'--output {path}: is a folder; give the file to write the result JSON to')
    writable_dir(path.parent, '--output', shown=path)


def _write_output(path: Path, text: str) -> None:
    """``text`` at ``path`` through a temporary file renamed into place (folders made as needed); on failure (a
    full or read-only disk) ValueError naming the file, and neither a partial file nor the temporary one nor a
    folder made here is left behind."""
    made = missing_folders(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as e:
        remove_made_folders(made)  # only the empty folders this call made
        raise ValueError(f'--output {path}: cannot write it ({e.strerror or e}); nothing was written') from None


def _run_evaluate(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else None
    try:
        if output is not None:
            _check_output_file(output)  # before the evaluation, not after it
        result = evaluate_checkpoint(
            args.source, args.data_dir, args.dataset, args.verify_md5, args.model,
            parse_model_kwargs(args.model_kwargs), args.mean, args.std, args.batch_size, args.device, args.amp,
            args.channels_last, args.flip, args.label_type)
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if output is not None:
        try:
            _write_output(output, text + '\n')
        except ValueError as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
    return 0
