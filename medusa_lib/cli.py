"""The seed's four commands: preprocess_data, train_kd, decode_tree, evaluate.

Each is a console script and a module (`python -m medusa_lib.train_kd ...`); `train_kd` also
runs under `accelerate launch -m medusa_lib.train_kd ...`, which picks device and precision.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medusa_lib.config import TrainConfig, get_profile, set_seed, smoke


def _base_name(name: str) -> str:
    """Profile names map to their backbone; anything else is passed to load_base as is."""
    try:
        return get_profile(name).backbone
    except ValueError:
        return name


# ----------------------------------------------------------------------------- preprocess_data


def preprocess_data_main(argv=None) -> Path:
    from medusa_lib.data import load_corpus, pack
    from medusa_lib.models import load_base

    ap = argparse.ArgumentParser(description="Chunk and pack a corpus into fixed blocks for training.")
    ap.add_argument("--dataset_name", default="wikitext", help="wikitext, wikitext-2, wikitext-103 (needs the hub)")
    ap.add_argument("--text_dir", default=None, help="a local file or folder of .txt/.md/.rst/.py (offline)")
    ap.add_argument("--block_size", type=int, default=1024)
    ap.add_argument("--model", default="embedded", help="whose tokenizer to use")
    ap.add_argument("--max_chars", type=int, default=None)
    ap.add_argument("--out", default="runs/data")
    args = ap.parse_args(argv)
    _, tok = load_base(_base_name(args.model), device="cpu")
    texts = load_corpus(args.text_dir or args.dataset_name, max_chars=args.max_chars)
    blocks = pack(tok, texts, args.block_size)
    blocks.save_to_disk(args.out)
    print(f"{len(texts)} texts -> {len(blocks)} blocks of {args.block_size} tokens in {args.out}")
    return Path(args.out)


# ----------------------------------------------------------------------------- train_kd


def train_kd_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Train Medusa heads by self-distillation (Medusa-1 or Medusa-2).")
    ap.add_argument("--student_name", default="embedded", help="embedded, tiny, a profile, a hub id or a folder")
    ap.add_argument("--offsets", type=int, nargs="+", default=[1, 2, 3], help="1..K: one head per offset")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--qlora", action="store_true", help="NF4 4-bit base + LoRA (Medusa-2 on a GPU)")
    ap.add_argument("--stage", choices=["heads", "joint"], default=None, help="default: joint with --qlora")
    ap.add_argument("--save_dir", default="runs/heads")
    ap.add_argument("--data", default="selfdistill", help="'selfdistill' or a folder written by preprocess_data")
    ap.add_argument("--n_prompts", type=int, default=None, help="self-distill this many training prompts")
    ap.add_argument("--max_new_tokens", type=int, default=smoke(256, 16))
    ap.add_argument("--block_size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--num_layers", type=int, default=1)
    ap.add_argument("--own_lm_head", action="store_true", help="each head gets its own vocab projection")
    ap.add_argument("--draft_size", type=int, default=8192, help="0 = heads project onto the full vocab")
    ap.add_argument("--max_steps", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def train_kd_main(argv=None) -> dict:
    from accelerate import Accelerator

    from medusa_lib.data import draft_vocab, load_prompts
    from medusa_lib.heads import MedusaModel
    from medusa_lib.models import load_base
    from medusa_lib.train import add_lora, train_heads, train_joint, write_record

    args = train_kd_parser().parse_args(argv)
    set_seed(args.seed)
    accelerator = Accelerator()
    stage = args.stage or ("joint" if args.qlora else "heads")
    model, tok = load_base(_base_name(args.student_name), device=accelerator.device, load_in_4bit=args.qlora)
    rows = _training_rows(args, model, tok)
    if stage == "joint":
        model = add_lora(model, qlora=args.qlora)
    mm = MedusaModel.from_base(model, len(args.offsets), args.num_layers, share_lm_head=not args.own_lm_head)
    if args.draft_size:
        mm.set_draft_vocab(draft_vocab(rows, args.draft_size, mm.config.vocab_size))
    cfg = TrainConfig(stage=stage, offsets=tuple(args.offsets), epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, block_size=args.block_size, seed=args.seed)
    heldout = _selfdistill(model, tok, [p.prompt for p in load_prompts("heldout")], args, smoke(None, 4))
    heldout = [r for r in heldout if len(r["response_ids"]) >= 3] or None  # too short to score: no eval
    t0 = time.time()
    if stage == "heads":
        state = train_heads(mm, rows, heldout, cfg, save_dir=args.save_dir, resume=args.resume,
                            max_steps=args.max_steps)
    else:
        state = train_joint(mm, rows, cfg, max_steps=args.max_steps)
        mm.save_pretrained(args.save_dir)
        mm.base.save_pretrained(Path(args.save_dir) / "adapter")
    record = {"student": args.student_name, "stage": stage, "rows": len(rows), "seconds": time.time() - t0,
              "evals": state.get("evals", []), "args": vars(args)}
    write_record(args.save_dir, record)
    print(json.dumps({k: v for k, v in record.items() if k != "args"}, indent=1))
    return record


def _training_rows(args, model, tok):
    from medusa_lib.data import blocks_to_rows, load_prompts

    if args.data == "selfdistill":
        prompts = [p.prompt for p in load_prompts("train")][: args.n_prompts or smoke(None, 4)]
        return _selfdistill(model, tok, prompts, args)
    import datasets

    return blocks_to_rows(datasets.load_from_disk(args.data))


def _selfdistill(model, tok, prompts, args, n=None):
    from medusa_lib.data import self_distill_data

    return self_distill_data(model, tok, prompts[:n] if n else prompts, args.max_new_tokens, batch_size=16)


# ----------------------------------------------------------------------------- decode_tree


def decode_tree_main(argv=None) -> dict:
    from medusa_lib.data import chat_ids
    from medusa_lib.decoding import medusa_generate
    from medusa_lib.models import load_base
    from medusa_lib.train import get_heads
    from medusa_lib.tree import Tree

    ap = argparse.ArgumentParser(description="Decode with Medusa heads and tree verification.")
    ap.add_argument("--base_model_id", default="embedded")
    ap.add_argument("--adapter_dir", default=None, help="a PEFT adapter folder (Medusa-2)")
    ap.add_argument("--mtp_ckpt_path", default=None, help="heads folder (default: the shipped heads)")
    ap.add_argument("--tree", default="default", help="default, chain, mc_sim_7b_63, or N (nodes, standard)")
    ap.add_argument("--mode", choices=["greedy", "typical", "sample"], default="greedy")
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--prompt", default="Explain what a hash table is in two sentences.")
    args = ap.parse_args(argv)
    model, tok = load_base(_base_name(args.base_model_id))
    if args.adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter_dir)
    mm = get_heads(model, tok, args.mtp_ckpt_path)
    tree = _parse_tree(args.tree, mm.num_heads, Tree)
    ids = chat_ids(tok, args.prompt).to(mm.lm_head.weight.device)
    t0 = time.perf_counter()
    out = medusa_generate(mm, ids, tree=tree, max_new_tokens=args.max_new_tokens, mode=args.mode,
                          temperature=args.temperature, seed=0)
    dt = time.perf_counter() - t0
    n = out.new_tokens.numel()
    print(tok.decode(out.new_tokens, skip_special_tokens=True))
    print(f"\n[{args.mode}, {tree.num_nodes}-node tree] {n} tokens in {dt:.2f} s = {n / dt:.1f} tok/s, "
          f"tau = {out.tau:.2f} tokens/step")
    return {"tokens": n, "seconds": dt, "tau": out.tau}


def _parse_tree(spec: str, num_heads: int, Tree):
    if spec == "default":
        return Tree.default(num_heads)
    if spec == "chain":
        return Tree.chain(num_heads)
    if spec == "mc_sim_7b_63":
        return Tree.mc_sim_7b_63()
    if spec.isdigit():
        return Tree.standard(num_heads, int(spec))
    return Tree.from_choices(json.loads(spec), num_heads=num_heads)


def evaluate_main(argv=None):
    from medusa_lib.evaluate import main

    return main(argv)


if __name__ == "__main__":
    raise SystemExit("use one of: python -m medusa_lib.{preprocess_data,train_kd,decode_tree,evaluate}")
