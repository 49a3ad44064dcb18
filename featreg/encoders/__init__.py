"""Frozen vision encoders (DINOv2, SAM/MedSAM, timm, LiteMedSAM, ST-LPIPS VGG16, MIND-SSC) as dense feature maps.

``build_encoder`` lives in :mod:`featreg.encoders.features` (it needs torch); this package
imports only the spec table, so that reading specs stays cheap.
"""

from featreg.encoders.registry import EncoderSpec, known_kinds, load_encoder_specs, register_kind

__all__ = ["EncoderSpec", "known_kinds", "load_encoder_specs", "register_kind"]
