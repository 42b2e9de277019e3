"""The paper's all-convolutional residual networks (Section 4) as timm models (their pretrained tags:
:mod:`timm_identity.pretrained`)."""
from .allconv_resnet import *  # noqa: F401,F403  (registers the models with timm)
