"""The Python code the documents show runs as written (MODEL_CARD.md's, README's quick tour)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(name):
    return re.findall(r'```python\n(.*?)```', (ROOT / name).read_text(), flags=re.S)


def _run(code):
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_model_card_code_runs():
    blocks = _python_blocks('MODEL_CARD.md')
    assert blocks, 'MODEL_CARD.md shows no Python code'
    for code in blocks:
        out = _run(code + "\nprint(type(model).__name__, model.num_classes, data_cfg['input_size'])")
        assert out.split() == ['AllConvResNet', '10', '(3,', '32,', '32)'], out


def test_model_card_body_claims_no_weights_or_results_of_a_particular_export():
    # the body is pasted into every exported card: it must not name one tag's weights or say "not trained"
    text = (ROOT / 'MODEL_CARD.md').read_text()
    assert 'pretrained=True)' not in text.replace('`pretrained=True` call', '')
    assert 'not yet trained' not in text and 'pip install timm-identity' not in text


def test_readme_quick_tour_runs():
    tour = [b for b in _python_blocks('README.md') if "timm.list_models('allconv*')" in b]
    assert len(tour) == 1
    code = tour[0].replace("timm.list_models('allconv*')", "print(timm.list_models('allconv*'))", 1)
    code += ("\nprint(model.num_classes, len(feats.feature_info), feats.feature_info.reduction(), "
             "tuned.num_classes, sum(p.requires_grad for p in tuned.get_classifier().parameters()))")
    lines = _run(code).strip().splitlines()
    assert lines[0] == "['allconv_resnet_cifar', 'allconv_resnet_cifar_w16_d3', 'allconv_resnet_imagenet']"
    assert lines[1] == '10 6 [2, 4, 8, 16, 32, 32] 37 2', lines[1]


def test_every_python_block_in_readme_and_docs_runs():
    """Every ```python block of README.md and docs/*.md runs as written (offline: the shipped weights)."""
    names = ['README.md'] + sorted(f'docs/{p.name}' for p in (ROOT / 'docs').glob('*.md'))
    blocks = [(name, code) for name in names for code in _python_blocks(name)]
    assert len(blocks) >= 3
    for name, code in blocks:
        out = _run(code)
        if "print(timm.list_pretrained('allconv*'))" in code:  # the comment beside it says what it prints
            import ast
            import timm
            import timm_identity  # noqa: F401
            printed = ast.literal_eval(out.strip().splitlines()[0])
            assert printed == timm.list_pretrained('allconv*'), (name, printed)
            comment = re.search(r"print\(timm.list_pretrained\('allconv\*'\)\)\s*#\s*(\[.*?\])", code)
            if comment:
                assert ast.literal_eval(comment.group(1)) == printed, (name, printed)
