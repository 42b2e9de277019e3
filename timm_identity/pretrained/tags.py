"""The pretrained tags: one folder per tag in ``hub_configs/<architecture>.<tag>/`` (the form its Hub repo has), read
when the models are registered, and the checks ``pretrained=True`` makes before and after loading. A tag keeps its
``hf_hub_id`` (which is what makes timm list it as pretrained) only when weights were made for it
(:mod:`.weights_record`; nothing at import looks into the Hugging Face cache); a planned tag is creatable by name,
and ``pretrained=True`` on it is a clear error. Loaded weights are checked against the tag's record (the file in
the tag folder, or the copy in the local Hugging Face cache).
"""
import json
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .weights_record import (
    HUB_CONFIGS_ENV, WEIGHTS_FILE, WeightsError, WeightsStatus, cached_weights, hub_configs_override, read_record,
    verify_weights_file, weights_status,
)

__all__ = ['TAG_WEIGHTS', 'PLANNED_HF_HUB_IDS', 'hub_configs_root', 'load_hub_configs', 'recorded_test_results',
           'check_before_load', 'check_after_load', 'weights_unreachable_error']


def hub_configs_root():
    """``$TIMM_IDENTITY_HUB_CONFIGS`` if set; else the installed package data ``timm_identity.hub_configs``, or
    ``hub_configs/`` beside the package when it runs from a plain checkout on ``PYTHONPATH`` (no install)."""
    override = hub_configs_override()
    if override is not None:
        if not override.is_dir():
            raise ValueError(f'{HUB_CONFIGS_ENV}={override}: not a folder.')
        return override
    try:
        return resources.files('timm_identity.hub_configs')
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / 'hub_configs'


def _hub_config_dirs():
    try:
        root = hub_configs_root()
    except ValueError as e:  # a wrong $TIMM_IDENTITY_HUB_CONFIGS must not break `import timm_identity`
        warnings.warn(f'{e} Using the package\'s own pretrained tags instead.', stacklevel=2)
        try:
            root = resources.files('timm_identity.hub_configs')
        except ModuleNotFoundError:
            root = Path(__file__).resolve().parents[2] / 'hub_configs'
    return [d for d in sorted(root.iterdir(), key=lambda p: p.name)
            if d.is_dir() and (d / 'config.json').is_file()]


# '<architecture>.<tag>' -> (its folder, WeightsStatus); filled by load_hub_configs()
TAG_WEIGHTS: Dict[str, Tuple[Path, WeightsStatus]] = {}
# '<architecture>.<tag>' -> the Hub repo its weights will be published to, for tags without weights yet
PLANNED_HF_HUB_IDS: Dict[str, str] = {}


def load_hub_configs() -> Dict[str, Dict[str, Any]]:
    """``{'<architecture>.<tag>': pretrained_cfg}`` from ``hub_configs/<architecture>.<tag>/config.json``.

    Each ``config.json`` is in the form timm's ``save_for_hf`` writes (and the Hub repo holds), so the
    pretrained cfg registered with timm is exactly the one a user downloads. A tag keeps its ``hf_hub_id``
    (which is what makes timm list it as pretrained) only when weights were made for it (a weights record, see
    :mod:`timm_identity.pretrained.weights_record`; the HF cache is not looked into here); when they sit in the
    tag folder, ``file`` points at them.
    """
    cfgs = {}
    for folder in _hub_config_dirs():
        folder = Path(str(folder))
        architecture, sep, tag = folder.name.partition('.')
        try:
            hub_cfg = json.loads((folder / 'config.json').read_text())
            if not isinstance(hub_cfg, dict) or not isinstance(hub_cfg.get('pretrained_cfg'), dict):
                raise ValueError('not a timm config.json with a pretrained_cfg')
        except (OSError, ValueError) as e:  # one broken tag folder: that tag is unusable, not the package
            warnings.warn(f'{folder / "config.json"}: {e}; the tag {folder.name} is not registered.', stacklevel=2)
            continue
        if not sep or hub_cfg.get('architecture') != architecture:
            raise ValueError(f'{folder}: folder must be named <architecture>.<tag> and match its config.json '
                             f'architecture ({hub_cfg.get("architecture")!r}).')
        cfg = dict(hub_cfg['pretrained_cfg'])
        cfg['num_classes'] = hub_cfg.get('num_classes', cfg.get('num_classes'))
        if 'label_names' in hub_cfg:
            cfg['label_names'] = hub_cfg['label_names']
        for key in ('input_size', 'test_input_size', 'min_input_size', 'pool_size', 'mean', 'std'):
            if cfg.get(key) is not None:
                cfg[key] = tuple(cfg[key])
        try:
            status = weights_status(folder, cfg.get('hf_hub_id'))
        except WeightsError as e:  # a damaged weights.json: this tag has no usable weights; the rest is fine
            status = WeightsStatus(False, None, f'its weights record is damaged ({e})')
        TAG_WEIGHTS[folder.name] = (folder, status)
        if not status.available:
            PLANNED_HF_HUB_IDS[folder.name] = cfg.pop('hf_hub_id', None)
        elif status.local_file is not None:
            cfg['file'] = str(status.local_file)
        cfgs[folder.name] = cfg
    return cfgs


def recorded_test_results(name: str) -> Optional[Dict[str, Any]]:
    """The top-1 result recorded for the weights of tag ``name`` in its model card (``hub_configs/<tag>/README.md``:
    the model-index entry, which holds only results measured on those weights, and the evaluated split and
    its size): ``{'accuracy', 'error', 'split', 'images'}``, or None when the tag has no card with one."""
    import re
    if name not in TAG_WEIGHTS:
        return None
    card_path = Path(str(TAG_WEIGHTS[name][0])) / 'README.md'
    if not card_path.is_file():
        return None
    from huggingface_hub import ModelCard
    card = ModelCard(card_path.read_text(encoding='utf-8'))
    top1 = [e for e in (getattr(card.data, 'eval_results', None) or []) if e.metric_name.startswith('Top-1 accuracy')]
    if not top1:
        return None
    match = re.search(r'\*\*Evaluated on:\*\* .*?`(\w+)` split, ([\d,]+) images', card.text)
    return {'accuracy': float(top1[0].metric_value), 'error': round(100.0 - float(top1[0].metric_value), 2),
            'split': top1[0].dataset_split, 'images': int(match.group(2).replace(',', '')) if match else None}


def no_weights_error(name: str, also: str = '') -> RuntimeError:
    """``pretrained=True`` for a planned tag (no weights exist here yet), or one whose exported weights are not
    to be had here."""
    folder, status = TAG_WEIGHTS[name]
    planned = PLANNED_HF_HUB_IDS.get(name)
    return RuntimeError(
        f"No pretrained weights for {name!r} {'here' if also else 'yet'}: {status.reason}"
        + (f', {also}' if also else '')
        + (f" (they will be published to the Hugging Face Hub repo {planned!r})" if planned else '') + ".\n"
        f"timm.list_pretrained('allconv*') lists the tags that have weights. What to do:\n"
        f"  - build it untrained: timm.create_model({name!r}) (no pretrained=True);\n"
        f"  - weights you trained yourself: `timm-identity export CHECKPOINT --arch {name} --to-hub-configs` "
        f"(records them for this tag), or load an exported folder: timm.create_model('local-dir:DIR', "
        f"pretrained=True), or timm.create_model({name!r}, pretrained=True, "
        f"pretrained_cfg_overlay=dict(file='DIR/model.safetensors'))."
    )


def weights_unreachable_error(variant: str, kwargs: Dict[str, Any], error: Exception) -> Optional[RuntimeError]:
    """The error for ``pretrained=True`` when the Hub weights cannot be had: which repo, and what to do.
    None when the weights were not to come from the Hub (a file / state dict / local-dir source)."""
    from timm.models import resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
    if not cfg.hf_hub_id or cfg.source == 'local-dir' or (cfg.source != 'hf-hub' and (cfg.file or cfg.state_dict)):
        return None
    name = f'{variant}.{cfg.tag}' if cfg.tag else variant
    return RuntimeError(
        f"Pretrained weights for {name!r} are not reachable: the Hugging Face Hub repo "
        f"{cfg.hf_hub_id!r} could not be read and they are not in the local HF cache "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}).\n"
        f"What to do:\n"
        f"  - check the network / HF_ENDPOINT / HF_HUB_OFFLINE, and that the repo exists (a private repo needs "
        f"`hf auth login` or HF_TOKEN);\n"
        f"  - weights you trained yourself: `timm-identity export CHECKPOINT --arch {name} --output DIR` then "
        f"`timm-identity publish DIR --repo-id {cfg.hf_hub_id}` (or add `--to-hf-cache` to the export to use "
        f"them offline on this machine);\n"
        f"  - or load an exported folder directly: timm.create_model('local-dir:DIR', pretrained=True), or "
        f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file='DIR/model.safetensors'))."
    )


def check_before_load(variant: str, kwargs: Dict[str, Any]) -> Tuple[str, Any]:
    """Before timm loads the weights of ``pretrained=True``: a planned tag is our clear error (timm itself would
    only warn and go on with random weights); the recorded file, or its copy in the HF cache, must be the one the
    record names. Returns the tag name and its resolved pretrained cfg for :func:`check_after_load`."""
    from timm.models import resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
    name = f'{variant}.{cfg.tag}' if cfg.tag else variant
    has_source = cfg.source in ('hf-hub', 'local-dir') or cfg.url or cfg.file or cfg.state_dict or cfg.hf_hub_id
    if not has_source and name in TAG_WEIGHTS:
        raise no_weights_error(name)
    status = TAG_WEIGHTS[name][1] if name in TAG_WEIGHTS else None
    if (status is not None and status.cache_only and cfg.hf_hub_id == status.repo_id and not cfg.file
            and cfg.source != 'local-dir' and cached_weights(cfg.hf_hub_id, WEIGHTS_FILE) is None):
        raise no_weights_error(name, also='and they are not in the local Hugging Face cache either')
    if name in TAG_WEIGHTS and cfg.file and cfg.file == str(TAG_WEIGHTS[name][1].local_file):
        verify_weights_file(cfg.file, TAG_WEIGHTS[name][0])  # the recorded file, untouched
    verify_cached_hub_weights(name, cfg)  # a copy in the HF cache must be the recorded file too
    return name, cfg


def check_after_load(name: str, cfg) -> None:
    """After timm loaded them (perhaps downloading just now): the same check of the cached copy."""
    verify_cached_hub_weights(name, cfg)


def verify_cached_hub_weights(name: str, cfg) -> None:
    """``pretrained=True`` from the Hub (or the HF cache) for a tag with a weights record: the cached
    ``model.safetensors`` must have the recorded size and SHA-256 (``WeightsError`` naming the file if not)."""
    if name not in TAG_WEIGHTS or not cfg.hf_hub_id or cfg.file or cfg.source == 'local-dir':
        return
    folder = TAG_WEIGHTS[name][0]
    record = read_record(folder)
    if record is None or record.get('repo_id') != cfg.hf_hub_id:  # another repo's weights under the same tag
        return
    cached = cached_weights(cfg.hf_hub_id, record['file'])
    if cached is not None:
        verify_weights_file(cached, folder)
