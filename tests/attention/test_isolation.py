"""No attention crosses a document: d loss(doc B) / d embedding(doc A) is exactly zero through the real
model, for every CPU backend and layout; a mask that lets one entry through must be caught."""

from __future__ import annotations

import pytest
import torch

from anchor_lightning.attention import masks
from anchor_lightning.attention.backends import IMPLEMENTATION_NAMES, prepare
from anchor_lightning.model.build import build_model, configure
from anchor_lightning.model.loss import chunked_token_losses
from tests.conftest import FIRST, VOCAB, packed_batch, tiny_config

SEQ_LEN = 48


def documents():
    g = torch.Generator().manual_seed(3)
    return [[FIRST] + torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (9, 13, 7, 10)]


def cross_document_gradient(model, batch, inputs, target_doc: int) -> tuple[float, float]:
    """(largest |gradient| on embeddings of other documents' content, same on the target document)."""
    embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    hidden = model.base_model(
        inputs_embeds=embeds, position_ids=batch["position_ids"], anchor_attention=inputs
    ).last_hidden_state
    labels = torch.where(batch["doc_ids"] == target_doc, batch["labels"], torch.full_like(batch["labels"], -100))
    chunked_token_losses(hidden.flatten(0, 1), model.lm_head.weight, labels.flatten()).sum().backward()
    grad = embeds.grad.abs().amax(-1)[0]
    doc_ids, is_first = batch["doc_ids"][0], batch["is_first"][0]
    others = (doc_ids >= 0) & (doc_ids != target_doc) & ~is_first
    own = doc_ids == target_doc
    return grad[others].max().item(), grad[own].max().item()


@pytest.mark.parametrize(
    "backend,layout,mode",
    [
        ("sdpa", "shared", "anchor"),
        ("sdpa", "per_doc", "anchor"),
        ("varlen", "per_doc", "anchor"),
        ("sdpa", "per_doc", "intra_doc"),
        ("varlen", "per_doc", "intra_doc_reset"),
    ],
)
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_no_gradient_crosses_documents(family, backend, layout, mode):
    model = build_model(configure(tiny_config(family), SEQ_LEN), backend).double()
    batch, rows = packed_batch(documents(), SEQ_LEN, mode, layout)
    assert len(rows) == 1 and len(rows[0].chunk_sources) == 4
    for target in range(4):
        model.zero_grad()
        leak, own = cross_document_gradient(model, batch, prepare(batch, backend), target)
        assert leak == 0.0
        assert own > 0.0


def test_full_attention_does_leak():
    """The check has power on real attention: under ``full`` later documents see earlier ones."""
    model = build_model(configure(tiny_config("llama"), SEQ_LEN), "sdpa").double()
    batch, _ = packed_batch(documents(), SEQ_LEN, "full", "per_doc")
    leak, _ = cross_document_gradient(model, batch, prepare(batch, "sdpa"), 2)
    assert leak > 0.0


@pytest.mark.parametrize("layout", ["shared", "per_doc"])
def test_one_allowed_cross_document_entry_is_caught(layout):
    """Mutation: open a single (query in doc 2, key in doc 1) entry of the real mask; the check must fail."""
    model = build_model(configure(tiny_config("llama"), SEQ_LEN), "sdpa").double()
    batch, _ = packed_batch(documents(), SEQ_LEN, "anchor", layout)
    inputs = prepare(batch, "sdpa")
    doc_ids = batch["doc_ids"][0]
    q = int(((doc_ids == 2) & ~batch["is_first"][0]).nonzero().min())  # a labelled slot of doc 2
    k = int((doc_ids == 1).nonzero().max())
    mutated = inputs.mask.clone()
    assert not mutated[0, 0, q, k]
    mutated[0, 0, q, k] = True
    inputs.mask = mutated
    leak, _ = cross_document_gradient(model, batch, inputs, 2)
    assert leak > 0.0


def test_flex_mask_mod_matches_dense_mask():
    """flex has no CPU backward: check its mask_mod entry by entry against the dense mask instead."""
    for mode, layout in (("anchor", "shared"), ("anchor", "per_doc"), ("full", "per_doc")):
        batch, _ = packed_batch(documents(), SEQ_LEN, mode, layout)
        dense = masks.dense_mask(batch["doc_ids"], mode, layout)[0, 0]
        mod = masks.mask_mod(batch["doc_ids"], mode, layout)
        idx = torch.arange(SEQ_LEN)
        from_mod = mod(torch.tensor(0), torch.tensor(0), idx[:, None], idx[None, :])
        assert torch.equal(dense, from_mod)


def test_model_built_for_one_backend_refuses_inputs_of_another():
    model = build_model(configure(tiny_config("llama"), SEQ_LEN), "sdpa")
    model.set_attn_implementation(IMPLEMENTATION_NAMES["sdpa"])
    batch, _ = packed_batch(documents(), SEQ_LEN, "anchor", "per_doc")
    with pytest.raises(RuntimeError, match="prepared for backend 'varlen'"):
        model.base_model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], anchor_attention=prepare(batch, "varlen")
        )
