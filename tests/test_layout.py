"""The package's imports flow one way, down ORDER (then the `python -m` shims above everything), and every import
counts: at the top, inside a function, under `if __name__ == "__main__":`, relative, or by name (importlib)."""

import ast
from pathlib import Path

import medusa_lib

ORDER = ["config", "files", "memory", "backbone", "models", "heads", "tree", "drafters", "decoding", "batching", "data",
         "positions", "losses", "checkpoints", "train", "plots", "evaluate", "interop", "cli", "notebook"]
SHIMS = ["__init__", "preprocess_data", "train_kd", "decode_tree", "export", "demo"]  # above everything
PACKAGE = Path(medusa_lib.__file__).parent


BY_NAME = ("import_module", "__import__", "run_module", "find_spec")  # calls that import a module named by a string


def _imports(path: Path) -> set[str]:
    """medusa_lib modules that `path` imports anywhere: every node of the file is walked, `__main__` blocks and
    function bodies included; a name imported from the package itself (`from medusa_lib import load_base`)
    counts as importing `__init__`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = "medusa_lib" + (f".{node.module}" if node.module else "") if node.level else node.module or ""
            if module == "medusa_lib":
                found |= {a.name if a.name in ORDER + SHIMS else "__init__" for a in node.names}
            elif module.startswith("medusa_lib."):
                found.add(module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("medusa_lib.")}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in BY_NAME:
            found |= {a.value.split(".")[1] for a in node.args
                      if isinstance(a, ast.Constant) and str(a.value).startswith("medusa_lib.")}
    return found


def test_the_import_walk_sees_every_kind_of_import(tmp_path):
    """What let `evaluate`'s `__main__` block import `cli` unseen must now be seen."""
    path = tmp_path / "m.py"
    path.write_text("from . import tree\nfrom .heads import x\nimport medusa_lib.models\n"
                    "def f():\n    from medusa_lib import plots, load_base\n"
                    "if __name__ == '__main__':\n    from medusa_lib.cli import main\n"
                    "    importlib.import_module('medusa_lib.data')\n")
    assert _imports(path) == {"tree", "heads", "models", "plots", "__init__", "cli", "data"}


def test_every_module_is_placed():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(ORDER) | set(SHIMS), "add new modules to ORDER (library) or SHIMS (entry points)"


def test_imports_flow_one_way():
    rank = {m: i for i, m in enumerate(ORDER + SHIMS)}
    for name in ORDER:
        for dep in _imports(PACKAGE / f"{name}.py"):
            assert rank[dep] < rank[name], f"medusa_lib.{name} imports medusa_lib.{dep}, which sits above it"


def test_library_functions_are_short():
    for name in ORDER:
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 40, f"{name}.{node.name} is {length} lines (at most 40)"
