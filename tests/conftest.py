"""Fixtures shared by several test files."""
import pytest

from timm_identity.data.testing import make_tiny_cifar


@pytest.fixture(scope='module')
def tiny_cifar(tmp_path_factory):
    """A tiny CIFAR-10 release in the official format (40 train, 20 test images)."""
    return make_tiny_cifar(tmp_path_factory.mktemp('cifar'), num_train=40, num_test=20)
