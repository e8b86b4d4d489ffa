"""Training positions: a frozen backbone's last hidden states, flattened, with each head's target.

Medusa-1 (Cai et al., 2024, Sec. 2.2.1) freezes the backbone, so its last hidden states can be
computed once and reused every epoch: only the heads (and their projection) cost anything per
step. Head k (0-based) at position t learns the base model's own greedy token at t+k+1, i.e.
what the base model says k+2 steps after t (`PositionBank.target`). On self-distilled greedy
data that is simply the token k+2 steps on.

Hydra heads (Ankner et al., 2024) are teacher-forced: head k at t also reads the embeddings of
the real tokens at t+1 .. t+k+1 (`PositionBank.path_ids`), which on self-distilled greedy data
are exactly the tokens its tree path holds when that path is right.
"""

from __future__ import annotations

import torch

from medusa_lib.backbone import as_backbone
from medusa_lib.heads import MedusaModel


def check_rows(rows, block_size: int, max_positions: int | None = None) -> list[tuple[torch.Tensor, int]]:
    """[(ids [T], loss_from)] from rows {"prompt_ids", "response_ids"}; clear errors on bad data."""
    if not rows:
        raise ValueError("no training data: the row list is empty (generate or preprocess data first)")
    check_block_size(block_size, max_positions)
    seqs = [seq for seq in (_seq(r, block_size) for r in rows) if seq is not None]
    if not seqs:
        raise ValueError("no training data: every row is too short to give a head a target")
    return seqs


def _seq(row, block_size: int) -> tuple[torch.Tensor, int] | None:
    """(ids [T], the first position that predicts a response token), or None if no head has a target."""
    ids = (list(row["prompt_ids"]) + list(row["response_ids"]))[:block_size]
    start = max(0, len(row["prompt_ids"]) - 1)
    return (torch.tensor(ids, dtype=torch.long), start) if len(ids) - start >= 2 else None


def row_states(rows, block_size: int) -> list[torch.Tensor | None]:
    """The hidden states kept at generation (row["states"], `batching.stream_greedy(keep_states=True)`),
    aligned with `check_rows(rows, block_size)`: [<= T - start, H] each, or None where not kept.

    They are views of the rows' own tensors, in the dtype they were saved in (fp16): `PositionBank`
    copies them once into its fp32 store, so 2M positions cost one copy, not three. Generation never
    feeds its last token, so a whole answer's states stop one position short of T - start; the bank
    leaves that position (an input no head has a target for, and never a target) at zero."""
    out = []
    for r in rows:
        seq = _seq(r, block_size)
        if seq is None:
            continue
        h = r.get("states")
        if h is None or not r["prompt_ids"]:
            out.append(None)
            continue
        if len(h) != len(r["response_ids"]):
            raise ValueError(f"a row's states cover {len(h)} tokens, its answer {len(r['response_ids'])}: "
                             f"states saved with other answers; delete its states-*.pt and regenerate")
        n = len(seq[0]) - seq[1]
        out.append(h[:n])
    return out


def check_block_size(block_size: int, max_positions: int | None = None) -> None:
    """A training sequence of `block_size` tokens fits the model's context (`max_position_embeddings`)."""
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}")
    if max_positions is not None and block_size > max_positions:
        raise ValueError(f"block_size={block_size} is above the model's context of {max_positions} tokens")


def pad_batch(seqs, pad_id: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad [(ids [T_i], start)] into ids [B, T] (`pad_id` after each row's tokens), attention mask
    [B, T] and starts [B]: padding sits after every real token, so causal attention never sees it."""
    T = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, (seq, _) in enumerate(seqs):
        ids[i, : len(seq)], mask[i, : len(seq)] = seq, 1
    return ids.to(device), mask.to(device), torch.tensor([start for _, start in seqs], device=device)


@torch.no_grad()
def hidden_states(backbone, seqs, progress: bool = False, batch_tokens: int = 8192,
                  known=None) -> list[torch.Tensor]:
    """Last hidden states [T - start, H] (fp32, CPU) of each (ids, start) in `seqs`, in order.

    `known[i]`, where given, is passed through as is: its own dtype, and it may stop short
    (states kept at generation, `row_states`; `PositionBank` zero-fills the rest). The rest run
    through the backbone: sequences of similar length batched, right-padded, about `batch_tokens`
    tokens a forward, with no KV cache (8,192 tokens of Llama-2-7B's would be 4-8 GiB); padding sits after
    every real token, so causal attention never sees it."""
    from tqdm.auto import tqdm

    bb = as_backbone(backbone)  # a causal LM, a Backbone or a MedusaModel: only the decoder runs
    device = bb.lm_head.weight.device
    out = list(known) if known is not None else [None] * len(seqs)
    order = sorted((i for i in range(len(seqs)) if out[i] is None), key=lambda i: len(seqs[i][0]))
    bar = tqdm(total=sum(len(seqs[i][0]) for i in order), desc="hidden states", unit="tok", disable=not progress)
    while order:
        T = len(seqs[order[-1]][0])
        group = [order.pop() for _ in range(min(len(order), max(1, batch_tokens // T)))]  # longest first
        ids, mask, _ = pad_batch([seqs[i] for i in group], device=device)  # [b, T] each
        h = bb.decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # [b, T, H], no KV cache
        for row, i in enumerate(group):
            out[i] = h[row, seqs[i][1]: len(seqs[i][0])].float().cpu()
        bar.update(int(mask.sum()))
    bar.close()
    return out


class PositionBank:
    """Last hidden states of a frozen backbone over many sequences, flattened to positions.

    h[p] is the hidden state at global position p (kept in fp32 on the CPU); tok[p] the token
    there; valid[p, k] says head k (0-based) has a target at p (the token k+2 steps on lies in the
    same sequence). Only positions from each sequence's `start` on are kept: the prompt's earlier
    states are never a head's input nor a target.
    """

    def __init__(self, mm: MedusaModel, seqs, num_heads: int, progress: bool = False, batch_tokens: int = 8192,
                 known=None):
        hs = hidden_states(mm, seqs, progress, batch_tokens, known)
        toks, valid, kept = [], [], []
        for i, (ids, start) in enumerate(seqs):
            t = torch.arange(start, len(ids))
            toks.append(ids[start:])
            valid.append(torch.stack([t + k + 2 < len(ids) for k in range(num_heads)], 1))  # [T - start, K]
            kept.append(torch.full((len(t),), known is not None and known[i] is not None))
        self.tok, self.valid = torch.cat(toks), torch.cat(valid)
        self.h = torch.zeros(len(self.tok), hs[0].shape[1], dtype=torch.float32)  # [P, H]: one fp32 copy of all
        at = 0
        for h, t in zip(hs, toks):
            self.h[at: at + len(h)] = h  # a kept answer's unfed last position stays zero
            at += len(t)
        self.num_heads = num_heads
        self.greedy = self._greedy(mm, torch.cat(kept))  # [P] the base model's own greedy next token at each position

    @torch.no_grad()
    def _greedy(self, mm: MedusaModel, kept: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """Rows whose states were kept at generation (`kept` [P]) are the model's own greedy answers, so there
        the greedy next token is simply the next token, as generation chose it (a row's last position has
        none, and is never a target). Elsewhere: the lm_head's argmax, in the backbone's dtype."""
        greedy = torch.cat([self.tok[1:], self.tok[-1:]])  # [P] the next token
        W = mm.lm_head.weight  # [V, H]
        for idx in (~kept).nonzero().squeeze(1).split(chunk):
            greedy[idx] = (self.h[idx].to(W.device, W.dtype) @ W.T).argmax(-1).cpu()
        return greedy

    def __len__(self) -> int:
        return len(self.tok)

    def trainable(self) -> torch.Tensor:
        """Global positions where head 1 has a target."""
        return self.valid[:, 0].nonzero().squeeze(1)

    def inputs(self, pos: torch.Tensor, device, dtype=torch.float32) -> torch.Tensor:
        """Hidden states at `pos`: [B] -> [B, H] on `device` in `dtype`."""
        return self.h[pos].to(device, dtype)

    def target(self, pos: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Head k's target at `pos` (the base argmax at t+k: the token k+2 steps on) and its mask [B]."""
        at = (pos + k + 1).clamp(max=len(self) - 1)
        return self.greedy[at], self.valid[pos, k]

    def path_ids(self, pos: torch.Tensor, k: int) -> torch.Tensor:
        """The tokens at t+1 .. t+k+1 that Hydra head k reads besides h_t: [B] -> [B, k+1].

        Where valid[pos, k] they lie in the same sequence (elsewhere the head has no target anyway)."""
        at = pos[:, None] + torch.arange(1, k + 2)  # [B, k+1]
        return self.tok[at.clamp(max=len(self) - 1)]

    def teacher_state(self, pos: torch.Tensor, k: int) -> torch.Tensor:
        """The hidden state whose lm_head distribution head k imitates (position t+k): [B, H]."""
        return self.h[(pos + k + 1).clamp(max=len(self) - 1)]


@torch.no_grad()
def bank_accuracy(mm: MedusaModel, bank: PositionBank, topk: int = 10, chunk: int = 1024) -> torch.Tensor:
    """[K, topk] cumulative: P(head k's top-i holds the base model's greedy token k+1 steps on).

    Hydra heads are scored teacher-forced (their path holds the true tokens), the accuracy that each
    depth of a tree has once its path so far is right; so per-depth numbers compare with Medusa's.
    Heads that may propose fewer than `topk` tokens (a small draft vocabulary) keep their last column: top-i
    for i past the draft size is top-(draft size)."""
    mm.heads.eval()
    wanted, topk = topk, min(topk, mm.draft_ids.numel() if mm.draft_ids is not None else topk)
    hits = torch.zeros(mm.num_heads, topk)
    count = torch.zeros(mm.num_heads)
    device = mm.lm_head.weight.device
    for pos in torch.arange(len(bank)).split(chunk):
        h = bank.inputs(pos, device)  # [B, H]
        tops = None if mm.heads.reads_path else mm.head_topk(h, topk)  # [K, B, topk]: every head, once
        for k in range(mm.num_heads):
            target, mask = bank.target(pos, k)
            if not mask.any():
                continue
            if tops is None:  # heads that read their path: teacher-forced along the true one, tokens t+1 .. t+k+1
                top = mm.topk_along(h[mask.to(device)], k, bank.path_ids(pos[mask], k), topk)  # [n, topk]
            else:
                top = tops[k][mask.to(device)]  # [n, topk]
            first = (top == target[mask].to(device)[:, None]).float().cumsum(-1).clamp(max=1)  # [n, topk]
            hits[k] += first.sum(0).cpu()
            count[k] += mask.sum()
    acc = hits / count.clamp(min=1)[:, None]  # [K, topk]
    return torch.cat([acc, acc[:, -1:].expand(-1, wanted - topk)], 1)  # [K, wanted]

