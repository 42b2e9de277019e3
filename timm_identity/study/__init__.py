"""Identity matters, measured: signal propagation at init and short training runs on real CIFAR-10 over
depth x init x normalisation (``timm-identity study``)."""
