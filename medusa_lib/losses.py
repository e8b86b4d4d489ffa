"""The losses of self-distillation (Cai et al., 2024, Sec. 2.2 training strategies, Sec. 2.3.2 self-distillation).

Head k (1-based) at position t learns the token at t+k+1. Two losses per head, mixed by
`kd_weight` and weighted by decay**k (the paper's 0.8^k; `head_term`):

- CE: cross-entropy against the base model's own greedy token at t+k+1 given the sequence
  so far (on self-distilled greedy data, simply the token at t+k+1);
- KD: KL(teacher || head), the teacher being the base model's distribution at position t+k,
  i.e. the distribution that token t+k+1 comes from (`head_loss`).

Medusa-1 (Sec. 2.2.1, `bank_batch_loss`): the backbone is frozen, its hidden states come from a
`PositionBank`, and each head is backpropagated on its own (Hydra heads alike, teacher-forced: head k
(0-based) at t also reads the embeddings of the real tokens t+1 .. t+k+1). Medusa-2 (Sec. 2.2.2,
`joint_loss`): the base LM's loss is KD against the teacher, the same model with its adapters disabled,
and every term is computed in chunks of positions, each backpropagated into the detached last hidden
state before the next is built; one backward through the backbone follows. The peak then holds one
chunk's logits, not [B, T, V] per head (see `medusa_lib.memory`). Losses run in fp32.
With a draft vocabulary, a head's logits and its teacher's cover the draft rows only (`draft_projection`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medusa_lib.config import TrainConfig
from medusa_lib.heads import MedusaModel
from medusa_lib.positions import PositionBank, check_rows

# ----------------------------------------------------------------------------- one head (both stages)


def head_loss(student_logits, target_ids, teacher_logits, kd_weight: float, mask=None):
    """CE + KD for one head, in fp32: logits [B, V], targets [B], teacher [B, V]; mask [B] bool."""
    if mask is not None:
        student_logits, target_ids, teacher_logits = student_logits[mask], target_ids[mask], teacher_logits[mask]
    if student_logits.shape[0] == 0:
        return student_logits.float().sum() * 0.0
    logp = F.log_softmax(student_logits.float(), -1)
    ce = F.nll_loss(logp, target_ids)
    if kd_weight == 0:
        return ce
    teacher = F.log_softmax(teacher_logits.float(), -1)
    kd = F.kl_div(logp, teacher, log_target=True, reduction="batchmean")
    return (1 - kd_weight) * ce + kd_weight * kd


def draft_projection(mm: MedusaModel, k: int):
    """Head k's projection weight [V', H] and the token id of each row (None = full vocab)."""
    weight = mm.lm_head.weight if mm.heads.lm_heads is None else mm.heads.lm_heads[k].weight
    if mm.draft_ids is None:
        return weight, None
    if not weight.requires_grad:  # a frozen (shared) projection: its draft rows are cached once
        return mm.draft_weight(k), mm.draft_ids
    return weight[mm.draft_ids], mm.draft_ids


def teacher_rows(mm: MedusaModel):
    """The base lm_head's rows that the heads rank: the draft rows, or the whole vocabulary."""
    if mm.draft_ids is None:
        return mm.lm_head.weight
    return mm.draft_weight(0) if mm.heads.lm_heads is None else mm.lm_head.weight[mm.draft_ids].detach()


def to_draft(target_ids, draft_ids, vocab_size: int):
    """Map target token ids to draft-vocab rows; returns (rows, mask of targets in the draft)."""
    where = torch.full((vocab_size,), -1, dtype=torch.long, device=target_ids.device)
    where[draft_ids] = torch.arange(len(draft_ids), device=target_ids.device)
    mapped = where[target_ids]
    return mapped.clamp(min=0), mapped >= 0


def head_term(mm: MedusaModel, k: int, h, target, teacher_h, mask, cfg: TrainConfig, prev=None):
    """Head k's weighted loss on hidden states h [B, H] (fp32 math, draft rows where set).

    Hydra heads also read `prev` [B, k+1], the ids of the tokens before the one they guess."""
    weight, draft = draft_projection(mm, k)
    with torch.no_grad():  # the teacher's distribution at t+k, over the same rows as the student
        W = teacher_rows(mm)
        teacher = teacher_h.to(W.device, W.dtype) @ W.T  # [B, V']
    if draft is not None:
        target, in_draft = to_draft(target, draft, mm.heads.vocab_size)
        mask = mask & in_draft
    z = mm.head_state(h, k, prev)  # [B, H]
    if weight.requires_grad:  # trainable projections keep fp32 weights: no copy
        student = z.float() @ weight.T.float()  # [B, V']
    else:  # a frozen (fp16) lm_head is read in its own dtype, not copied to fp32 on every call
        student = (z.to(weight.dtype) @ weight.T).float()  # [B, V']
    return cfg.decay ** (k + 1) * head_loss(student, target, teacher, cfg.kd_weight, mask)


# ----------------------------------------------------------------------------- Medusa-1


def bank_batch_loss(mm: MedusaModel, bank: PositionBank, pos: torch.Tensor, cfg: TrainConfig,
                    backward: bool = True) -> list[float]:
    """Medusa-1 loss on positions `pos` of a PositionBank; backward one head at a time (Hydra: teacher-forced)."""
    dev = mm.lm_head.weight.device
    h = bank.inputs(pos, dev)  # [B, H] fp32
    losses = []
    for k in range(mm.num_heads):
        target, mask = bank.target(pos, k)
        prev = bank.path_ids(pos, k) if mm.heads.reads_path else None  # teacher forcing: tokens t+1 .. t+k+1
        loss = head_term(mm, k, h, target.to(dev), bank.teacher_state(pos, k), mask.to(dev), cfg, prev)
        if backward and loss.requires_grad:
            loss.backward()
        losses.append(float(loss.detach()))
    return losses


# ----------------------------------------------------------------------------- Medusa-2


def joint_loss(mm: MedusaModel, ids, attn, start, cfg: TrainConfig, chunk: int = 1024, backward: bool = True,
               scaler=None, accum: int = 1) -> tuple[float, list[float]]:
    """Medusa-2 loss on a padded batch ids [B, T]: KD of the base LM to the teacher + every head.

    The teacher is the same model with its adapters disabled (no KV cache is built). Every term is
    computed in chunks of `chunk` positions, each backpropagated (divided by `accum`, scaled by an
    fp16 GradScaler if given) into the detached last hidden state at once; then one backward runs
    through the backbone. Returns (loss, per-term floats).
    """
    with torch.no_grad(), mm.base.disable_adapter():
        teacher_h = mm.decoder(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state  # [B, T, H]
    h = mm.decoder(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state  # [B, T, H]
    leaf = h.detach().requires_grad_(backward)
    parts = []
    for p in range(mm.num_heads + 1):  # p = 0: the base LM at t+1; p = k+1: head k at t+k+2
        where = joint_positions(attn, start, p)
        parts.append(_joint_term(mm, p, leaf, teacher_h, ids, where, cfg, chunk, backward, scaler, accum))
    if backward and leaf.grad is not None:
        h.backward(leaf.grad)
    return sum(parts), parts


def joint_positions(attn, start, p: int) -> torch.Tensor:
    """Flat indices into [B, T] of the positions t whose target t+p+1 is a real token of the same row
    (right padding: a row's length is its mask's sum), from each row's `start` on."""
    T = attn.shape[1]
    t = torch.arange(T, device=attn.device)[None]  # [1, T]
    ok = attn.bool() & (t >= start[:, None]) & (t + p + 1 < attn.sum(1, keepdim=True))  # [B, T]
    return ok.flatten().nonzero().squeeze(1)


def _joint_term(mm, p, leaf, teacher_h, ids, where, cfg, chunk, backward, scaler, accum) -> float:
    """One term of the joint loss (the base LM when p = 0, else head p-1), chunk by chunk."""
    flat_h, flat_t, flat_ids = leaf.flatten(0, 1), teacher_h.flatten(0, 1), ids.flatten()
    total = 0.0
    for c in where.split(chunk):
        share = len(c) / max(1, len(where))  # chunks add up to the mean over all positions
        target = flat_ids[c + p + 1]
        if p == 0:
            with torch.no_grad():
                teacher = mm.lm_head(flat_t[c]).float()  # [n, V]
            loss = head_loss(mm.lm_head(flat_h[c]), target, teacher, 1.0) * share
        else:
            mask = torch.ones_like(c, dtype=torch.bool)
            loss = head_term(mm, p - 1, flat_h[c], target, flat_t[c + p], mask, cfg) * share
        if backward and loss.requires_grad:
            scaled = loss / accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += float(loss.detach())
    return total


@torch.no_grad()
def kl_to_teacher(mm: MedusaModel, rows, block_size: int = 512) -> float:
    """Mean KL(teacher || adapted model) of the base LM over response positions of `rows`."""
    total, n = 0.0, 0
    for ids, start in check_rows(rows, block_size):
        ids = ids[None].to(mm.lm_head.weight.device)
        h = mm.decoder(input_ids=ids, use_cache=False).last_hidden_state  # [1, T, H]; no KV cache is built
        student = F.log_softmax(mm.lm_head(h)[0, start:].float(), -1)
        with mm.base.disable_adapter():
            h = mm.decoder(input_ids=ids, use_cache=False).last_hidden_state  # [1, T, H]
            teacher = F.log_softmax(mm.lm_head(h)[0, start:].float(), -1)
        total += float(F.kl_div(student, teacher, log_target=True, reduction="sum"))
        n += student.shape[0]
    return total / max(1, n)
