"""Hugging Face Hub: export, publish and model cards.

- ``checkpoint_source``: what a training checkpoint holds (weights, model, the training record of these weights).
- ``export``: training checkpoint -> folder in Hub-repo form (timm ``save_for_hf`` + model card).
- ``publish``: that folder -> a Hub model repo (safetensors only; ``--dry-run``).
- ``model_card``: README.md = Hub metadata + per-model section + the common MODEL_CARD.md.
- ``training_sources``: what a run records (a train-cifar run's record and log, timm train.py summary.csv + args.yaml).
- ``cache``: put an exported folder into the local HF cache (offline ``pretrained=True``).
"""
