"""Check `medusa_lib.memory` against measurement: the peak memory of each phase, run on this CPU.

Each phase (generation, warm-up bank, medusa-1 step, medusa-2 step, decoding) runs in a fresh process on a
random-weight model with Llama-2-7B's config (assets/configs), its widths divided by --scale (head size,
vocabulary and layout kept), with 1 and then 2 decoder layers, in fp16. The process builds the model, runs
the phase once to page in the code it runs (library pages are host memory that a GPU run does not hold, and
how many of them count as resident varied between two installs of the same packages: 8 MB at 1/16 scale),
resets its peak resident set size (Linux: /proc/self/clear_refs), runs the phase again and reads the peak
(VmHWM). Measured = the model's parameter bytes + (peak - resident size before the phase). The memory
model is evaluated at the same shapes and sizes (no CUDA context, no NF4: the Medusa-2 step is plain fp16
LoRA with checkpointing; QLoRA's NF4 weights and fp32 residual stream are not measured here). The 2-layer
minus the 1-layer figure is the per-layer cost; what is left of the 1-layer figure is the fixed cost; both
extrapolate to the 7B's 32 layers.

    python scripts/measure_memory.py              # ~4 minutes on 2 cores; exits 1 if a phase is off by > 20%
    python scripts/measure_memory.py --scale 1    # the 7B's own widths (slow)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from dataclasses import replace

SIZES = {"generation": dict(batch=12, prompt=64, new=32), "warm-up bank": dict(seqs=4, block=256),
         "medusa-1 step": dict(positions=1024), "medusa-2 step": dict(batch=1, block=256, chunk=256),
         "decoding": dict(context=256, new=2)}


def shapes(scale: int, layers: int) -> dict:
    """Llama-2-7B's config with widths / scale and `layers` decoder layers."""
    from medusa_lib.memory import shipped_config

    c = {k: v for k, v in shipped_config("Llama-2-7b-chat-hf").items() if not k.startswith("_")}
    heads = c["num_attention_heads"] // scale
    return {**c, "hidden_size": c["hidden_size"] // scale, "intermediate_size": c["intermediate_size"] // scale,
            "num_attention_heads": heads, "num_key_value_heads": heads, "num_hidden_layers": layers}


def head_config():
    from medusa_lib.config import get_profile

    return get_profile("llama2-7b-qlora").head  # 3 heads on the shared lm_head, an 8,192-token draft


def predicted(phase: str, c: dict, dtype_bytes: int, sizes: dict) -> float:
    """The memory model's bytes for a phase at these shapes and sizes (no CUDA context)."""
    from medusa_lib import memory as m

    p = {"linear": dtype_bytes, "embed": dtype_bytes, "act": dtype_bytes, "context": 0}
    s, hc = sizes, head_config()
    if phase == "generation":
        return m.generation_bytes(c, p, s["batch"], s["prompt"], s["new"], refill=False)
    if phase == "warm-up bank":
        return m.bank_bytes(c, p, hc, s["block"], batch_tokens=s["seqs"] * s["block"])
    if phase == "medusa-1 step":
        return m.medusa1_bytes(c, p, hc, s["positions"])
    if phase == "medusa-2 step":
        from medusa_lib.config import get_profile

        lora_r = get_profile("llama2-7b-qlora").train.lora_r
        parts = m.medusa2_parts(c, p, replace(hc, draft_size=0), lora_r, s["batch"], s["block"], s["chunk"])
        return sum(parts.values())
    return m.decoding_bytes(c, p, hc, s["context"] + s["new"], s["nodes"])


# ----------------------------------------------------------------------------- the child process


def rss(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def build(c: dict, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**c))
    model = model.to_empty(device="cpu").to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.02) if "norm" not in name else p.fill_(1.0)
    model.model.rotary_emb.__init__(model.config)  # its buffers were on the meta device
    return model.eval()


def prepare(phase: str, model, s: dict):
    """What the phase needs that is not counted in it (prompts, a bank of states, rows): made before the reset."""
    import torch

    from medusa_lib.heads import MedusaModel
    from medusa_lib.positions import PositionBank

    g = torch.Generator().manual_seed(0)
    V = model.config.vocab_size
    if phase == "generation":
        return [torch.randint(4, V, (s["prompt"],), generator=g).tolist() for _ in range(s["batch"])]
    if phase == "warm-up bank":
        return [(torch.randint(4, V, (s["block"],), generator=g), s["block"] - 1) for _ in range(s["seqs"])]
    if phase == "medusa-1 step":
        seqs = [(torch.randint(4, V, (256,), generator=g), 0) for _ in range(s["positions"] // 256 + 1)]
        return PositionBank(MedusaModel.from_base(model, 1), seqs, 3, known=[torch.randn(256, model.config.hidden_size)
                                                                             for _ in seqs])
    if phase == "medusa-2 step":
        return [{"prompt_ids": [5], "response_ids": torch.randint(4, V, (s["block"] - 1,), generator=g).tolist()}
                for _ in range(s["batch"])]
    return torch.randint(4, V, (1, s["context"]), generator=g)


def run_phase(phase: str, model, data, s: dict) -> int:
    """Run the phase once; returns bytes it leaves on the host that a GPU run keeps off the device."""
    import torch

    from medusa_lib.config import TrainConfig
    from medusa_lib.heads import MedusaModel
    from medusa_lib.losses import bank_batch_loss, joint_loss
    from medusa_lib.positions import hidden_states, pad_batch
    from medusa_lib.train import add_lora

    hc = head_config()
    if phase == "generation":
        from medusa_lib.batching import stream_greedy

        stream_greedy(MedusaModel.from_base(model, 1), data, s["new"], eos={-1}, batch_size=s["batch"])
        return 0
    if phase == "warm-up bank":
        out = hidden_states(MedusaModel.from_base(model, hc.num_heads), data, batch_tokens=s["seqs"] * s["block"])
        return sum(t.nbytes for t in out)
    if phase == "medusa-1 step":
        mm = MedusaModel.from_base(model, hc.num_heads)
        mm.set_draft_vocab(torch.arange(hc.draft_size))
        opt = torch.optim.AdamW(mm.heads.parameters(), lr=1e-3)
        bank_batch_loss(mm, data, data.trainable()[: s["positions"]], TrainConfig())
        opt.step()
        return 0
    if phase == "medusa-2 step":
        from medusa_lib.positions import check_rows

        mm = MedusaModel.from_base(add_lora(model, TrainConfig(stage="joint")), hc.num_heads)
        mm.train()
        lora = [p for n, p in mm.base.named_parameters() if "lora_" in n]
        opt = torch.optim.AdamW([{"params": lora}, {"params": mm.heads.parameters()}], lr=1e-4)
        ids, attn, start = pad_batch(check_rows(data, s["block"]), 0, "cpu")
        joint_loss(mm, ids, attn, start, TrainConfig(stage="joint"), chunk=s["chunk"])
        opt.step()
        return 0
    from medusa_lib.decoding import medusa_generate
    from medusa_lib.tree import Tree

    medusa_generate(MedusaModel.from_base(model, hc.num_heads), data, tree=Tree.default(hc.num_heads),
                    max_new_tokens=s["new"])
    return 0


def child(phase: str, c: dict, dtype_name: str, s: dict) -> dict:
    import torch

    dtype = getattr(torch, dtype_name)
    model = build(c, dtype)
    data = prepare(phase, model, s)
    params = sum(p.nbytes for p in model.parameters())
    run_phase(phase, model, prepare(phase, model, s), s)  # once first: the code it runs is paged in, not counted
    gc.collect()
    before = rss("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak resident size starts again from now
    host = run_phase(phase, model, data, s)
    return {"measured": params + rss("VmHWM") - before - host, "params": params}


# ----------------------------------------------------------------------------- the parent


def measure(phase: str, c: dict, dtype: str = "float16", sizes: dict | None = None) -> dict:
    """Run one phase in a fresh process; {"measured": bytes, "params": bytes}."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    arg = json.dumps({"phase": phase, "c": c, "dtype": dtype, "sizes": sizes})
    out = subprocess.run([sys.executable, __file__, "--child", arg], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def sizes_for(phase: str, scale: int) -> dict:
    from medusa_lib.tree import Tree

    s = dict(SIZES[phase])
    if phase == "decoding":
        s["nodes"] = Tree.default(head_config().num_heads).num_nodes
    return s


def table(scale: int, dtype: str, phases, tolerance: float) -> bool:
    """Print model vs measurement per phase, at 1 and 2 layers and extrapolated to 32; True if all within."""
    nbytes = {"float16": 2, "bfloat16": 2, "float32": 4}[dtype]
    mib, ok = 2**20, True
    print(f"Llama-2-7B shapes / {scale}, {dtype}, on this CPU (MiB; ratio = model / measured)")
    print(f"{'phase':15s} {'L':>3s} {'model':>9s} {'measured':>9s} {'ratio':>6s}   {'above weights: model':>21s} "
          f"{'measured':>9s} {'ratio':>6s}")
    for phase in phases:
        s, got = sizes_for(phase, scale), {}
        for L in (1, 2):
            c = shapes(scale, L)
            m, r = predicted(phase, c, nbytes, s), measure(phase, c, dtype, s)
            got[L] = (m, r["measured"])
            wm, wr = m - r["params"], r["measured"] - r["params"]
            ok &= abs(m / r["measured"] - 1) <= tolerance
            print(f"{phase:15s} {L:3d} {m / mib:9.1f} {r['measured'] / mib:9.1f} {m / r['measured']:6.2f}   "
                  f"{wm / mib:21.1f} {wr / mib:9.1f} {wm / max(wr, 1):6.2f}")
        m32 = got[1][0] + 31 * (got[2][0] - got[1][0])
        r32 = got[1][1] + 31 * (got[2][1] - got[1][1])
        print(f"{phase:15s} {32:3d} {m32 / mib:9.1f} {r32 / mib:9.1f} {m32 / r32:6.2f}   (fixed + 32 x per layer)")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=int, default=4, help="divide the 7B's widths by this")
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    ap.add_argument("--phases", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--tolerance", type=float, default=0.2)
    args = ap.parse_args()
    if args.child:
        a = json.loads(args.child)
        print(json.dumps(child(a["phase"], a["c"], a["dtype"], a["sizes"])))
        return
    sys.exit(0 if table(args.scale, args.dtype, args.phases, args.tolerance) else 1)


if __name__ == "__main__":
    main()
