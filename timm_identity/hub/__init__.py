"""Hugging Face Hub: export, publish and model cards."""
