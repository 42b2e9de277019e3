#!/usr/bin/env python3
"""Record what each shipped tag computes, for tests/test_shipped_weights.py: the SHA-256 of its weights file,
the logits of the first shipped sample image, and its predictions on all 100 sample images.

    python tools/record_shipped_outputs.py          # writes tests/shipped_outputs.json

Run it after `timm-identity export ... --to-hub-configs` replaces a tag's weights (in the same commit; the tag's
cfg in timm_identity/models/allconv_resnet.py must then be its new config.json's pretrained_cfg, with hf_hub_id).
"""
import json
import sys
from pathlib import Path

import torch
import timm

import timm_identity  # noqa: F401  (registers the models)
from timm_identity.data.sample_images import load_cifar10_sample
from timm_identity.pretrained.tags import hub_configs_root
from timm_identity.integrity import sha256_file

OUT = Path(__file__).resolve().parents[1] / 'tests' / 'shipped_outputs.json'


def sample_batch(cfg) -> torch.Tensor:
    """The shipped CIFAR-10 sample, normalised with the tag's mean/std (NCHW float32)."""
    images, _, _ = load_cifar10_sample()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    return (x - torch.tensor(cfg['mean']).view(1, 3, 1, 1)) / torch.tensor(cfg['std']).view(1, 3, 1, 1)


def main() -> int:
    torch.set_num_threads(1)
    outputs = {}
    for name in timm.list_pretrained('allconv*'):  # the tags whose cfg (in code) says they ship weights
        folder = hub_configs_root() / name
        if not (folder / 'model.safetensors').is_file():
            print(f'{name}: no {folder / "model.safetensors"}; not recorded', file=sys.stderr)
            continue
        model = timm.create_model(name, pretrained=True).eval()  # the shipped file, checked against its record
        assert model.pretrained_cfg.get('file') == str(folder / 'model.safetensors')
        with torch.no_grad():
            logits = model(sample_batch(model.pretrained_cfg))
        outputs[folder.name] = {
            'sha256': sha256_file(folder / 'model.safetensors'),
            'logits_of_sample_0': [round(v, 5) for v in logits[0].tolist()],
            'predictions_on_sample': logits.argmax(1).tolist(),
        }
        print(f'{folder.name}: {outputs[folder.name]["sha256"]}')
    OUT.write_text(json.dumps(outputs, indent=1) + '\n')
    print(f'wrote {OUT}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
