"""The shipped pretrained weights, one folder per tag in Hub form; read by ``timm_identity.pretrained.tags`` when
``pretrained=True`` asks, never at import (see README.md here)."""
