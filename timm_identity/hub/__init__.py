"""Hugging Face Hub: export, publish and model cards.

- ``export``: training checkpoint -> folder in Hub-repo form (timm ``save_for_hf`` + model card).
- ``publish``: that folder -> a Hub model repo (safetensors only; ``--dry-run``).
- ``model_card``: README.md = Hub metadata + per-model section + the common MODEL_CARD.md.
- ``cache``: put an exported folder into the local HF cache (offline ``pretrained=True``).
- ``finetune``: fine-tune a pretrained model on another labelled set (``tools/finetune.py``).
"""
