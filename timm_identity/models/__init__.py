"""The paper's all-convolutional residual networks (Section 4) as timm models."""
from .allconv_resnet import *  # noqa: F401,F403
