"""Data: prompts, chat encoding, corpus packing, and self-distillation data.

Medusa's heads learn best from the model's own outputs (Cai et al., 2024, Sec. 2.3.2,
"self-distillation"): the heads must predict what *this* backbone will say, so we let the
backbone answer a prompt set and train on its answers. Plain text (WikiText on Colab, local
files offline) is chunked and packed into fixed blocks for KD on soft teacher targets.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

ASSETS = Path(__file__).parent / "assets"
PROMPTS_FILE = ASSETS / "prompts.jsonl"
CATEGORIES = ("chat", "qa", "math", "code", "summarization", "extraction", "translation")


@dataclass
class Prompt:
    id: str
    category: str
    prompt: str
    split: str  # "train" or "heldout"


def load_prompts(split: str | None = None, categories=None) -> list[Prompt]:
    """The shipped prompt set (fixed train/held-out split). Every tau figure uses "heldout"."""
    rows = [Prompt(**json.loads(line)) for line in PROMPTS_FILE.read_text().splitlines() if line.strip()]
    if split is not None:
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        rows = [r for r in rows if r.split == split]
    if categories is not None:
        rows = [r for r in rows if r.category in set(categories)]
    return rows


def chat_text(tok, prompt: str) -> str:
    """The prompt wrapped in the tokenizer's chat template, ready for the assistant's turn."""
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True)


def chat_ids(tok, prompt: str) -> torch.Tensor:
    """[1, T] input ids of one chat prompt."""
    return tok(chat_text(tok, prompt), return_tensors="pt", add_special_tokens=False).input_ids


def fingerprint(*parts) -> str:
    """A short stable hash of anything JSON-serialisable (used as a cache key)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
