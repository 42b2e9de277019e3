"""Pretrained-tag folders in Hub form; read by timm_identity.models (see README.md here)."""
