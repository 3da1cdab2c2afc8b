"""AlignRec (CIKM 2024) multimodal recommendation in JAX/Flax."""

__version__ = "0.1.0"
