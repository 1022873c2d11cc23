"""Which attention kernel prefills RULER's prompts fastest on this card: SDPA's backends (FlashAttention-2,
cuDNN, memory-efficient) on SmolLM2-135M's attention shape (9 query heads, 3 key/value heads, head
dim 64), one causal prompt of each length, bf16, forward only. Prints TFLOP/s (causal: half the square)
per backend and length, and the ratio to FlashAttention-2 (SDPA's default choice)."""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention as sdpa

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def time_ms(fn, repeat: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 32768, 65536])
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv_heads", type=int, default=3)
    parser.add_argument("--head_dim", type=int, default=64)
    args = parser.parse_args()
    results = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}
    for length in args.lengths:
        q = torch.randn(1, args.heads, length, args.head_dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, args.kv_heads, length, args.head_dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        flops = 4 * args.heads * args.head_dim * length * length / 2
        row = {"length": length}
        for name, backend in BACKENDS.items():
            for gqa in (True, False):
                kk, vv = (k, v) if gqa else (k.repeat_interleave(args.heads // args.kv_heads, 1),) * 2
                label = f"{name}{'' if gqa else '-repeated'}"
                try:
                    with sdpa_kernel([backend]):
                        ms = time_ms(partial(sdpa, q, kk, vv, is_causal=True, enable_gqa=gqa))
                    row[label] = round(flops / ms / 1e9, 1)
                except RuntimeError as error:
                    row[label] = f"unsupported: {str(error).splitlines()[0][:80]}"
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
