"""timm's own model test suite (its tests/test_models.py, the contract every timm model meets) on our models.

TIMM_SRC: a timm source tree with tests/test_models.py: a checkout, or the source distribution of the installed
version, which .ci/run fetches from the package index every time (``pip download --no-binary :all: --no-deps
timm==VERSION``; timm's wheel has no tests/). The suite file is copied into a temporary folder beside a
conftest.py that imports timm_identity first (so timm's module-level list_models() sees our models), with our
module ``allconv_resnet`` added to its ``FEAT_INTER_FILTERS`` (the modules whose models have
``forward_intermediates``, listed by module as timm lists its own families) and its reset_classifier check
counting the classifier's buffers as well as its parameters (the paper's fixed projection is a buffer), and
run with ``-k allconv`` against the *installed* timm. Nothing of timm's is kept or committed.
tests/test_models.py restates each contract so that a run without TIMM_SRC checks them too. One run: every test
timm parametrizes over our models and tags must pass (forward/backward/default_cfgs/torchscript/features/
forward_intermediates/fx/fx+torchscript; the pretrained tests are parametrized over
``list_models(pretrained=True)``, the tags whose cfg in code has an ``hf_hub_id``: the shipped tags, whose load +
features tests must pass, loading the shipped files).

Locally (about half a minute on 2 CPU cores):

    pip download --no-deps --no-binary :all: "timm==$(python -c 'import timm; print(timm.__version__)')" -d /tmp/t
    tar -xzf /tmp/t/timm-*.tar.gz -C /tmp/t
    TIMM_SRC=$(ls -d /tmp/t/timm-*/) python -m pytest -q tests/test_timm_model_suite.py -s
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TIMM_SRC = os.environ.get('TIMM_SRC', '')
SUITE = Path(TIMM_SRC) / 'tests' / 'test_models.py'

pytestmark = pytest.mark.skipif(
    not (TIMM_SRC and SUITE.is_file()),
    reason='TIMM_SRC is not set to a timm source tree with tests/test_models.py (.ci/run fetches timm\'s sdist)')


FEAT_INTER = 'FEAT_INTER_FILTERS = ['
# timm's check that reset_classifier keeps the model's device and dtype collects the new classifier's parameters
# and asserts there are some. The paper's last layer is a fixed random projection, a buffer: a classifier without
# parameters by design. The copy checks the same for the classifier's parameters and buffers.
CLASSIFIER_PARAMS = '    parameters = [parameter for head in classifiers for parameter in head.parameters()]\n'
CLASSIFIER_TENSORS = '    parameters = [t for head in classifiers for t in (*head.parameters(), *head.buffers())]\n'


def _run_suite(tmp_path, select, env_extra=None):
    suite_dir = tmp_path / 'timm_suite'
    suite_dir.mkdir(exist_ok=True)
    text = SUITE.read_text()
    assert FEAT_INTER in text, (f'{SUITE} no longer defines FEAT_INTER_FILTERS (the list of modules whose models '
                                f'have forward_intermediates): update this wrapper to the new timm test file')
    text = text.replace(FEAT_INTER, FEAT_INTER + "'allconv_resnet', ", 1)
    if 'def _assert_reset_classifier_preserves_parent_device_dtype' in text:
        assert CLASSIFIER_PARAMS in text, (f'{SUITE}: its reset_classifier device/dtype check changed: update '
                                           f'CLASSIFIER_PARAMS in this wrapper')
        text = text.replace(CLASSIFIER_PARAMS, CLASSIFIER_TENSORS, 1)
    (suite_dir / 'test_models.py').write_text(text)
    (suite_dir / 'conftest.py').write_text('import timm_identity  # noqa: F401  registers our models first\n')
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '2'), **(env_extra or {})}
    env.pop('GITHUB_ACTIONS', None)  # timm skips its pretrained tests on GitHub runners
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-W', 'ignore', '-rA',
         'test_models.py', '-k', select],
        cwd=suite_dir, env=env, capture_output=True, text=True, timeout=3000)
    out = proc.stdout + proc.stderr
    counts = {k: int(v) for v, k in re.findall(r'(\d+) (passed|failed|skipped|error)', out.splitlines()[-1])}
    print(f'\ntimm suite -k "{select}": {counts}')
    print('\n'.join(line for line in out.splitlines() if line.startswith(('PASSED', 'FAILED', 'SKIPPED', 'ERROR'))))
    return proc.returncode, counts, out


def test_timm_suite_on_our_models(tmp_path):
    """Every test timm parametrizes over our models and tags, the pretrained ones of the shipped tags included
    (timm parametrizes those over list_models(pretrained=True): the tags that ship weights, loaded offline)."""
    import timm
    import timm_identity  # noqa: F401
    shipped = timm.list_pretrained('allconv*')
    assert shipped, 'no tag ships weights'
    code, counts, out = _run_suite(tmp_path, 'allconv', {'HF_HUB_OFFLINE': '1'})
    assert code == 0 and counts.get('passed', 0) >= 17 and not counts.get('failed'), out[-6000:]
    for tag in shipped:
        assert f'PASSED test_models.py::test_model_load_pretrained[1-{tag}]' in out, out[-6000:]
        assert f'PASSED test_models.py::test_model_features_pretrained[1-{tag}]' in out, out[-6000:]
    for model in ('allconv_resnet_cifar', 'allconv_resnet_imagenet'):  # the tests FEAT_INTER_FILTERS selects
        assert f'PASSED test_models.py::test_model_forward_intermediates[1-{model}]' in out, out[-6000:]
        assert f'PASSED test_models.py::test_model_forward_intermediates_features[1-{model}]' in out, out[-6000:]
