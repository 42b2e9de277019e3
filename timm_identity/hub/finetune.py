"""Fine-tune a pretrained model (e.g. ``allconv_resnet_cifar.cifar10``) on another labelled set.

The backbone comes from the pretrained weights (strict load, original head), then the head is replaced
for the new classes: ``--head linear`` (default: a trainable ``nn.Linear``) or ``--head fixed`` (the
paper's untrained random projection, so only the backbone adapts). ``--freeze-backbone`` trains the
linear head alone (a linear probe). Optimizer and schedule come from timm's factories
(``create_optimizer_v2``, ``create_scheduler_v2``), data from timm's ``create_dataset``: an image folder
(``DIR/train/<class>/*.png``, optional ``DIR/val/...``) or a torchvision set such as ``torch/cifar100``
(``--data-dir`` holding ``cifar-100-python/``). The result is written as a Hub-form folder (export.py),
ready for ``timm-identity publish``.
"""
import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
import timm
from timm.data import create_dataset, create_transform, resolve_data_config
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import AverageMeter, accuracy

from ..integrity import check_weights_file
from ..model_kwargs import ParseModelKwargs
from .training_sources import Metric, TrainingRecord

__all__ = ['build_parser', 'build_model', 'finetune', 'main']

_logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m timm_identity.hub.finetune', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='example:\n  python -m timm_identity.hub.finetune --model allconv_resnet_cifar.cifar10 '
               '--dataset torch/cifar100 '
               '\\\n      --data-dir data/ --epochs 10 --lr 0.01 --output export/allconv_resnet_cifar.cifar100_ft')
    g = p.add_argument_group('model')
    g.add_argument('--model', default='allconv_resnet_cifar.cifar10',
                   help='pretrained model: a registered tag, hf-hub:<repo> or local-dir:<exported folder>')
    g.add_argument('--pretrained-file', help='load the backbone from this file instead (safetensors; a torch '
                                             'file is read with weights_only=True)')
    g.add_argument('--model-kwargs', nargs='*', default={}, action=ParseModelKwargs, metavar='KEY=VALUE',
                   help='architecture arguments of the pretrained weights, if not the defaults')
    g.add_argument('--head', choices=('linear', 'fixed'), default='linear', help='new head (default: linear)')
    g.add_argument('--freeze-backbone', action='store_true', help='train the linear head only')
    g = p.add_argument_group('data')
    g.add_argument('--dataset', default='', help="'' (image folder) or a timm dataset name, e.g. torch/cifar100")
    g.add_argument('--data-dir', required=True, help='image folder root (with train/ and optional val/) or the '
                                                     'torchvision dataset root')
    g.add_argument('--train-split', default='train')
    g.add_argument('--val-split', default='val', help="evaluation split ('' for none); torch/ sets use 'test'")
    g.add_argument('--no-aug', action='store_true', help='no training augmentation')
    g.add_argument('--batch-size', type=int, default=128)
    g.add_argument('--workers', type=int, default=2)
    g = p.add_argument_group('optimisation (timm factories)')
    g.add_argument('--opt', default='sgd')
    g.add_argument('--lr', type=float, default=0.01)
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--weight-decay', type=float, default=1e-4)
    g.add_argument('--sched', default='cosine')
    g.add_argument('--epochs', type=int, default=10)
    g.add_argument('--warmup-epochs', type=int, default=0)
    g.add_argument('--max-steps', type=int, default=0, help='stop after this many steps (0: all epochs)')
    g.add_argument('--seed', type=int, default=0)
    g.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    g.add_argument('--log-every', type=int, default=50)
    g = p.add_argument_group('output')
    g.add_argument('--output', help='write the fine-tuned model here in Hub form (export.py)')
    g.add_argument('--tag', default=None, help='tag of the new model (default: <source tag>_ft_<dataset>)')
    g.add_argument('--repo-id', help='hf_hub_id for config.json (default timm-identity/<arch>.<tag>)')
    g.add_argument('--model-card', help='MODEL_CARD.md template (default: the checkout\'s)')
    g.add_argument('--overwrite', action='store_true')
    return p


def build_model(args: argparse.Namespace, num_classes: int) -> torch.nn.Module:
    """Pretrained model with its original head (strict load), then a new head for ``num_classes``."""
    kwargs: Dict[str, Any] = dict(args.model_kwargs or {})
    if args.pretrained_file:
        check_weights_file(args.pretrained_file)  # recorded sha256 / readable header, before timm loads it
        kwargs['pretrained_cfg_overlay'] = dict(file=str(args.pretrained_file))
    elif args.model.startswith('local-dir:') and Path(args.model[len('local-dir:'):], 'model.safetensors').is_file():
        check_weights_file(Path(args.model[len('local-dir:'):], 'model.safetensors'))
    model = timm.create_model(args.model, pretrained=True, **kwargs)
    model.reset_classifier(num_classes, head=args.head)
    if args.freeze_backbone:
        if args.head != 'linear':
            raise ValueError('--freeze-backbone needs --head linear (a fixed head has nothing to train).')
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith('fc.'))
    return model


def _class_names(dataset) -> Optional[List[str]]:
    if getattr(dataset, 'classes', None):
        return list(dataset.classes)
    reader = getattr(dataset, 'reader', None)
    class_to_idx = getattr(reader, 'class_to_idx', None)
    if class_to_idx:
        return [name for name, _ in sorted(class_to_idx.items(), key=lambda kv: kv[1])]
    return None


def finetune(args: argparse.Namespace) -> Dict[str, Any]:
    """Run the fine-tuning; returns ``dict(losses=[...], val_top1=..., output=...)``."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    split_kw = dict(download=False)
    train_set = create_dataset(args.dataset, root=args.data_dir, split=args.train_split, is_training=True, **split_kw)
    class_names = _class_names(train_set)
    if not class_names:
        raise ValueError(f'Cannot tell the classes of {args.dataset or "the image folder"} at {args.data_dir}.')
    val_set = None
    if args.val_split:
        try:
            val_set = create_dataset(args.dataset, root=args.data_dir, split=args.val_split, **split_kw)
        except Exception as e:  # no val split: train only, say so
            _logger.warning(f'No {args.val_split!r} split ({e}); training without evaluation.')
        if val_set is not None and not args.dataset:  # an image folder: index val/ by train/'s classes
            val_names = _class_names(val_set) or []
            unknown = sorted(set(val_names) - set(class_names))
            if unknown:
                raise ValueError(f'{args.val_split}/ has classes that {args.train_split}/ lacks: {unknown}')
            if val_names != class_names:
                val_set = create_dataset(args.dataset, root=args.data_dir, split=args.val_split,
                                         class_map={name: i for i, name in enumerate(class_names)}, **split_kw)

    model = build_model(args, len(class_names)).to(device)
    source_cfg = dict(model.pretrained_cfg)
    data_cfg = resolve_data_config({}, model=model)
    if args.no_aug:
        train_set.transform = create_transform(**data_cfg, is_training=False)
    else:
        train_set.transform = create_transform(**data_cfg, is_training=True, scale=(0.5, 1.0), hflip=0.5,
                                               color_jitter=0.)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=False,
        generator=torch.Generator().manual_seed(args.seed))
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        step_on_epochs=False, updates_per_epoch=len(loader))

    losses: List[float] = []
    step = 0
    start = time.time()
    model.train()
    for epoch in range(num_epochs):
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            loss = F.cross_entropy(model(images), targets)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f'Loss is {loss.item()} at step {step}; lower --lr.')
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(num_updates=step)
            losses.append(loss.item())
            if args.log_every and step % args.log_every == 0:
                print(f'epoch {epoch} step {step} loss {loss.item():.4f} lr {optimizer.param_groups[0]["lr"]:.5f}')
            if args.max_steps and step >= args.max_steps:
                break
        if args.max_steps and step >= args.max_steps:
            break

    result: Dict[str, Any] = dict(losses=losses, steps=step, wall_time_s=round(time.time() - start, 2))
    metrics: List[Metric] = []
    if val_set is not None:
        val_set.transform = create_transform(**data_cfg, is_training=False)
        top1, top5 = AverageMeter(), AverageMeter()
        model.eval()
        with torch.no_grad():
            for images, targets in torch.utils.data.DataLoader(val_set, batch_size=args.batch_size,
                                                               num_workers=args.workers):
                out = model(images.to(device))
                k = min(5, out.shape[1])
                a1, a5 = accuracy(out, targets.to(device), topk=(1, k))
                top1.update(a1.item(), images.shape[0])
                top5.update(a5.item(), images.shape[0])
        result['val_top1'] = top1.avg
        metrics.append(Metric('accuracy', top1.avg, 1, 'final'))
        if len(class_names) >= 5:
            metrics.append(Metric('accuracy', top5.avg, 5, 'final'))
    print(json.dumps({k: v for k, v in result.items() if k != 'losses'}))

    if args.output:
        from .export import export_model
        src_tag = source_cfg.get('tag') or 'model'
        dataset_key = (args.dataset.split('/')[-1] if args.dataset else Path(args.data_dir).name) or 'data'
        tag = args.tag or f'{src_tag}_ft_{dataset_key}'
        base = source_cfg.get('hf_hub_id')
        result['output'] = export_model(
            model.cpu().eval(), args.output, tag=tag, repo_id=args.repo_id, dataset=args.dataset or None,
            label_names=class_names, metrics=metrics, model_card=args.model_card, overwrite=args.overwrite,
            description=f'{args.model} fine-tuned on {args.dataset or args.data_dir} ({args.head} head, '
                        f'{step} steps).',
            training=TrainingRecord(
                trainer='timm-identity tools/finetune.py', length=f'{step:,} optimizer steps',
                recipe=', '.join(f'{k} {getattr(args, k)}' for k in (
                    'opt', 'lr', 'momentum', 'weight_decay', 'sched', 'epochs', 'warmup_epochs', 'batch_size', 'head',
                    'freeze_backbone', 'no_aug')),
                eval_split=args.val_split if val_set is not None else None,
                eval_images=len(val_set) if val_set is not None else None),
            base_model=base if base and base.count('/') == 1 else None,
        )
        print(f'Fine-tuned model written to {result["output"]}')
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        finetune(args)
    except ValueError as e:  # bad arguments, damaged weights: one line
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
