"""Memory model: the peak accelerator memory of every phase a learner runs, from the backbone's shapes.

A Medusa tutorial on a 16 GB T4 meets five peaks, and the weights are only part of each:

- generation: self-distillation's continuous batching (`batching.stream_greedy`) keeps a KV cache of
  batch x (prompt + new tokens) per layer, which for a model without grouped-query attention (Llama-2-7B,
  0.5 MB a token) outgrows the weights within a few dozen rows. `generation_batch` picks the largest batch
  whose peak fits a budget;
- warm-up bank: `positions.hidden_states` runs the frozen backbone over ~8,192 tokens a forward, no cache;
- medusa-1 step: the heads alone on banked states (`losses.bank_batch_loss`, one head's backward at a time);
- medusa-2 step: heads + LoRA (`losses.joint_loss`) with gradient checkpointing: the teacher's and the
  student's last hidden states, each layer's checkpointed input, one layer recomputed in the backward pass,
  and one chunk of fp32 logits;
- decoding: tree verification (`decoding.medusa_generate`), one prompt's KV cache plus the tree's nodes.

After PEFT's k-bit preparation (QLoRA) the embeddings and norms are fp32, so the residual stream, and with
it every activation of the warm-up bank and the Medusa-2 step, is fp32 (4 bytes), not fp16.

Shapes come from the configs shipped in assets/configs (nothing is downloaded). The per-token working
sets are counted from the code's tensors; `scripts/measure_memory.py` checks them against the peak memory
of each phase, measured on a CPU with 1- and 2-layer random-weight models of the 7B's shapes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

CONFIGS = Path(__file__).parent / "assets" / "configs"  # shapes of the profiles' backbones, no download
GIB = 2**30
CUDA_CONTEXT = 0.5 * GIB  # the CUDA context and cuBLAS workspace, before any tensor
T4_BUDGET_GIB = 15.0  # a 16 GB T4's usable memory
NF4_BYTES = 0.52  # NF4 with double quantisation: 4 bits a weight plus its block constants
PHASES = ("generation", "warm-up bank", "medusa-1 step", "medusa-2 step", "decoding")


# ----------------------------------------------------------------------------- shapes


def backbone_shapes(profile_name: str) -> dict:
    """The config dict (hidden size, layers, vocab, ...) of a profile's backbone, from the shipped JSONs."""
    from medusa_lib.config import get_profile

    backbone = get_profile(profile_name).backbone
    return shipped_config("SmolLM2-135M-Instruct" if backbone == "embedded" else backbone)


def shipped_config(hub_id: str) -> dict:
    """The config.json shipped in assets/configs for a hub backbone (no download), read once here for every user."""
    path = CONFIGS / f"{hub_id.split('/')[-1]}.json"
    if not path.exists():
        raise FileNotFoundError(f"no shipped config for {hub_id!r} in {CONFIGS}; add {path.name} to estimate it")
    return json.loads(path.read_text())


def dims(c: dict) -> dict:
    """H (hidden), F (MLP), V (vocab), L (layers), kv (key/value width: grouped-query attention shrinks it)."""
    H = c["hidden_size"]
    return {"H": H, "F": c["intermediate_size"], "V": c["vocab_size"], "L": c["num_hidden_layers"],
            "kv": H * c["num_key_value_heads"] // c["num_attention_heads"]}


def layer_params(c: dict) -> int:
    """Linear weights of one decoder layer: q, o, k, v, gate, up, down."""
    d = dims(c)
    return 2 * d["H"] * d["H"] + 2 * d["H"] * d["kv"] + 3 * d["H"] * d["F"]


def backbone_params(profile_name: str) -> int:
    """Parameter count of a profile's Llama-style backbone from its shipped config (no download):
    attention, MLP, RMSNorms and embeddings (tied ones counted once)."""
    c = backbone_shapes(profile_name)
    return dims(c)["L"] * layer_params(c) + other_params(c)


def other_params(c: dict) -> int:
    """Everything but the decoder's linears: RMSNorms (two a layer, one final) and embeddings (tied ones once)."""
    d = dims(c)
    return d["L"] * 2 * d["H"] + d["H"] + d["V"] * d["H"] * (1 if c.get("tie_word_embeddings") else 2)


def resblock_params(c: dict) -> int:
    """One ResBlock of a head: an H x H weight and its bias."""
    H = dims(c)["H"]
    return H * H + H


# ----------------------------------------------------------------------------- bytes of the pieces


def precision(profile_name: str) -> dict:
    """Bytes a number of each kind takes on a T4 for a profile, before and after k-bit preparation.

    linear: a decoder weight (NF4 or the dtype); embed: embeddings and lm_head; act: the residual stream,
    hence activations and KV. "prepped" is after PEFT's `prepare_model_for_kbit_training` (QLoRA)."""
    from medusa_lib.config import get_profile

    prof = get_profile(profile_name)
    half = 4 if prof.dtype == "float32" else 2  # "auto" is fp16 on a T4
    plain = {"linear": NF4_BYTES if prof.load_in_4bit else half, "embed": half, "act": half, "context": CUDA_CONTEXT}
    prepped = {**plain, "embed": 4, "act": 4} if prof.load_in_4bit else plain
    return {**plain, "prepped": prepped}


def weight_bytes(c: dict, p: dict) -> float:
    """The backbone on the device: decoder linears at p["linear"], norms and embeddings at p["embed"]."""
    d = dims(c)
    return d["L"] * layer_params(c) * p["linear"] + other_params(c) * p["embed"]


def kv_bytes(c: dict, tokens: int, act: float) -> float:
    """KV cache of `tokens` cached positions (summed over the batch): keys and values of every layer."""
    d = dims(c)
    return d["L"] * 2 * d["kv"] * tokens * act


def forward_work(c: dict, tokens: int, act: float) -> float:
    """Working set of a no-grad forward over `tokens` positions: one layer at a time holds its input and
    normed input [N, H], q, k, v and the attention output [N, 2H + 2kv], and in the MLP act(gate), up
    and their product [N, 3F]; the last hidden state [N, H] leaves the decoder."""
    d = dims(c)
    return tokens * (3 * d["H"] + 2 * d["kv"] + 3 * d["F"]) * act


def grad_layer_work(c: dict, tokens: int, act: float, lora_bytes: float = 4) -> float:
    """One decoder layer run with autograd and then backpropagated (what checkpointing recomputes):
    saved tensors (normed inputs, q, k, v, rotated q and k, attention output, gate, act, up, product:
    7H + 3kv + 4F a token), the fp32 copies of each LoRA'd linear's input (6H + F) and the backward's
    transient gradients (2F + 2H)."""
    d = dims(c)
    H, F, kv = d["H"], d["F"], d["kv"]
    return tokens * ((9 * H + 3 * kv + 6 * F) * act + (6 * H + F) * lora_bytes)


def logits_work(rows: int, V: int, copies: int = 5) -> float:
    """One loss term on `rows` positions (`losses.head_loss`): the student's fp32 logits, its log-softmax, the
    teacher's, the KL terms and the backward's gradient: about five fp32 [rows, V] (`losses.bank_batch_loss`).
    `losses.joint_loss` also computes both logits in the backbone's dtype before their fp32 copies: nine."""
    return copies * rows * V * 4


def lora_params(c: dict, r: int) -> int:
    """LoRA A and B of rank r on q, k, v, o, gate, up, down of every layer (`train.add_lora`)."""
    d = dims(c)
    H, F, kv = d["H"], d["F"], d["kv"]
    return d["L"] * r * (2 * (H + H) + 2 * (H + kv) + 3 * (H + F))


def heads_bytes(c: dict, head_cfg, trainable: bool) -> float:
    """Medusa heads in fp32 (ResBlock H x H + bias each, own lm_heads unless shared); trained, each
    parameter also carries its gradient and AdamW's two moments: 16 bytes."""
    d = dims(c)
    per = head_cfg.num_layers * resblock_params(c) + (0 if head_cfg.share_lm_head else d["V"] * d["H"])
    return head_cfg.num_heads * per * (16 if trainable else 4)


# ----------------------------------------------------------------------------- the phases (bytes)


def generation_bytes(c: dict, p: dict, batch: int, prompt_tokens: int, new_tokens: int, refill: bool = True) -> float:
    """`batching.stream_greedy` at `batch` rows. First the whole batch is prefilled at once: KV of
    batch x prompt plus the forward's working set. At the end each row's cache holds prompt + new tokens
    (left-padded to the longest row), each step's concatenation copies one layer's keys and values, and
    (`refill`) a quarter of the batch is prefilled on top as rows finish. Plus the [batch, V] logits and
    the fp32 ResBlock of the unused head that `data._generate` builds."""
    d, act = dims(c), p["act"]
    prefill = kv_bytes(c, batch * prompt_tokens, act) + forward_work(c, batch * prompt_tokens, act)
    full = kv_bytes(c, batch * (prompt_tokens + new_tokens), act) * (1 + 1 / d["L"])
    if refill:
        full += forward_work(c, max(1, batch // 4) * prompt_tokens, act)
    fixed = weight_bytes(c, p) + resblock_params(c) * 4 + p["context"]
    return fixed + max(prefill, full) + 2 * batch * d["V"] * act


def bank_bytes(c: dict, p: dict, head_cfg, block_size: int, batch_tokens: int = 8192) -> float:
    """`positions.hidden_states`: b = batch_tokens // T right-padded sequences of T = block_size tokens in
    one forward without a KV cache: the forward's working set, the last hidden state [b, T, H] and the
    4D attention mask [b, 1, T, T] (bool); the heads sit on the device (fp32)."""
    d = dims(c)
    b = max(1, batch_tokens // block_size)
    n = b * block_size
    extra = n * d["H"] * p["act"] + b * block_size * block_size
    return weight_bytes(c, p) + heads_bytes(c, head_cfg, False) + p["context"] + forward_work(c, n, p["act"]) + extra


def medusa1_bytes(c: dict, p: dict, head_cfg, positions: int) -> float:
    """`losses.bank_batch_loss` on `positions` banked states: the heads with gradients and AdamW state; one
    head at a time, its loss over the draft rows (`logits_work`), and, for a shared lm_head that is not
    fp32, the fp32 copy of its (draft) rows that the student's product keeps for the backward."""
    d = dims(c)
    rows = head_cfg.draft_size or d["V"]
    copy = rows * d["H"] * 4 if head_cfg.share_lm_head and p["embed"] != 4 else 0
    work = positions * d["H"] * 4 * 3 + logits_work(positions, rows) + copy  # inputs, z, teacher states
    return weight_bytes(c, p) + heads_bytes(c, head_cfg, True) + p["context"] + work


def medusa2_parts(c: dict, p: dict, head_cfg, lora_r: int, batch: int, block_size: int, chunk: int = 1024,
                  checkpointing: bool = True) -> dict:
    """`losses.joint_loss` on a [batch, block_size] micro-batch, by part (bytes). Checkpointing keeps
    each layer's input [B, T, H] and recomputes one layer at a time in the backward pass; without it
    every layer keeps all its saved tensors. The peak's last part is the larger of that recomputed
    layer and one chunk of logits (`chunk` positions)."""
    d = dims(c)
    n = batch * block_size
    act = p["act"]
    copy = d["V"] * d["H"] * 4 if head_cfg.share_lm_head and p["embed"] != 4 else 0
    layers = d["L"] * n * d["H"] * act if checkpointing else d["L"] * grad_layer_work(c, n, act)
    return {"weights": weight_bytes(c, p),
            "lora (weights, grads, adam)": 16 * lora_params(c, lora_r),
            "heads (weights, grads, adam)": heads_bytes(c, head_cfg, True),
            "hidden states (teacher, student, grad)": 3 * n * d["H"] * act,
            "layer activations" + (" (checkpointed)" if checkpointing else ""): layers,
            "recomputed layer or logits chunk": max(grad_layer_work(c, n, act),
                                                    logits_work(min(chunk, n), d["V"], 9) + copy),
            "cuda context": p["context"]}


def decoding_bytes(c: dict, p: dict, head_cfg, context_tokens: int, nodes: int) -> float:
    """`decoding.medusa_generate`: one sequence's KV cache (context + the tree's nodes; `keep_path` copies
    one layer's keys and values at a time), a forward over the nodes, their fp32 logits, and the heads."""
    d = dims(c)
    kv = kv_bytes(c, context_tokens + nodes, p["act"]) * (1 + 1 / d["L"])
    work = forward_work(c, nodes, p["act"]) + nodes * d["V"] * 4
    return weight_bytes(c, p) + heads_bytes(c, head_cfg, False) + p["context"] + kv + work


# ----------------------------------------------------------------------------- a profile's budget (GiB)


def generation_batch(profile_name: str, budget_gib: float = T4_BUDGET_GIB, new_tokens: int = 192,
                     prompt_tokens: int = 160, most: int = 1024) -> int:
    """The largest self-distillation batch (at most `most`) whose generation peak fits `budget_gib`:
    weights, then KV of batch x (prompt + new tokens). Pass it as `batch_size` to `data.template_rows`."""
    c, p = backbone_shapes(profile_name), precision(profile_name)
    fits = lambda b: generation_bytes(c, p, b, prompt_tokens, new_tokens) <= budget_gib * GIB  # noqa: E731
    if not fits(1):
        raise ValueError(f"{profile_name}: even one row of {prompt_tokens} + {new_tokens} tokens needs more than "
                         f"{budget_gib} GiB")
    lo, hi = 1, most
    while lo < hi:  # the peak grows with the batch: bisect for the last batch that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def memory_budget(profile_name: str, batch_size: int | None = None, block_size: int | None = None,
                  chunk: int = 1024, generation_batch_size: int | None = None, prompt_tokens: int = 160,
                  new_tokens: int = 192, budget_gib: float = T4_BUDGET_GIB, checkpointing: bool = True) -> dict:
    """Estimated peak GPU memory (GiB) of every phase of a profile on a T4, and the sizes assumed.

    Returns {"phases": {name: GiB} for `PHASES`, "total_gib": the largest phase, "peak_phase",
    "medusa-2 parts": {part: GiB}, and the sizes: batch_size, block_size, grad_accum, chunk (Medusa-2),
    heads_batch (Medusa-1 positions), bank_tokens, generation_batch (at most 128, else what fits
    `budget_gib`), prompt_tokens, new_tokens, decode_tokens, tree_nodes, budget_gib}. The bank and both
    training steps run after k-bit preparation (QLoRA), generation and decoding before it."""
    from medusa_lib.config import get_profile

    prof, c, p = get_profile(profile_name), backbone_shapes(profile_name), precision(profile_name)
    joint = replace(prof.train, stage="joint")
    B, T = batch_size or joint.step_size(), block_size or prof.train.block_size
    gen = generation_batch_size or min(128, generation_batch(profile_name, budget_gib, new_tokens, prompt_tokens))
    heads_batch = replace(prof.train, stage="heads", batch_size=None).step_size()
    decode_tokens, nodes = prof.train.block_size + prof.decode.max_new_tokens, 64
    parts = medusa2_parts(c, p["prepped"], prof.head, prof.train.lora_r, B, T, chunk, checkpointing)
    phases = {"generation": generation_bytes(c, p, gen, prompt_tokens, new_tokens),
              "warm-up bank": bank_bytes(c, p["prepped"], prof.head, T),
              "medusa-1 step": medusa1_bytes(c, p["prepped"], prof.head, heads_batch),
              "medusa-2 step": sum(parts.values()),
              "decoding": decoding_bytes(c, p, prof.head, decode_tokens, nodes)}
    phases = {k: v / GIB for k, v in phases.items()}
    peak = max(phases, key=phases.get)
    return {"profile": profile_name, "phases": phases, "total_gib": phases[peak], "peak_phase": peak,
            "medusa-2 parts": {k: v / GIB for k, v in parts.items()}, "batch_size": B, "block_size": T,
            "grad_accum": prof.train.grad_accum, "chunk": chunk, "heads_batch": heads_batch, "bank_tokens": 8192,
            "generation_batch": gen, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "decode_tokens": decode_tokens, "tree_nodes": nodes, "budget_gib": budget_gib}
