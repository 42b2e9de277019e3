"""The timm functions this package uses that timm does not export under a public name, imported here only.

timm (tested: the range in pyproject.toml) has no public name for these three; every other timm name the package
uses is public (``timm.models``, ``timm.layers``, ``timm.data``, ``timm.utils``, ...):

- ``feature_take_indices`` (``timm.models._features``): the index rule of ``forward_intermediates``, so that ours
  selects stages exactly as timm's own models do;
- ``update_model_args`` (``timm.models._input``): records the model's constructor arguments in its pretrained cfg,
  which ``save_for_hf`` writes into config.json so that ``local-dir:`` / ``hf-hub:`` rebuild the same network;
- ``save_config_for_hf`` (``timm.models._hub``): config.json alone, for the Hub-form checkpoints train-cifar writes
  (``save_for_hf``, which is public, also writes the weights).

If a timm release moves one, importing ``timm_identity`` fails with an error naming the function, where it was
looked for and the tested timm range (tests/test_timm_private.py).
"""
import importlib
import re
from typing import Any

__all__ = ['feature_take_indices', 'update_model_args', 'save_config_for_hf', 'import_private', 'tested_timm']


def tested_timm() -> str:
    """The timm requirement this package declares (pyproject.toml): the range its test suite ran against."""
    from importlib.metadata import PackageNotFoundError, requires
    try:
        reqs = requires('timm-identity') or []
    except PackageNotFoundError:
        return 'timm (see pyproject.toml)'
    return next((r.split(';')[0].strip() for r in reqs if re.match(r'timm\s*[<>=!~]', r)), 'timm')


def import_private(module: str, name: str) -> Any:
    """``module.name`` from timm, or an ImportError that names both, the installed timm and the tested range."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        import timm
        raise ImportError(f'timm_identity needs {module}.{name}, which timm {timm.__version__} does not have '
                          f'(a timm-internal name; tested: {tested_timm()}). Install a tested timm: '
                          f'pip install "{tested_timm()}"') from None


feature_take_indices = import_private('timm.models._features', 'feature_take_indices')
update_model_args = import_private('timm.models._input', 'update_model_args')
save_config_for_hf = import_private('timm.models._hub', 'save_config_for_hf')
