"""Frozen vision encoders (DINOv2, SAM/MedSAM, timm, LiteMedSAM, MIND-SSC) as dense feature maps."""

from featreg.encoders.registry import EncoderSpec, build_encoder, known_kinds, load_encoder_specs, register_kind

__all__ = ["EncoderSpec", "build_encoder", "known_kinds", "load_encoder_specs", "register_kind"]
