"""Head accuracy against training positions, per data source (issue: data volume decides quality).

Sources: self-distilled chat answers to the hand-written and template training prompts
("selfdistill", rows shuffled so every size has the category mix) and KD on offline text ("text").
Every point trains fresh heads (3 heads of --kind, 1 ResBlock, shared lm_head, 8K draft vocab, as `make heads`)
and reports held-out top-1/top-5 on the self-distilled answers to the held-out prompts.
`--with_shipped` adds the shipped heads' record (`make heads`, all the data) as the last point;
`--records DIR ...` adds the records of other `make_heads.py --out DIR` runs (either kind), and
`--keep FILE` keeps the points of an earlier curve, so the curve grows without retraining them, and
`--eagle DIR POSITIONS EPOCHS` adds a trained EAGLE drafter (scripts/make_eagle.py) as a point: its depths 1-3
stand where heads 1-3 stand, read along the true path as Hydra's heads are (`eagle_train.eagle_accuracy`):

    python scripts/learning_curve.py --out runs/learning_curve --with_shipped
    python scripts/learning_curve.py --sd --text --keep docs/learning_curve.json \
        --records runs/heads_medusa runs/heads_hydra
    python scripts/learning_curve.py --sd --text --keep docs/learning_curve.json \
        --eagle medusa_lib/assets/heads/embedded-eagle 300983 6

The published curve is results.json copied to docs/learning_curve.json and, for the notebooks (they
read it with `medusa_lib.evaluate.learning_curve()`), to medusa_lib/assets/heads/embedded/.
"""

import argparse
import json
import random
import re
import time
from dataclasses import replace
from pathlib import Path

import torch

from medusa_lib.config import PROFILES, set_seed
from medusa_lib.data import draft_vocab, selfdistill_rows, take_positions, template_rows, text_rows
from medusa_lib.eagle import load_eagle, read_eagle_config
from medusa_lib.evaluate import per_head_rows
from medusa_lib.heads import KINDS, SHIPPED_HEADS
from medusa_lib.models import load_base
from medusa_lib.plots import plot_learning_curve, save_fig
from medusa_lib.recipes import fresh_heads


def point(model, rows, heldout, draft, epochs, kind="medusa"):
    set_seed(0)
    t0 = time.time()
    _, state = fresh_heads(model, rows, heldout, epochs, head=replace(PROFILES["embedded"].head, kind=kind),
                           draft=draft, progress=False)
    ev = state["evals"][-1]
    return {"positions": state["positions"], "epochs": epochs, "top1": ev["top1"], "top5": ev["top5"],
            "seconds": time.time() - t0}


def record_point(heads_dir=SHIPPED_HEADS, note: str = "make heads") -> dict:
    """The heads `make_heads.py` wrote to `heads_dir` (the shipped ones by default) as one more curve point."""
    rec = json.loads((Path(heads_dir) / "training_record.json").read_text())
    seconds = rec.get("train_seconds")  # recorded by make heads since the layout change; older records: none
    epochs = rec.get("epochs") or int(re.search(r"(\d+) epochs?", rec["recipe"]).group(1))  # older: the recipe
    return {"source": "selfdistill", "kind": rec.get("kind", "medusa"), "positions": rec["positions"], "epochs": epochs,
            "top1": rec["head_accuracy"], "top5": rec["head_accuracy_top5"], "seconds": seconds, "note": note}


def eagle_points(drafters) -> list[dict]:
    """EAGLE drafters, each (folder, positions, epochs) it trained on, scored at depths 1-3 on the held-out answers
    shipped with the heads (`eagle_report.heldout_accuracy`); training seconds from the recorded positions/s."""
    from eagle_report import heldout_accuracy  # scripts/ is on the path of a script run from it

    model, _ = load_base("embedded")
    points = []
    for folder, positions, epochs in drafters:
        positions, epochs = int(positions), int(epochs)
        acc = heldout_accuracy(load_eagle(folder, model), model)
        cfg = read_eagle_config(folder)
        history = cfg.get("training") or cfg.get("history") or []
        seconds = sum(positions / h["positions_per_s"] for h in history if h.get("positions_per_s"))
        points.append({"source": "selfdistill", "kind": "eagle", "positions": positions, "epochs": epochs,
                       "top1": [acc["top1"], acc["top1_depth2"], acc["top1_depth3"]],
                       "top5": [acc["top5"], acc["top5_depth2"], acc["top5_depth3"]], "seconds": seconds or None,
                       "note": f"eagle drafter {folder}"})
    return points


def kept_points(path) -> list[dict]:
    """An earlier curve's points; its "make heads" point is then an earlier set of shipped heads."""
    points = json.loads(Path(path).read_text())
    return [{**p, "note": "earlier shipped heads"} if p.get("note") == "make heads" else p for p in points]


def trained_points(args) -> list[dict]:
    """Fresh heads on growing shares of the self-distilled pool (and of offline text), one point each."""
    model, tok = load_base("embedded")
    sd, heldout = selfdistill_rows(model, tok, "train"), selfdistill_rows(model, tok, "heldout")
    # the answers scripts/generate_data.py saved (its chunks of 512 at batch 128), read back, not regenerated
    sd += template_rows(model, tok, args.templates, chunk=512, batch_size=128, root=args.data) if args.templates else []
    random.Random(0).shuffle(sd)
    text = text_rows(tok, max(args.text)) if args.text else []
    draft = draft_vocab(sd, args.draft, model.config.vocab_size)
    plan = [("selfdistill", take_positions(sd, n)) for n in args.sd]
    plan += [("text", take_positions(text, n)) for n in args.text]
    points = []
    for source, rows in plan:
        r = {"source": source, "kind": args.kind, **point(model, rows, heldout, draft, args.epochs, args.kind)}
        print(json.dumps(r), flush=True)
        points.append(r)
    return points


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/learning_curve")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--text", type=int, nargs="*", default=[30_000])
    ap.add_argument("--sd", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    ap.add_argument("--templates", type=int, default=1536, help="template prompts in the self-distilled pool")
    ap.add_argument("--data", default="data/selfdistill", help="answers saved by scripts/generate_data.py")
    ap.add_argument("--draft", type=int, default=8192)
    ap.add_argument("--kind", default="medusa", choices=KINDS, help="the kind of the points trained")
    ap.add_argument("--with_shipped", action="store_true", help="add the shipped heads' record as a point")
    ap.add_argument("--records", nargs="*", default=[], help="make_heads.py --out folders to add as points")
    ap.add_argument("--eagle", nargs=3, action="append", default=[], metavar=("DIR", "POSITIONS", "EPOCHS"),
                    help="a trained EAGLE drafter folder, the answer positions and epochs it trained on")
    ap.add_argument("--keep", default=None, help="a results.json whose points stay in the curve")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 when sharing the CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = kept_points(args.keep) if args.keep else []
    results += trained_points(args) if args.sd or args.text else []
    results += [record_point(d, note=f"make_heads.py --out {d}") for d in args.records]
    results = [r for r in results if (r.get("kind"), r["positions"]) not in {("eagle", int(e[1])) for e in args.eagle}]
    results += eagle_points(args.eagle) if args.eagle else []
    if args.with_shipped:
        results.append(record_point())
    results.sort(key=lambda r: r["positions"])  # one x axis for every kind (stable: ties keep their order)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| source | kind | positions | epochs | top1 (h1/h2/h3) | top5 (h1/h2/h3) | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        f = "/".join(f"{x:.3f}" for x in r["top1"]), "/".join(f"{x:.3f}" for x in r["top5"])
        lines.append(f"| {r['source']} | {r.get('kind', 'medusa')} | {r['positions']} | {r.get('epochs', '?')} | "
                     f"{f[0]} | {f[1]} | "
                     f"{r['seconds'] or float('nan'):.0f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    save_fig(plot_learning_curve(per_head_rows(results)), out / "learning_curve.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
