"""Scoring candidates by log-likelihood, and perplexity by position, with a Hugging Face model.

A :class:`Scorer` is anything with ``loglikelihoods(prompt, continuations)``; the evaluation only
needs that, so tests use stub scorers. :class:`HFScorer` runs the prompt once with a KV cache and each
continuation on a copy of it, with transformers' own attention: the prompt starts with the first token
at position 0, as the model was trained.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from anchor_lightning.eval.stats import bootstrap_ratio_interval


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax in at least fp32 (bf16 logits are upcast, fp64 stays fp64)."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)


class Scorer(Protocol):
    def loglikelihoods(self, prompt: list[int], continuations: Sequence[list[int]]) -> list[float]: ...


class HFScorer:
    """Scores with a Hugging Face causal LM and transformers' own attention.

    ``loglikelihoods`` runs the prompt once (keeping only the last position's logits), then every
    continuation in one batch over copies of the prompt's KV cache. ``token_losses`` computes the output
    head a chunk of positions at a time, so a 32K-token document never holds [T, vocab] fp32 logits.
    """

    def __init__(self, model, device: torch.device | str | None = None, chunk: int = 4096) -> None:
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.chunk = chunk
        # transformers 5.24 renamed past_key_values to cache (the old name still works, with a warning)
        self.cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @torch.no_grad()
    def loglikelihoods(self, prompt: list[int], continuations: Sequence[list[int]]) -> list[float]:
        ids = torch.tensor([prompt], device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = out[self.cache_name]
        last = _log_probs(out.logits[0, -1])
        scores = [last[c[0]].item() for c in continuations]
        longest = max(len(c) for c in continuations)
        if longest == 1:
            return scores
        # every continuation's tokens after the first, right-padded: padding only follows real tokens,
        # so causal attention keeps it out of every score read below
        batch = torch.zeros(len(continuations), longest - 1, dtype=torch.long, device=self.device)
        for k, c in enumerate(continuations):
            batch[k, : len(c) - 1] = torch.tensor(c[:-1])
        copies = copy.deepcopy(cache)
        copies.batch_repeat_interleave(len(continuations))
        logprobs = _log_probs(self.model(input_ids=batch, use_cache=True, **{self.cache_name: copies}).logits)
        for k, c in enumerate(continuations):
            if len(c) > 1:
                targets = torch.tensor(c[1:], device=self.device)
                scores[k] += logprobs[k, : len(c) - 1].gather(-1, targets[:, None]).sum().item()
        return scores

    @torch.no_grad()
    def token_losses(self, ids: list[int]) -> np.ndarray:
        """Loss of every token after the first (length len(ids) - 1)."""
        x = torch.tensor([ids], device=self.device)
        hidden = self.model.base_model(input_ids=x, use_cache=False).last_hidden_state[0, :-1]
        head = self.model.get_output_embeddings()
        losses = []
        for start in range(0, len(hidden), self.chunk):
            logprobs = _log_probs(head(hidden[start : start + self.chunk]))
            targets = x[0, start + 1 : start + 1 + len(logprobs), None]
            losses.append(-logprobs.gather(-1, targets)[:, 0])
        return torch.cat(losses).float().cpu().numpy()


def position_buckets(length: int) -> list[tuple[int, int]]:
    """[0, 256), [256, 512), [512, 1K), ... up to ``length``: doubling buckets of target positions."""
    edges = [0, 256]
    while edges[-1] < length:
        edges.append(edges[-1] * 2)
    edges[-1] = length
    return list(zip(edges[:-1], edges[1:]))


def perplexity_by_position(losses: Sequence[np.ndarray], resamples: int = 1000, seed: int = 0) -> list[dict]:
    """Token-weighted perplexity per position bucket over documents' per-token losses, with a 95%
    interval from resampling the documents (the unit that varies: a bucket's tokens within one
    document are not independent)."""
    longest = max(len(x) for x in losses)
    rng = np.random.default_rng(seed)
    out = []
    for lo, hi in position_buckets(longest):
        sums = np.array([x[lo:hi].sum() for x in losses if len(x) > lo])
        counts = np.array([len(x[lo:hi]) for x in losses if len(x) > lo])
        low, high = bootstrap_ratio_interval(sums, counts, resamples, rng)
        out.append(
            {
                "start": lo,
                "end": hi,
                "tokens": int(counts.sum()),
                "documents": len(sums),
                "ppl": float(np.exp(sums.sum() / counts.sum())),
                "ppl_low": float(np.exp(low)),
                "ppl_high": float(np.exp(high)),
            }
        )
    return out


def perplexity(scorer, documents: Sequence[np.ndarray], first_token: int, length: int, resamples: int = 1000) -> dict:
    """Short-context perplexity: the first ``length`` tokens of each document after the first token
    (at position 0), token-weighted, with a 95% interval from resampling the documents."""
    losses = [scorer.token_losses([first_token, *np.asarray(d[:length]).tolist()]) for d in documents if len(d)]
    sums = np.array([x.sum() for x in losses])
    counts = np.array([len(x) for x in losses])
    low, high = bootstrap_ratio_interval(sums, counts, resamples, np.random.default_rng(0))
    return {
        "length": length,
        "documents": len(losses),
        "tokens": int(counts.sum()),
        "ppl": float(np.exp(sums.sum() / counts.sum())),
        "ppl_low": float(np.exp(low)),
        "ppl_high": float(np.exp(high)),
    }
