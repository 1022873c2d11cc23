"""Checkpoint file formats, on the ground floor (imported by data/ and model/, importing neither): atomic
checkpoint files (atomic_io), a fit ``.ckpt`` read whole (reader), ``.gguf`` models (gguf), and what a
resume must match (identity). The Hugging Face export is beside the model, in ``model/export.py``."""
