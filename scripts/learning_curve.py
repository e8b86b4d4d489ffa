"""Head accuracy against training positions, per data source (issue: data volume decides quality).

Sources: self-distilled chat answers to the hand-written and template training prompts
("selfdistill", rows shuffled so every size has the category mix) and KD on offline text ("text").
Every point trains fresh heads (3 heads, 1 ResBlock, shared lm_head, 8K draft vocab, as `make heads`)
and reports held-out top-1/top-5 on the self-distilled answers to the held-out prompts.
`--with_shipped` adds the shipped heads' record (`make heads`, all the data) as the last point.

    python scripts/learning_curve.py --out runs/learning_curve --with_shipped

The published curve is results.json copied to docs/learning_curve.json and, for the notebooks (they
read it with `medusa_lib.evaluate.learning_curve()`), to medusa_lib/assets/heads/embedded/.
"""

import argparse
import json
import random
import time
from pathlib import Path

import torch

from medusa_lib.config import set_seed
from medusa_lib.data import draft_vocab, selfdistill_rows, take_positions, template_rows, text_rows
from medusa_lib.evaluate import per_head_rows
from medusa_lib.heads import SHIPPED_HEADS
from medusa_lib.models import load_base
from medusa_lib.plots import plot_learning_curve, save_fig
from medusa_lib.train import fresh_heads


def point(model, rows, heldout, draft, epochs):
    set_seed(0)
    t0 = time.time()
    _, state = fresh_heads(model, rows, heldout, epochs, draft=draft, progress=False)
    ev = state["evals"][-1]
    return {"positions": state["positions"], "top1": ev["top1"], "top5": ev["top5"], "seconds": time.time() - t0}


def shipped_point() -> dict:
    """The shipped heads (make heads: all the self-distilled data) as one more curve point."""
    rec = json.loads((SHIPPED_HEADS / "training_record.json").read_text())
    seconds = rec.get("train_seconds")  # recorded by make heads since the layout change; older records: none
    return {"source": "selfdistill", "positions": rec["positions"], "top1": rec["head_accuracy"],
            "top5": rec["head_accuracy_top5"], "seconds": seconds, "note": "make heads"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/learning_curve")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--text", type=int, nargs="*", default=[30_000])
    ap.add_argument("--sd", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    ap.add_argument("--templates", type=int, default=1536, help="template prompts in the self-distilled pool")
    ap.add_argument("--draft", type=int, default=8192)
    ap.add_argument("--with_shipped", action="store_true", help="add the shipped heads' record as a point")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 when sharing the CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_base("embedded")
    sd, heldout = selfdistill_rows(model, tok, "train"), selfdistill_rows(model, tok, "heldout")
    sd += template_rows(model, tok, args.templates) if args.templates else []
    random.Random(0).shuffle(sd)
    text = text_rows(tok, max(args.text)) if args.text else []
    draft = draft_vocab(sd, args.draft, model.config.vocab_size)
    plan = [("selfdistill", take_positions(sd, n)) for n in args.sd]
    plan += [("text", take_positions(text, n)) for n in args.text]
    results = []
    for source, rows in plan:
        r = {"source": source, **point(model, rows, heldout, draft, args.epochs)}
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.with_shipped:
        results.append(shipped_point())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| source | positions | top1 (h1/h2/h3) | top5 (h1/h2/h3) | train s |", "|---|---|---|---|---|"]
    for r in results:
        f = "/".join(f"{x:.3f}" for x in r["top1"]), "/".join(f"{x:.3f}" for x in r["top5"])
        lines.append(f"| {r['source']} | {r['positions']} | {f[0]} | {f[1]} | {r['seconds'] or float('nan'):.0f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    save_fig(plot_learning_curve(per_head_rows(results)), out / "learning_curve.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
