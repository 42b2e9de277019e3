"""The timm-internal names the package uses, in one module (timm_identity/timm_private.py): they are timm's own
objects, and a timm that moved one makes the import fail with a message naming it and the tested range."""
import importlib
from importlib.metadata import requires

import pytest
import timm

from timm_identity import timm_private


def test_the_names_are_timms_own():
    import timm.models._features
    import timm.models._hub
    import timm.models._input
    assert timm_private.feature_take_indices is timm.models._features.feature_take_indices
    assert timm_private.update_model_args is timm.models._input.update_model_args
    assert timm_private.save_config_for_hf is timm.models._hub.save_config_for_hf


def test_the_installed_timm_is_in_the_declared_range():
    from packaging.requirements import Requirement
    [spec] = [Requirement(r) for r in requires('timm-identity') if r.startswith('timm')]
    assert timm_private.tested_timm() == str(spec) and spec.specifier.contains(timm.__version__), spec


def test_a_moved_name_is_a_clear_import_error(monkeypatch):
    import timm.models._input
    monkeypatch.delattr(timm.models._input, 'update_model_args')
    with pytest.raises(ImportError) as e:
        importlib.reload(timm_private)
    message = str(e.value)
    assert 'timm_identity needs timm.models._input.update_model_args' in message
    assert f'timm {timm.__version__} does not have' in message and timm_private.tested_timm() in message
    monkeypatch.undo()
    importlib.reload(timm_private)
    with pytest.raises(ImportError, match='needs timm.models._nowhere.x'):
        timm_private.import_private('timm.models._nowhere', 'x')
