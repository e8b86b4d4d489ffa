"""The backbone: the base model that verifies, seen as its parts (decoder, lm_head, embeddings, config).

Medusa leaves the base model untouched (Cai et al., 2024, Sec. 2): drafters propose, the backbone's decoder
runs the tree and its lm_head judges. Decoding needs only those parts, so a `Backbone` wraps any causal LM
(optionally under a PEFT wrapper); a `MedusaModel` carries one for its own base (`mm.backbone`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
    layout, and 1 or 3 rows are slower than 2 or 4, so they are padded with a copy of the last row.
    """
    n = h.shape[0]
    if n in (1, 3):
        return (weight @ torch.cat([h, h[-1:]]).T).T[:n]
    return (weight @ h.T).T


# ----------------------------------------------------------------------------- a CPU's few-row products

FEW_ROWS = 32  # up to this many rows, fp32 products on a CPU take the `W @ x.T` layout


class FewRowsLinear(nn.Linear):
    """`nn.Linear` whose fp32 CPU forward of 1..FEW_ROWS rows runs as `logit_rows` (`W @ x.T`).

    Why it matters for speculative decoding: verifying a tree of n nodes pushes n rows through every weight
    of the backbone. On a CPU, MKL's `x @ W.T` for a few rows costs 1.5-2x one row, so a small tree costs
    nearly two greedy steps; `W @ x.T` costs about one row's time up to 4 rows (`scripts/bench_verify.py`
    prints both). Any other shape, dtype or device is plain `F.linear`. The results differ from
    `F.linear` by float rounding only.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        rows = x.numel() // x.shape[-1]
        if not (x.is_cpu and x.dtype == torch.float32 and 1 <= rows <= FEW_ROWS):
            return F.linear(x, self.weight, self.bias)
        y = logit_rows(self.weight, x.reshape(rows, -1)).reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


def few_rows_layout(model: nn.Module) -> int:
    """Every plain `nn.Linear` of `model` computes few rows in the fast layout (in place; the weights and
    `state_dict` are untouched, as `torch.nn.utils.parametrize` also swaps a module's class). Returns how
    many layers changed. `load_base` does this for every model it loads; the forward changes on a CPU only."""
    layers = [m for m in model.modules() if type(m) is nn.Linear]
    for m in layers:
        m.__class__ = FewRowsLinear
    return len(layers)
