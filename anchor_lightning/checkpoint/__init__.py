"""Saving, resuming and exporting: atomic checkpoint files and Hugging Face export."""
