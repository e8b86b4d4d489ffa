"""Cost of one tree-verification step on this machine (issue: the engine's CPU cost).

Prints, for the embedded model on CPU:
- t_verify(n) / t(1): one verification of n tree nodes over a ~100-token cache (forward and logits),
  relative to one greedy step;
- the lm_head over n rows, as `h @ W.T` (nn.Linear) and as `W @ h.T` (what decoding uses);
- a per-step split of medusa_generate into backbone forward, lm_head, heads and the rest.

    python scripts/bench_verify.py
"""

import statistics

import torch
import torch.nn.functional as F

from medusa_lib import MedusaModel, Tree, load_base, medusa_generate
from medusa_lib.data import chat_ids
from medusa_lib.decoding import logit_rows
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


def main():
    model, tok = load_base("embedded", device="cpu")
    mm = resolve_heads(model, tok)
    print(f"torch threads: {torch.get_num_threads()}")
    verify_table(mm)
    step_split(mm, tok, Tree.default(mm.num_heads))


if __name__ == "__main__":
    main()
