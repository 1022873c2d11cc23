"""The Hugging Face model and its loss as one module.

The loss needs the output head's weight, not the logits (see ``loss.py``), so it is computed next to
the model inside one ``forward``. That matters under FSDP2: the root module's own parameters (the
embeddings, the final norm, the output head) are gathered around the root's ``forward`` call only.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from anchor_lightning.attention.backends import KWARG, AttentionInputs
from anchor_lightning.model.loss import chunked_token_losses, summed_loss


class PackedCausalLM(nn.Module):
    def __init__(self, lm: PreTrainedModel) -> None:
        super().__init__()
        self.lm = lm

    def hidden_states(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention: AttentionInputs
    ) -> torch.Tensor:
        """Last hidden states [B, T, D]."""
        return self.lm.base_model(
            input_ids=input_ids, position_ids=position_ids, use_cache=False, **{KWARG: attention}
        ).last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        labels: torch.Tensor,
        attention: AttentionInputs,
        loss: str = "auto",
        chunk_size: int = 4096,
        reduction: str = "sum",
    ) -> torch.Tensor:
        """The summed loss over labelled slots (``reduction="sum"``) or per-slot losses [B, T]."""
        hidden = self.hidden_states(input_ids, position_ids, attention)
        head = self.lm.get_output_embeddings().weight
        if reduction == "sum":
            return summed_loss(hidden, head, labels, loss, chunk_size)
        losses = chunked_token_losses(hidden.flatten(0, 1), head, labels.flatten(), chunk_size)
        return losses.view(labels.shape)
