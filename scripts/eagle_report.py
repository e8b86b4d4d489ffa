"""Where an EAGLE step's time goes and how deep its drafts are accepted, on held-out prompts.

For the shipped EAGLE drafter (or --eagle DIR) with its tree (or --tree), its teacher-forced top-1 and top-5 at
depths 1-3 on the held-out answers shipped with the heads (`eagle_train.eagle_accuracy`), and over --prompts
held-out prompts spread over every category: tau, the share of steps that accepted at least d drafted tokens
(d = 1 .. depth), and per step the
median drafting and verification milliseconds next to a bare one-token forward of the backbone (HF greedy's
cost per token). The lever the numbers point to is printed: a step pays off when tau > (draft + verify) /
one-token forward.

    python scripts/eagle_report.py --prompts 12 --max_new_tokens 96 --json docs/eagle_report.json

`--table OUT.md NAME=REPORT.json ...` writes the reports of several drafters (each run with the same --tree) as
one markdown table instead, as docs/eagle_ttt.md compares EAGLE-3's training-time test with a control.
"""

import argparse
import json
import platform
import statistics
from pathlib import Path

from medusa_lib.backbone import Backbone
from medusa_lib.data import chat_ids, load_prompts, spread
from medusa_lib.decoding import greedy_generate, medusa_generate
from medusa_lib.eagle import EagleTree, load_eagle
from medusa_lib.eagle_train import eagle_accuracy, eagle_features, sequences
from medusa_lib.heads import SHIPPED_HEADS
from medusa_lib.models import load_base
from medusa_lib.recipes import SHIPPED_DRAFTERS


def heldout_accuracy(drafter, model) -> dict:
    """Teacher-forced top-1/top-5 at depths 1-3 on the held-out answers shipped with the heads."""
    bb = Backbone(model)
    heldout = sequences(json.loads((SHIPPED_HEADS / "heldout_selfdistill.json").read_text()), 512)
    return eagle_accuracy(drafter.net, bb, heldout, eagle_features(bb, heldout), depths=3)


def decode_report(drafter, model, tok, prompts: int, max_new_tokens: int) -> dict:
    """tau, outputs identical to our greedy loop, per-depth acceptance and the median cost of a step."""
    accepts, draft_ms, verify_ms, greedy_ms, same = [], [], [], [], 0
    for p in spread(load_prompts("heldout"), prompts):
        ids = chat_ids(tok, p.prompt)
        out = medusa_generate(drafter, ids, max_new_tokens=max_new_tokens)
        ref = greedy_generate(model, ids, max_new_tokens=max_new_tokens)
        same += out.new_tokens.tolist() == ref.new_tokens.tolist()
        accepts += out.accept_lengths[:-1]  # the last step is cut by the budget
        draft_ms += [1000 * t["heads"] for t in out.step_times[:-1]]
        verify_ms += [1000 * (t["forward"] + t["lm_head"]) for t in out.step_times[:-1]]
        greedy_ms += [1000 * t["total"] for t in ref.step_times[1:-1]]
    res = {"tree": vars(drafter.tree), "prompts": prompts, "identical": f"{same}/{prompts}",
           "tau": statistics.mean(accepts), "machine": platform.processor() or platform.machine(),
           "accepted_at_least": {d: sum(a - 1 >= d for a in accepts) / len(accepts)
                                 for d in range(1, drafter.tree.depth + 1)},
           "draft_ms": statistics.median(draft_ms), "verify_ms": statistics.median(verify_ms),
           "greedy_ms_per_token": statistics.median(greedy_ms)}
    res["break_even_tau"] = (res["draft_ms"] + res["verify_ms"]) / res["greedy_ms_per_token"]
    return res


def table(rows: list[str]) -> str:
    """Markdown: one line per NAME=REPORT.json, held-out top-1 by depth, tau and acceptance by depth."""
    lines = ["| drafter | held-out top-1, depth 1 / 2 / 3 | tree | τ | accepted ≥1 / ≥2 / ≥3 | identical |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        name, path = row.split("=", 1)
        r = json.loads(Path(path).read_text())
        acc = r["heldout_accuracy"]
        top1 = " / ".join(f"{acc[k]:.3f}" for k in ("top1", "top1_depth2", "top1_depth3"))
        accepted = " / ".join(f"{r['accepted_at_least'][d]:.2f}" for d in ("1", "2", "3"))
        tree = "{depth}/{topk}/{nodes}".format(**r["tree"])
        lines.append(f"| {name} | {top1} | {tree} | {r['tau']:.2f} | {accepted} | {r['identical']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eagle", default=str(SHIPPED_DRAFTERS["eagle"]))
    ap.add_argument("--tree", type=int, nargs=3, default=None, metavar=("DEPTH", "TOPK", "NODES"),
                    help="draft on this dynamic tree instead of the drafter's own (to compare drafters on one tree)")
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--max_new_tokens", type=int, default=96)
    ap.add_argument("--json", default=None)
    ap.add_argument("--table", nargs="+", default=None, metavar=("OUT.md", "NAME=REPORT.json"),
                    help="write earlier reports as one markdown table and stop")
    args = ap.parse_args(argv)
    if args.table:
        Path(args.table[0]).write_text(table(args.table[1:]))
        return {}
    model, tok = load_base("embedded", device="cpu")
    drafter = load_eagle(args.eagle, model, EagleTree(*args.tree) if args.tree else None)
    res = {"drafter": args.eagle, "heldout_accuracy": heldout_accuracy(drafter, model),
           **decode_report(drafter, model, tok, args.prompts, args.max_new_tokens)}
    step = res["break_even_tau"]
    print(json.dumps(res, indent=2))
    print(f"a step costs {step:.2f} one-token forwards (draft {res['draft_ms']:.1f} ms + verify "
          f"{res['verify_ms']:.1f} ms, greedy {res['greedy_ms_per_token']:.1f} ms/token); tau {res['tau']:.2f} gives "
          f"x{res['tau'] / step:.2f}. " + ("The lever: a higher tau (more data, a deeper tree)" if res["tau"] < step
                                          else "EAGLE pays on this machine"))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
