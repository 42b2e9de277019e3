"""timm-identity: Hardt & Ma, "Identity Matters in Deep Learning" (ICLR 2017) as a timm plugin.

Importing this package registers the paper's all-convolutional residual networks in timm's model
registry (``allconv_resnet_cifar``, ``allconv_resnet_imagenet`` and their pretrained tags), so that
``timm.create_model`` and timm's ``train.py --device-modules timm_identity`` find them.
"""
from .models import *  # noqa: F401,F403  (registers the models with timm)

__version__ = '0.1.0'
