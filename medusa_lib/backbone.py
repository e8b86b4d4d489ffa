"""The backbone: the base model that verifies, seen as its parts (decoder, lm_head, embeddings, config).

Medusa leaves the base model untouched (Cai et al., 2024, Sec. 2): drafters propose, the backbone's decoder
runs the tree and its lm_head judges. Decoding needs only those parts, so a `Backbone` wraps any causal LM
(optionally under a PEFT wrapper); a `MedusaModel` carries one for its own base (`mm.backbone`).
"""

from __future__ import annotations

import torch


def core_model(model):
    """The causal-LM module under an optional PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class Backbone:
    """A causal LM's parts: `decoder` (the transformer without its head), `lm_head`, `config`, `embed`."""

    def __init__(self, model):
        self.model = model

    @property
    def decoder(self):
        return core_model(self.model).model

    @property
    def lm_head(self):
        return core_model(self.model).lm_head

    @property
    def config(self):
        return core_model(self.model).config

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:  # [...] token ids -> [..., H]
        return self.decoder.embed_tokens(ids)


def as_backbone(model_or_parts) -> Backbone:
    """The `Backbone` of a causal LM, of a `MedusaModel` (the one it carries), or the backbone itself."""
    if isinstance(model_or_parts, Backbone):
        return model_or_parts
    if isinstance(getattr(model_or_parts, "backbone", None), Backbone):
        return model_or_parts.backbone
    return Backbone(model_or_parts)


def logit_rows(weight: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """lm_head logits of a few hidden states: [N, H] -> [N, V].

    `W @ h.T` rather than `h @ W.T`: on CPU (MKL) the small-M GEMM is up to 3x slower than this
    layout, and a single row is slower than two, so one row is padded to two.
    """
    if h.shape[0] == 1:
        return (weight @ torch.cat([h, h]).T).T[:1]
    return (weight @ h.T).T
