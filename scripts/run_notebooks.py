"""Execute every notebook in place (full sizes, not smoke), then clean the outputs for committing.

Each notebook runs in a fresh python3 kernel with its own folder as the working directory and a
900 s limit per cell; its wall time is printed. Then scripts/clean_notebooks.py strips absolute
paths, widget state and timing metadata. `make notebooks` runs this.

`--rehearse` runs the notebooks through their GPU branch on this CPU (MEDUSA_REHEARSE=1, full size
unless --smoke) and writes the executed copies to runs/rehearse/, leaving the committed ones alone.

    python scripts/run_notebooks.py [--smoke] [--rehearse] [notebook.ipynb ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 900  # seconds per cell


def run(path: Path, timeout: int = CELL_TIMEOUT, out: Path | None = None) -> float:
    """Execute one notebook, in place or into `out`; returns its wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:  # keep whatever ran, so a failure can be read in the notebook
        nbformat.write(nb, out or path)
    return time.perf_counter() - t0


def main(argv=None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    ap.add_argument("--smoke", action="store_true", help="run with MEDUSA_SMOKE=1 (small sizes; not for committing)")
    ap.add_argument("--no-clean", action="store_true", help="skip the clean step")
    ap.add_argument("--rehearse", action="store_true", help="the GPU branch on this CPU; copies to runs/rehearse/")
    ap.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds a cell may run")
    args = ap.parse_args(argv)
    os.environ["MEDUSA_SMOKE"] = "1" if args.smoke else "0"  # the kernels inherit this environment
    os.environ["MEDUSA_REHEARSE"] = "1" if args.rehearse else "0"
    outdir = ROOT / "runs" / "rehearse" if args.rehearse else None
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    times = {}
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        if outdir is not None:
            outdir.mkdir(parents=True, exist_ok=True)
        times[path.name] = run(path, args.timeout, out=outdir / path.name if outdir else None)
        print(f"  {path.name}: {times[path.name]:.0f} s", flush=True)
    summary = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    print(f"wall time: {summary}; total {sum(times.values()):.0f} s")
    if not args.no_clean and outdir is None:
        cleaner = Path(__file__).parent / "clean_notebooks.py"
        subprocess.run([sys.executable, str(cleaner), *map(str, paths)], check=True)
    return times


if __name__ == "__main__":
    main()
