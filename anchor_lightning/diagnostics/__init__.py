"""Measurements of the BF16 RoPE problem (the paper, section 2) and of its cure."""
