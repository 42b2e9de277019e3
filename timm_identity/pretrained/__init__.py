"""The pretrained tags' weights (``tags``): where ``pretrained=True`` finds them (``hub_configs/<arch>.<tag>/``, or
the tag's Hub repo) and the checks it makes against their record. The tags' cfgs are code:
:mod:`timm_identity.models.allconv_resnet`."""
from .tags import hub_configs_root, hub_repo_id, recorded_test_results  # noqa: F401
