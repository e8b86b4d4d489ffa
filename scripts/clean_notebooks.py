"""Make committed notebook outputs reproducible and free of machine details.

For every notebooks/*.ipynb (or the files given):

- text outputs (streams, text/* data, error tracebacks) lose absolute paths and user names:
  the repository root becomes a relative path, the medusa_lib cache (`$MEDUSA_CACHE`) becomes
  `~/.cache/medusa_lib`, the home folder becomes `~`, and any other /tmp/... path becomes <tmp>/...;
- widget state (notebook metadata `widgets`) and execution timing metadata (`execution`,
  `ExecuteTime`) are removed, and so are widget outputs (progress bars, explorers): without their
  state they cannot render, and their text fallback is a stale snapshot such as "0%";
- images and everything else are kept as they are.

A notebook is rewritten only when something changed, so running it twice is a no-op.

    python scripts/clean_notebooks.py [notebook.ipynb ...]
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CELL_KEYS = ("execution", "ExecuteTime")  # nbclient / jupyter timing
NB_KEYS = ("widgets",)  # ipywidgets state saved on execution
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
DEFAULT_CACHE = "~/.cache/medusa_lib"


def _path_pattern(path: str) -> re.Pattern:
    """`path` as a whole path prefix: not preceded by a path character, followed by / or a boundary."""
    return re.compile(r"(?<![\w./-])" + re.escape(path.rstrip("/")) + r"(?=/|\b|$)")


def replacements() -> list[tuple[re.Pattern, str]]:
    """(pattern, replacement) pairs, most specific first."""
    pairs = []
    cache = os.environ.get("MEDUSA_CACHE")
    if cache and len(Path(cache).resolve().parts) > 1:
        pairs.append((_path_pattern(str(Path(cache).resolve())), DEFAULT_CACHE))
        pairs.append((_path_pattern(os.path.abspath(cache)), DEFAULT_CACHE))
    for root in {str(ROOT), os.path.realpath(ROOT)}:
        pairs.append((re.compile(_path_pattern(root).pattern + "/"), ""))  # /repo/x -> x
        pairs.append((_path_pattern(root), "."))
    home = os.path.expanduser("~")
    if home not in ("", "/"):
        pairs.append((_path_pattern(home), "~"))
    pairs.append((re.compile(r"(?<![\w./-])/tmp/"), "<tmp>/"))
    return pairs


def clean_text(text: str, pairs=None) -> str:
    for pattern, new in pairs if pairs is not None else replacements():
        text = pattern.sub(new, text)
    return text


def _clean_value(value, pairs):
    if isinstance(value, str):
        return clean_text(value, pairs)
    if isinstance(value, list):
        return [_clean_value(v, pairs) for v in value]
    return value


def clean_output(out, pairs) -> None:
    if "text" in out:  # stream
        out["text"] = _clean_value(out["text"], pairs)
    for key in ("evalue", "traceback"):  # error
        if key in out:
            out[key] = _clean_value(out[key], pairs)
    for mime, value in out.get("data", {}).items():  # display_data / execute_result; images untouched
        if mime.startswith("text/"):
            out["data"][mime] = _clean_value(value, pairs)


def clean_notebook(nb, pairs=None):
    pairs = pairs if pairs is not None else replacements()
    for key in NB_KEYS:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in CELL_KEYS:
            cell.metadata.pop(key, None)
        if "outputs" in cell:
            cell.outputs = [out for out in cell.outputs if WIDGET_MIME not in out.get("data", {})]
        for out in cell.get("outputs", []):
            clean_output(out, pairs)
    return nb


def clean(path: Path, pairs=None) -> bool:
    """Clean one notebook in place; returns whether it changed."""
    path = Path(path)
    before = path.read_text(encoding="utf-8")
    nb = clean_notebook(nbformat.reads(before, as_version=4), pairs)
    after = nbformat.writes(nb) + "\n"
    if after.rstrip("\n") == before.rstrip("\n"):
        return False
    path.write_text(after, encoding="utf-8")
    return True


def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    pairs = replacements()
    changed = [p for p in paths if clean(p, pairs)]
    print(f"cleaned {len(changed)} of {len(paths)} notebooks")
    return changed


if __name__ == "__main__":
    main()
