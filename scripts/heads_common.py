"""Data recipes shared by `make heads` and the learning-curve script (embedded model, CPU)."""

from __future__ import annotations

import random

from medusa_lib.data import (
    blocks_to_rows,
    draft_vocab,
    load_corpus,
    load_prompts,
    offline_text_dir,
    pack,
    self_distill_data,
    template_prompts,
)

SD_TOKENS = 256  # new tokens per self-distilled answer


def selfdistill_rows(model, tok, split: str) -> list[dict]:
    prompts = [p.prompt for p in load_prompts(split)]
    return self_distill_data(model, tok, prompts, SD_TOKENS, batch_size=16)


def template_rows(model, tok, n: int, chunk: int = 256, max_new_tokens: int = 192, batch_size: int = 64,
                  progress: bool = True) -> list[dict]:
    """Self-distilled answers to `n` template prompts, generated (and cached) `chunk` prompts at a time,
    so a long run that is stopped keeps every finished chunk and the next call resumes."""
    prompts = [p.prompt for p in template_prompts(n)]
    rows = []
    for i in range(0, n, chunk):
        rows += self_distill_data(model, tok, prompts[i:i + chunk], max_new_tokens, batch_size, progress=progress)
    return rows


def text_rows(tok, positions: int, block_size: int = 256, seed: int = 0) -> list[dict]:
    """About `positions` tokens of the Python standard library's text, packed, shuffled blocks."""
    texts = load_corpus(offline_text_dir(), max_chars=positions * 5)
    rows = blocks_to_rows(pack(tok, texts, block_size))
    random.Random(seed).shuffle(rows)
    return rows[: max(1, positions // block_size)]


def take_positions(rows: list[dict], positions: int) -> list[dict]:
    out, n = [], 0
    for r in rows:
        if n >= positions:
            break
        out.append(r)
        n += len(r["response_ids"])
    return out


def make_draft(rows: list[dict], vocab_size: int, size: int):
    return draft_vocab(rows, size, vocab_size)
