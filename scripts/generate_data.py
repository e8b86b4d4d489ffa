"""Generate the self-distillation data the shipped heads train on, and save it in the repository.

The base model's own greedy answers (Medusa paper Sec. 2.3.2) to `--templates` template prompts
(`data.template_prompts`), or with `--copy N` to N long-context, copy-heavy prompts (`data.copy_prompts`:
questions over passages, functions to modify, saved in their own folder), `--chunk` prompts per cache folder
under `--out`, with continuous batching (`batching.stream_greedy`) in the dtype that `models.faster_dtype`
measures fastest here (bf16 where the CPU runs it natively). Answers are gzipped token ids, saved as they
finish: commit `--out` as chunks complete, and a later machine (or a learner) trains without regenerating. The
hidden states generation computes anyway are kept next to them (`states-*.pt`, fp16, git-ignored: about 1 KiB
a token), so training on this machine skips its own backbone pass.

Each finished chunk appends its rate to `--out/generation_log.jsonl`: useful answer tokens/s (no
padding, no finished rows), with the dtype, batch and the machine's load while it ran.

    python scripts/generate_data.py --templates 16384 --out data/selfdistill
    python scripts/generate_data.py --copy 512 --out data/selfdistill-copy
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

from medusa_lib.data import copy_prompts, distill_cache_dir, read_shards, self_distill_data, template_prompts
from medusa_lib.models import faster_dtype, load_base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--templates", type=int, default=16384, help="template prompts to answer")
    ap.add_argument("--copy", type=int, default=0, help="answer this many copy-heavy prompts instead of templates")
    ap.add_argument("--start", type=int, default=0, help="first prompt to answer (to split work across machines)")
    ap.add_argument("--chunk", type=int, default=512, help="prompts per cache folder")
    ap.add_argument("--max_new_tokens", type=int, default=192)
    ap.add_argument("--batch", type=int, default=128, help="rows generating at every step")
    ap.add_argument("--dtype", default="auto", help="auto (measured), fp32 or bf16")
    ap.add_argument("--out", default=None, help="default data/selfdistill, or data/selfdistill-copy with --copy")
    ap.add_argument("--model", default="embedded", help="the base model whose answers these are")
    args = ap.parse_args()
    args.out = args.out or ("data/selfdistill-copy" if args.copy else "data/selfdistill")
    if args.start % args.chunk:
        raise SystemExit(f"--start must be a multiple of --chunk ({args.chunk}), so chunks line up with saved ones")
    model, tok = load_base(args.model)
    dtype = faster_dtype(model) if args.dtype == "auto" else args.dtype
    model, tok = load_base(args.model, dtype=dtype)
    print(f"generating in {model.dtype} with {torch.get_num_threads()} threads, batch {args.batch}", flush=True)
    chosen = copy_prompts(args.copy) if args.copy else template_prompts(args.templates)
    prompts = [p.prompt for p in chosen]
    for i in range(args.start, len(prompts), args.chunk):
        part = prompts[i:i + args.chunk]
        saved = read_shards(distill_cache_dir(model, part, args.max_new_tokens, args.out, args.batch))
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        rows = self_distill_data(model, tok, part, args.max_new_tokens, args.batch, root=args.out, keep_states=True)
        new = [r for j, r in enumerate(rows) if j not in saved]
        if new:
            log(Path(args.out), i, new, time.perf_counter() - t0, model.dtype, args.batch, load0)


def log(out: Path, start: int, rows, seconds: float, dtype, batch: int, load0: float) -> None:
    """One line per chunk: the answers generated now (not those read back from an earlier run)."""
    tokens = sum(len(r["response_ids"]) for r in rows)
    rec = {"start": start, "prompts": len(rows), "answer_tokens": tokens, "seconds": round(seconds, 1),
           "answer_tok_s": round(tokens / seconds, 1), "dtype": str(dtype), "batch": batch,
           "threads": torch.get_num_threads(), "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    with open(out / "generation_log.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(rec, flush=True)


if __name__ == "__main__":
    main()
