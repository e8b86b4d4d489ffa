"""Continuous batching: greedy answers to many prompts, a full batch at every step.

Self-distillation (Cai et al., 2024, Sec. 2.3.2) needs the base model's own answers to thousands
of prompts, and plain batched `generate` wastes most of its work: finished rows ride along until
the longest answer ends. Here a row leaves the batch the step it emits EOS (or its budget), and
its slot is refilled from the queue of waiting prompts (Orca-style iteration-level scheduling,
Yu et al., 2022). The KV cache is a plain HF `DynamicCache`, left-padded:

- rows of different lengths share one cache by left padding and a 2D attention mask; position
  ids count each row's real tokens only, so padding changes nothing the model computes;
- new prompts are prefilled together and joined to the running batch along the batch axis, the
  shorter side padded on the left;
- columns that every remaining row masks out are trimmed from the left, so the cache never grows
  beyond the longest live row.

Sliding-window caches (Mistral-style configs) count their own length, so they cannot be padded or
trimmed from outside: there, new prompts join only an empty batch (plain bucketed batching).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


@dataclass
class Running:
    rows: list[int]  # prompt index of each batch row
    mask: torch.Tensor  # [b, L] 1 on real tokens
    cache: DynamicCache  # [b, heads, L, d] per layer
    h: torch.Tensor  # [b, H] last hidden state of each row

    @property
    def joinable(self) -> bool:
        """Plain full-attention layers: their length is the keys' length, so padding and trimming are safe."""
        return all(type(layer) is DynamicLayer for layer in self.cache.layers)


def _prefill(bb, prompts: list[list[int]], rows: list[int], pad_id: int) -> Running:
    """One left-padded forward over new prompts."""
    device = bb.lm_head.weight.device
    T = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (T - len(p)) + list(p) for p in prompts], device=device)  # [b, T]
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts], device=device)  # [b, T]
    cache = DynamicCache(config=bb.config)
    h = bb.decoder(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                   cache=cache, use_cache=True).last_hidden_state[:, -1]  # [b, H]
    return Running(rows, mask, cache, h)


def _pad_left(run: Running, n: int) -> None:
    """Prepend n masked-out columns to the mask and every cache layer."""
    if n > 0:
        run.mask = F.pad(run.mask, (n, 0))
        for layer in run.cache.layers:
            layer.keys, layer.values = F.pad(layer.keys, (0, 0, n, 0)), F.pad(layer.values, (0, 0, n, 0))


def join(a: Running | None, b: Running) -> Running:
    """Both batches in one: the shorter cache padded on the left, then concatenated on the batch axis."""
    if a is None or not a.rows:
        return b
    L = max(a.mask.shape[1], b.mask.shape[1])
    _pad_left(a, L - a.mask.shape[1])
    _pad_left(b, L - b.mask.shape[1])
    for la, lb in zip(a.cache.layers, b.cache.layers):
        la.keys, la.values = torch.cat([la.keys, lb.keys]), torch.cat([la.values, lb.values])
    return Running(a.rows + b.rows, torch.cat([a.mask, b.mask]), a.cache, torch.cat([a.h, b.h]))


def keep_rows(run: Running, keep: torch.Tensor) -> None:
    """Drop the rows where `keep` [b] is False, then the leading columns no remaining row attends to."""
    idx = keep.nonzero().squeeze(1)
    run.rows = [run.rows[i] for i in idx.tolist()]
    run.mask, run.h = run.mask[idx], run.h[idx]
    run.cache.batch_select_indices(idx)
    if not run.rows or not run.joinable:
        return
    first = int(run.mask.any(0).int().argmax())  # first column some row still attends to
    if first > 0:
        run.mask = run.mask[:, first:]
        for layer in run.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]


def step(bb, run: Running, tok: torch.Tensor) -> None:
    """Feed each row its new token [b]; the cache and mask grow by one column."""
    run.mask = torch.cat([run.mask, torch.ones_like(run.mask[:, :1])], 1)  # [b, L + 1]
    run.h = bb.decoder(input_ids=tok[:, None], attention_mask=run.mask, position_ids=run.mask.sum(1, keepdim=True) - 1,
                       cache=run.cache, use_cache=True).last_hidden_state[:, -1]


@torch.no_grad()
def stream_greedy(bb, prompts: list[list[int]], max_new_tokens: int, eos: set[int], pad_id: int = 0,
                  batch_size: int = 64, refill: int | None = None, on_done=None,
                  keep_states: bool = False) -> list[list[int]]:
    """Greedy answers (new token ids) to every prompt, with continuous batching, on a backbone `bb` (anything
    with `decoder`, `lm_head` and `config`: `backbone.as_backbone(model)`).

    Prompts wait in a queue sorted by length. Whenever `refill` slots are free (default a quarter of
    `batch_size`), that many are prefilled together and join the batch. `on_done(i, tokens, states)` is
    called as prompt i finishes, e.g. to save work before the whole run ends; with `keep_states`,
    `states` [len(tokens), H] (fp16, CPU) holds the last hidden state that chose each token, the
    states a Medusa-1 trainer needs (so it skips its own backbone pass), else None.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if keep_states and on_done is None:
        raise ValueError("keep_states hands each row's states to on_done; pass on_done")
    refill = refill or max(1, batch_size // 4)
    queue = deque(sorted(range(len(prompts)), key=lambda i: len(prompts[i])))
    out, run, states = [[] for _ in prompts], None, ({} if keep_states else None)
    while queue or (run is not None and run.rows):
        free = batch_size - (len(run.rows) if run is not None else 0)
        empty = run is None or not run.rows
        if queue and (empty or (run.joinable and free >= min(refill, len(queue)))):
            new = [queue.popleft() for _ in range(min(free, len(queue)))]
            run = join(run, _prefill(bb, [prompts[i] for i in new], new, pad_id))
        if states is not None:
            h = run.h.to("cpu", torch.float16)  # [b, H]
            for r, i in enumerate(run.rows):
                states.setdefault(i, []).append(h[r])
        tok = bb.lm_head(run.h).argmax(-1)  # [b]
        keep = _emit(run.rows, tok.tolist(), out, eos, max_new_tokens, on_done, states)
        if not all(keep):
            keep_t = torch.tensor(keep, device=tok.device)
            keep_rows(run, keep_t)
            tok = tok[keep_t]
        if run.rows:
            step(bb, run, tok)
    return out


def _emit(rows: list[int], toks: list[int], out: list[list[int]], eos: set[int], budget: int, on_done,
          states: dict | None) -> list[bool]:
    """Append each row's token; which rows go on (not at EOS, budget left). Finished rows are reported."""
    keep = []
    for i, t in zip(rows, toks):
        out[i].append(t)
        done = t in eos or len(out[i]) >= budget
        if done and on_done is not None:
            on_done(i, out[i], torch.stack(states.pop(i)) if states is not None else None)
        keep.append(not done)
    return keep
