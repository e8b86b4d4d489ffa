"""The package's imports flow one way, down ORDER (then the `python -m` shims above everything), and every import
counts: at the top, inside a function, under `if __name__ == "__main__":`, relative, or by name (importlib)."""

import ast
from pathlib import Path

import medusa_lib

ORDER = ["config", "files", "memory", "backbone", "models", "heads", "tree", "drafters", "eagle", "decoding",
         "batching", "data", "positions", "losses", "checkpoints", "train", "eagle_train", "plots", "evaluate",
         "interop", "recipes", "cli", "notebook"]
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


# the modules that may name a drafter kind: the drafters themselves, the recipes, the config and the commands
NAMES_KINDS = {"drafters", "heads", "eagle", "recipes", "config", "cli"} | set(SHIMS)


def _kind_namings(path: Path, kinds) -> list[str]:
    """Where `path` branches on or picks a drafter kind by name: a kind's string compared with an expression
    about a kind (`mm.kind == "hydra"`), given as `kind=` (a call or a default) or used as a subscript."""
    tree, found = ast.parse(path.read_text()), []

    def is_kind(node) -> bool:
        return isinstance(node, ast.Constant) and node.value in kinds

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(is_kind(s) for s in sides) and "kind" in ast.unparse(node):
                found.append(f"{path.stem}:{node.lineno} {ast.unparse(node)}")
        elif isinstance(node, ast.keyword) and node.arg == "kind" and is_kind(node.value):
            found.append(f"{path.stem}:{node.value.lineno} kind={node.value.value!r}")
        elif isinstance(node, ast.arguments):
            args = node.posonlyargs + node.args
            pairs = list(zip(args[len(args) - len(node.defaults):], node.defaults))
            pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults) if d is not None]
            found += [f"{path.stem}:{d.lineno} {a.arg}={d.value!r}" for a, d in pairs if "kind" in a.arg and is_kind(d)]
        elif isinstance(node, ast.Subscript) and is_kind(node.slice):
            found.append(f"{path.stem}:{node.lineno} {ast.unparse(node)}")
    return found


def test_only_the_drafters_recipes_config_and_commands_name_a_kind(tmp_path):
    from medusa_lib.drafters import KINDS

    probe = tmp_path / "probe.py"
    probe.write_text("def f(mm, kind='hydra'):\n    if mm.kind == 'hydra':\n        g(kind='pld')\n"
                     "    return SHIPPED['eagle'], mm.format == 'medusa'\n")
    assert len(_kind_namings(probe, KINDS)) == 4  # the walk sees each way of naming a kind (not a format's name)
    found = [f for name in ORDER if name not in NAMES_KINDS for f in _kind_namings(PACKAGE / f"{name}.py", KINDS)]
    assert not found, f"drafter kinds named outside the drafters, recipes, config and commands: {found}"
