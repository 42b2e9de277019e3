"""Architecture report: layer table, parameter counts and GMACs side by side with the paper's numbers.

``timm-identity arch allconv_resnet_cifar`` prints it; ``timm-identity demo`` prints both models' reports
and measures how close each residual block starts to the identity (Section 4's init), on random input.
"""
import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import timm

from .cli_args import positive_int
from .integrity import DamagedFileError
from .models.allconv_resnet import AllConvResNet
from .models.residual_block import AllConvResidualBlock

__all__ = ['PAPER_NUMBERS', 'ArchSummary', 'summarize', 'training_flops_per_image', 'run_flops_per_image',
           'block_residual_ratios', 'format_report', 'add_parser']

# What the paper says about each registered architecture, for the side-by-side column.
PAPER_NUMBERS: Dict[str, Dict[str, object]] = {
    'allconv_resnet_cifar': {
        'trainable_params': '13.5M (Table 1); 13.59M in the text',
        'convs': 55,
        'gmacs': 'not given',
        'input': '32x32',
    },
    'allconv_resnet_cifar_w16_d3': {
        'trainable_params': 'not in the paper (Table 1 at 1/4 width, 3 blocks per stage)',
        'convs': 'not in the paper (Table 1: 55)',
        'gmacs': 'not given',
        'input': '32x32',
    },
    'allconv_resnet_imagenet': {
        'trainable_params': '35.7M',
        'convs': 'not given',
        'gmacs': 'not given (ResNet-34: 3.6)',
        'input': '224x224',
    },
}


@dataclass
class LayerRow:
    name: str
    kind: str
    in_chs: int
    out_chs: int
    stride: int
    output_hw: List[int]
    params: int


@dataclass
class ArchSummary:
    model_name: str
    input_size: List[int]
    num_classes: int
    conv_count: int
    conv_weights: int
    conv_biases: int
    other_trainable: int
    trainable_params: int
    fixed_head_entries: int
    gmacs: float
    layers: List[LayerRow] = field(default_factory=list)


def _count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, from torch's own FLOP counter (FLOPs / 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def training_flops_per_image(model: nn.Module, input_size: Sequence[int], batch_size: int = 2) -> float:
    """FLOPs of one training image: forward and backward of a cross-entropy loss (weight and input gradients
    wherever autograd computes them), counted by torch's own FLOP counter on a batch of ``batch_size`` and divided
    by it. The optimizer update and the data augmentation are left out (they are elementwise, and small). The
    model is left in training mode with its gradients cleared."""
    model.train()
    x = torch.randn(batch_size, *input_size)
    with FlopCounterMode(display=False) as counter:
        logits = model(x)
        nn.functional.cross_entropy(logits.float(), torch.zeros(batch_size, dtype=torch.long)).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch_size


def run_flops_per_image(cfg: Dict[str, Any]) -> float:
    """:func:`training_flops_per_image` of the model a ``train-cifar`` run trained (its ``run.json`` config: model,
    model kwargs, dataset and label type; a frozen backbone gets no weight gradients)."""
    from .data.cifar import NUM_CLASSES
    model = timm.create_model(cfg['model'], num_classes=NUM_CLASSES[(cfg['dataset'], cfg['label_type'])],
                              **cfg['model_kwargs'])
    if cfg.get('freeze_backbone'):
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith('fc.'))
    return training_flops_per_image(model, (3, 32, 32))


def summarize(model_name: str, input_size: Optional[Sequence[int]] = None, **model_kwargs) -> ArchSummary:
    """Build ``model_name`` with timm and count its layers, parameters, fixed-head entries and MACs."""
    model = timm.create_model(model_name, **model_kwargs)
    if not isinstance(model, AllConvResNet):
        raise ValueError(f'{model_name} is not an all-conv residual network of this package.')
    model.eval()
    input_size = list(input_size or model.pretrained_cfg['input_size'])
    x = torch.randn(1, *input_size)

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    conv_weights = sum(m.weight.numel() for m in convs)
    conv_biases = sum(m.bias.numel() for m in convs if m.bias is not None)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fixed_head = sum(b.numel() for n, b in model.named_buffers() if n.startswith('fc.'))

    rows: List[LayerRow] = []
    hooks = []
    outputs: Dict[str, List[int]] = {}

    def _record(name):
        def hook(module, inputs, output):
            outputs[name] = list(output.shape[-2:])
        return hook

    named = [('stem', model.stem)] + [
        (f'stages.{s}.{b}', block) for s, stage in enumerate(model.stages) for b, block in enumerate(stage)]
    for name, module in named:
        hooks.append(module.register_forward_hook(_record(name)))
    macs = _count_macs(model, x)
    for h in hooks:
        h.remove()
    for name, module in named:
        if isinstance(module, AllConvResidualBlock):
            conv = module.conv1
            kind = f'block {conv.kernel_size[0]}x{conv.kernel_size[1]}'
            if not isinstance(module.shortcut, nn.Identity):
                kind += ' +' + ('avgpool/pad' if not isinstance(module.shortcut, nn.Conv2d) else '1x1 proj')
        else:
            conv = module
            kind = f'stem {conv.kernel_size[0]}x{conv.kernel_size[1]} conv'
        rows.append(LayerRow(
            name=name, kind=kind, in_chs=conv.in_channels, out_chs=module.conv2.out_channels
            if isinstance(module, AllConvResidualBlock) else conv.out_channels,
            stride=conv.stride[0], output_hw=outputs[name],
            params=sum(p.numel() for p in module.parameters()),
        ))
    return ArchSummary(
        model_name=model_name, input_size=input_size, num_classes=model.num_classes, conv_count=len(convs),
        conv_weights=conv_weights, conv_biases=conv_biases,
        other_trainable=trainable - conv_weights - conv_biases, trainable_params=trainable,
        fixed_head_entries=fixed_head, gmacs=macs / 1e9, layers=rows,
    )


@torch.no_grad()
def block_residual_ratios(model: AllConvResNet, x: torch.Tensor) -> List[float]:
    """For each residual block, ``||C2(ReLU(C1 h))|| / ||shortcut(h)||`` on its actual input ``h``.

    Near 0 means the block starts near the identity (the paper's init); 0 exactly when C1 = C2 = 0.
    """
    ratios = []
    h = model.stem(x)
    for stage in model.stages:
        for block in stage.children():
            out = block(h)
            identity = block.shortcut(h)
            ratios.append(((out - identity).norm() / identity.norm()).item())
            h = out
    return ratios


def _group_rows(rows: List[LayerRow]) -> List[List[str]]:
    """Collapse runs of identical blocks in a stage into one line ('x8')."""
    table = []
    i = 0
    while i < len(rows):
        row = rows[i]
        j = i + 1
        stage = row.name.rsplit('.', 1)[0]
        while (j < len(rows) and rows[j].name.rsplit('.', 1)[0] == stage and rows[j].kind == row.kind
               and rows[j].in_chs == row.in_chs and rows[j].out_chs == row.out_chs and rows[j].stride == row.stride):
            j += 1
        count = j - i
        name = row.name if count == 1 else f'{row.name}..{rows[j - 1].name.rsplit(".", 1)[1]}'
        table.append([
            name, row.kind + (f' x{count}' if count > 1 else ''), f'{row.in_chs}->{row.out_chs}', str(row.stride),
            'x'.join(map(str, row.output_hw)), f'{row.params * count:,}'])
        i = j
    return table


def format_report(summary: ArchSummary) -> str:
    header = ['layer', 'kind', 'channels', 'stride', 'output', 'params']
    table = _group_rows(summary.layers)
    widths = [max(len(r[c]) for r in [header] + table) for c in range(len(header))]
    lines = [f'{summary.model_name}  (input {"x".join(map(str, summary.input_size))}, '
             f'{summary.num_classes} classes)', '']
    for r in [header] + table:
        lines.append('  '.join(cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths))))
    paper = PAPER_NUMBERS.get(summary.model_name, {})
    comparisons = [
        ('convolutions', f'{summary.conv_count}', paper.get('convs', '-')),
        ('conv weights', f'{summary.conv_weights:,}', '-'),
        ('conv biases', f'{summary.conv_biases:,}', '- (not said)'),
        ('trainable parameters', f'{summary.trainable_params:,} ({summary.trainable_params / 1e6:.2f}M)',
         paper.get('trainable_params', '-')),
        ('fixed random projection (not trained)', f'{summary.fixed_head_entries:,}', 'not counted'),
        (f'GMACs at {"x".join(map(str, summary.input_size[1:]))}', f'{summary.gmacs:.3f}', paper.get('gmacs', '-')),
    ]
    lines += ['', f'{"":40s}{"ours":>28s}   paper']
    for what, ours, theirs in comparisons:
        lines.append(f'{what:40s}{ours:>28s}   {theirs}')
    return '\n'.join(lines)


def _parse_size(text: str) -> List[int]:
    try:
        size = [int(v) for v in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'--input-size must be C,H,W integers, got {text!r}')
    if len(size) != 3 or min(size) < 1:
        raise argparse.ArgumentTypeError(f'--input-size must be three positive integers C,H,W, got {text!r}')
    return size


def _run_arch(args: argparse.Namespace) -> int:
    if args.model not in timm.list_models('allconv*'):
        raise SystemExit(f'Unknown model {args.model!r}; choose one of {timm.list_models("allconv*")}.')
    kwargs = {} if args.num_classes is None else {'num_classes': args.num_classes}
    summary = summarize(args.model, args.input_size, **kwargs)
    print(json.dumps(asdict(summary), indent=2) if args.json else format_report(summary))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from timm_identity.data.sample_images import load_cifar10_sample
    try:  # the shipped images, checked (pixels and labels) before anything is printed
        sample = load_cifar10_sample()
    except ValueError as e:
        print(f'timm-identity demo: error: {e}', file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    for name in timm.list_models('allconv*'):
        print(format_report(summarize(name)), end='\n\n')
    print('Identity at init (Section 4): ||C2(ReLU(C1 h))|| / ||shortcut(h)|| per block of allconv_resnet_cifar,')
    print(f'on a batch of {args.batch_size} random 32x32 images:')
    x = torch.randn(args.batch_size, 3, 32, 32)
    for init in ('paper', 'standard'):
        ratios = block_residual_ratios(timm.create_model('allconv_resnet_cifar', init=init).eval(), x)
        print(f'  init={init:9s} max {max(ratios):.2e}  mean {sum(ratios) / len(ratios):.2e}  '
              f'over {len(ratios)} blocks')
    print()
    try:
        _demo_pretrained(*sample)
    except DamagedFileError as e:
        print(f'timm-identity demo: error: {e}', file=sys.stderr)
        return 2
    return 0


def _demo_pretrained(images, labels, classes) -> None:
    """Every shipped CIFAR-10 tag, loaded with ``pretrained=True``, on the package's 100 real test images."""
    from timm_identity.pretrained.tags import recorded_test_results
    tags = [t for t in timm.list_pretrained('allconv*') if timm.models.get_pretrained_cfg(t).num_classes == 10
            and tuple(timm.models.get_pretrained_cfg(t).input_size) == (3, 32, 32)]
    if not tags:
        print("Pretrained: no CIFAR-10 tag has weights here (timm.list_pretrained('allconv*') is "
              f"{timm.list_pretrained('allconv*')}).")
        return
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    print(f'Pretrained weights on {len(labels)} real CIFAR-10 test images shipped with the package '
          f'(10 per class):')
    for tag in tags:
        try:
            model = timm.create_model(tag, pretrained=True).eval()
        except DamagedFileError as e:  # the shipped file differs from its record: one line, from _run_demo
            raise DamagedFileError(f'{tag}: {e}') from None
        except RuntimeError as e:  # a listed tag whose weights are not to be had here (e.g. not in the HF cache)
            print(f'  {tag}: skipped ({str(e).splitlines()[0]})')
            continue
        cfg = model.pretrained_cfg
        mean, std = torch.tensor(cfg['mean']).view(1, 3, 1, 1), torch.tensor(cfg['std']).view(1, 3, 1, 1)
        with torch.no_grad():
            pred = model((x - mean) / std).argmax(1).numpy()
        right = int((pred == labels).sum())
        recorded = recorded_test_results(tag)
        full = (f"; recorded on the full test set ({recorded['images']:,} images): top-1 error "
                f"{recorded['error']:.2f} %" if recorded else '; no full-test-set result recorded')
        print(f"  timm.create_model('{tag}', pretrained=True): {right}/{len(labels)} right "
              f"({100 * right / len(labels):.0f} %){full}")
        print('    first of each class -> ' + ', '.join(
            f'{classes[labels[i]]}: {classes[pred[i]]}' for i in range(0, len(labels), len(labels) // 10)))


def add_parser(subparsers) -> None:
    arch = subparsers.add_parser(
        'arch', help='layer table, parameter counts and GMACs of a model, beside the paper\'s numbers',
        description='Print the layer table, parameter counts (conv weights, biases, trainable, fixed head) and '
                    'GMACs of a registered all-conv residual network, side by side with the paper\'s numbers.')
    arch.add_argument('model', help='registered model name, e.g. allconv_resnet_cifar or allconv_resnet_imagenet')
    arch.add_argument('--input-size', type=_parse_size, default=None, metavar='C,H,W',
                      help='input size for the output shapes and GMACs (default: the model\'s pretrained cfg)')
    arch.add_argument('--num-classes', type=int, default=None, help='classes (default: the model\'s cfg)')
    arch.add_argument('--json', action='store_true', help='print the summary as JSON')
    arch.set_defaults(func=_run_arch)

    demo = subparsers.add_parser(
        'demo', help='architecture reports, an identity-at-init check and the shipped weights at work, on CPU, '
                     'no dataset needed',
        description='Print the models\' architecture reports, measure how close each residual block of '
                    'allconv_resnet_cifar starts to the identity under the paper\'s init and the standard one, '
                    'then load every CIFAR-10 tag that has weights with pretrained=True and classify the 100 real '
                    'CIFAR-10 test images that ship with the package, beside the tag\'s recorded full-test-set '
                    'error.')
    demo.add_argument('--batch-size', type=positive_int, default=8, help='random images for the identity check')
    demo.add_argument('--seed', type=int, default=0)
    demo.set_defaults(func=_run_demo)
