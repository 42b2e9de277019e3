"""Dataset readers (official CIFAR archives, ImageNet folders) and webdataset shard tools."""
