"""Where an EAGLE step's time goes and how deep its drafts are accepted, on held-out prompts.

For the shipped EAGLE drafter (or --eagle DIR) with its tree, over --prompts held-out prompts spread over every
category: tau, the share of steps that accepted at least d drafted tokens (d = 1 .. depth), and per step the
median drafting and verification milliseconds next to a bare one-token forward of the backbone (HF greedy's
cost per token). The lever the numbers point to is printed: a step pays off when tau > (draft + verify) /
one-token forward.

    python scripts/eagle_report.py --prompts 12 --max_new_tokens 96 --json docs/eagle_report.json
"""

import argparse
import json
import platform
import statistics
from pathlib import Path

from medusa_lib.data import chat_ids, load_prompts, spread
from medusa_lib.decoding import greedy_generate, medusa_generate
from medusa_lib.eagle import load_eagle
from medusa_lib.models import load_base
from medusa_lib.recipes import SHIPPED_DRAFTERS


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eagle", default=str(SHIPPED_DRAFTERS["eagle"]))
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--max_new_tokens", type=int, default=96)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    model, tok = load_base("embedded", device="cpu")
    drafter = load_eagle(args.eagle, model)
    accepts, draft_ms, verify_ms, greedy_ms, same = [], [], [], [], 0
    for p in spread(load_prompts("heldout"), args.prompts):
        ids = chat_ids(tok, p.prompt)
        out = medusa_generate(drafter, ids, max_new_tokens=args.max_new_tokens)
        ref = greedy_generate(model, ids, max_new_tokens=args.max_new_tokens)
        same += out.new_tokens.tolist() == ref.new_tokens.tolist()
        accepts += out.accept_lengths[:-1]  # the last step is cut by the budget
        draft_ms += [1000 * t["heads"] for t in out.step_times[:-1]]
        verify_ms += [1000 * (t["forward"] + t["lm_head"]) for t in out.step_times[:-1]]
        greedy_ms += [1000 * t["total"] for t in ref.step_times[1:-1]]
    depth = drafter.tree.depth
    res = {"tree": vars(drafter.tree), "prompts": args.prompts, "identical": f"{same}/{args.prompts}",
           "tau": statistics.mean(accepts), "machine": platform.processor() or platform.machine(),
           "accepted_at_least": {d: sum(a - 1 >= d for a in accepts) / len(accepts) for d in range(1, depth + 1)},
           "draft_ms": statistics.median(draft_ms), "verify_ms": statistics.median(verify_ms),
           "greedy_ms_per_token": statistics.median(greedy_ms)}
    step = (res["draft_ms"] + res["verify_ms"]) / res["greedy_ms_per_token"]
    res["break_even_tau"] = step
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
