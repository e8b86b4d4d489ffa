"""`make demo`: the whole Medusa story on the embedded model, offline, on a CPU.

By default it loads the shipped heads and then:
- measures head top-k accuracy per offset on the held-out prompts' self-distilled answers;
- measures the cost of verifying 2-32 tree nodes on this machine and grows, from the accuracies,
  the tree expected to be fastest here (`tree.fastest_tree`);
- decodes held-out prompts with HF greedy, HF prompt lookup and Medusa, interleaved;
- checks that Medusa's output equals greedy;
- prints the table and writes runs/demo/results.json with plots.

`make demo TRAIN=1` first runs the pipeline live on a small budget: self-distillation data
(cached after the first run), Medusa-1 heads, then the same report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medusa_lib import plots
from medusa_lib.config import TrainConfig, set_seed, smoke
from medusa_lib.data import draft_vocab, load_prompts, self_distill_data
from medusa_lib.evaluate import (
    bench_prompts,
    benchmark,
    default_methods,
    head_accuracy,
    markdown_table,
    verify_costs,
)
from medusa_lib.heads import SHIPPED_HEADS, MedusaModel
from medusa_lib.models import load_base
from medusa_lib.train import train_heads
from medusa_lib.tree import expected_accept_length, fastest_tree

HELDOUT_FILE = "heldout_selfdistill.json"  # shipped with the heads: the held-out answers they are scored on


def heldout_answers(model, tok, heads_dir: Path, n: int | None = None) -> list[dict]:
    """Self-distilled held-out answers: shipped next to the heads, else generated (and cached)."""
    shipped = heads_dir / HELDOUT_FILE
    if shipped.exists():
        return json.loads(shipped.read_text())[:n]
    prompts = [p.prompt for p in load_prompts("heldout")][:n]
    return self_distill_data(model, tok, prompts, max_new_tokens=256, batch_size=16)


def train_live(model, tok, out: Path, n_prompts: int, max_new_tokens: int, epochs: int) -> MedusaModel:
    """The pipeline on a small budget: self-distil, then Medusa-1 (shared lm_head, draft vocab)."""
    print(f"[1/3] self-distilling {n_prompts} training prompts x {max_new_tokens} tokens (cached after the first run)")
    prompts = [p.prompt for p in load_prompts("train")[:n_prompts]]
    rows = self_distill_data(model, tok, prompts, max_new_tokens, batch_size=n_prompts)
    print(f"[2/3] training 3 heads (Medusa-1) on {sum(len(r['response_ids']) for r in rows)} positions")
    mm = MedusaModel.from_base(model, 3, share_lm_head=True)
    mm.set_draft_vocab(draft_vocab(rows, 8192, model.config.vocab_size))
    state = train_heads(mm, rows, cfg=TrainConfig(epochs=epochs, batch_tokens=256), save_dir=out / "heads")
    plots.save_fig(plots.plot_loss_curves(state["history"]), out / "loss.png")
    return mm


def report(mm: MedusaModel, tok, answers, out: Path, n_prompts: int, max_new_tokens: int) -> dict:
    """Head accuracy, a tree from it, and the interleaved speed table."""
    t0 = time.time()
    acc = head_accuracy(mm, answers, topk=10)  # [K, 10]
    print("head accuracy (held-out): " + ", ".join(
        f"head {k + 1}: top-1 {acc[k, 0]:.2f} top-5 {acc[k, 4]:.2f}" for k in range(mm.num_heads)))
    costs = verify_costs(mm)  # t(n)/t(1) on this machine
    tree, choices = fastest_tree(acc, {n: c for n, c in costs.items() if n > 1})
    print("tree size for this machine (expected tau / verify cost):")
    for r in choices:
        mark = "  <- chosen" if r["nodes"] == tree.num_nodes else ""
        print(f"  {r['nodes']:>2} nodes: tau {r['expected_tau']:.2f} / cost {r['cost']:.2f} "
              f"= {r['expected_speedup']:.2f}x{mark}")
    print(f"tree from accuracies: {tree.num_nodes} nodes, expected tau {expected_accept_length(tree, acc):.2f}"
          f" ({time.time() - t0:.0f} s)")
    prompts = bench_prompts(per_group=n_prompts, humaneval=1)
    name = f"acc-{tree.num_nodes}"
    methods = {k: v for k, v in default_methods(mm, {name: tree}).items() if k != "our_greedy"}
    res = benchmark(methods, tok, prompts, max_new_tokens)
    res.update(head_accuracy=acc.tolist(), tree=[list(p) for p in tree.paths], tree_choice=choices)
    write(res, out)
    return res


def write(res: dict, out: Path) -> None:
    from medusa_lib.evaluate import write_results

    write_results(res, out)
    taus = [r["new_tokens"] / max(1, r["steps"]) for r in res["runs"] if r["method"].startswith("medusa")]
    plots.save_fig(plots.plot_accept_hist(taus), out / "tau_per_prompt.png")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="store_true", help="run the whole pipeline live first (small budget)")
    ap.add_argument("--heads", default=None, help="a heads folder (default: the shipped heads)")
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--per_group", type=int, default=smoke(2, 1), help="benchmark prompts per group")
    ap.add_argument("--max_new_tokens", type=int, default=smoke(96, 12))
    args = ap.parse_args(argv)
    set_seed(0)
    t0, out = time.time(), Path(args.out)
    model, tok = load_base("embedded", device="cpu")
    heads_dir = Path(args.heads) if args.heads else SHIPPED_HEADS
    if args.train:
        mm = train_live(model, tok, out, smoke(40, 4), smoke(128, 16), smoke(3, 1))
    else:
        mm = MedusaModel.from_pretrained(heads_dir, base=model)
    print("[3/3] measuring" if args.train else "measuring the shipped heads")
    res = report(mm, tok, heldout_answers(model, tok, heads_dir, smoke(24, 4)), out, args.per_group,
                 args.max_new_tokens)
    print("\n" + markdown_table(res["summary"]))
    same = [r["identical"] for r in res["summary"] if r["method"].startswith("medusa") and r["group"] == "all"]
    print(f"\nMedusa output identical to HF greedy: {same[0]} prompts")
    print(f"wrote {out}/results.json, results.md and plots; demo took {time.time() - t0:.0f} s")
    return res


if __name__ == "__main__":
    main()
