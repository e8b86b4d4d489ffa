"""`make eagle`: train the EAGLE drafter shipped for the embedded model, with a record next to the weights.

Recipe: self-distilled answers of the embedded model to the hand-written training prompts and the first
--rows template prompts saved under --data (scripts/generate_data.py), and with --copy_data the copy-heavy
prompts' answers (generate_data.py --copy); features from one backbone pass,
cached in chunks (a stopped run keeps them); `eagle_train.train_eagle` with `EagleTrainConfig`; the draft
vocabulary of the shipped Medusa heads (8,192 tokens). Scored on the held-out answers shipped with the heads.

Writes medusa_lib/assets/heads/embedded-eagle/ (fp16): eagle.safetensors, eagle_config.json, README.md,
training_record.json. Resumable: --resume continues from --work/last after an interruption.

    python scripts/make_eagle.py --rows 1024 --epochs 8

The tree is the machine's, not the weights': `--retree DIR` only chooses it again for the drafter in DIR (the grid
of `evaluate.EAGLE_GRID` on the tuning prompts, a few minutes) and writes the drafter with it and its record to --out.

    python scripts/make_eagle.py --retree docs/eagle_500k/drafter --out medusa_lib/assets/heads/embedded-eagle
"""

import argparse
import dataclasses
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from medusa_lib.backbone import Backbone
from medusa_lib.data import load_prompts, saved_rows, selfdistill_rows, spread
from medusa_lib.eagle import EagleNet, load_eagle, save_eagle
from medusa_lib.eagle_train import EagleTrainConfig, eagle_accuracy, eagle_features, sequences, train_eagle
from medusa_lib.evaluate import bench_prompts, choose_eagle_tree
from medusa_lib.heads import SHIPPED, read_draft_ids
from medusa_lib.models import load_base

OUT = SHIPPED["medusa"].with_name("embedded-eagle")


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/selfdistill")
    ap.add_argument("--rows", type=int, default=1024, help="template answers to train on (0 = all saved)")
    ap.add_argument("--copy_data", default=None,
                    help="also train on the copy-heavy answers saved here (generate_data.py --copy)")
    ap.add_argument("--work", default="runs/eagle", help="checkpoints (last/ after every epoch)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init", choices=("random", "last"), default="random",
                    help="the decoder layer's start: random, or a copy of the backbone's last layer (measured: "
                         "it starts far off, feature loss 9.5 after 109 steps where random starts at 1.0)")
    ap.add_argument("--start", default=None,
                    help="start from this drafter folder's weights (the shipped one, to fine-tune it with --unroll)")
    ap.add_argument("--retree", default=None, help="only choose the tree again for the drafter in this folder")
    ap.add_argument("--tune_prompts", type=int, default=6, help="held-out prompts outside the race that pick the tree")
    ap.add_argument("--race_per_group", type=int, default=4, help="the race's prompts per group, kept out of tuning")
    for f in dataclasses.fields(EagleTrainConfig):
        ap.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    return ap.parse_args(argv)


def tuning_prompts(args) -> list[str]:
    """Held-out prompts outside the race's: the tree is never chosen on the prompts it is raced on."""
    raced = {p.id for p in bench_prompts(per_group=args.race_per_group, humaneval=0)}
    return [p.prompt for p in spread([p for p in load_prompts("heldout") if p.id not in raced], args.tune_prompts)]


def write_drafter(net, out: Path, base_name: str, tree, record: dict, keep: Path | None = None) -> Path:
    """The drafter in fp16 with its tree, model card and record, in a fresh `out` (unless `out` is `keep`)."""
    if keep is None or out.resolve() != keep.resolve():
        shutil.rmtree(out, ignore_errors=True)
    save_eagle(net, out, base_name, tree, info=record, dtype=torch.float16)
    (out / "training_record.json").write_text(json.dumps(record, indent=2))
    return out


def retree(args) -> None:
    """Choose the tree again for the drafter in --retree on this machine; weights and record otherwise kept."""
    model, tok = load_base("embedded")
    src = Path(args.retree)
    drafter = load_eagle(src, model)
    tuning = tuning_prompts(args)
    tree, grid = choose_eagle_tree(drafter, tok, tuning)
    record = json.loads((src / "training_record.json").read_text())
    record["tree_choice"] = {"prompts": len(tuning), "grid": grid, "machine": platform.processor() or "cpu"}
    out = write_drafter(drafter.net, Path(args.out), model.config.name_or_path, tree, record, keep=src)
    print(f"tree {tree.depth}/{tree.topk}/{tree.nodes} -> {out}")


def main(argv=None):
    args = parse_args(argv)
    if args.retree:
        return retree(args)
    cfg = EagleTrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EagleTrainConfig)})
    t0 = time.time()
    model, tok = load_base("embedded")
    bb = Backbone(model)
    tmpl = saved_rows(args.data, model)
    tmpl = tmpl[: args.rows] if args.rows else tmpl
    copied = saved_rows(args.copy_data, model) if args.copy_data else []
    rows = selfdistill_rows(model, tok, "train") + tmpl + copied  # appended last: earlier feature chunks stay valid
    heldout = json.loads((SHIPPED["medusa"] / "heldout_selfdistill.json").read_text())
    seqs, eval_seqs = sequences(rows, cfg.block_size), sequences(heldout, cfg.block_size)
    feats, eval_feats = eagle_features(bb, seqs), eagle_features(bb, eval_seqs)
    t_feat = time.time() - t0
    draft_ids = read_draft_ids(SHIPPED["medusa"] / "draft_ids.pt", model.config.vocab_size)
    torch.manual_seed(cfg.seed)
    net = EagleNet.for_backbone(bb, draft_ids, from_last_layer=args.init == "last")
    if args.start:
        net = load_eagle(args.start, model).net.train()
    state = train_eagle(net, bb, seqs, feats, cfg, eval_data=(eval_seqs, eval_feats), save_dir=args.work,
                        base_name=model.config.name_or_path, resume=args.resume)
    best = Path(args.work)
    drafter = load_eagle(best, model)
    net = drafter.net
    acc = eagle_accuracy(net, bb, eval_seqs, eval_feats)
    tuning = tuning_prompts(args)
    tree, grid = choose_eagle_tree(drafter, tok, tuning)
    positions = sum(len(s) - st - 1 for s, st in seqs)
    record = {"base": "HuggingFaceTB/SmolLM2-135M-Instruct (embedded GGUF Q4_1, dequantised, fp32)",
              "data": f"self-distilled answers: {len(rows)} prompts ({positions} answer positions; "
                      f"{len(tmpl)} template prompts from {args.data}"
                      + (f", {len(copied)} copy-heavy prompts from {args.copy_data})" if copied else ")"),
              "recipe": f"EAGLE-1 drafter (fc 2H->H + 1 decoder layer, started {args.start or args.init}), "
                        f"{dataclasses.asdict(cfg)}, "
                        + (f"EAGLE-3's training-time test over {cfg.unroll} drafting steps, " if cfg.unroll > 1 else "")
                        + f"draft vocab {draft_ids.numel()}, weights stored in fp16",
              "accuracy": {k: round(v, 4) if isinstance(v, float) else v for k, v in acc.items()},
              "history": state["history"], "feature_seconds": round(t_feat, 1),
              "tree_choice": {"prompts": len(tuning), "grid": grid, "machine": platform.processor() or "cpu"},
              "wall_time": f"{time.time() - t0:.0f} s total, {t_feat:.0f} s of backbone features"}
    out = write_drafter(net, Path(args.out), model.config.name_or_path, tree, record)
    print(json.dumps(record["accuracy"]), "->", out)


if __name__ == "__main__":
    main()
