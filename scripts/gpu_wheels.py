"""Prepare `.gpu_wheels/`: the pinned wheels that `scripts/gpu_check.py` carries to a GPU machine.

A lent GPU machine has its own torch, transformers, peft and accelerate, often at other versions (one had
transformers 5.17, an older huggingface_hub and no bitsandbytes), and it cannot reach PyPI. So the check
carries the versions this project pins (read from the environment running this script, i.e. `.venv`):

- transformers, huggingface_hub, tokenizers, safetensors, peft, accelerate (`pip download --no-deps`);
- their pure-Python requirements that a machine may lack or have too old (httpx2 for huggingface_hub 2.x,
  ...), and pytest, each installed there only when missing or outside the pinned packages' specifiers;
- bitsandbytes, trimmed to its CPU and CUDA 12.1 / 12.6 / 13.0 libraries: the full manylinux wheel (43 MB,
  seven CUDA builds and six ROCm builds) does not fit beside the rest. bitsandbytes loads the highest
  build <= the runtime's CUDA version of the same major (12.8 -> 12.6), else the lowest above it.

torch, numpy and compiled packages (regex, pyyaml) are never carried: the machine's own are used.
The folder is git-ignored; hand it to the device run with `carry: [".gpu_wheels"]`.

    .venv/bin/python scripts/gpu_wheels.py            # about 20 s; prints the folder's size
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / ".gpu_wheels"
PINNED = ("transformers", "huggingface-hub", "tokenizers", "safetensors", "peft", "accelerate")
EXTRA = ("pytest",)  # the check's part 1 runs the gpu-marked tests
NEVER = {"torch", "numpy", "regex", "pyyaml", "hf-xet", "kernels", "typer", "triton"}  # the machine's own, or unused
BNB = "bitsandbytes"
BNB_LIBS = ("cpu", "cuda121", "cuda126", "cuda130")
LIMIT_MIB = 55.0  # the working tree (about 15 MiB) and this folder share the device's 64 MiB
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64")


def version(name: str) -> str:
    return distribution(name).version


def closure(roots) -> dict[str, str]:
    """{requirement name: combined specifier} of everything the roots need (no extras), minus NEVER."""
    specs: dict[str, set[str]] = {}
    todo, seen = [canonicalize_name(r) for r in roots], set()
    while todo:
        name = todo.pop()
        if name in seen or name in NEVER:
            continue
        seen.add(name)
        for raw in distribution(name).requires or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep not in NEVER:
                specs.setdefault(dep, set()).update(str(s) for s in req.specifier)
                todo.append(dep)
    return {n: ",".join(sorted(s)) for n, s in specs.items() if n not in {canonicalize_name(p) for p in PINNED}}


def download(pins: list[str], dest: Path) -> None:
    """Binary wheels for manylinux x86_64 and this CPython (transformers 5.25 needs >= 3.11); only pure-Python
    and abi3 wheels are carried, so they install on any CPython from this one on."""
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
                    "--python-version", py, "--implementation", "cp", *platforms, *pins], check=True)


def wheel_of(folder: Path, name: str) -> Path:
    stem = canonicalize_name(name).replace("-", "_")
    hits = [w for w in folder.glob("*.whl") if canonicalize_name(w.name.split("-")[0]).replace("-", "_") == stem]
    if len(hits) != 1:
        raise FileNotFoundError(f"expected one wheel of {name} in {folder}, found {[w.name for w in hits]}")
    return hits[0]


def trim_bnb(src: Path, dest: Path, keep=BNB_LIBS) -> list[str]:
    """Copy the bitsandbytes wheel without the native libraries not in `keep`; RECORD rewritten to match."""
    kept, record_name = [], None
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        rows = []
        for info in zin.infolist():
            name = info.filename
            if name.endswith(".dist-info/RECORD"):
                record_name = name
                continue
            lib = Path(name).name
            if lib.startswith("libbitsandbytes_"):
                if lib.removeprefix("libbitsandbytes_").split(".")[0] not in keep:
                    continue
                kept.append(lib)
            data = zin.read(info)
            zout.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{name},sha256={digest},{len(data)}")
        zout.writestr(record_name, "\n".join(rows + [f"{record_name},,"]) + "\n")
    return kept


def mib(paths) -> float:
    return sum(p.stat().st_size for p in paths) / 2**20


def build(folder: Path, with_bnb: bool = True, limit_mib: float = LIMIT_MIB) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    deps = closure(PINNED + EXTRA)
    entries = [{"name": n, "version": version(n), "role": "pinned"} for n in PINNED]
    entries += [{"name": n, "version": version(n), "role": "dep", "requires": s} for n, s in sorted(deps.items())]
    entries += [{"name": n, "version": version(n), "role": "dep", "requires": ""} for n in EXTRA]
    download([f"{e['name']}=={e['version']}" for e in entries], folder)
    for e in entries:
        e["file"] = wheel_of(folder, e["name"]).name
    manifest = {"built_with_python": sys.version.split()[0], "packages": entries}
    manifest["bitsandbytes"] = add_bnb(folder, limit_mib) if with_bnb else {"skipped": "not requested (--no-bnb)"}
    manifest["total_mib"] = round(mib(folder.glob("*.whl")), 2)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def add_bnb(folder: Path, limit_mib: float) -> dict:
    """The trimmed bitsandbytes wheel, when the folder stays under `limit_mib` with it."""
    try:
        pin = f"{BNB}=={version(BNB)}"
    except PackageNotFoundError:
        return {"skipped": "bitsandbytes is not installed in this environment, so there is no pinned version"}
    with tempfile.TemporaryDirectory() as tmp:
        download([pin], Path(tmp))
        full = wheel_of(Path(tmp), BNB)
        trimmed = folder / full.name
        kept = trim_bnb(full, trimmed)
        info = {"name": BNB, "version": version(BNB), "file": full.name, "role": "pinned", "native_libs": kept,
                "full_wheel_mib": round(mib([full]), 2), "trimmed_wheel_mib": round(mib([trimmed]), 2)}
    total = mib(folder.glob("*.whl"))
    if total > limit_mib:
        trimmed.unlink()
        return {"skipped": f"with bitsandbytes the folder would be {total:.1f} MiB, over {limit_mib} MiB", **info}
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=FOLDER)
    ap.add_argument("--no-bnb", action="store_true", help="leave bitsandbytes out (the check skips QLoRA)")
    ap.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    args = ap.parse_args()
    manifest = build(args.dir, not args.no_bnb, args.limit_mib)
    for e in manifest["packages"]:
        print(f"  {e['name']:20s} {e['version']:12s} {e['role']}")
    print(f"  bitsandbytes: {manifest['bitsandbytes']}")
    print(f"{args.dir}: {manifest['total_mib']} MiB")


if __name__ == "__main__":
    main()
