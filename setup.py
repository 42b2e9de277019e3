"""Package layout for setuptools (everything else is in pyproject.toml).

- Packages are discovered (``find_packages``), so a new subpackage cannot be left out of the wheel.
- ``hub_configs/`` (one folder per pretrained tag, in Hub form) lives at the top level of the repository and is
  installed as the package ``timm_identity.hub_configs``, with its records, model cards and shipped weights.
- ``MODEL_CARD.md`` (the body of every exported model card) lives at the top level too and is installed as
  ``timm_identity/hub/MODEL_CARD.md``, where ``timm_identity.hub.export`` finds it in an installed package.
- ``timm_identity/data/samples/`` (100 real CIFAR-10 test images for ``timm-identity demo``) is package data.
"""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithModelCard(build_py):
    """build_py that also copies the top-level MODEL_CARD.md into the built ``timm_identity.hub`` package."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / 'timm_identity' / 'hub' / 'MODEL_CARD.md'
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / 'MODEL_CARD.md', target)


setup(
    packages=find_packages(include=['timm_identity', 'timm_identity.*']) + ['timm_identity.hub_configs'],
    package_dir={'timm_identity.hub_configs': 'hub_configs'},
    package_data={
        'timm_identity.hub_configs': ['*.md', '*/*.json', '*/*.md', '*/*.safetensors'],
        'timm_identity.data': ['samples/*.png', 'samples/*.json'],  # the demo's CIFAR-10 test images
    },
    cmdclass={'build_py': BuildPyWithModelCard},
)
