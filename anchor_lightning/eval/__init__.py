"""Long-context evaluation: RULER (``ruler/``, scored by greedy generation as NVIDIA/RULER scores it),
needle retrieval scored by log-likelihood, perplexity by position."""
