"""Batched greedy generation for evaluation (RULER), with transformers' own model code.

The prompts of one batch are prefilled one at a time (no padding: SDPA's causal kernel, FlashAttention
on a GPU), each writing its keys and values into one preallocated, left-padded KV cache; then every
prompt of the batch decodes together, one token a step, until each has produced a stop token or the
budget, as ``model.generate(do_sample=False)`` would with left padding. The cache is allocated once
per batch (:class:`PreallocatedLayer`: no copy of the whole cache per generated token), and the batch
size is planned from the model's shape and the free memory before anything runs
(:func:`plan_batch`), so a prompt that cannot fit stops with one line before the first forward pass.

On a CUDA card the prompts are prefilled with cuDNN's attention kernel where it agrees with
FlashAttention on the model's own head shape (:func:`prefill_kernel_for`: at 32K on an H200 it
runs SmolLM2-135M's causal attention at 1.6x FlashAttention-2's rate, docs/ruler.md); ``flash``
keeps SDPA's own choice there.

A decode step has the same shapes every time: it attends to the whole cache through a 4D mask that
opens one slot a step, and every input it reads (token, position, slot, mask) is a buffer updated in
place. So on a GPU the step is captured once per batch in a CUDA graph and replayed (one launch for
the whole step instead of a thousand: small models are otherwise bound by the host); on a CPU, or
where capture fails, the same step runs eagerly.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.cache_utils import DynamicCache, DynamicLayer

from anchor_lightning.errors import UserError, broken_model

GIB = 1024**3
PREFILL_TOKENS = 32768  # prompt slots prefilled in one forward pass (short prompts go several at a time)


@dataclass
class GenerationStats:
    """Tokens and seconds of the two phases (prompt tokens prefilled, tokens generated)."""

    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    graph_batches: int = 0  # batches whose decode steps ran from a CUDA graph
    eager_batches: int = 0  # batches whose decode steps ran eagerly (CPU, or where capture failed)
    prefill_kernel: str = ""  # the attention kernel prompts were prefilled with (prefill_kernel_for)

    def as_json(self) -> dict:
        rate = lambda tokens, seconds: round(tokens / seconds, 1) if seconds else None  # noqa: E731
        return {
            "prefill_tokens": self.prefill_tokens,
            "prefill_seconds": round(self.prefill_seconds, 3),
            "prefill_tokens_per_second": rate(self.prefill_tokens, self.prefill_seconds),
            "decode_tokens": self.decode_tokens,
            "decode_seconds": round(self.decode_seconds, 3),
            "decode_tokens_per_second": rate(self.decode_tokens, self.decode_seconds),
            "graph_batches": self.graph_batches,
            "eager_batches": self.eager_batches,
            "prefill_kernel": self.prefill_kernel,
        }


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_shape(config) -> tuple[int, int, int]:
    """Query heads, key/value heads and head dimension of a model config."""
    c = _text_config(config)
    heads = c.num_attention_heads
    return (
        heads,
        getattr(c, "num_key_value_heads", None) or heads,
        getattr(c, "head_dim", None) or c.hidden_size // heads,
    )


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes of keys and values one token holds in the cache, over all layers."""
    _, kv_heads, head_dim = attention_shape(config)
    layers = _text_config(config).num_hidden_layers
    return layers * 2 * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def prefill_bytes(config, tokens: int, dtype: torch.dtype) -> int:
    """A bound on one prefill pass's transient memory over ``tokens`` slots: a layer's largest activations
    (the MLP's gate, up and product, the attention's q/k/v/output, the residual stream) and the fp32
    logits of a few positions."""
    c = _text_config(config)
    size = torch.empty((), dtype=dtype).element_size()
    intermediate = getattr(c, "intermediate_size", 4 * c.hidden_size)
    return tokens * (3 * intermediate + 8 * c.hidden_size) * size + 64 * c.vocab_size * 4


def plan_batch(
    config, longest: int, new_tokens: int, dtype: torch.dtype, free_bytes: int, most: int = 256, what: str = "prompt"
) -> int:
    """How many prompts of up to ``longest`` tokens decode together: their cache of ``longest +
    new_tokens`` slots each, with one prefill pass on top (as many prompts as fit in ``PREFILL_TOKENS``
    slots, or one), within ``free_bytes``. A prompt that cannot fit alone stops with one line."""
    per_row = kv_bytes_per_token(config, dtype) * (longest + new_tokens)
    together = max(1, PREFILL_TOKENS // longest)  # prompts prefilled in one pass (generate_batch)
    prefill = prefill_bytes(config, together * longest, dtype)
    rows = (free_bytes - prefill) // per_row
    if rows < 1:
        raise UserError(
            f"a {longest:,}-token {what} needs {(per_row + prefill) / GIB:.1f} GiB ({per_row / GIB:.1f} GiB of KV cache and "
            f"{prefill / GIB:.1f} GiB for its prefill), and {free_bytes / GIB:.1f} GiB are free: give shorter --lengths, "
            "or use a device with more memory",
            field="--lengths",
        )
    return int(min(rows, most))


def free_memory(device: torch.device, cpu_bytes: int = 4 * GIB, headroom: float = 0.9) -> int:
    """Bytes generation may use on ``device``: 90% of what the CUDA allocator can still get, or a fixed
    budget on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int((free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)) * headroom)
    return cpu_bytes


class PreallocatedLayer(DynamicLayer):
    """One layer's KV cache for a left-padded batch, allocated once at ``[batch, kv_heads, capacity,
    head_dim]``. While :attr:`rows` is set (``(row, length)`` of each prompt of a prefill, padded on the
    right to the longest), an update writes each prompt's keys right-aligned into its row at the end of
    the prompt region and returns the prefill's own (the prompts attend to themselves); afterwards
    each update writes one step for the whole batch at slot ``slot`` (a device tensor shared by the
    layers, advanced in place) and returns the whole cache (the step's mask hides the unfilled slots)."""

    keys: torch.Tensor
    values: torch.Tensor

    def __init__(self, batch: int, capacity: int, prompt_region: int, slot: torch.Tensor) -> None:
        super().__init__()
        self.batch, self.capacity, self.region, self.slot = batch, capacity, prompt_region, slot
        self.rows: list[tuple[int, int]] | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        shape = (self.batch, key_states.shape[1], self.capacity, key_states.shape[-1])
        self.device = key_states.device
        self.keys = torch.zeros(shape, dtype=key_states.dtype, device=self.device)
        self.values = torch.zeros(shape[:-1] + (value_states.shape[-1],), dtype=value_states.dtype, device=self.device)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.rows is not None:
            for k, (row, n) in enumerate(self.rows):
                self.keys[row, :, self.region - n : self.region] = key_states[k, :, :n]
                self.values[row, :, self.region - n : self.region] = value_states[k, :, :n]
            return key_states, value_states
        self.keys.index_copy_(2, self.slot, key_states)
        self.values.index_copy_(2, self.slot, value_states)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        # a prompt being prefilled attends only to itself; a decode step's slot is on the device (its
        # mask, given in 4D, is used as it is)
        return 0 if self.rows is not None else self.region

    def get_max_cache_shape(self) -> int:
        return self.capacity


PREFILL_KERNELS = ("auto", "flash", "cudnn")


@functools.cache
def cudnn_agrees(device: torch.device, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> bool:
    """Whether cuDNN's causal attention gives FlashAttention's output (within 2% of its largest value,
    bf16 rounding being 0.4%) on random inputs of this head shape, with grouped and with repeated key/value
    heads, at lengths that are not multiples of a tile; False where cuDNN refuses the shape. Checked
    once per shape: cuDNN's kernels have given silently wrong outputs for some shapes and cards."""
    generator = torch.Generator(device).manual_seed(0)
    for length in (999, 4133):
        q = torch.randn(1, heads, length, head_dim, generator=generator, device=device, dtype=dtype)
        k, v = (
            torch.randn(1, kv_heads, length, head_dim, generator=generator, device=device, dtype=dtype) for _ in "kv"
        )
        variants = [(k, v, heads != kv_heads)]
        if heads != kv_heads:
            variants.append(
                (k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1), False)
            )
        for keys, values, gqa in variants:
            outputs = []
            for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
                try:
                    with sdpa_kernel([backend]):
                        outputs.append(
                            torch.nn.functional.scaled_dot_product_attention(
                                q, keys, values, is_causal=True, enable_gqa=gqa
                            )
                        )
                except RuntimeError:
                    return False
            got, want = (o.float() for o in outputs)
            if not bool(torch.isfinite(got).all()) or (got - want).abs().max() > 0.02 * want.abs().max():
                return False
    return True


def check_prefill_kernel(choice: str, device_type: str | None = None) -> None:
    """One line for a prefill kernel that is unknown or (given ``device_type``) cannot run there."""
    if choice not in PREFILL_KERNELS:
        raise UserError(
            f"unknown prefill kernel {choice!r} (choose from {', '.join(PREFILL_KERNELS)})", field="--prefill_kernel"
        )
    if device_type is not None and choice != "auto" and device_type != "cuda":
        raise UserError(f"{choice} needs a CUDA device (on a {device_type} give auto)", field="--prefill_kernel")


def prefill_kernel_for(choice: str, model) -> str:
    """The attention kernel prompts are prefilled with, for ``choice`` (``PREFILL_KERNELS``): ``cudnn``
    or ``flash`` as asked (a CUDA card only), ``auto`` cuDNN where :func:`cudnn_agrees` on the model's
    head shape and FlashAttention elsewhere on a CUDA card; on a CPU ``sdpa`` (SDPA's own choice)."""
    param = next(model.parameters())
    check_prefill_kernel(choice, param.device.type)
    if param.device.type != "cuda":
        return "sdpa"
    dtype = param.dtype if param.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    if choice == "auto":
        return "cudnn" if cudnn_agrees(param.device, *attention_shape(model.config), dtype) else "flash"
    return choice


def prefill_attention(kernel: str):
    """The SDPA kernel priority a prefill runs under: ``cudnn`` first (FlashAttention behind it for any
    input cuDNN refuses), ``flash`` without cuDNN, or SDPA's own order (``sdpa``)."""
    rest = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    if kernel == "cudnn":
        return sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, *rest], set_priority=True)
    if kernel == "flash":
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, *rest], set_priority=True)
    return contextlib.nullcontext()


GROUPED_SDPA = "anchor_lightning_grouped_sdpa"  # the attention implementation generation registers


def grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' SDPA attention, except a decode step (one query, a mask) attends with the query
    heads grouped by their key/value head, ``[B, kv_heads, group, D]`` against ``[B, kv_heads, T, D]``:
    no copy of the cache per group of heads (transformers repeats keys and values when a mask is given,
    which triples a GQA model's memory traffic per step)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or attention_mask is None or heads == kv_heads:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def grouped_decode_attention(model) -> Iterator[None]:
    """Run ``model`` with :func:`grouped_sdpa` (registered through transformers' ``AttentionInterface``)
    while generating, and give its attention implementation back afterwards. Only a plain SDPA model
    switches: one with a sliding window or logit soft-capping keeps its own attention."""
    config = _text_config(model.config)
    current = getattr(model.config, "_attn_implementation", None)
    plain = not getattr(config, "sliding_window", None) and not getattr(config, "attn_logit_softcapping", None)
    if current != "sdpa" or not plain or not hasattr(model, "set_attn_implementation"):
        yield
        return
    from transformers import AttentionInterface

    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa)
    model.set_attn_implementation(GROUPED_SDPA)
    try:
        yield
    finally:
        model.set_attn_implementation(current)


def _cache_keyword(model) -> str:
    # transformers 5.24 renamed past_key_values to cache (the old name still works there, with a warning)
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _DecodeStep:
    """One greedy decode step of the whole batch on static buffers: open the slot being written in the
    mask, run the model on the last tokens at their positions, record the next tokens in ``history``,
    then advance slot, positions and column in place. :meth:`run` replays it from a CUDA graph on a GPU
    (captured at the first call) or calls it eagerly."""

    def __init__(self, model, cache, keyword: str, tokens, positions, mask, slot, history, stops) -> None:
        self.model, self.cache, self.keyword = model, cache, keyword
        self.tokens, self.positions, self.mask, self.slot = tokens, positions, mask, slot
        self.history, self.stops = history, stops
        self.column = torch.ones(1, dtype=torch.long, device=tokens.device)
        self.finished = torch.isin(tokens, stops)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.use_graph = tokens.device.type == "cuda"

    def step(self) -> None:
        self.mask.index_fill_(3, self.slot, 0.0)
        out = self.model(
            input_ids=self.tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.positions[:, None],
            use_cache=True,
            logits_to_keep=1,
            **{self.keyword: self.cache},
        )
        nxt = out.logits[:, -1].argmax(-1)
        self.history.index_copy_(1, self.column, nxt[:, None])
        self.finished.logical_or_(torch.isin(nxt, self.stops))
        self.tokens.copy_(nxt)
        self.positions.add_(1)
        self.slot.add_(1)
        self.column.add_(1)

    def _capture(self) -> None:
        """Capture :meth:`step` in a CUDA graph, leaving every buffer as it was; where it cannot be
        captured the step runs eagerly from then on."""
        buffers = (self.tokens, self.positions, self.slot, self.column, self.finished, self.mask)
        saved = [t.clone() for t in buffers]

        def restore() -> None:
            for t, s in zip(buffers, saved):
                t.copy_(s)

        device = self.tokens.device
        graph = torch.cuda.CUDAGraph()
        try:
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                self.step()  # warm-up (lazy allocations, kernel choices) on a side stream
            torch.cuda.current_stream(device).wait_stream(stream)
            restore()
            with torch.cuda.graph(graph):
                self.step()
            self.graph = graph
        except RuntimeError:
            self.use_graph = False
        restore()

    def run(self) -> None:
        if self.use_graph and self.graph is None:
            self._capture()  # once; where it fails the step runs eagerly from now on
        if self.graph is not None:
            self.graph.replay()
        else:
            self.step()


@torch.no_grad()
def generate_batch(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_ids: set[int],
    capacity: int | None = None,
    stats: GenerationStats | None = None,
    all_done: Callable[[bool], bool] | None = None,
    check_every: int = 8,
    prefill_tokens: int = PREFILL_TOKENS,
    prefill_kernel: str = "sdpa",
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (decoded together), each cut before its first stop token.
    ``capacity`` (default: the longest prompt) is the prompt region of the cache, and ``all_done``
    (given a bool: whether this batch is done) lets ranks that share the model decode in step. Whether
    every prompt has stopped is read every ``check_every`` steps (each read waits for the device).
    Prompts are prefilled together, padded on the right, up to ``prefill_tokens`` slots a forward pass
    (one at a time when they are longer), with ``prefill_kernel`` (:func:`prefill_kernel_for`)."""
    with grouped_decode_attention(model):
        return _generate(
            model,
            prompts,
            max_new_tokens,
            stop_ids,
            capacity,
            stats,
            all_done,
            check_every,
            prefill_tokens,
            prefill_kernel,
        )


def _generate(
    model, prompts, max_new_tokens, stop_ids, capacity, stats, all_done, check_every, prefill_tokens, prefill_kernel
):
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    region = max(capacity or 0, max(len(p) for p in prompts))
    batch, total = len(prompts), region + max_new_tokens
    layers = _text_config(model.config).num_hidden_layers
    slot = torch.full((1,), region, dtype=torch.long, device=device)
    cache = DynamicCache()
    cache.layers = [PreallocatedLayer(batch, total, region, slot) for _ in range(layers)]
    keyword = _cache_keyword(model)
    _sync(device)
    began = time.perf_counter()
    first = []
    finite = torch.ones((), dtype=torch.bool, device=device)  # every prompt's next-token logits, checked once
    together = max(1, prefill_tokens // region)
    for start in range(0, batch, together):
        group = prompts[start : start + together]
        longest = max(len(p) for p in group)
        for layer in cache.layers:
            layer.rows = [(start + k, len(p)) for k, p in enumerate(group)]
        # padded on the right: under causal attention no prompt token sees the padding, and every
        # prompt's positions run from 0 as they would alone
        ids = torch.zeros(len(group), longest, dtype=torch.long)
        for k, p in enumerate(group):
            ids[k, : len(p)] = torch.as_tensor(list(p))
        last = torch.tensor([len(p) - 1 for p in group])
        keep = torch.unique(last)
        with prefill_attention(prefill_kernel):
            out = model(input_ids=ids.to(device), use_cache=True, logits_to_keep=keep.to(device), **{keyword: cache})
        where = torch.searchsorted(keep, last).to(device)
        logits = out.logits[torch.arange(len(group), device=device), where]
        finite &= torch.isfinite(logits).all()
        first.append(logits.argmax(-1))
    for layer in cache.layers:
        layer.rows = None
    tokens = torch.cat(first)
    if not finite.item():  # one sync for every prefill group, where the step below syncs anyway
        raise broken_model(f"logits after a {region:,}-token prefill")
    _sync(device)
    middle = time.perf_counter()
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    # the additive mask of every slot: a prompt's own slots (left padding) open, the generated ones
    # opened one a step as they are written
    mask = torch.full((batch, 1, 1, total), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask[:, 0, 0, :region].masked_fill_(torch.arange(region, device=device)[None, :] >= (region - lengths)[:, None], 0)
    stops = (
        torch.tensor(sorted(stop_ids), device=device) if stop_ids else torch.empty(0, dtype=torch.long, device=device)
    )
    history = torch.zeros(batch, max_new_tokens, dtype=torch.long, device=device)
    history[:, 0] = tokens
    step = _DecodeStep(model, cache, keyword, tokens.clone(), lengths.clone(), mask, slot, history, stops)
    done_steps = 1
    while done_steps < max_new_tokens:
        if (done_steps - 1) % check_every == 0:
            done = bool(step.finished.all())
            if all_done(done) if all_done is not None else done:
                break
        step.run()
        done_steps += 1
    _sync(device)
    end = time.perf_counter()
    rows = history[:, :done_steps].tolist()
    outputs = []
    for row in rows:
        cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
        outputs.append(row[:cut])
    if stats is not None:
        stats.prefill_tokens += int(lengths.sum())
        stats.prefill_seconds += middle - began
        stats.decode_tokens += sum(len(o) for o in outputs)
        stats.decode_seconds += end - middle
        stats.prefill_kernel = prefill_kernel
        if step.graph is not None:
            stats.graph_batches += 1
        else:
            stats.eager_batches += 1
    return outputs


def stop_token_ids(model, tokenizer) -> set[int]:
    """The ids that end a continuation: the generation config's EOS ids (as ``generate`` stops) and the
    tokenizer's EOS."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        if eos is not None:
            ids.update([eos] if isinstance(eos, int) else eos)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
