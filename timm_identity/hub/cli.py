"""``timm-identity export`` and ``timm-identity publish``."""
import argparse
import errno
import os
import re
import sys
from pathlib import Path

from ..atomic_io import missing_folders, remove_made_folders
from ..integrity import first_line
from ..model_kwargs import ParseModelKwargs

EXPORT_EPILOG = """\
examples:
  # a train-cifar run (its newest checkpoint): architecture, tag (the dataset) and card from the run's record
  timm-identity export runs/c10 --output export/c10
  # one checkpoint folder of a run, under a registered tag (the card: the run as of that step)
  timm-identity export runs/c10/checkpoints/step_00060000 --arch allconv_resnet_cifar.cifar10 --output export/c10
  # timm train.py run folder (model_best.pth.tar, EMA weights if present, + summary.csv), half-size weights
  timm-identity export output/train/<experiment> --arch allconv_resnet_imagenet.in1k --fp16 --output export/in1k
  # into the clone's hub_configs/ and the local HF cache: pretrained=True then works offline here
  timm-identity export runs/c10 --arch allconv_resnet_cifar.cifar10 --to-hub-configs --to-hf-cache

What the card says of the run comes from where the run wrote it: a train-cifar run's record (run.json: settings,
data, command lines) and log (the test error at each evaluation), up to the exported checkpoint's step, or timm
train.py's summary.csv (read as train.py writes it: a header again after --resume, a partial last row after a
kill) with its args.yaml. --summary is checked against the checkpoint, never trusted: a train-cifar summary.json
must name the same run, step and weights sha256; a summary.csv must sit beside the timm checkpoint and list its
epoch. The model card is MODEL_CARD.md of the checkout (or --model-card) with the per-model section and Hub
metadata added; it says only what the run recorded, "not recorded" otherwise. Inputs whose config.json records
their sha256 (our checkpoints and exports) are checked against it; the export records its own.
"""

PUBLISH_EPILOG = """\
examples:
  timm-identity publish export/allconv_resnet_cifar.cifar10 \\
      --repo-id timm-identity/allconv_resnet_cifar.cifar10 --dry-run
  HF_TOKEN=... timm-identity publish export/allconv_resnet_cifar.cifar10 \\
      --repo-id timm-identity/allconv_resnet_cifar.cifar10

The token comes from `hf auth login` or HF_TOKEN and is never printed. Only safetensors weights are
published: a folder with .bin/.pth/.pt/pickle files (or any file type not listed in the error) is refused
before anything is sent.
"""


# errors of a write that did not fit (a full disk, a quota, a read-only filesystem, a file size limit)
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
# safetensors' I/O error while writing: "Error while serializing: I/O error: No space left on device (os error 28)"
_SAFETENSORS_WRITE = re.compile(r'while serializing: I/O error: (.*?)(?: \(os error \d+\))?$')


def _export_failure(e: BaseException, output, made: list) -> str:
    """One line for an OSError or SafetensorError of ``export``; a write that failed (a full or read-only disk)
    names --output."""
    where = f'--output {output}' if output else 'the export folder'
    if isinstance(e, OSError):
        writing = e.errno in _WRITE_ERRNOS
        if output and e.filename:
            out, failed = Path(output).resolve(), Path(os.fsdecode(e.filename)).resolve()
            staging = out.parent / '.export-staging'  # where export builds the folder (export.export_model)
            writing = writing or failed == out or failed in made or staging in (failed, *failed.parents)
        if writing:
            return f'{where}: cannot write it ({e.strerror or first_line(e)}); nothing was written'
        name = f' ({e.filename})' if e.filename and str(e.filename) not in str(e) else ''
        return f'{first_line(e)}{name}'
    match = _SAFETENSORS_WRITE.search(first_line(e))
    if match:
        return f'{where}: cannot write it ({match.group(1)}); nothing was written'
    return first_line(e)


def _export(args: argparse.Namespace) -> int:
    from safetensors import SafetensorError

    from .export import ExportError, export_checkpoint
    label_names = None
    made = missing_folders(args.output) if args.output else []
    try:
        if args.label_names:
            with open(args.label_names, encoding='utf-8') as f:
                label_names = [line.strip() for line in f if line.strip()]
        folder = export_checkpoint(
            args.checkpoint, args.output, arch=args.arch, tag=args.tag, model_args=args.model_kwargs,
            use_ema=not args.no_ema, summary=args.summary,
            to_hub_configs=(True if args.to_hub_configs == '' else args.to_hub_configs) or None,
            to_hf_cache=args.to_hf_cache, repo_id=args.repo_id, dataset=args.dataset, label_names=label_names,
            description=args.description, fp16=args.fp16, model_card=args.model_card, overwrite=args.overwrite,
            base_model=args.base_model,
            verify=not args.no_verify,
        )
    except KeyboardInterrupt:  # the export removed its temporary folder
        print('timm-identity export: interrupted; nothing was written', file=sys.stderr)
        return 130
    except (ExportError, OSError, ValueError, SafetensorError) as e:
        # the export removed its temporary folder; remove the (empty) folders made above --output too
        remove_made_folders(made)
        message = str(e) if isinstance(e, (ExportError, ValueError)) else _export_failure(e, args.output, made)
        print(f'timm-identity export: error: {message}', file=sys.stderr)
        return 2
    print(f'Exported to {folder}')
    for path in sorted(folder.iterdir()):
        print(f'  {path.name}  {path.stat().st_size:,} bytes')
    return 0


def _publish(args: argparse.Namespace) -> int:
    from .publish import PublishError, publish
    try:
        publish(args.folder, args.repo_id, private=args.private, revision=args.revision, dry_run=args.dry_run,
                commit_message=args.commit_message, endpoint=args.endpoint)
    except PublishError as e:
        print(f'timm-identity publish: error: {e}', file=sys.stderr)
        return 2
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        'export', help='training checkpoint -> Hub-form folder (config.json, model.safetensors, README.md)',
        description='Export a training checkpoint to a folder in exactly the form of its Hugging Face Hub\n'
                    'repo: config.json (timm save_for_hf), model.safetensors and a README.md model card.\n'
                    'Written under a temporary name, reloaded and checked, then renamed into place.',
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoint', help='a train-cifar run folder (its newest checkpoint) or checkpoint folder, a '
                                      'timm train.py run folder (model_best.pth.tar + summary.csv), a Hub-form '
                                      'folder (model.safetensors + config.json), a .safetensors state dict, or a '
                                      'torch checkpoint (.pth.tar, .pth; read with weights_only=True)')
    p.add_argument('--arch', help='model name, optionally with the tag: allconv_resnet_cifar.cifar10 (default: '
                                  'the checkpoint\'s config.json or metadata)')
    p.add_argument('--tag', help='pretrained tag, if not in --arch (a new tag is fine for --output; default: '
                                 'a train-cifar run\'s dataset, e.g. cifar10, or a Hub-form folder\'s tag)')
    p.add_argument('--model-kwargs', nargs='*', default={}, action=ParseModelKwargs, metavar='KEY=VALUE',
                   help='model arguments the checkpoint was trained with, e.g. depths="(1,1,1)"; num_classes, '
                        'head and in_chans are read from the weights')
    p.add_argument('--no-ema', action='store_true', help='take the weights, not their EMA: state_dict, not '
                                                         'state_dict_ema, of a timm checkpoint; model.safetensors, not '
                                                         'model_ema.safetensors, of a train-cifar --model-ema run')
    p.add_argument('--summary', help='a training summary, checked against the checkpoint (a train-cifar '
                                     'summary.json of the same run, step and weights; timm train.py\'s summary.csv '
                                     'beside its checkpoint); default: what the run recorded')
    out = p.add_mutually_exclusive_group()
    out.add_argument('--output', '-o', help='destination folder')
    out.add_argument('--to-hub-configs', nargs='?', const='', metavar='HUB_CONFIGS',
                     help='write into <hub_configs>/<arch>.<tag>/ (default: this checkout\'s hub_configs/), '
                          'replacing it; only for the registered default architecture')
    p.add_argument('--to-hf-cache', action='store_true',
                   help='also put the folder into the local HF cache under its hf_hub_id, so '
                        'pretrained=True / hf-hub: load it offline on this machine')
    p.add_argument('--repo-id', help='hf_hub_id written into config.json (default timm-identity/<arch>.<tag>)')
    p.add_argument('--dataset', help='cifar10, cifar100, in1k or a Hub dataset id (default: from the tag)')
    p.add_argument('--label-names', metavar='FILE', help='text file, one class name per line, in class order')
    p.add_argument('--base-model', metavar='REPO_ID',
                   help="Hub id of the weights these were fine-tuned from, for the card's base_model (default: "
                        "what the run records: train-cifar's --init-from, or train.py's --pretrained --model NAME)")
    p.add_argument('--description', help='one-line description for config.json and the card')
    p.add_argument('--fp16', action='store_true', help='store the weights in float16 (the card says so)')
    p.add_argument('--model-card', metavar='MODEL_CARD.md', help='card template (default: the checkout\'s)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output folder')
    p.add_argument('--no-verify', action='store_true', help='skip reloading the folder to check the outputs')
    p.set_defaults(func=_export)

    p = subparsers.add_parser(
        'publish', help='push an exported folder to a Hugging Face Hub model repo',
        description='Push a folder made by `timm-identity export` to a Hub model repo as one commit.\n'
                    'Checks everything local first; --dry-run lists exactly the files (size, sha256) and target.',
        epilog=PUBLISH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folder', help='exported folder (config.json, model.safetensors, README.md)')
    p.add_argument('--repo-id', required=True, help='owner/name of the model repo (created if missing)')
    p.add_argument('--private', action='store_true', help='create the repo private (an existing repo keeps its '
                                                          'visibility)')
    p.add_argument('--revision', help='branch to commit to (created from main if missing; default main)')
    p.add_argument('--dry-run', action='store_true', help='print what would be uploaded, upload nothing')
    p.add_argument('--commit-message', help='commit message')
    p.add_argument('--endpoint', help='Hub endpoint (default: HF_ENDPOINT or https://huggingface.co)')
    p.set_defaults(func=_publish)
