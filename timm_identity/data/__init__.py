"""Dataset readers (official CIFAR archives, ImageNet folders) and webdataset shard tools."""
from .cifar import CIFAR_LAYOUTS, CifarSplit, load_cifar
from .errors import ChecksumError, DatasetFormatError

__all__ = ['CIFAR_LAYOUTS', 'CifarSplit', 'load_cifar', 'ChecksumError', 'DatasetFormatError']
