"""Attention backends registered with transformers' AttentionInterface, and the masks they apply."""

from anchor_lightning.attention import backends as _backends  # noqa: F401  (registers anchor_* names)
