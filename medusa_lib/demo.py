"""`make demo`: the main job, on the embedded model, offline, on CPU.

For now: load the embedded backbone and show plain greedy generation with its tokens/s.
"""

from __future__ import annotations

import argparse
import time

import torch

from medusa_lib.data import chat_ids, load_prompts
from medusa_lib.models import load_base


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max_new_tokens", type=int, default=64)
    args = ap.parse_args(argv)
    model, tok = load_base("embedded", device="cpu")
    for p in load_prompts("heldout")[:3]:
        ids = chat_ids(tok, p.prompt)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False)
        dt = time.perf_counter() - t0
        n = out.shape[1] - ids.shape[1]
        print(f"[{p.category}] {p.prompt[:60]!r}\n  -> {tok.decode(out[0, ids.shape[1]:])!r}")
        print(f"  {n} tokens in {dt:.2f} s = {n / dt:.1f} tok/s (HF greedy)\n")


if __name__ == "__main__":
    main()
