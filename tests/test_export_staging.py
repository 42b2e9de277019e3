"""export's temporary folder: built in ``.export-staging/`` below the destination's folder (so a listing of
hub_configs/ never sees a half-written tag folder), removed when the export fails, is interrupted (Ctrl-C) or is
terminated (SIGTERM); ``import timm_identity`` and the shipped tags work in other processes meanwhile."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import timm
from safetensors.torch import save_file

from timm_identity.pretrained.tags import HUB_CONFIGS_ENV

from hub_testutil import write_model_card

TAG = 'allconv_resnet_cifar_w16_d3.cifar10'

# `timm-identity export ... --to-hub-configs`, held (as a slow step would) once its temporary folder holds the
# weights and config.json: it writes the `ready` file and waits to be killed
CHILD = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import timm_identity.hub.export as export
    from timm_identity.cli import main

    def held(*args, **kwargs):
        Path(sys.argv[1]).write_text('ready')
        time.sleep(120)
        raise SystemExit('not killed')
    export.render_model_card = held
    sys.exit(main(sys.argv[2:]))
''')


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_killed_export_leaves_nothing_and_never_blocks_the_import(tmp_path, sig):
    ckpt = tmp_path / 'ckpt' / 'model.safetensors'
    ckpt.parent.mkdir()
    save_file(timm.create_model('allconv_resnet_cifar_w16_d3').state_dict(), str(ckpt))
    hub_configs, ready = tmp_path / 'hub_configs', tmp_path / 'ready'
    proc = subprocess.Popen([sys.executable, '-c', CHILD, str(ready), 'export', str(ckpt), '--arch', TAG,
                             '--to-hub-configs', str(hub_configs), '--model-card', str(write_model_card(tmp_path))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), proc.communicate(timeout=60)
        assert os.listdir(hub_configs) == ['.export-staging']  # no tag folder, no hidden one, until it is done
        [tmp] = (hub_configs / '.export-staging').iterdir()
        assert tmp.name.startswith(f'{TAG}.tmp-') and {'config.json', 'model.safetensors'} <= set(os.listdir(tmp))

        # meanwhile, with that folder as hub_configs: the import and a shipped tag's weights (then from the Hub:
        # offline, a clear error) work as ever
        code = ('import timm, timm_identity\nprint(timm.list_pretrained("allconv*"))\n'
                f'try:\n    timm.create_model("{TAG}", pretrained=True)\n'
                'except RuntimeError as e:\n    print(str(e).splitlines()[0])\n')
        other = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                               env={**os.environ, HUB_CONFIGS_ENV: str(hub_configs), 'HF_HUB_OFFLINE': '1'})
        assert other.returncode == 0, other.stderr
        assert other.stdout.splitlines()[0] == str(timm.list_pretrained('allconv*'))
        assert f'{hub_configs / TAG / "model.safetensors"} is not here' in other.stdout

        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and 'not killed' not in err
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err  # the handler's SystemExit, after the clean-up
    assert os.listdir(hub_configs) == [], os.listdir(hub_configs)


def test_export_restores_the_signal_handlers_and_leaves_no_staging_folder(tmp_path, monkeypatch):
    import timm_identity.hub.export as export
    from hub_testutil import TINY, tiny_checkpoint
    ckpt, _, _ = tiny_checkpoint(tmp_path, summary=False)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    folder = export.export_checkpoint(ckpt, tmp_path / 'out' / 'export', arch='allconv_resnet_cifar.cifar10',
                                      model_args=TINY, model_card=write_model_card(tmp_path))
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    assert os.listdir(tmp_path / 'out') == ['export'] and folder == tmp_path / 'out' / 'export'

    def full_disk(*args, **kwargs):  # a failure while the temporary folder is being written
        assert os.listdir(tmp_path / 'out' / '.export-staging')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(export, 'render_model_card', full_disk)
    with pytest.raises(OSError, match='No space left'):
        export.export_checkpoint(ckpt, tmp_path / 'out' / 'again', arch='allconv_resnet_cifar.cifar10',
                                 model_args=TINY, model_card=write_model_card(tmp_path))
    assert os.listdir(tmp_path / 'out') == ['export']
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
