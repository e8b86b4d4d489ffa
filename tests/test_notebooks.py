"""Notebook conventions, checked without executing anything (execution: pytest --nbval-lax notebooks/).

Every notebook: a Colab badge pointing at its own path, exactly one setup cell that installs only
on Colab, Colab metadata (GPU, T4), explicit imports, and no absolute paths or user names in its
committed outputs. The stamp script is idempotent.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SCRIPTS = ROOT / "scripts"
BADGE = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/notebooks/([\w.-]+\.ipynb)")
STAR_IMPORT = re.compile(r"^\s*from\s+\S+\s+import\s+\*", re.M)
ABS_PATH = re.compile(r"(?<![\w.~-])(/work/|/tmp/|/root\b|/home/[\w.-]+|/Users/[\w.-]+|[A-Z]:\\\\Users)")

sys.path.insert(0, str(SCRIPTS))
from clean_notebooks import WIDGET_MIME  # noqa: E402
from stamp_notebooks import repo_slug, setup_source, stamp  # noqa: E402

pytestmark = pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks yet")
ids = [p.name for p in NOTEBOOKS]


def _read(path):
    return nbformat.read(path, as_version=4)


def _output_texts(nb):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts = [out.get("text", ""), out.get("evalue", ""), "\n".join(out.get("traceback", []))]
            texts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            for t in texts:
                yield cell, "".join(t) if isinstance(t, list) else t


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_badge_points_at_own_path(path):
    first = _read(path).cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), "first cell: a markdown title"
    badges = BADGE.findall(first.source)
    assert badges, "the first cell needs an Open in Colab badge"
    assert all(slug == repo_slug() and name == path.name for slug, name in badges), \
        f"badge {badges} should point at {repo_slug()}/notebooks/{path.name}; run `make stamp-notebooks`"
    assert "What you will learn" in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_one_setup_cell(path):
    code = [c for c in _read(path).cells if c.cell_type == "code"]
    setup = [c for c in code if 'os.path.exists("/content")' in c.source]
    assert len(setup) == 1, f"expected exactly one setup cell with os.path.exists(\"/content\"), found {len(setup)}"
    assert setup[0] is code[0], "the setup cell must be the first code cell"
    src = setup[0].source
    assert src.startswith("# NBVAL_IGNORE_OUTPUT"), "the setup cell prints versions: mark it NBVAL_IGNORE_OUTPUT"
    assert f"git+https://github.com/{repo_slug()}" in src, "install line must point at this repository"
    for needed in ("import torch", "setup(", "PROFILE"):
        assert needed in src, f"setup cell misses {needed}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_colab_metadata(path):
    meta = _read(path).metadata
    assert meta.get("accelerator") == "GPU"
    assert meta.get("colab", {}).get("gpuType") == "T4"
    assert meta.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_no_star_imports(path):
    code = [c.source for c in _read(path).cells if c.cell_type == "code"]
    bad = [m.group(0).strip() for src in code for m in STAR_IMPORT.finditer(src)]
    assert not bad, f"use explicit imports, not `import *`: {bad}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_no_absolute_paths_in_outputs(path):
    nb = _read(path)
    hits = [m.group(0) for _, text in _output_texts(nb) for m in ABS_PATH.finditer(text)]
    assert not hits, f"absolute paths in outputs {sorted(set(hits))}: run `make clean-notebooks`"
    assert "widgets" not in nb.metadata, "widget state is saved: run `make clean-notebooks`"
    widget_outputs = [o for c in nb.cells for o in c.get("outputs", []) if WIDGET_MIME in o.get("data", {})]
    assert not widget_outputs, "stateless widget outputs are committed: run `make clean-notebooks`"


def test_stamp_is_idempotent(tmp_path):
    copies = []
    for p in NOTEBOOKS:
        shutil.copy(p, tmp_path / p.name)
        copies.append(tmp_path / p.name)
    original = {p.name: p.read_bytes() for p in copies}
    assert not any([stamp(p, repo_slug()) for p in copies]), "committed notebooks are not stamped"
    assert all([stamp(p, "alice/medusa-fork") for p in copies])
    forked = {p.name: p.read_bytes() for p in copies}
    assert not any([stamp(p, "alice/medusa-fork") for p in copies]), "stamping twice changed something"
    assert {p.name: p.read_bytes() for p in copies} == forked
    for p in copies:
        text = p.read_text()
        assert f"colab.research.google.com/github/alice/medusa-fork/blob/main/notebooks/{p.name}" in text
        assert "git+https://github.com/alice/medusa-fork'" in text
        assert repo_slug() not in text
    for p in copies:  # and back again
        stamp(p, repo_slug())
    assert {p.name: p.read_bytes() for p in copies} == original


def test_stamp_cli_reads_pyproject(tmp_path):
    p = tmp_path / NOTEBOOKS[0].name
    shutil.copy(NOTEBOOKS[0], p)
    run = subprocess.run([sys.executable, str(SCRIPTS / "stamp_notebooks.py"), str(p)], capture_output=True, text=True,
                         check=True)
    assert f"stamped 0 of 1 notebooks for {repo_slug()}" in run.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_jupytext_pair_in_sync(path):
    """Each notebook has one editable source, notebooks/NN_name.py (jupytext percent format), with the same
    cells; edit either and run `make sync-notebooks` (jupytext --sync) to update the other."""
    import jupytext

    py = path.with_suffix(".py")
    assert py.exists(), f"{py.name} is missing: run `jupytext --set-formats ipynb,py:percent {path}`"
    paired = jupytext.read(py)
    cells = [(c.cell_type, c.source.strip()) for c in _read(path).cells]
    assert [(c.cell_type, c.source.strip()) for c in paired.cells] == cells, "run `make sync-notebooks`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_setup_cell_is_the_shared_one(path):
    setup = next(c for c in _read(path).cells if c.cell_type == "code")
    assert setup.source == setup_source(), "the setup cell differs from scripts/stamp_notebooks.SETUP"
