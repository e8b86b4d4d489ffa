"""`make heads`: train the heads shipped for the embedded model, with a record next to the weights.

Recipe (chosen from the learning curve, scripts/learning_curve.py):
- self-distilled answers of SmolLM2-135M-Instruct to the 182 hand-written training prompts (256 new
  tokens each, cached) and every template-prompt answer saved under --data by
  scripts/generate_data.py (192 new tokens each), capped at --positions answer tokens;
- optionally KD on packed Python standard-library text (--text positions; 0 by default: it did not
  help chat heads in the curve);
- `recipes.fresh_heads`: 3 heads (--kind medusa or hydra), 1 ResBlock each, shared lm_head, --draft draft
  vocabulary, Medusa-1.

Writes medusa_lib/assets/heads/embedded/ (embedded-hydra/ with --kind hydra): heads.safetensors (fp16
unless --save_dtype fp32),
medusa_config.json, draft_ids.pt, README.md (model card), heldout_selfdistill.json (what the accuracy is
scored on) and training_record.json (data, seed, wall time, per-head accuracy, tau).
"""

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from medusa_lib.checkpoints import write_record
from medusa_lib.config import PROFILES, TrainConfig, set_seed
from medusa_lib.data import HELDOUT_FILE, load_prompts, saved_rows, selfdistill_rows, take_positions, text_rows
from medusa_lib.evaluate import head_accuracy, measure_tau
from medusa_lib.heads import KINDS, SHIPPED
from medusa_lib.models import DTYPES, load_base
from medusa_lib.recipes import fresh_heads
from medusa_lib.tree import Tree, expected_accept_length


def _tokens(rows) -> int:
    return sum(len(r["response_ids"]) for r in rows)


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="default: the shipped folder of --kind")
    ap.add_argument("--data", default="data/selfdistill", help="answers saved by scripts/generate_data.py")
    ap.add_argument("--positions", type=int, default=0, help="cap on template answer tokens (0 = all saved)")
    ap.add_argument("--kind", default="medusa", choices=KINDS)
    ap.add_argument("--text", type=int, default=0, help="text KD positions (0 = self-distilled only)")
    ap.add_argument("--draft", type=int, default=8192, help="draft vocabulary the heads rank")
    ap.add_argument("--epochs", type=int, default=1, help="1 over 2M positions: as many steps as 2 over 1M")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save_dtype", default="fp16", choices=("fp16", "fp32"),
                    help="stored weights (fp16: half the size; they load back into fp32)")
    ap.add_argument("--tau_prompts", type=int, default=20)
    args = ap.parse_args(argv)
    args.out = args.out or str(SHIPPED[args.kind])
    return args


def training_rows(args, model, tok) -> dict:
    """The hand-written prompts' answers (sd), the saved template answers (tmpl), text KD and held-out rows."""
    t0 = time.time()  # generation or reading the caches, text included
    sd, heldout = selfdistill_rows(model, tok, "train"), selfdistill_rows(model, tok, "heldout")
    tmpl = saved_rows(args.data, model, states=True) if Path(args.data).is_dir() else []  # states: no backbone pass
    if not tmpl:
        raise SystemExit(f"no saved answers under {args.data}: run scripts/generate_data.py first")
    tmpl = take_positions(tmpl, args.positions) if args.positions else tmpl
    text = take_positions(text_rows(tok, args.text), args.text) if args.text else []
    return {"sd": sd, "tmpl": tmpl, "text": text, "heldout": heldout, "seconds": time.time() - t0}


def training_record(args, data: dict, state: dict, acc, tree, taus, seconds: float) -> dict:
    """What training_record.json and the model card say: data, recipe, timings, accuracy and tau."""
    cfg = TrainConfig()
    sd, tmpl = data["sd"], data["tmpl"]
    return {
        "base": "HuggingFaceTB/SmolLM2-135M-Instruct (embedded GGUF Q4_1, dequantised, fp32)",
        "data": f"self-distilled answers to {len(sd)} hand-written training prompts ({_tokens(sd)} tokens) and "
                f"{len(tmpl)} template prompts ({_tokens(tmpl)} tokens, {args.data}) + {args.text} positions "
                f"of Python stdlib text (KD)",
        "recipe": f"Medusa-1, 3 {args.kind} heads x 1 ResBlock, shared lm_head, {args.draft} draft vocab, "
                  f"{args.epochs} epoch{'s' * (args.epochs != 1)}, "
                  f"batch {cfg.step_size()} positions, lr {cfg.lr}, CE+KD ({cfg.kd_weight}), decay {cfg.decay}, "
                  f"seed {args.seed}, weights stored in {args.save_dtype}",
        "kind": args.kind, "positions": state["positions"], "epochs": args.epochs,
        "hidden_state_cache": f"one backbone pass of {state['bank_seconds']:.0f} s, instead of one per epoch "
                              f"({args.epochs} epochs, {state['seconds'] / args.epochs:.0f} s each with the cache)",
        "wall_time": f"{seconds:.0f} s total, {state['seconds']:.0f} s training",
        "train_seconds": state["seconds"], "data_seconds": data["seconds"],
        "head_accuracy": acc[:, 0].tolist(), "head_accuracy_top5": acc[:, 4].tolist(),
        "tree": [list(p) for p in tree.paths], "expected_tau": expected_accept_length(tree, acc),
        "tau": statistics.mean(taus), "tau_median": statistics.median(taus), "tau_prompts": len(taus),
        "command": "make heads",
    }


def main(argv=None):
    args = parse_args(argv)
    set_seed(args.seed)
    t0 = time.time()
    model, tok = load_base("embedded")
    data = training_rows(args, model, tok)
    heldout = data["heldout"]
    mm, state = fresh_heads(model, data["sd"] + data["tmpl"] + data["text"], heldout, args.epochs,
                            head=replace(PROFILES["embedded"].head, kind=args.kind), draft=args.draft,
                            save_dir=Path("runs/make_heads") / args.kind, seed=args.seed)
    store = DTYPES[args.save_dtype]
    with torch.no_grad():  # measure exactly the weights that ship: rounded to the stored dtype
        for p in mm.heads.parameters():
            p.copy_(p.to(store))
    acc = head_accuracy(mm, heldout, topk=10)  # [3, 10]
    tree = Tree.from_accuracies(acc, 8)
    taus = measure_tau(mm, tok, tree, [p.prompt for p in load_prompts("heldout")][: args.tau_prompts], 128)
    record = training_record(args, data, state, acc, tree, taus, time.time() - t0)
    out = Path(args.out)
    mm.save_pretrained(out, extra={"training": record}, dtype=store)
    (out / HELDOUT_FILE).write_text(json.dumps(heldout))
    write_record(out, record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
