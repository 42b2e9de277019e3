"""All-convolutional residual networks of Hardt & Ma, "Identity Matters in Deep Learning" (ICLR 2017).

Section 4 of the paper: a stem conv, stages of residual blocks ``x + C2(ReLU(C1 x))`` with the tiny
init ``sigma = 1/(k^2 c)``, a global average pool and a fixed random projection to the logits. No batch
norm, no dropout, no max pool.

``allconv_resnet_cifar`` is Table 1 exactly (55 convs, 13,538,736 conv weights); ``allconv_resnet_cifar_w16_d3``
is the same design at a quarter of its width with 3 blocks per stage (not in the paper; sized to train on a CPU).
``allconv_resnet_imagenet``
is our reading of the paper's "all-convolutional variant of the 34-layer network" (35.7M trainable
parameters): ResNet-34's stages (3, 4, 6, 3 blocks at 64, 128, 256, 512 channels) with the max pool
replaced by a stride-2 first block, plus a fifth stage of 3 blocks at 512 channels and stride 1
(35,251,392 conv weights, 1.3 % under 35.7M). See MODEL_CARD.md for every choice the paper leaves open.

The pretrained tags' cfgs are ``default_cfgs`` below; where ``pretrained=True`` finds their weights, and how it
checks them: :mod:`timm_identity.pretrained.tags`.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d, get_norm_layer, register_notrace_function
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model

from ..data.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from ..pretrained.tags import check_after_load, hub_repo_id, resolve_pretrained, weights_unreachable_error
from ..timm_private import feature_take_indices, update_model_args  # update_model_args: args for save_for_hf
from .fixed_projection import HEAD_TYPES, create_classifier
from .residual_block import AllConvResidualBlock, init_conv_

__all__ = ['AllConvResNet', 'ARCH_DEFAULTS', 'check_input']

# Architecture defaults of the registered models; `timm.create_model(name, **kwargs)` overrides any.
ARCH_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'allconv_resnet_cifar': dict(  # Table 1
        depths=(9, 9, 9), widths=(64, 128, 256), strides=(1, 2, 2),
        stem_chs=16, stem_kernel_size=3, stem_stride=1,
    ),
    'allconv_resnet_cifar_w16_d3': dict(  # Table 1 at a quarter of its width, 3 blocks per stage (CPU-sized)
        depths=(3, 3, 3), widths=(16, 32, 64), strides=(1, 2, 2),
        stem_chs=16, stem_kernel_size=3, stem_stride=1,
    ),
    'allconv_resnet_imagenet': dict(  # our reading of the all-conv ResNet-34 variant (MODEL_CARD.md)
        depths=(3, 4, 6, 3, 3), widths=(64, 128, 256, 512, 512), strides=(2, 2, 2, 2, 1),
        stem_chs=64, stem_kernel_size=7, stem_stride=2,
    ),
}


@register_notrace_function  # an FX leaf: traced models (features_only with feature_cls='fx') keep the checks
def check_input(x: torch.Tensor, in_chans: int, min_size: int) -> torch.Tensor:
    """Clear errors for inputs the network cannot take, instead of a shape error deep inside.

    A plain function that TorchScript compiles and that timm's FX tracer keeps as a leaf, so scripted and
    traced models raise the same errors as the eager one. It returns ``x`` so that it sits on the data path
    (dead-code elimination in FX feature extraction would drop a check whose result nothing uses).
    """
    if x.dim() != 4:
        raise ValueError(f'AllConvResNet expects a 4-D NCHW batch, got shape {list(x.shape)}.')
    if x.shape[1] != in_chans:
        raise ValueError(
            f'AllConvResNet was built for {in_chans} input channels but got {x.shape[1]} '
            f'(input shape {list(x.shape)}); create it with in_chans={x.shape[1]} to change that.')
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f'Input of {x.shape[2]}x{x.shape[3]} pixels is too small for this network\'s total '
            f'downsampling of {min_size}x: height and width must be at least {min_size}.')
    return x


def _create_pool(pool_type: str) -> SelectAdaptivePool2d:
    """Global pool as timm's heads make it (``timm.layers.classifier``): flattened when it pools, and a
    pass-through that keeps the NCHW map for ``pool_type=''`` (``reset_classifier(0, '')``)."""
    return SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))


def _check_arch_args(*, depths, widths, strides, stem_chs, stem_kernel_size, stem_stride, kernel_size,
                     num_classes, in_chans, drop_rate) -> None:
    """One clear error for architecture arguments that would build a wrong or broken network: an empty stage
    (whose feature_info would not match the maps), a non-positive width or stride, an even kernel (its
    'same' padding would shift the map and break the shortcut's shape)."""
    def ints(name, values, minimum):
        scalar = not isinstance(values, (list, tuple))
        if any(not isinstance(v, int) or isinstance(v, bool) or v < minimum for v in ([values] if scalar else values)):
            raise ValueError(f'{name} must be {"an integer" if scalar else "integers"} >= {minimum}, got '
                             f'{values if scalar else tuple(values)!r}'
                             + (' (an empty stage is not a stage: leave it out)' if name == 'depths' else ''))
    if len(depths) == 0:
        raise ValueError('depths: at least one stage is needed, got ()')
    ints('depths', depths, 1)
    ints('widths', widths, 1)
    ints('strides', strides, 1)
    ints('stem_chs', stem_chs, 1)
    ints('stem_stride', stem_stride, 1)
    ints('in_chans', in_chans, 1)
    ints('num_classes', num_classes, 0)
    for name, k in (('kernel_size', kernel_size), ('stem_kernel_size', stem_kernel_size)):
        if not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f'{name} must be an odd positive integer (same-size padding), got {k!r}')
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f'drop_rate must be in [0, 1), got {drop_rate!r}')


class AllConvResNet(nn.Module):
    """Stem conv -> stages of ``AllConvResidualBlock`` -> global average pool -> classifier.

    Args:
        depths: residual blocks per stage.
        widths: output channels per stage.
        strides: stride of each stage's first block (carried by its ``C1`` and its shortcut).
        stem_chs, stem_kernel_size, stem_stride: the single standard conv in front (no activation after
            it: the residual stream starts linear, as ``h_0 = A_0 x`` in Section 3).
        kernel_size: kernel of the residual convs.
        num_classes: classes; 0 gives no classifier (features only).
        in_chans: input channels.
        global_pool: timm pool type for the head ('avg' in the paper; '' to keep the spatial map).
        head: 'fixed' (the paper's untrained random projection) or 'linear' (trainable, for fine-tuning).
        head_seed: seed of the fixed projection.
        init: residual conv init, 'paper' (sigma = 1/(k^2 c)), 'standard' (1/(k sqrt c)), 'zero', or 'fixup'
            (Fixup, Zhang et al. 2019: see ``AllConvResidualBlock``; L = sum(depths). Its zero-init of the
            classifier applies to a trainable ``head='linear'`` (weight and bias start at 0); the paper's
            fixed random projection is never trained, so it stays as it is: zero would give zero logits
            forever. Fixup's network-level scalar biases (after the stem's ReLU, before the classifier) are
            left out: our stem has no ReLU and its per-channel bias, and the linear head's bias, already
            cover them).
        branch_gate: SkipInit / ReZero gate, ``shortcut(x) + alpha * branch(x)`` with a learnable scalar
            ``alpha`` per block starting at 0 (off in the paper).
        shortcut: 'avgpool' (average pool + zero channel padding, the paper's) or 'proj' (1x1 conv).
        norm_layer: optional norm after each residual conv (an ablation; None in the paper).
        conv_bias: biases on the convs (ours: yes, zero-initialised; the paper does not say).
        drop_rate: dropout before the classifier (an ablation; 0 in the paper, so no Dropout module exists).
    """

    def __init__(
            self,
            depths: Sequence[int] = (9, 9, 9),
            widths: Sequence[int] = (64, 128, 256),
            strides: Sequence[int] = (1, 2, 2),
            stem_chs: int = 16,
            stem_kernel_size: int = 3,
            stem_stride: int = 1,
            kernel_size: int = 3,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            head: str = 'fixed',
            head_seed: int = 0,
            init: str = 'paper',
            shortcut: str = 'avgpool',
            norm_layer: Optional[Union[str, Callable[[int], nn.Module]]] = None,
            conv_bias: bool = True,
            drop_rate: float = 0.,
            branch_gate: bool = False,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}  # timm's factory kwargs: where and in which dtype to create
        if not (len(depths) == len(widths) == len(strides)):
            raise ValueError(f'depths, widths and strides must have one entry per stage, '
                             f'got {len(depths)}, {len(widths)}, {len(strides)}.')
        if head not in HEAD_TYPES:
            raise ValueError(f"Unknown head {head!r}; expected one of {HEAD_TYPES}.")
        _check_arch_args(depths=depths, widths=widths, strides=strides, stem_chs=stem_chs,
                         stem_kernel_size=stem_kernel_size, stem_stride=stem_stride, kernel_size=kernel_size,
                         num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.head_type = head
        self.head_seed = head_seed
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        norm_layer = get_norm_layer(norm_layer)

        self.stem = nn.Conv2d(in_chans, stem_chs, stem_kernel_size, stride=stem_stride,
                              padding=stem_kernel_size // 2, bias=conv_bias, **dd)
        init_conv_(self.stem, 'standard')
        reduction = stem_stride
        self.feature_info = [dict(num_chs=stem_chs, reduction=reduction, module='stem')]

        stages = []
        prev_chs = stem_chs
        num_blocks = sum(depths)
        for stage_idx, (depth, width, stride) in enumerate(zip(depths, widths, strides)):
            blocks = []
            for block_idx in range(depth):
                blocks.append(AllConvResidualBlock(
                    prev_chs, width, stride=stride if block_idx == 0 else 1, kernel_size=kernel_size,
                    bias=conv_bias, shortcut=shortcut, init=init, norm_layer=norm_layer,
                    branch_gate=branch_gate, num_blocks=num_blocks, **dd,
                ))
                prev_chs = width
            reduction *= stride
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f'stages.{stage_idx}'))
        self.stages = nn.Sequential(*stages)
        # smallest input for which every stage still sees at least one full-stride output pixel
        self.min_input_size = reduction
        self.num_features = self.head_hidden_size = prev_chs

        self.global_pool = _create_pool(global_pool)
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = create_classifier(self.num_features * self.global_pool.feat_mult(), num_classes, head, head_seed,
                                    **dd)
        if init == 'fixup' and isinstance(self.fc, nn.Linear):  # Fixup: the (trainable) classifier starts at 0
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, head: Optional[str] = None) -> None:
        """New classifier for ``num_classes`` (a new fixed projection, or ``head='linear'`` for a trainable one)."""
        self.num_classes = num_classes
        if head is not None:
            if head not in HEAD_TYPES:
                raise ValueError(f"Unknown head {head!r}; expected one of {HEAD_TYPES}.")
            self.head_type = head
        if global_pool is not None:
            self.global_pool = _create_pool(global_pool)
        # on the device and in the dtype of the model's parameters, as timm's models do
        self.fc = create_classifier(self.num_features * self.global_pool.feat_mult(), num_classes, self.head_type,
                                    self.head_seed, device=self.stem.weight.device, dtype=self.stem.weight.dtype)
        self.fc.train(self.training)  # new modules take the model's mode
        self.global_pool.train(self.training)
        # keep timm's reconstruction args (what save_for_hf writes to config.json) in step with the new head
        update_model_args(self, num_classes=num_classes, head=self.head_type)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x, self.in_chans, self.min_input_size)
        x = self.stem(x).to(self.stem.weight.dtype)  # the residual stream stays in the parameters' dtype under autocast
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for stage in self.stages:
                x = checkpoint_seq(stage, x)
        else:
            x = self.stages(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features of the stem (index 0) and of each stage (1..num_stages), timm's intermediates API."""
        if output_fmt != 'NCHW':
            raise ValueError(f'Only NCHW output is supported, got {output_fmt!r}.')
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        x = check_input(x, self.in_chans, self.min_input_size)
        intermediates = []
        x = self.stem(x).to(self.stem.weight.dtype)  # the residual stream stays in the parameters' dtype under autocast
        if 0 in take_indices:
            intermediates.append(x)
        stages = self.stages[:max_index] if stop_early else self.stages
        for stage_idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if stage_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages (and head) after the last index that ``forward_intermediates`` will take."""
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        self.stages = self.stages[:max_index]
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: AllConvResNet) -> Dict[str, torch.Tensor]:
    """Weights trained with the paper's fixed head loaded into ``head='linear'`` with the same classes: the
    trainable head starts as that fixed projection (bias 0), so the model computes what the weights did."""
    if 'fc.weight' in state_dict and 'fc.bias' not in state_dict and isinstance(model.fc, nn.Linear):
        state_dict = {**state_dict, 'fc.bias': torch.zeros_like(model.fc.bias)}
    return state_dict


def _create_allconv_resnet(variant: str, pretrained: bool = False, **kwargs) -> AllConvResNet:
    model_args = {**ARCH_DEFAULTS[variant], **kwargs}
    source = None
    if pretrained:  # where the weights come from, checked against their record (timm_identity.pretrained.tags)
        source = resolve_pretrained(variant, kwargs)
        model_args['pretrained_cfg_overlay'] = source.overlay
    try:
        model = build_model_with_cfg(
            AllConvResNet, variant, pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(len(model_args['depths']) + 1))),
            **model_args,
        )
    except Exception as e:
        # huggingface_hub's "not found / offline / no connection" errors (all OSError or EntryNotFoundError)
        from huggingface_hub.errors import EntryNotFoundError
        if source is not None and isinstance(e, (OSError, EntryNotFoundError)) and not isinstance(e, PermissionError):
            error = weights_unreachable_error(source, e)
            if error is not None:
                raise error from e
        raise
    if source is not None:
        check_after_load(source)
    return model


def _cfg(**kwargs) -> Dict[str, Any]:
    """A pretrained cfg of the CIFAR models (32x32, CIFAR-10's classes and mean/std) with ``kwargs`` replacing any."""
    return {
        'url': '', 'num_classes': 10, 'label_names': CIFAR10_CLASSES, 'input_size': (3, 32, 32), 'pool_size': (8, 8),
        'crop_pct': 1.0, 'interpolation': 'bilinear', 'mean': (0.4914, 0.4822, 0.4465), 'std': (0.247, 0.2435, 0.2616),
        'first_conv': 'stem', 'classifier': 'fc', 'license': 'apache-2.0',
        'paper_ids': 'arXiv:1611.04231', 'paper_name': 'Identity Matters in Deep Learning',
        **kwargs,
    }


# A tag with `hf_hub_id` ships weights (timm lists it as pretrained): the package has them in
# hub_configs/<arch>.<tag>/model.safetensors, recorded in the config.json beside them (the Hub repo's own form,
# whose pretrained_cfg is this one: tests/test_shipped_weights.py), and its Hub repo is hub_repo_id(tag). The
# others are planned: creatable by name, `pretrained=True` on them is a clear error until weights are exported.
default_cfgs = generate_default_cfgs({
    'allconv_resnet_cifar.cifar10': _cfg(
        description="Table 1 all-conv residual net trained on CIFAR-10 with the paper's recipe."),
    'allconv_resnet_cifar.cifar100': _cfg(
        num_classes=100, label_names=CIFAR100_CLASSES,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        description="Table 1 all-conv residual net trained on CIFAR-100 (fine labels) with the paper's recipe."),
    'allconv_resnet_cifar_w16_d3.cifar10': _cfg(
        hf_hub_id=hub_repo_id('allconv_resnet_cifar_w16_d3.cifar10'),
        mean=(0.4913996786199794, 0.48215840840152385, 0.44653091445986),  # the training set's, measured
        std=(0.24703223245077033, 0.243485128001932, 0.2615878417312586),
        description='allconv_resnet_cifar_w16_d3 (timm-identity) trained on CIFAR-10 with timm-identity train-cifar; '
                    '36,000 optimizer steps of 36,000 planned (92.16 epochs).'),
    'allconv_resnet_cifar_w16_d3.cifar100': _cfg(
        hf_hub_id=hub_repo_id('allconv_resnet_cifar_w16_d3.cifar100'),
        num_classes=100, label_names=CIFAR100_CLASSES,
        mean=(0.5070751592421798, 0.4865488733235422, 0.44091784338387335),  # the training set's, measured
        std=(0.2673342858768462, 0.25643846292681316, 0.2761504713242233),
        description='allconv_resnet_cifar_w16_d3 (timm-identity) trained on CIFAR-100 with timm-identity train-cifar; '
                    '36,000 optimizer steps of 36,000 planned (92.16 epochs).'),
    'allconv_resnet_cifar_w16_d3.speedrun_cifar10': _cfg(
        hf_hub_id=hub_repo_id('allconv_resnet_cifar_w16_d3.speedrun_cifar10'),
        mean=(0.4913996786199794, 0.48215840840152385, 0.44653091445986),  # the training set's, measured
        std=(0.24703223245077033, 0.243485128001932, 0.2615878417312586),
        description='allconv_resnet_cifar_w16_d3 (timm-identity) trained on CIFAR-10 with timm-identity train-cifar; '
                    '11,280 optimizer steps of 11,280 planned (28.88 epochs).'),
    'allconv_resnet_cifar_w16_d3.speedrun_cifar100': _cfg(
        hf_hub_id=hub_repo_id('allconv_resnet_cifar_w16_d3.speedrun_cifar100'),
        num_classes=100, label_names=CIFAR100_CLASSES,
        mean=(0.5070751592421798, 0.4865488733235422, 0.44091784338387335),  # the training set's, measured
        std=(0.2673342858768462, 0.25643846292681316, 0.2761504713242233),
        description='allconv_resnet_cifar_w16_d3 (timm-identity) trained on CIFAR-100 with timm-identity train-cifar; '
                    '11,280 optimizer steps of 11,280 planned (28.88 epochs).'),
    'allconv_resnet_imagenet.in1k': _cfg(
        num_classes=1000, label_names=None, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        description='All-conv ResNet-34 variant for ImageNet-1k (weights not yet trained by this project).'),
})


@register_model
def allconv_resnet_cifar(pretrained: bool = False, **kwargs) -> AllConvResNet:
    """Table 1: 3x3 stem 3->16, stages of 9 blocks at 64/128/256 channels (strides 1, 2, 2), 8x8 avg pool,
    fixed random projection 256 -> num_classes. 55 convs, 13,538,736 conv weights."""
    return _create_allconv_resnet('allconv_resnet_cifar', pretrained, **kwargs)


@register_model
def allconv_resnet_cifar_w16_d3(pretrained: bool = False, **kwargs) -> AllConvResNet:
    """Table 1's design sized for a CPU (not in the paper): the same stem, blocks, shortcuts, init and fixed
    projection, with a quarter of the width (stages at 16/32/64 channels) and 3 blocks per stage instead of 9.
    19 convs, 267,696 conv weights + 688 biases."""
    return _create_allconv_resnet('allconv_resnet_cifar_w16_d3', pretrained, **kwargs)


@register_model
def allconv_resnet_imagenet(pretrained: bool = False, **kwargs) -> AllConvResNet:
    """All-conv ResNet-34 variant (our reading): 7x7/2 stem 3->64, stages of 3, 4, 6, 3, 3 blocks at
    64/128/256/512/512 channels (strides 2, 2, 2, 2, 1), global avg pool, fixed random projection
    512 -> num_classes. 35,251,392 conv weights."""
    return _create_allconv_resnet('allconv_resnet_imagenet', pretrained, **kwargs)
