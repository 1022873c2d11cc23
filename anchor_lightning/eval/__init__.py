"""Long-context evaluation: needle retrieval scored by log-likelihood, perplexity by position."""
