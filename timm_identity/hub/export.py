"""Export a trained model to a folder in exactly the form its Hugging Face Hub repo has.

    <folder>/config.json        timm's save_for_hf: architecture, num_classes, label_names, model_args,
                                pretrained_cfg (with hf_hub_id and tag)
    <folder>/model.safetensors  the state dict (float32, or float16 with --fp16), never a pickle
    <folder>/README.md          the model card (model_card.py): Hub metadata + MODEL_CARD.md

Input checkpoints are read by :mod:`.checkpoint_source` (weights, model, training record). The folder is written
under a temporary name in ``.export-staging/`` beside the destination (removed on an error, Ctrl-C or SIGTERM), its
``config.json`` records the size and sha256 of ``model.safetensors`` (``timm_identity.integrity``), it is checked
(reloaded through ``timm.create_model('local-dir:...')``, identical outputs), given ordinary file modes (umask)
and renamed into place at the end: a failure leaves nothing half-written.

The model card states only what the training source records (``training_sources.TrainingRecord``): a
``train-cifar`` run's record and log up to the checkpoint's step, or a timm ``train.py`` folder's ``summary.csv`` and
``args.yaml``.
"""
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import timm
from timm.models import save_for_hf, split_model_name_tag

from ..atomic_io import raise_on_termination, set_new_file_mode
from ..integrity import first_line, record_files
from ..pretrained.tags import hub_configs_root, hub_repo_id
from ..train.checkpoint import state_dict_mismatch
from ..train.sources import base_model_id, resolve_source
from .checkpoint_source import ExportError, infer_model_args, read_source
from .model_card import DATASETS, ModelInfo, dataset_info, render_model_card
from .training_sources import Metric, TrainingRecord

__all__ = ['ExportError', 'export_checkpoint', 'export_model', 'default_model_card_path',
           'atomic_replace_dir']

_logger = logging.getLogger(__name__)

def default_model_card_path() -> Path:
    """The common model card body: ``MODEL_CARD.md`` installed beside this module (a wheel install), else the
    one at the root of the source checkout the package runs from (an editable install or ``PYTHONPATH``)."""
    installed = Path(__file__).resolve().parent / 'MODEL_CARD.md'
    if installed.is_file():
        return installed
    return Path(__file__).resolve().parents[2] / 'MODEL_CARD.md'


def _registered_tags(architecture: str) -> List[str]:
    """Every tag registered for ``architecture``, with weights or planned (``timm.list_pretrained`` lists only
    the former)."""
    return [n.split('.', 1)[1] for n in timm.list_models(f'{architecture}.*', include_tags=True)]


def _timm_base_model(timm_args: Dict[str, Any]) -> Optional[str]:
    """The Hub repo of the weights a timm train.py run started from: ``--pretrained`` with ``--model NAME`` in its
    args.yaml (:func:`~timm_identity.train.sources.base_model_id`). None when it records none, or when train.py
    loaded them from a bare file (``--pretrained-path``)."""
    if not (timm_args.get('pretrained') and timm_args.get('model')) or timm_args.get('pretrained_path'):
        return None
    return base_model_id(str(timm_args['model']))  # without a tag: timm's default tag, as train.py loaded


def _non_default_args(architecture: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """The arguments in ``args`` that make the model differ from what ``timm.create_model(architecture)``
    builds (num_classes aside)."""
    import inspect
    from timm_identity.models import ARCH_DEFAULTS, AllConvResNet
    defaults = {k: p.default for k, p in inspect.signature(AllConvResNet).parameters.items()}
    defaults.update(ARCH_DEFAULTS.get(architecture, {}))

    def norm(v):
        return list(v) if isinstance(v, (list, tuple)) else v
    return {k: v for k, v in args.items() if k != 'num_classes' and (k not in defaults or norm(v) != norm(defaults[k]))}


def atomic_replace_dir(src: Path, dst: Path, overwrite: bool) -> None:
    """Move the finished folder ``src`` to ``dst`` (same filesystem); an existing ``dst`` only with
    ``overwrite``, and it stays intact until the new one is in place."""
    old = None
    if dst.exists():
        if not overwrite:
            raise ExportError(f'{dst} already exists; pass --overwrite to replace it.')
        old = dst.with_name(f'.{dst.name}.old-{os.getpid()}')
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _count(model: torch.nn.Module) -> Tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters())
    fc = model.get_classifier() if hasattr(model, 'get_classifier') else None
    fixed = sum(b.numel() for b in fc.buffers()) if fc is not None else 0
    return trainable, fixed


def _verify(folder: Path, reference: torch.nn.Module, dtype: torch.dtype) -> None:
    """Reload ``folder`` with ``timm.create_model('local-dir:...')`` and demand the same logits as
    ``reference`` with its weights rounded to ``dtype`` (bit-identical on the same machine)."""
    ref = reference
    if dtype != torch.float32:
        import copy
        ref = copy.deepcopy(reference)
        ref.load_state_dict({k: v.to(dtype).float() if v.is_floating_point() else v
                             for k, v in reference.state_dict().items()})
    reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    ref.eval()
    size = tuple(reloaded.pretrained_cfg['input_size'])
    x = torch.randn((2, *size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(x), reloaded(x)
    if a.shape != b.shape or not torch.equal(a, b):
        raise ExportError(f'Check failed: the model reloaded from {folder} does not reproduce the exported '
                          f'model (max |diff| {(a - b).abs().max().item() if a.shape == b.shape else "shape"}).')


def _card_template(model_card: Optional[Union[str, Path]]) -> Optional[str]:
    """The MODEL_CARD.md body: ``model_card`` (must exist), else the package's (or None, with a warning)."""
    template_path = Path(model_card) if model_card else default_model_card_path()
    if template_path.is_file():
        return template_path.read_text(encoding='utf-8')
    if model_card:
        raise ExportError(f'Model card template not found: {template_path}')
    _logger.warning(f'No {template_path.name} at {template_path}; the model card has only the generated part.')
    return None


def _model_config(architecture: str, tag: str, repo_id: str, dataset: Optional[str],
                  label_names: Optional[Sequence[str]], description: Optional[str],
                  training: Optional[TrainingRecord]) -> Dict[str, Any]:
    """What ``save_for_hf`` adds to config.json: the pretrained cfg (repo, tag, description) and label names."""
    training = training or TrainingRecord()
    pretrained_cfg = dict(hf_hub_id=repo_id, tag=tag, description=description or (
        f'{architecture} (timm-identity) trained on {dataset_info(dataset).get("name", "a dataset not recorded")}'
        + (f' with {training.trainer}' if training.trainer else '')
        + (f'; {training.length}' if training.length else '') + '.'))
    model_config: Dict[str, Any] = dict(pretrained_cfg=pretrained_cfg)
    if label_names is not None:
        model_config['label_names'] = list(label_names)
    return model_config


def export_model(
        model: torch.nn.Module,
        output: Union[str, Path],
        *,
        tag: str,
        repo_id: Optional[str] = None,
        dataset: Optional[str] = None,
        label_names: Optional[Sequence[str]] = None,
        description: Optional[str] = None,
        metrics: Sequence[Metric] = (),
        details: Optional[Dict[str, Any]] = None,
        training: Optional[TrainingRecord] = None,
        fp16: bool = False,
        model_card: Optional[Union[str, Path]] = None,
        data_config: Optional[Dict[str, Any]] = None,
        base_model: Optional[str] = None,
        overwrite: bool = False,
        verify: bool = True,
) -> Path:
    """Write ``model`` (made by ``timm.create_model``) as a Hub-form folder at ``output``; returns it.

    ``training``: what the training source records (the card says "not recorded" for the rest).
    ``description``: one line for config.json and the card (default: architecture, dataset and the
    recorded trainer/length; never a registered tag's own description, which describes other weights).
    ``model_card``: the MODEL_CARD.md template (default: the checkout's, if there is one).
    """
    architecture = model.pretrained_cfg.get('architecture') or type(model).__name__
    repo_id = repo_id or hub_repo_id(f'{architecture}.{tag}')
    # `create_model('<arch>.<tag>', pretrained=True)` gives these weights only for the default architecture
    registered = tag in _registered_tags(architecture) and not _non_default_args(
        architecture, getattr(model, '_model_args', {}))
    source_cfg = model.pretrained_cfg
    if dataset is None:
        dataset = tag if dataset_info(tag).get('key') in DATASETS else None
    if label_names is None and source_cfg.get('tag') == tag:
        label_names = source_cfg.get('label_names')
    if label_names is not None and len(label_names) != model.num_classes:
        raise ExportError(f'{len(label_names)} label names for a model with {model.num_classes} classes.')
    model_config = _model_config(architecture, tag, repo_id, dataset, label_names, description, training)

    template = _card_template(model_card)
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists() and not overwrite:
        raise ExportError(f'{output} already exists; pass --overwrite to replace it.')
    # built one level below output's folder (same filesystem: renamed into place at the end), so that a listing of
    # that folder (hub_configs/'s tag folders) never sees it half-written; SIGTERM raises here, so it is removed
    staging = output.parent / '.export-staging'
    restore_signals = raise_on_termination()
    tmp = None
    try:
        staging.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f'{output.name}.tmp-', dir=staging))
        card = dict(architecture=architecture, tag=tag, repo_id=repo_id, dataset=dataset, metrics=list(metrics),
                    details=dict(details or {}), base_model=base_model, registered=registered,
                    training=training or TrainingRecord())
        _write_hub_folder(tmp, model.eval(), fp16, model_config, data_config, card, template, verify)
        atomic_replace_dir(tmp, output, overwrite)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        restore_signals()
        try:
            staging.rmdir()  # unless another export is building in it
        except OSError:
            pass
    return output


def _write_hub_folder(folder: Path, model: torch.nn.Module, fp16: bool, model_config: Dict[str, Any],
                      data_config: Optional[Dict[str, Any]], card: Dict[str, Any], template: Optional[str],
                      verify: bool) -> None:
    """Fill ``folder``: timm's ``save_for_hf`` (config.json, model.safetensors), the model card (``card``: the
    :class:`ModelInfo` fields that are not read back from the saved config), the weights' record; then reload
    and check it, and give it ordinary file modes."""
    dtype = torch.float16 if fp16 else torch.float32
    to_save = model
    if fp16:
        import copy
        to_save = copy.deepcopy(model).to(torch.float16)
    save_for_hf(to_save, folder, model_config=model_config, safe_serialization=True, data_config=data_config)
    saved_cfg = json.loads((folder / 'config.json').read_text())['pretrained_cfg']
    trainable, fixed = _count(model)
    info = ModelInfo(
        num_classes=model.num_classes, num_params=trainable, num_fixed=fixed,
        description=saved_cfg.get('description', ''), weights_dtype='float16' if fp16 else 'float32',
        input_size=saved_cfg.get('input_size', ()), mean=saved_cfg.get('mean', ()), std=saved_cfg.get('std', ()),
        license=saved_cfg.get('license', 'apache-2.0'), **card)
    (folder / 'README.md').write_text(render_model_card(info, template), encoding='utf-8')
    record_files(folder, ['model.safetensors'])
    if verify:
        _verify(folder, model, dtype)
    for path in (folder, *folder.iterdir()):  # mkdtemp makes 0o700, save_file 0o600: this folder is for sharing
        set_new_file_mode(path)


def export_checkpoint(
        checkpoint: Union[str, Path],
        output: Optional[Union[str, Path]] = None,
        *,
        arch: Optional[str] = None,
        tag: Optional[str] = None,
        model_args: Optional[Dict[str, Any]] = None,
        use_ema: bool = True,
        summary: Optional[Union[str, Path]] = None,
        to_hub_configs: Optional[Union[str, Path, bool]] = None,
        to_hf_cache: bool = False,
        hf_cache_dir: Optional[Union[str, Path]] = None,
        **kwargs,
) -> Path:
    """Checkpoint -> Hub-form folder (see ``export_model`` for the other keyword arguments).

    ``checkpoint``: what :func:`timm_identity.train.sources.resolve_source` resolves (a train-cifar checkpoint or run
    folder, a Hub-form folder, a timm train.py output folder, a weights file); what it is and how it was trained
    come from :func:`.checkpoint_source.read_source` (a train-cifar run: its run record, no ``arch`` needed).
    ``arch`` may carry the tag (``allconv_resnet_cifar.cifar10``); a train-cifar run's tag defaults to its dataset.
    ``summary``: a training summary, checked against the checkpoint. ``to_hub_configs``: write into
    ``<hub_configs>/<arch>.<tag>/`` (True: the package's own ``hub_configs/``) instead of ``output``; the
    architecture must then be the registered default, since ``pretrained=True`` builds that.
    ``to_hf_cache``: also put the folder into the local HF cache under its ``hf_hub_id``.
    """
    try:
        source = resolve_source(str(checkpoint))
        contents = read_source(source, use_ema=use_ema, summary=str(summary) if summary else None)
    except (ValueError, FileNotFoundError) as e:
        raise ExportError(str(e)) from None
    architecture, tag = _architecture_and_tag(arch, tag, contents)
    timm_args = contents.training.raw.get('args') or {}
    for key, value in (('dataset', contents.dataset), ('label_names', contents.label_names),
                       ('data_config', contents.data_config),  # the mean/std the weights were trained with
                       ('base_model', contents.base_model or _timm_base_model(timm_args))):  # a fine-tune's base
        if kwargs.get(key) is None and value is not None:
            kwargs[key] = value
    args = {**contents.model_args, **(model_args or {})}
    for key, value in infer_model_args(contents.state_dict).items():
        args.setdefault(key, value)
    name = _registered_name(architecture, tag, args)
    if to_hub_configs:
        output = _hub_configs_folder(to_hub_configs, architecture, tag, args)
        kwargs['overwrite'] = True
    if output is None:
        raise ExportError('Where to? Pass --output DIR or --to-hub-configs.')
    source_dir = contents.weights.resolve().parent
    if Path(output).resolve() in (source_dir, *source_dir.parents) and not to_hub_configs:
        raise ExportError(f'--output {output} is the folder of the checkpoint being exported (or holds it): '
                          f'--overwrite would delete the source. Export to another folder.')
    model = _build_with_weights(name, args, contents.state_dict, contents.weights)
    training = contents.training
    folder = export_model(model, output, tag=tag, metrics=training.metrics, details=training.details,
                          training=training.training, **kwargs)
    repo_id = json.loads((folder / 'config.json').read_text())['pretrained_cfg']['hf_hub_id']
    if to_hf_cache:
        from .cache import install_into_hf_cache
        install_into_hf_cache(folder, repo_id, cache_dir=hf_cache_dir)
    return folder


def _architecture_and_tag(arch: Optional[str], tag: Optional[str], contents) -> Tuple[str, str]:
    arch = arch or contents.arch
    if not arch:
        raise ExportError('Which architecture? Pass --arch (e.g. allconv_resnet_cifar.cifar10); the checkpoint '
                          'does not name one.')
    architecture, arch_tag = split_model_name_tag(arch)
    tag = tag or arch_tag or contents.tag or contents.dataset
    if not tag:
        raise ExportError(f'Which pretrained tag? Pass --tag or --arch {architecture}.<tag> (registered tags: '
                          f'{_registered_tags(architecture)}).')
    if not timm.is_model(architecture):
        raise ExportError(f'Unknown architecture {architecture!r} (is timm_identity imported?).')
    return architecture, tag


def _registered_name(architecture: str, tag: str, args: Dict[str, Any]) -> str:
    """The timm name to build: ``<arch>.<tag>`` for a registered tag (whose number of classes must match)."""
    if tag not in _registered_tags(architecture):
        return architecture
    name = f'{architecture}.{tag}'
    if args.get('num_classes') is not None:
        want = timm.models.get_pretrained_cfg(name).num_classes
        if args['num_classes'] != want:
            raise ExportError(f'The checkpoint has {args["num_classes"]} classes but the registered tag {name} has '
                              f'{want}; use another --tag for this model.')
    return name


def _hub_configs_folder(to_hub_configs, architecture: str, tag: str, args: Dict[str, Any]) -> Path:
    """``<hub_configs>/<arch>.<tag>``, for weights that ``timm.create_model('<arch>.<tag>', pretrained=True)``
    can load: the registered tag and its default architecture, in a source checkout."""
    root = hub_configs_root() if to_hub_configs is True else Path(to_hub_configs)
    if 'site-packages' in root.parts:
        raise ExportError(f'--to-hub-configs needs a source checkout (editable install); {root} is an '
                          f'installed package. Use --output instead.')
    changed = _non_default_args(architecture, args)
    if changed or tag not in _registered_tags(architecture):
        raise ExportError(
            f'--to-hub-configs writes the weights that timm.create_model({architecture + "." + tag!r}, '
            f'pretrained=True) loads, which builds the registered default architecture; this checkpoint '
            + (f'needs {changed}.' if changed else f'has the unregistered tag {tag!r}.')
            + ' Use --output for it.')
    return root / f'{architecture}.{tag}'


def _build_with_weights(name: str, args: Dict[str, Any], state_dict, weights: Path) -> torch.nn.Module:
    try:
        model = timm.create_model(name, pretrained=False, **args)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ExportError(f'Cannot build {name} with {args}: {first_line(e)}') from None
    problem = state_dict_mismatch(model, state_dict)
    if problem:
        raise ExportError(f'The checkpoint {weights} does not fit {name} built with {args} ({problem}): pass the '
                          f'model arguments it was trained with (--model-kwargs key=value ...).')
    model.load_state_dict(state_dict, strict=True)
    return model
