"""anchor-lightning: long-context continued pre-training of Hugging Face causal LMs with AnchorAttention."""

__version__ = "0.1.0"
