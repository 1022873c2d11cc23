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

from anchor_lightning.errors import broken_model
from anchor_lightning.eval.stats import bootstrap_ratio_interval


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax in at least fp32 (bf16 logits are upcast, fp64 stays fp64)."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)


class Scorer(Protocol):
    def loglikelihoods(self, prompt: list[int], continuations: Sequence[list[int]]) -> list[float]: ...


class HFScorer:
    """Scores with a Hugging Face causal LM and transformers' own attention.

    ``loglikelihoods`` runs the prompt once (keeping only the last position's logits), then every
    continuation in one batch over copies of the prompt's KV cache; ``batch_loglikelihoods`` does the
    same for several prompts of one length at once (the needle trials of one context length). ``token_losses`` computes the output
    head a chunk of positions at a time, so a 32K-token document never holds [T, vocab] fp32 logits.
    """

    def __init__(self, model, device: torch.device | str | None = None, chunk: int = 4096) -> None:
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.chunk = chunk
        # transformers 5.24 renamed past_key_values to cache (the old name still works, with a warning)
        self.cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def loglikelihoods(self, prompt: list[int], continuations: Sequence[list[int]]) -> list[float]:
        return self.batch_loglikelihoods([prompt], [continuations])[0]

    @torch.no_grad()
    def batch_loglikelihoods(
        self, prompts: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]]
    ) -> list[list[float]]:
        """Scores of each prompt's continuations, the prompts (all of one length) in one forward pass
        and all their continuations in a second one over copies of the prompts' KV cache."""
        if len({len(p) for p in prompts}) != 1 or len({len(c) for c in continuations}) != 1:
            raise ValueError("a batch of prompts needs one prompt length and one number of continuations")
        per = len(continuations[0])
        out = self.model(input_ids=torch.tensor(list(prompts), device=self.device), use_cache=True, logits_to_keep=1)
        last = _log_probs(out.logits[:, -1])  # [B, vocab]
        flat = [c for options in continuations for c in options]
        owner = torch.arange(len(prompts), device=self.device).repeat_interleave(per)
        first = torch.tensor([c[0] for c in flat], device=self.device)
        scores = last[owner, first]
        longest = max(len(c) for c in flat)
        if longest > 1:
            # every continuation's tokens after the first, right-padded: padding only follows real tokens,
            # so causal attention keeps it out of every score read here
            inputs = torch.zeros(len(flat), longest - 1, dtype=torch.long, device=self.device)
            targets = torch.zeros(len(flat), longest - 1, dtype=torch.long, device=self.device)
            real = torch.zeros(len(flat), longest - 1, dtype=torch.bool, device=self.device)
            for k, c in enumerate(flat):
                inputs[k, : len(c) - 1] = torch.tensor(c[:-1])
                targets[k, : len(c) - 1] = torch.tensor(c[1:])
                real[k, : len(c) - 1] = True
            copies = copy.deepcopy(out[self.cache_name])
            copies.batch_repeat_interleave(per)
            logprobs = _log_probs(self.model(input_ids=inputs, use_cache=True, **{self.cache_name: copies}).logits)
            picked = logprobs.gather(-1, targets[..., None])[..., 0]
            scores = scores + torch.where(real, picked, torch.zeros_like(picked)).sum(-1)
        values = scores.tolist()
        if not np.isfinite(values).all():
            raise broken_model(f"log-likelihoods at {len(prompts[0]):,} tokens")
        return [values[b * per : (b + 1) * per] for b in range(len(prompts))]

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
        out = torch.cat(losses).float().cpu().numpy()
        if not np.isfinite(out).all():
            raise broken_model(f"token losses over a {len(ids):,}-token document")
        return out


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
