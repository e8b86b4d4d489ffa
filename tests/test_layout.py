"""The package's imports flow one way: config -> files -> memory -> models -> heads -> tree -> decoding -> data ->
positions -> train -> plots -> evaluate -> interop -> cli -> notebook (then the `python -m` shims)."""

import ast
from pathlib import Path

import medusa_lib

ORDER = ["config", "files", "memory", "models", "heads", "tree", "decoding", "batching", "data", "positions", "train",
         "plots",
         "evaluate", "interop", "cli", "notebook"]
SHIMS = ["__init__", "preprocess_data", "train_kd", "decode_tree", "export", "demo"]  # above everything
PACKAGE = Path(medusa_lib.__file__).parent


def _imports(path: Path) -> set[str]:
    """medusa_lib modules that `path` imports anywhere except under `if __name__ == "__main__":`."""
    tree = ast.parse(path.read_text())
    main_blocks = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    skip = {id(x) for b in main_blocks for x in ast.walk(b)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medusa_lib"):
            found |= {node.module.split(".")[1]} if "." in node.module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("medusa_lib.")}
    return found


def test_every_module_is_placed():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(ORDER) | set(SHIMS), "add new modules to ORDER (library) or SHIMS (entry points)"


def test_imports_flow_one_way():
    rank = {m: i for i, m in enumerate(ORDER)}
    for name in ORDER:
        for dep in _imports(PACKAGE / f"{name}.py"):
            assert rank[dep] < rank[name], f"medusa_lib.{name} imports medusa_lib.{dep}, which sits above it"


def test_library_functions_are_short():
    for name in ORDER:
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 40, f"{name}.{node.name} is {length} lines (at most 40)"
