"""Cost of one tree-verification step on this machine (issue: the engine's CPU cost).

Prints, for the embedded model on CPU:
- t_verify(n) / t(1): one verification of n tree nodes over a ~100-token cache (forward and logits),
  relative to one greedy step;
- the lm_head over n rows, as `h @ W.T` (nn.Linear) and as `W @ h.T` (what decoding uses);
- t_verify(n) / t(1) again with every linear layer in the plain `F.linear` layout (`--layouts`), interleaved
  with the few-rows layout `load_base` gives a CPU model (`backbone.FewRowsLinear`), both against the plain t(1);
- a per-step split of medusa_generate into backbone forward, lm_head, heads and the rest.

    python scripts/bench_verify.py
"""

import argparse
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from medusa_lib import MedusaModel, Tree, load_base, medusa_generate
from medusa_lib.backbone import FewRowsLinear
from medusa_lib.data import chat_ids
from medusa_lib.decoding import logit_rows, prefill, tree_forward
from medusa_lib.evaluate import median_seconds, verify_costs
from medusa_lib.recipes import resolve_heads


def median_ms(fn, repeats=9):
    return 1000 * median_seconds(fn, repeats)


@torch.no_grad()
def verify_table(mm: MedusaModel, sizes=(1, 4, 8, 16, 32, 64)):
    costs = verify_costs(mm, sizes, repeats=9)  # t(n)/t(1), medians
    W = mm.lm_head.weight
    print("| nodes | t(n)/t(1), lm_head included | lm_head h@W.T ms | lm_head W@h.T ms |")
    print("|---|---|---|---|")
    for n, cost in costs.items():
        h = torch.randn(n, W.shape[1])
        lin, rowwise = median_ms(lambda: F.linear(h, W)), median_ms(lambda: logit_rows(W, h))
        print(f"| {n} | x{cost:.2f} | {lin:.1f} | {rowwise:.1f} |")


def step_split(mm: MedusaModel, tok, tree: Tree):
    out = medusa_generate(mm, chat_ids(tok, "Explain how a bicycle works."), tree=tree, max_new_tokens=64)
    keys = ["forward", "lm_head", "heads", "total"]
    med = {k: 1000 * statistics.median(s[k] for s in out.step_times) for k in keys}
    rest = med["total"] - med["forward"] - med["lm_head"] - med["heads"]
    print(f"\nper step ({tree.num_nodes}-node tree, tau {out.tau:.2f}): forward {med['forward']:.1f} ms, "
          f"lm_head {med['lm_head']:.1f} ms, heads {med['heads']:.1f} ms, rest {rest:.1f} ms "
          f"({rest / med['total']:.0%} of {med['total']:.1f} ms)")


@contextmanager
def plain_layout(model):
    """Every `FewRowsLinear` of `model` back to `nn.Linear` (`F.linear` for any number of rows) for a while."""
    few = [m for m in model.modules() if type(m) is FewRowsLinear]
    for m in few:
        m.__class__ = torch.nn.Linear
    try:
        yield
    finally:
        for m in few:
            m.__class__ = FewRowsLinear


@torch.no_grad()
def layout_table(mm: MedusaModel, sizes=(1, 2, 3, 4, 5, 6, 8, 10, 16), context: int = 200, repeats: int = 15):
    """t_verify(n) in both layouts, interleaved n by n, the fastest of `repeats` kept (as timeit does)."""
    g = torch.Generator().manual_seed(0)
    W, vocab = mm.lm_head.weight, mm.config.vocab_size
    cache, _ = prefill(mm, torch.randint(0, vocab, (1, context), generator=g))
    trees = {n: Tree.standard(min(mm.num_heads, 5), n) if n > 1 else Tree([]) for n in sizes}
    cands = {n: torch.randint(0, vocab, (t.num_nodes,), generator=g) for n, t in trees.items()}
    best = {(lay, n): float("inf") for lay in ("plain", "few-rows") for n in sizes}
    for _ in range(repeats):
        for n in sizes:
            for lay in ("plain", "few-rows"):
                with plain_layout(mm.base) if lay == "plain" else nullcontext():
                    t0 = time.perf_counter()
                    logit_rows(W, tree_forward(mm, cache, trees[n], cands[n]))
                    best[lay, n] = min(best[lay, n], time.perf_counter() - t0)
                cache.crop(-trees[n].num_nodes)
    t1 = best["plain", 1]
    print(f"\nverification of n nodes over a {context}-token cache, fastest of {repeats}, against the plain "
          f"layout's 1 token ({1000 * t1:.1f} ms):")
    print("| layout | " + " | ".join(str(n) for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for lay in ("plain", "few-rows"):
        print(f"| {lay} | " + " | ".join(f"{best[lay, n] / t1:.2f}" for n in sizes) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layouts", action="store_true", help="only the plain against the few-rows layout")
    args = ap.parse_args()
    model, tok = load_base("embedded", device="cpu")
    mm = resolve_heads(model, tok)
    print(f"torch threads: {torch.get_num_threads()}")
    if args.layouts:
        return layout_table(mm)
    verify_table(mm)
    step_split(mm, tok, Tree.default(mm.num_heads))


if __name__ == "__main__":
    main()
