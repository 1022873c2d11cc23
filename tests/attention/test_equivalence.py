"""One function, three ways: per-target losses of (a) the per_doc layout with varlen semantics, (b) the
shared layout with the anchor mask, and (c) each document run alone behind its first token through
plain HF attention (HF's sdpa, explicit additive mask, no project code;
HF's eager path computes its softmax in fp32, too coarse for a float64 comparison), keyed by (document, offset)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from anchor_lightning.attention.backends import IMPLEMENTATION_NAMES, prepare
from anchor_lightning.data.packing import target_keys
from anchor_lightning.model.build import build_model, configure
from anchor_lightning.model.loss import chunked_token_losses
from tests.conftest import FAMILIES, FIRST, VOCAB, packed_batch, tiny_config

SEQ_LEN = 64


def documents(seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = [11, 19, 5, 14]  # 49 content tokens: one row in both layouts, no splits
    return [[FIRST] + torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]


def project_losses(model, docs, backend: str, layout: str) -> dict[tuple[int, int], float]:
    batch, rows = packed_batch(docs, SEQ_LEN, "anchor", layout)
    assert len(rows) == 1
    model.set_attn_implementation(IMPLEMENTATION_NAMES[backend])
    with torch.no_grad():
        hidden = model.base_model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            anchor_attention=prepare(batch, backend),
        ).last_hidden_state
        losses = chunked_token_losses(hidden[0], model.lm_head.weight, batch["labels"][0])
    slots = (batch["labels"][0] != -100).nonzero().flatten().tolist()
    return dict(zip(target_keys(rows[0]), (losses[s].item() for s in slots)))


def alone_losses(reference, docs) -> dict[tuple[int, int], float]:
    """Each document alone: [F, content], F at position 0, content at the positions it has in the packed
    anchor row (1 + content tokens before it). Written without project code."""
    out, start = {}, 1
    for d, doc in enumerate(docs):
        content = doc[1:]
        n = len(content) + 1
        ids = torch.tensor([[FIRST] + content])
        pos = torch.tensor([[0] + list(range(start, start + len(content)))])
        mask = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)[None, None]
        with torch.no_grad():
            logits = reference(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False).logits[0]
        # the slot of content token j (1-based slot j + 1) predicts content token j + 1
        losses = F.cross_entropy(logits[1:-1].double(), torch.tensor(content[1:]), reduction="none")
        out.update({(d, j + 1): losses[j].item() for j in range(len(content) - 1)})
        start += len(content)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_layouts_and_documents_alone_agree_in_float64(family):
    config = configure(tiny_config(family), SEQ_LEN)
    model = build_model(config, "sdpa").double().eval()
    reference = AutoModelForCausalLM.from_config(tiny_config(family), attn_implementation="sdpa").double().eval()
    reference.load_state_dict(model.state_dict())
    docs = documents()

    per_doc_varlen = project_losses(model, docs, "varlen", "per_doc")
    shared_sdpa = project_losses(model, docs, "sdpa", "shared")
    per_doc_sdpa = project_losses(model, docs, "sdpa", "per_doc")
    alone = alone_losses(reference, docs)

    assert set(per_doc_varlen) == set(shared_sdpa) == set(alone) == set(per_doc_sdpa)
    assert len(alone) == sum(len(d) - 2 for d in docs)
    for key, value in alone.items():
        assert abs(per_doc_varlen[key] - value) <= 1e-9, (key, per_doc_varlen[key], value)
        assert abs(shared_sdpa[key] - value) <= 1e-9, (key, shared_sdpa[key], value)
        assert abs(per_doc_sdpa[key] - value) <= 1e-9, (key, per_doc_sdpa[key], value)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_flex_forward_matches_sdpa_on_cpu(family):
    """flex on CPU is forward-only (no compiled backward there): same per-target losses as sdpa."""
    config = configure(tiny_config(family), SEQ_LEN)
    model = build_model(config, "sdpa").eval()
    docs = documents(1)
    sdpa = project_losses(model, docs, "sdpa", "shared")
    flex = project_losses(model, docs, "flex", "shared")
    assert set(sdpa) == set(flex)
    assert max(abs(sdpa[k] - flex[k]) for k in sdpa) < 1e-4


def test_baseline_modes_differ_from_anchor():
    """The comparison has power: full attention over the same row gives different losses."""
    config = configure(tiny_config("llama"), SEQ_LEN)
    model = build_model(config, "sdpa").double().eval()
    docs = documents()
    anchor = project_losses(model, docs, "sdpa", "per_doc")
    batch, rows = packed_batch(docs, SEQ_LEN, "full", "per_doc")
    with torch.no_grad():
        hidden = model.base_model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], anchor_attention=prepare(batch, "sdpa")
        ).last_hidden_state
        losses = chunked_token_losses(hidden[0], model.lm_head.weight, batch["labels"][0])
    slots = (batch["labels"][0] != -100).nonzero().flatten().tolist()
    full = dict(zip(target_keys(rows[0]), (losses[s].item() for s in slots)))
    first_doc = [k for k in full if k[0] == 0]
    later_docs = [k for k in full if k[0] > 0]
    # the first document has the same positions and context in both modes; later ones see earlier
    # documents (and sit at other positions) under full attention
    assert max(abs(full[k] - anchor[k]) for k in first_doc) == 0.0
    assert max(abs(full[k] - anchor[k]) for k in later_docs) > 1e-3
