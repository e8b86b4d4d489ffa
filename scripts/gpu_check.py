"""The prepared GPU check (issue: the path our users take). One script, nothing downloaded.

1. The `gpu`-marked tests (on a CPU with --cpu: the same fp16 tests on the CPU).
2. Verification cost t(n)/t(1), n = 1..64, of random-weight models built from the shipped configs of
   SmolLM2-135M (the embedded model) and TinyLlama-1.1B (the t4 profile), in fp16 and in bf16 where the
   device supports it, timed with synchronisation. The cost does not depend on the weights, so the
   predicted speedup is the shipped heads' measured tau (CPU, real weights) divided by t(n)/t(1).
3. One QLoRA training step when bitsandbytes imports.

    python scripts/gpu_check.py --cpu            # here, in under 3 minutes
    python scripts/gpu_check.py --out docs/      # on a GPU: writes gpu_check-<card>-<date>.json
"""

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from medusa_lib.evaluate import verify_costs
from medusa_lib.heads import SHIPPED_HEADS, MedusaModel
from medusa_lib.train import CONFIGS

SIZES = (1, 2, 4, 8, 16, 32, 64)


def random_model(name: str, dtype, device) -> MedusaModel:
    """A random-weight backbone from a shipped config, with 3 fresh heads."""
    cfg = json.loads((CONFIGS / f"{name}.json").read_text())
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if not k.startswith("_")}))
    return MedusaModel.from_base(model.to(device=device, dtype=dtype).eval(), 3)


def dtypes(device) -> list:
    if device.type == "cuda":
        return [torch.float16] + ([torch.bfloat16] if torch.cuda.is_bf16_supported() else [])
    return [torch.float32, torch.bfloat16]


def cost_table(names, device, context: int) -> list[dict]:
    tau = json.loads((SHIPPED_HEADS / "training_record.json").read_text())["tau"]
    rows = []
    for name in names:
        for dtype in dtypes(device):
            t0 = time.perf_counter()
            costs = verify_costs(random_model(name, dtype, device), SIZES, context=context, repeats=5)
            rows.append({"model": name, "dtype": str(dtype).split(".")[-1], "costs": costs, "tau": tau,
                         "predicted_speedup": {n: tau / c for n, c in costs.items()},
                         "seconds": time.perf_counter() - t0})
            print(f"{name:28s} {rows[-1]['dtype']:9s} " + " ".join(f"{n}:{c:.2f}" for n, c in costs.items())
                  + f"  -> tau {tau:.2f} / t(n): " + " ".join(f"{tau / c:.2f}" for c in costs.values()), flush=True)
    return rows


def qlora_step() -> str:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "skipped: bitsandbytes is not installed"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_train.py", "-k", "qlora"],
                          capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run the same checks on the CPU (small, < 3 min)")
    ap.add_argument("--out", default=None, help="folder for the JSON record (e.g. docs/)")
    args = ap.parse_args()
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    card = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"device: {card}; torch {torch.__version__}")
    marker = ["-k", "fp16 and cpu"] if device.type == "cpu" else ["-m", "gpu"]
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_fp16.py", *marker],
                           capture_output=True, text=True)
    print("tests:", tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr[-500:])
    names = ["SmolLM2-135M-Instruct"] + ([] if device.type == "cpu" else ["TinyLlama-1.1B-Chat-v1.0"])
    record = {"device": card, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "tests": tests.stdout.strip().splitlines()[-1:], "costs": cost_table(names, device, 100),
              "qlora": qlora_step()}
    print("qlora:", record["qlora"])
    if args.out:
        path = Path(args.out) / f"gpu_check-{card.replace(' ', '_')}-{record['date']}.json"
        path.write_text(json.dumps(record, indent=2))
        print(f"wrote {path}")
    if tests.returncode not in (0, 5):
        sys.exit(tests.returncode)


if __name__ == "__main__":
    main()
