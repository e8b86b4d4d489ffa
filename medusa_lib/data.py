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


# ----------------------------------------------------------------------------- self-distillation


def distill_cache_dir(model, prompts: list[str], max_new_tokens: int, root=None) -> Path:
    """Where the responses of `model` to `prompts` are cached, keyed by model and prompt hash."""
    from medusa_lib.models import cache_dir

    name = getattr(model.config, "name_or_path", "model")
    key = fingerprint(name, model.config.vocab_size, model.config.hidden_size, prompts, max_new_tokens)
    return Path(root or cache_dir() / "distill") / f"{Path(str(name)).name}-{key}"


def self_distill_data(model, tok, prompts: list[str], max_new_tokens: int = 256, batch_size: int = 16,
                      root=None, progress: bool = True) -> list[dict]:
    """The base model's own greedy answers to `prompts` (Medusa paper Sec. 2.3.2).

    Batched and left-padded with the chat template. Each batch is written to its own shard as soon
    as it is done, so an interrupted run resumes where it stopped. Returns one dict per prompt:
    `{"prompt_ids": [...], "response_ids": [...]}` (token ids; the response ends at EOS if reached).
    """
    from tqdm.auto import tqdm

    if not prompts:
        raise ValueError("self_distill_data needs at least one prompt")
    folder = distill_cache_dir(model, prompts, max_new_tokens, root)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding per batch
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rows: dict[int, dict] = {}
    for b, idx in enumerate(tqdm(batches, desc="self-distill", disable=not progress)):
        shard = folder / f"shard-{b:05d}.json"
        if not shard.exists():
            got = _generate_batch(model, tok, [prompts[i] for i in idx], max_new_tokens)
            atomic_write_bytes(shard, json.dumps(dict(zip(map(str, idx), got))).encode())
        rows.update({int(k): v for k, v in json.loads(shard.read_text()).items()})
    return [rows[i] for i in range(len(prompts))]


@torch.no_grad()
def _generate_batch(model, tok, prompts: list[str], max_new_tokens: int) -> list[dict]:
    texts = [chat_text(tok, p) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tok.pad_token_id)  # [B, T + new]
    T = enc.input_ids.shape[1]
    rows = []
    for i in range(len(prompts)):
        prompt = enc.input_ids[i][enc.attention_mask[i].bool()].tolist()
        resp = out[i, T:].tolist()
        if tok.eos_token_id in resp:
            resp = resp[: resp.index(tok.eos_token_id) + 1]
        rows.append({"prompt_ids": prompt, "response_ids": resp})
    return rows
