"""Training: the paper's CIFAR recipe as a plain loop, and configs for timm's train.py."""
