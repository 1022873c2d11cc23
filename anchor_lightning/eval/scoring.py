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


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax in at least fp32 (bf16 logits are upcast, fp64 stays fp64)."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)


class Scorer(Protocol):
    def loglikelihoods(self, prompt: list[int], continuations: Sequence[list[int]]) -> list[float]: ...


class HFScorer:
    def __init__(self, model, device: torch.device | str | None = None) -> None:
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        # transformers 5.24 renamed past_key_values to cache (the old name still works, with a warning)
        self.cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @torch.no_grad()
    def loglikelihoods(self, prompt: list[int], continuations: Sequence[list[int]]) -> list[float]:
        ids = torch.tensor([prompt], device=self.device)
        out = self.model(input_ids=ids, use_cache=True)
        cache = out[self.cache_name]
        last = _log_probs(out.logits[0, -1])
        scores = []
        for continuation in continuations:
            cont = torch.tensor([continuation], device=self.device)
            total = last[continuation[0]].item()
            if len(continuation) > 1:
                step = self.model(input_ids=cont[:, :-1], use_cache=True, **{self.cache_name: copy.deepcopy(cache)})
                logprobs = _log_probs(step.logits[0])
                total += logprobs.gather(-1, cont[0, 1:, None]).sum().item()
            scores.append(total)
        return scores

    @torch.no_grad()
    def token_losses(self, ids: list[int]) -> np.ndarray:
        """Loss of every token after the first (length len(ids) - 1)."""
        x = torch.tensor([ids], device=self.device)
        logprobs = _log_probs(self.model(input_ids=x, use_cache=False).logits[0, :-1])
        return (-logprobs.gather(-1, x[0, 1:, None])[:, 0]).float().cpu().numpy()


def position_buckets(length: int) -> list[tuple[int, int]]:
    """[0, 256), [256, 512), [512, 1K), ... up to ``length``: doubling buckets of target positions."""
    edges = [0, 256]
    while edges[-1] < length:
        edges.append(edges[-1] * 2)
    edges[-1] = length
    return list(zip(edges[:-1], edges[1:]))


def perplexity_by_position(losses: Sequence[np.ndarray]) -> list[dict]:
    """Token-weighted perplexity per position bucket over documents' per-token losses."""
    longest = max(len(x) for x in losses)
    out = []
    for lo, hi in position_buckets(longest):
        chunk = np.concatenate([x[lo:hi] for x in losses if len(x) > lo])
        out.append({"start": lo, "end": hi, "tokens": int(len(chunk)), "ppl": float(np.exp(chunk.mean()))})
    return out
