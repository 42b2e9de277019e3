"""The paper's all-convolutional residual networks (Section 4) as timm models, and their pretrained tags."""
from .allconv_resnet import *  # noqa: F401,F403  (registers the models with timm)
from .pretrained_tags import hub_configs_root, load_hub_configs, recorded_test_results  # noqa: F401
