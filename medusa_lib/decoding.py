"""Medusa decoding: candidates, one tree-verification forward, acceptance, KV bookkeeping.

Follows Cai et al., 2024, Sec. 2.1.2 (tree attention) and 2.3.1 (typical acceptance). One step:

1. the root is the token the base model itself chose last step (always correct);
2. a drafter (`drafters.py`) proposes a tree of candidates from the verified state: head k's top-k ids
   fill depth k of a static tree (Medusa), each node's own top-k (Hydra), or continuations found in the
   context (prompt lookup), or several of these merged (hybrid). This loop never names the kind;
3. one forward of all N nodes over the KV cache, under a float 4D tree mask, with position ids
   = past length + depth (plain HF `DynamicCache`; no patched modeling files);
4. acceptance walks down the tree from the root (`greedy`, `typical` or `sample`);
5. the accepted path's KV entries are moved into place and the rest cropped away; the base
   model's token at the last accepted node becomes the next root (the "bonus" token).

Modes:
- greedy: lossless: exactly the tokens plain greedy decoding gives.
- sample: exact: multi-draft rejection sampling over siblings (SpecInfer / EAGLE style), so the
  output follows the base model's sampling distribution at `temperature`.
- typical: the paper's typical acceptance, p(x) > min(eps, delta * exp(-H)). Faster, but NOT
  distribution-exact: it accepts plausible tokens the base model might not have sampled.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from medusa_lib.backbone import as_backbone, logit_rows  # logit_rows: re-exported, notebooks import it here
from medusa_lib.drafters import as_drafter
from medusa_lib.models import clock
from medusa_lib.tree import Tree

MODES = ("greedy", "typical", "sample")


@dataclass
class GenerateOutput:
    sequences: torch.Tensor  # [1, prompt + new]
    accept_lengths: list[int] = field(default_factory=list)  # tokens emitted per step (>= 1)
    step_times: list[dict] = field(default_factory=list)  # seconds: forward, lm_head, heads, total (see `timing`)
    candidates: list[torch.Tensor] = field(default_factory=list)  # per step [N] (if record=True)
    accepted_nodes: list[list[int]] = field(default_factory=list)  # per step (if record=True)
    trees: list[Tree] = field(default_factory=list)  # per step, the tree verified (if record=True; dynamic drafters)
    prompt_len: int = 0

    @property
    def new_tokens(self) -> torch.Tensor:
        return self.sequences[0, self.prompt_len:]

    @property
    def tau(self) -> float:
        """Mean tokens per step (acceptance length)."""
        return sum(self.accept_lengths) / max(1, len(self.accept_lengths))


# ----------------------------------------------------------------------------- small pieces


def stopwatch(timing: bool):
    """`clock` (a GPU sync each call) when timings are asked for, else a bare perf_counter (no sync):
    exact on a CPU either way; on CUDA the bare one only shows when work was queued."""
    return clock if timing else time.perf_counter


def check_inputs(input_ids: torch.Tensor, mode: str, max_new_tokens: int, temperature: float = 1.0,
                 vocab_size: int | None = None, typical: tuple[float, float] = (0.09, 0.3),
                 context: int | None = None) -> None:
    """Bad arguments fail here, before any forward pass, saying what to pass instead. `context`: the model's
    longest sequence (`max_position_embeddings`), which the prompt and the new tokens must fit."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a tensor [1, T], got {type(input_ids).__name__}; "
                        f"use tok(text, return_tensors='pt').input_ids or torch.tensor([ids])")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"batch size 1 only: input_ids must be [1, T], got {list(input_ids.shape)}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: give at least one prompt token")
    check_sampling(mode, temperature, max_new_tokens)
    if mode == "typical":
        check_typical(*typical)  # (posterior_threshold, posterior_alpha)
    check_token_ids(input_ids, vocab_size)
    if context is not None and input_ids.shape[1] + max_new_tokens > context:
        raise ValueError(f"{input_ids.shape[1]} prompt tokens + max_new_tokens={max_new_tokens} pass the model's "
                         f"context of {context} tokens; ask for at most {max(0, context - input_ids.shape[1])} new "
                         f"tokens, or shorten the prompt")


def check_sampling(mode: str, temperature: float, max_new_tokens) -> None:
    """Decoding settings that need no model (the CLI checks them before loading one)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}; "
                         f"e.g. max_new_tokens=64")
    if mode != "greedy":
        check_temperature(temperature, mode)


def check_typical(posterior_threshold: float, posterior_alpha: float) -> None:
    """Typical acceptance's epsilon and delta are finite numbers > 0: at 0, a negative value or NaN, every drafted
    token would be accepted unchecked by the base model."""
    for name, value in (("posterior_threshold", posterior_threshold), ("posterior_alpha", posterior_alpha)):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not (ok and value > 0):
            raise ValueError(f"{name} must be a finite number > 0 for typical acceptance, got {value!r}; "
                             f"the paper's are 0.09 and 0.3")


def check_temperature(temperature: float, mode: str) -> None:
    """Sampling divides the logits by the temperature: it must be a finite number > 0."""
    ok = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
    if not (ok and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0 for mode={mode!r}, got {temperature!r}; "
                         f"use e.g. temperature=0.7, or mode='greedy' for deterministic output")


def check_token_ids(input_ids: torch.Tensor, vocab_size: int | None) -> None:
    """Integer ids in [0, vocab_size): float ids or another tokenizer's ids fail here, not in the embedding."""
    if input_ids.dtype not in (torch.long, torch.int32):  # what an embedding takes; int16, uint8, floats do not
        raise TypeError(f"input_ids must be a tensor of int64 (or int32) token ids, got {input_ids.dtype}; "
                        f"use tok(text, return_tensors='pt').input_ids, or input_ids.long()")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    bad = lo if lo < 0 else hi if vocab_size is not None and hi >= vocab_size else None
    if bad is not None:
        raise ValueError(f"input_ids holds token id {bad}, outside the model's vocabulary [0, {vocab_size}) "
                         f"(vocab_size={vocab_size}); encode the prompt with this model's own tokenizer")


def context_of(config) -> int | None:
    """The longest sequence the model's positions cover, where its config says."""
    return getattr(config, "max_position_embeddings", None)


def eos_set(eos_token_id, config) -> set[int]:
    """The stop tokens: an id, or a list, tuple or set of ids (default: the model config's)."""
    eos = eos_token_id if eos_token_id is not None else getattr(config, "eos_token_id", None)
    if eos is None:
        return set()
    ids = list(eos) if isinstance(eos, (list, tuple, set, frozenset)) else [eos]
    if not all(isinstance(e, numbers.Integral) and not isinstance(e, bool) for e in ids):
        raise TypeError(f"eos_token_id must be a token id or a list of token ids, got {eos_token_id!r}; "
                        f"e.g. eos_token_id=tok.eos_token_id")
    return {int(e) for e in ids}


def clip_emitted(tokens: list[int], eos: set[int], budget: int) -> tuple[list[int], bool]:
    """Cut at the first EOS (kept) and at the token budget. Returns (tokens, finished)."""
    for i, t in enumerate(tokens):
        if t in eos:
            tokens = tokens[: i + 1]
            return tokens[:budget], True
    return tokens[:budget], len(tokens) >= budget


def keep_path(cache: DynamicCache, past_len: int, path: list[int]) -> None:
    """Keep only the accepted nodes' KV entries: move them right after the prefix, drop the rest.

    In place: the accepted rows are gathered (a copy, so source and target may overlap), written over
    the tree's first slots, and the cache becomes a view that ends there; the prefix is not copied.
    """
    assert all(type(layer) is DynamicLayer for layer in cache.layers), "keep_path edits plain DynamicLayers"
    idx = torch.tensor(path, device=cache.layers[0].keys.device) + past_len
    end = past_len + len(path)
    for layer in cache.layers:  # keys, values: [B, heads, past + N, head_dim] -> [B, heads, end, head_dim]
        layer.keys[..., past_len:end, :] = layer.keys.index_select(-2, idx)
        layer.values[..., past_len:end, :] = layer.values.index_select(-2, idx)
        layer.keys, layer.values = layer.keys[..., :end, :], layer.values[..., :end, :]
    assert cache.get_seq_length() == end


def choose_token(logits: torch.Tensor, mode: str, temperature: float, gen=None) -> int:
    """The base model's own next token from one row of logits [V]."""
    if mode == "greedy":
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, -1)
    return int(torch.multinomial(probs, 1, generator=gen))


# ----------------------------------------------------------------------------- acceptance


def accept_greedy(tree: Tree, cand: torch.Tensor, logits: torch.Tensor, **_) -> tuple[list[int], int]:
    """Walk down while the base argmax equals a child's token. Returns (path nodes, bonus token)."""
    preds, cand = torch.stack([logits.argmax(-1), cand.to(logits.device, torch.long)]).tolist()  # [N] each, 1 read
    kids = tree.children()
    path = [0]
    while True:
        nxt = next((c for c in kids[path[-1]] if cand[c] == preds[path[-1]]), None)
        if nxt is None:
            return path, preds[path[-1]]
        path.append(nxt)


def accept_sample(tree: Tree, cand: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0,
                  gen=None, **_) -> tuple[list[int], int]:
    """Exact multi-draft rejection sampling; each child is a deterministic draft.

    At a node with target p, try its children in rank order: child c is accepted with
    probability p(c) / sum(p); on rejection c's mass is removed from p. If no child is accepted,
    the bonus token is drawn from what is left. So every token is emitted with probability p(token).
    """
    probs = torch.softmax(logits.float() / temperature, -1)  # [N, V]
    q, u, mass, cand = draft_odds(tree, cand, probs, gen)
    kids, path = tree.children(), [0]
    while True:
        accepted, tried = try_children(kids[path[-1]], cand, q, u, mass[path[-1]])
        if accepted is None:
            return path, residual_draw(probs[path[-1]], tried, gen)
        path.append(accepted)


def draft_odds(tree: Tree, cand: torch.Tensor, probs: torch.Tensor, gen=None):
    """What rejection sampling reads, fetched in one transfer (not a sync per node), as lists:
    q [N-1] the parent's probability of node i+1's token, u [N-1] one uniform per draft,
    mass [N] each node's p.sum(), and the candidates [N]."""
    n = tree.num_nodes
    par = torch.tensor(tree.parents()[1:], dtype=torch.long, device=probs.device)  # [N-1] parent of node i+1
    q = probs[par, cand[1:].to(probs.device)]  # [N-1]
    u = torch.rand(n - 1, generator=gen, device=probs.device)  # [N-1]
    host = torch.cat([q, u, probs.sum(-1)]).tolist()  # [3N - 2]
    return host[: n - 1], host[n - 1: 2 * n - 2], host[2 * n - 2:], cand.tolist()


def try_children(kids: list[int], cand: list[int], q: list[float], u: list[float], left: float):
    """Try a node's children in rank order: child c wins when u_c * (mass left) < p(c); a rejected
    child's mass leaves p. Returns (accepted child or None, the tokens rejected)."""
    tried: list[int] = []
    for c in kids:
        pc = 0.0 if cand[c] in tried else q[c - 1]  # a repeated token's mass is already gone
        if u[c - 1] * left < pc:
            return c, tried
        left, tried = left - pc, tried + [cand[c]]
    return None, tried


def residual_draw(p: torch.Tensor, tried: list[int], gen=None) -> int:
    """A token from p [V] once the rejected drafts' tokens are removed (multinomial renormalises)."""
    if tried:
        p = p.index_fill(0, torch.tensor(tried, device=p.device), 0.0)
    return int(torch.multinomial(p, 1, generator=gen))


def accept_typical(tree: Tree, cand: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0,
                   posterior_threshold: float = 0.09, posterior_alpha: float = 0.3, gen=None,
                   **_) -> tuple[list[int], int]:
    """The paper's typical acceptance (Sec. 2.3.1): a child x of node n is accepted when
    p_n(x) > min(eps, delta * exp(-H(p_n))). The deepest fully accepted node wins. Not exact."""
    probs = torch.softmax(logits.float() / temperature, -1)  # [N, V]
    entropy = -(probs * torch.log(probs + 1e-10)).sum(-1)  # [N]
    thresh = torch.clamp(posterior_alpha * torch.exp(-entropy), max=posterior_threshold)  # [N]
    parents = tree.parents()
    par = torch.tensor(parents[1:], dtype=torch.long, device=probs.device)  # [N-1] parent of node i+1
    ok = [True] + (probs[par, cand[1:].to(probs.device)] > thresh[par]).tolist()  # one transfer, not N
    best = 0
    for i in range(1, tree.num_nodes):  # ancestors come first, so ok[] can be chained in order
        ok[i] = ok[i] and ok[parents[i]]
        if ok[i] and len(tree.ancestors(i)) > len(tree.ancestors(best)):
            best = i
    p = probs[best] * (probs[best] > thresh[best])
    bonus = int(torch.multinomial(p, 1, generator=gen)) if p.sum() > 0 else int(probs[best].argmax())
    return tree.ancestors(best), bonus


ACCEPT = {"greedy": accept_greedy, "typical": accept_typical, "sample": accept_sample}


# ----------------------------------------------------------------------------- the loop


@torch.no_grad()
def prefill(mm, input_ids: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """Run the prompt once; returns (cache, the prompt's last hidden states [T, H])."""
    cache = DynamicCache(config=mm.config)
    out = mm.decoder(input_ids=input_ids, cache=cache, use_cache=True)
    return cache, out.last_hidden_state[0]


class TreeInputs:
    """A tree's float mask and depths, built once (per tree, dtype and device) on the model's device;
    each step only prepends the past's columns (all visible) and adds the past length to the depths."""

    def __init__(self, tree: Tree, dtype: torch.dtype, device):
        self.nodes = tree.attention_mask(0, dtype=dtype, device=device)  # [1, 1, N, N]
        self.depths = tree.position_ids(0, device)  # [1, N]

    def mask(self, past: int) -> torch.Tensor:  # [1, 1, N, past + N]
        return torch.cat([self.nodes.new_zeros(*self.nodes.shape[:-1], past), self.nodes], -1)

    def position_ids(self, past: int) -> torch.Tensor:  # [1, N]
        return self.depths + past


@torch.no_grad()
def tree_forward(mm, cache: DynamicCache, tree: Tree, cand: torch.Tensor,
                 inputs: TreeInputs | None = None) -> torch.Tensor:
    """One forward of all tree nodes over the cache: float tree mask, depth position ids.

    Returns the last hidden states [N, H]; the cache grows by N entries (see `keep_path`).
    `inputs`: the tree's `TreeInputs` for this model, reused across steps (built here if not given).
    """
    past, W = cache.get_seq_length(), mm.lm_head.weight
    inputs = inputs or TreeInputs(tree, W.dtype, W.device)
    out = mm.decoder(input_ids=cand[None].to(W.device), attention_mask=inputs.mask(past),
                     position_ids=inputs.position_ids(past), cache=cache, use_cache=True)
    return out.last_hidden_state[0]


@torch.no_grad()
def medusa_generate(mm, input_ids: torch.Tensor, tree: Tree | None = None, max_new_tokens: int = 128,
                    mode: str = "greedy", temperature: float = 1.0, posterior_threshold: float = 0.09,
                    posterior_alpha: float = 0.3, eos_token_id=None, streamer=None, seed: int | None = None,
                    record: bool = False, timing: bool = False) -> GenerateOutput:
    """Generate with tree verification. Batch size 1.

    `mm` is a `MedusaModel` (its heads draft on `tree`, default `Tree.default`) or any `drafters.Drafter`
    (prompt lookup, a hybrid, heads on their own tree: `recipes.resolve_heads(..., kind=...)`).
    greedy is lossless; sample is exact at `temperature`; typical is faster but not exact.
    Never emits past EOS or past `max_new_tokens`. `record=True` keeps each step's candidates
    and accepted nodes (for the notebooks' explorer). `out.step_times` is always filled; on CUDA
    pass `timing=True` for true per-part times (it syncs the GPU several times a step).
    """
    drafter, typical = as_drafter(mm, tree), (posterior_threshold, posterior_alpha)
    bb = as_backbone(drafter.backbone)
    check_inputs(input_ids, mode, max_new_tokens, temperature, bb.config.vocab_size, typical, context_of(bb.config))
    W = bb.lm_head.weight
    opts = dict(temperature=temperature, posterior_threshold=posterior_threshold, posterior_alpha=posterior_alpha,
                gen=torch.Generator(device=W.device).manual_seed(seed) if seed is not None else None)
    inputs, stamp = TreeCache(W.dtype, W.device), stopwatch(timing)
    eos, out, new = eos_set(eos_token_id, bb.config), GenerateOutput(input_ids, prompt_len=input_ids.shape[1]), []
    cache, context, step = start(drafter, bb, input_ids, mode, opts, streamer)
    done = False
    while not done:
        path, root, hs, times = medusa_step(bb, cache, step.tree, step.tokens, ACCEPT[mode], opts,
                                            inputs.get(step.tree), stamp)
        emitted, done = clip_emitted(step.tokens[path].tolist(), eos, max_new_tokens - len(new))
        new += emitted
        context += emitted
        drafter.accepted(step, path)
        _record(out, streamer, emitted, times, step, path, record)  # stream before the drafter runs
        t0 = stamp()
        if not done:  # the drafter reads the accepted nodes' hidden states (heads: the last one)
            step = drafter.propose(hs[path], root, context)
        times["heads"] = stamp() - t0
        times["total"] += times["heads"]
    if streamer is not None:
        streamer.end()
    out.sequences = torch.cat([input_ids, torch.tensor([new], dtype=input_ids.dtype, device=input_ids.device)], 1)
    return out


def start(drafter, bb, input_ids: torch.Tensor, mode: str, opts: dict, streamer):
    """Read the prompt, choose the first root token, and let the drafter propose the first tree.
    Returns (cache, context ids, first draft)."""
    if streamer is not None:
        streamer.put(input_ids.cpu())
    context = input_ids[0].tolist()
    drafter.start(context)
    cache, h = prefill(bb, input_ids)
    how = "greedy" if mode == "greedy" else "sample"
    root = choose_token(logit_rows(bb.lm_head.weight, h[-1:])[0], how, opts["temperature"], opts["gen"])
    return cache, context, drafter.propose(h, root, context)


class TreeCache:
    """Each tree's `TreeInputs`, built once: a static tree every step, a dynamic drafter's trees as they recur."""

    def __init__(self, dtype: torch.dtype, device):
        self.dtype, self.device, self.built = dtype, device, {}

    def get(self, tree: Tree) -> TreeInputs:
        key = tuple(tree.paths)
        if key not in self.built:
            self.built[key] = TreeInputs(tree, self.dtype, self.device)
        return self.built[key]


def medusa_step(mm, cache, tree: Tree, cand: torch.Tensor, accept, opts: dict, inputs: TreeInputs | None = None,
                stamp=time.perf_counter):
    """One tree forward of the candidates [N] -> acceptance -> keep the accepted KV entries.

    Returns (accepted node path, next root token, hidden states [N, H], timings by `stamp`).
    """
    t0 = stamp()
    past = cache.get_seq_length()
    hs = tree_forward(mm, cache, tree, cand, inputs)  # [N, H]
    t1 = stamp()
    logits = logit_rows(mm.lm_head.weight, hs)  # [N, V]
    t2 = stamp()
    path, bonus = accept(tree, cand, logits, **opts)
    keep_path(cache, past, path)
    times = {"forward": t1 - t0, "lm_head": t2 - t1, "total": stamp() - t0}
    return path, bonus, hs, times


def _record(out: GenerateOutput, streamer, emitted: list[int], times: dict, step, path, record: bool) -> None:
    out.accept_lengths.append(len(emitted))
    out.step_times.append(times)
    if streamer is not None:
        streamer.put(torch.tensor(emitted))
    if record:
        out.candidates.append(step.tokens.cpu())
        out.accepted_nodes.append(path)
        out.trees.append(step.tree)


@torch.no_grad()
def greedy_generate(model_or_mm, input_ids: torch.Tensor, max_new_tokens: int = 128, eos_token_id=None,
                    streamer=None, timing: bool = False) -> GenerateOutput:
    """Plain greedy decoding on the same cache code: the like-for-like baseline (tau = 1).

    `timing=True` syncs the GPU around each step's clock (see `medusa_generate`)."""
    bb = as_backbone(model_or_mm)  # a causal LM, a Backbone or a MedusaModel: only the backbone is used
    check_inputs(input_ids, "greedy", max_new_tokens, vocab_size=bb.config.vocab_size, context=context_of(bb.config))
    eos, W = eos_set(eos_token_id, bb.config), bb.lm_head.weight
    out = GenerateOutput(sequences=input_ids, prompt_len=input_ids.shape[1])
    if streamer is not None:
        streamer.put(input_ids.cpu())
    cache, h = prefill(bb, input_ids)
    h, new, stamp = h[-1:], [], stopwatch(timing)
    while True:
        t0 = stamp()
        tok = int(logit_rows(W, h)[0].argmax())
        new.append(tok)
        if streamer is not None:
            streamer.put(torch.tensor([tok]))
        out.accept_lengths.append(1)
        if tok in eos or len(new) >= max_new_tokens:
            out.step_times.append({"total": stamp() - t0})
            break
        h = bb.decoder(input_ids=torch.tensor([[tok]], device=W.device), cache=cache,
                       use_cache=True).last_hidden_state[0, -1:]
        out.step_times.append({"total": stamp() - t0})
    if streamer is not None:
        streamer.end()
    out.sequences = torch.cat([input_ids, torch.tensor([new], dtype=input_ids.dtype, device=input_ids.device)], 1)
    return out
