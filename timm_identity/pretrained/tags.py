"""Where ``pretrained=True`` on our models finds the weights, and the checks it makes before and after loading.

The pretrained tags and their cfgs are code (``default_cfgs`` in :mod:`timm_identity.models.allconv_resnet`, as
timm writes its own): a tag whose weights ship carries its ``hf_hub_id`` (which is what makes timm list it as
pretrained), a planned tag carries none. A tag's Hub repo, shipped or planned, is :func:`hub_repo_id`.

A tag's weights are ``<hub_configs>/<arch>.<tag>/model.safetensors``, recorded (size, sha256) in the
``config.json`` beside them: the folder in the form of the tag's Hub repo, which ``timm-identity export
--to-hub-configs`` writes. ``<hub_configs>`` (:func:`hub_configs_root`) is the package data
``timm_identity.hub_configs`` (the checkout's ``hub_configs/`` when the package runs from a checkout), or
``$TIMM_IDENTITY_HUB_CONFIGS``, looked up at each load. Nothing here runs, and no file is read, at import.

What ``pretrained=True`` loads (:func:`resolve_pretrained` before the load, :func:`check_after_load` after it),
each file checked with :func:`timm_identity.integrity.check_weights_file` (a file that differs from its record is a
one-line :class:`~timm_identity.integrity.DamagedFileError` naming it):

- ``<arch>.<tag>`` (or the bare architecture, its default tag): the file in the tag's folder, against the
  folder's record. Without that file, a shipped tag's weights come from its Hub repo through timm (the copy in
  the local Hugging Face cache checked against the tag's record: before the load when it is cached, after it
  when it was downloaded just now); a planned tag is a clear error (:func:`no_weights_error`);
- ``local-dir:DIR``: ``DIR/model.safetensors`` against ``DIR/config.json``;
- ``hf-hub:ID``: the cached ``model.safetensors`` against the ``config.json`` of the same cache snapshot
  (before the load when it is cached, after it when it was downloaded just now);
- the caller's own file (``pretrained_cfg_overlay=dict(file=...)``): against the ``config.json`` beside it, when
  that records it.
"""
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..integrity import WEIGHTS_FILE, check_weights_file, read_files_record

__all__ = ['HUB_ORG', 'HUB_CONFIGS_ENV', 'WEIGHTS_FILE', 'hub_repo_id', 'hub_configs_root', 'HubCopy',
           'PretrainedSource', 'resolve_pretrained', 'check_after_load', 'no_weights_error',
           'weights_unreachable_error', 'recorded_test_results']

HUB_ORG = 'timm-identity'
HUB_CONFIGS_ENV = 'TIMM_IDENTITY_HUB_CONFIGS'
# pretrained cfg keys that name where weights come from: set by the caller, they replace the tag's own source
_SOURCE_KEYS = ('file', 'url', 'state_dict', 'hf_hub_id', 'source')


def hub_repo_id(name: str) -> str:
    """The Hugging Face Hub repo of the pretrained tag ``name`` (``<arch>.<tag>``): where a shipped tag's weights
    are published, and where a planned tag's will be."""
    return f'{HUB_ORG}/{name}'


def hub_configs_root() -> Path:
    """The folder of the tag folders: ``$TIMM_IDENTITY_HUB_CONFIGS`` if set (a ``ValueError`` if it is not a
    folder), else the installed package data ``timm_identity.hub_configs``, or ``hub_configs/`` beside the
    package when it runs from a plain checkout on ``PYTHONPATH`` (no install). Read at each call."""
    value = os.environ.get(HUB_CONFIGS_ENV)
    if value:
        root = Path(value)
        if not root.is_dir():
            raise ValueError(f'{HUB_CONFIGS_ENV}={value}: not a folder (it replaces the package\'s hub_configs/ '
                             f'as the folder of the pretrained tags\' weights); unset it or point it at one')
        return root
    try:
        return Path(str(resources.files('timm_identity.hub_configs')))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / 'hub_configs'


@dataclass(frozen=True)
class HubCopy:
    """The weights of a Hub repo as timm loads them (``model.safetensors``, through the local Hugging Face cache),
    and where their record is: ``record_folder/config.json`` (a shipped tag's folder), or, when None, the
    ``config.json`` beside the copy in the same cache snapshot."""
    repo_id: str                                   # 'owner/name', optionally '@revision'
    cache_dir: Optional[Union[str, os.PathLike]] = None
    record_folder: Optional[Path] = None

    def cached(self) -> Optional[Path]:
        """The copy in the HF cache (its snapshot path), or None; never goes to the network."""
        repo_id, _, revision = self.repo_id.partition('@')
        try:
            from huggingface_hub import try_to_load_from_cache
            found = try_to_load_from_cache(repo_id, WEIGHTS_FILE, cache_dir=self.cache_dir, revision=revision or None)
        except Exception:  # a malformed repo id or a broken cache: no copy (timm's own load says what is wrong)
            return None
        return Path(found) if isinstance(found, str) else None

    def check(self) -> bool:
        """Check the cached copy against its record, when there is one; returns whether there was."""
        path = self.cached()
        if path is None:
            return False
        check_weights_file(path, self.record_folder, required=self.record_folder is not None)
        return True


@dataclass(frozen=True)
class PretrainedSource:
    """What ``pretrained=True`` of one ``create_model`` call loads, decided (and checked) before the load."""
    name: str                                      # '<arch>.<tag>', or the architecture (a tagless cfg)
    overlay: Optional[Dict[str, Any]]              # the pretrained_cfg_overlay to build with
    hub: Optional[HubCopy] = None                  # weights that timm takes from the Hub or the HF cache
    hub_checked: bool = False                      # ... and they were in the cache, checked before the load
    local: Optional[Path] = None                   # the tag-folder file looked for (shipped tag, not found)


def resolve_pretrained(variant: str, kwargs: Dict[str, Any]) -> PretrainedSource:
    """Before timm loads the weights of ``pretrained=True`` for the architecture ``variant`` (``kwargs``: the
    entrypoint's, with timm's ``pretrained_cfg`` / ``pretrained_cfg_overlay`` / ``cache_dir``): where they come
    from (see the module docstring), every file that is already here checked against its record."""
    from timm.models import PretrainedCfg, resolve_pretrained_cfg
    given, overlay = kwargs.get('pretrained_cfg'), dict(kwargs.get('pretrained_cfg_overlay') or {})
    cfg = resolve_pretrained_cfg(variant, given, overlay)
    name = f'{variant}.{cfg.tag}' if cfg.tag else variant
    cache_dir = kwargs.get('cache_dir')
    if cfg.source == 'local-dir':  # timm's load_model_config_from_path: file is the folder
        weights = Path(cfg.file or '') / WEIGHTS_FILE
        if cfg.file and weights.is_file():
            check_weights_file(weights)
        return PretrainedSource(name, overlay or None)
    if cfg.source == 'hf-hub':  # timm's load_model_config_from_hf: the repo's config.json is in the cache now
        return _from_hub(name, overlay or None, HubCopy(cfg.hf_hub_id, cache_dir))
    if isinstance(given, (dict, PretrainedCfg)) or any(overlay.get(k) for k in _SOURCE_KEYS):  # the caller's
        if cfg.state_dict is None and cfg.file:
            if Path(cfg.file).is_file():  # a missing one is timm's error
                check_weights_file(cfg.file)
        elif cfg.state_dict is None and not cfg.url and cfg.hf_hub_id:
            return _from_hub(name, overlay or None, HubCopy(cfg.hf_hub_id, cache_dir))
        return PretrainedSource(name, overlay or None)

    folder = hub_configs_root() / name  # a registered tag: its folder, then (shipped) its Hub repo
    local = folder / WEIGHTS_FILE
    if local.is_file():
        check_weights_file(local, folder, required=True)
        return PretrainedSource(name, {**overlay, 'file': str(local)})
    if cfg.hf_hub_id:
        record = folder if WEIGHTS_FILE in read_files_record(folder) else None
        return _from_hub(name, overlay or None, HubCopy(cfg.hf_hub_id, cache_dir, record), local=local)
    raise no_weights_error(name, local)


def _from_hub(name: str, overlay: Optional[Dict[str, Any]], hub: HubCopy,
              local: Optional[Path] = None) -> PretrainedSource:
    return PretrainedSource(name, overlay, hub, hub_checked=hub.check(), local=local)


def check_after_load(source: PretrainedSource) -> None:
    """After timm loaded weights from the Hub that were not in the HF cache before: the copy it downloaded."""
    if source.hub is not None and not source.hub_checked:
        source.hub.check()


def no_weights_error(name: str, looked_for: Path) -> RuntimeError:
    """``pretrained=True`` for a planned tag (no weights shipped for it, none exported here)."""
    repo = hub_repo_id(name)
    return RuntimeError(
        f"No pretrained weights for {name!r} yet: no weights have been trained and exported for it (there is no "
        f"{looked_for}); they will be published to the Hugging Face Hub repo {repo!r}.\n"
        f"timm.list_pretrained('allconv*') lists the tags that ship weights. What to do:\n"
        f"  - build it untrained: timm.create_model({name!r}) (no pretrained=True);\n"
        f"  - weights you trained yourself: `timm-identity export CHECKPOINT --arch {name} --to-hub-configs` "
        f"writes them, recorded, to {looked_for.parent}/, where pretrained=True finds them (checked); or load an "
        f"exported folder: timm.create_model('local-dir:DIR', pretrained=True), or "
        f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file='DIR/model.safetensors')), "
        f"or after `export ... --to-hf-cache`: timm.create_model('hf-hub:{repo}', pretrained=True)."
    )


def weights_unreachable_error(source: PretrainedSource, error: Exception) -> Optional[RuntimeError]:
    """The error for ``pretrained=True`` when the Hub weights cannot be had (``error``: huggingface_hub's): which
    repo, and what to do. None when the weights were not to come from the Hub."""
    if source.hub is None:
        return None
    name, repo = source.name, source.hub.repo_id
    missing = f'{source.local} is not here, ' if source.local is not None else ''
    reason = str(error).splitlines()[0] if str(error) else ''
    shipped = (f"  - the package ships them as {source.local}: install timm-identity again (or restore that file "
               f"of the checkout) to load them offline;\n" if source.local is not None else '')
    return RuntimeError(
        f"Pretrained weights for {name!r} are not reachable: {missing}the Hugging Face Hub repo {repo!r} could "
        f"not be read and they are not in the local HF cache ({type(error).__name__}: {reason}).\n"
        f"What to do:\n"
        f"{shipped}"
        f"  - check the network / HF_ENDPOINT / HF_HUB_OFFLINE, and that the repo exists (a private repo needs "
        f"`hf auth login` or HF_TOKEN);\n"
        f"  - weights you trained yourself: `timm-identity export CHECKPOINT --arch {name} --output DIR` then "
        f"`timm-identity publish DIR --repo-id {repo}` (or add `--to-hf-cache` to the export to use "
        f"them offline on this machine);\n"
        f"  - or load an exported folder directly: timm.create_model('local-dir:DIR', pretrained=True), or "
        f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file='DIR/model.safetensors'))."
    )


def recorded_test_results(name: str) -> Optional[Dict[str, Any]]:
    """The top-1 result recorded for the weights of tag ``name`` in its model card (``<hub_configs>/<tag>/README.md``:
    the model-index entry, which holds only results measured on those weights, and the evaluated split and
    its size): ``{'accuracy', 'error', 'split', 'images'}``, or None when the tag has no card with one."""
    import re
    card_path = hub_configs_root() / name / 'README.md'
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
