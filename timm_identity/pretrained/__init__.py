"""The pretrained tags: their registry (``tags``: one ``hub_configs/<arch>.<tag>/`` folder each, and the checks
``pretrained=True`` makes) and the record of their weights (``weights_record``: ``weights.json``)."""
from .tags import hub_configs_root, load_hub_configs, recorded_test_results  # noqa: F401
