"""The package's structure: no import circles, including those behind string registries, and
docs/design.md's layout table true to the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by its import name (kernels/ ships as qtriton.kernels)."""
    found = {}
    for path in sorted((root / "qtriton").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((root / "kernels").glob("*.py")):
        found["qtriton.kernels" + ("" if path.stem == "__init__" else f".{path.stem}")] = path
    return found


def _exports(root: Path) -> dict[str, str]:
    """qtriton/__init__.py's lazy registry: public name -> the module that defines it."""
    tree = ast.parse((root / "qtriton" / "__init__.py").read_text())
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(getattr(t, "id", None) == "_EXPORTS" for t in targets):
            return eval(compile(ast.Expression(node.value), "_EXPORTS", "eval"), {})  # dict literals and fromkeys
    raise AssertionError("qtriton/__init__.py has no _EXPORTS")


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules it imports, at the top, in functions or for type checking, or
    names in a string (the registries of backend.py, cli.py and __init__.py import by
    name), or reaches through the package's lazy names (`qtriton.api` after `import qtriton`).
    A submodule's import also runs its package's __init__ (qtriton.ops, qtriton.kernels);
    the root package's is lazy and imports nothing itself; a module's own packages are
    initialised before it runs, so they are no edge of its."""
    mods = modules(root)
    exports = _exports(root)

    def target(name: str) -> str | None:
        if name in mods:
            return name
        package, _, attr = name.rpartition(".")
        if package == "qtriton" and attr in exports:
            return exports[attr]
        return None

    graph: dict[str, set[str]] = {}
    for module, path in mods.items():
        edges = set()
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in node.names] + [base]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "qtriton":
                names = [f"qtriton.{node.attr}"]
            for name in names:
                found = target(name)
                if found is not None and found != module:
                    edges.add(found)
        for name in list(edges):  # a submodule's import runs its packages' __init__ (but the root's)
            parts = name.split(".")
            edges.update(".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in mods)
        # A module's own packages have run (or are running) their __init__ before it runs.
        parts = module.split(".")
        edges -= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        graph[module] = edges
    graph.pop("qtriton", None)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = import_graph()
    assert circles(graph) == [], "\n".join(" <-> ".join(c) for c in circles(graph))


def test_the_graph_sees_imports_behind_string_registries():
    """The edges the circles test relies on: a lazy import in a function, a module named in a
    registry string, a name reached through the package's lazy exports."""
    graph = import_graph()
    assert "qtriton.report" in graph["qtriton.cli"]  # cli.COMMANDS names it
    assert "qtriton.triton_backend" in graph["qtriton.dispatch"]  # dispatch._BACKEND_MODULES
    assert "qtriton.api" in graph["qtriton.demo"]  # qtriton.compare_quantization_methods
    assert "qtriton.formats.hf" in graph["qtriton.report.quantized"]  # imported inside a function
    assert "qtriton.report.command" in graph["qtriton.report"]  # a package's __init__ re-exports
    assert "qtriton.report" not in graph["qtriton.report.tables"]  # its own package is no edge
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_a_circle_behind_a_string_registry_is_found(tmp_path):
    """A command registry naming a module as a string, that module importing the registry's
    module back (report -> cli.one_line, as it once did): a circle, though neither imports
    the other at the top."""
    package = tmp_path / "qtriton"
    (package / "report").mkdir(parents=True)
    (package / "__init__.py").write_text('_EXPORTS = {"main": "qtriton.cli"}\n')
    (package / "cli.py").write_text('COMMANDS = {"report": ("qtriton.report", "help")}\n')
    (package / "report" / "__init__.py").write_text("from qtriton.report.command import run\n")
    (package / "report" / "command.py").write_text("def run():\n    from qtriton.cli import one_line\n")
    (package / "exits.py").write_text("EXIT_USAGE = 2\n")
    assert circles(import_graph(tmp_path)) == [["qtriton.cli", "qtriton.report", "qtriton.report.command"]]
    (package / "report" / "command.py").write_text("def run():\n    from qtriton.exits import EXIT_USAGE\n")
    assert circles(import_graph(tmp_path)) == []


def _layout_rows() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text()
    table = text[text.index("## Layout"):text.index("## How a call flows")]
    return {path for row in table.splitlines() if row.startswith("| `") for path in
            re.findall(r"`([^`]+)`", row.split("|")[1])}


def test_every_module_is_in_the_layout_table_and_every_row_exists():
    rows = _layout_rows()
    listed = {row for row in rows if row.endswith(".py")}
    actual = {str(path.relative_to(ROOT)) for name, path in modules().items() if not name.startswith("qtriton.kernels")}
    assert sorted(actual - listed) == [], "modules missing from docs/design.md's layout table"
    assert sorted(row for row in rows if not (ROOT / row).exists()) == [], "layout rows naming no file or folder"


#: The tiers from the bottom: a module imports from its own tier and the ones below, never
#: from above (docs/design.md, "Layout"). Matched by the longest prefix.
TIERS = {
    "qtriton.kernels": 0, "qtriton.reference": 0, "qtriton.operands": 0, "qtriton.tensors": 0,
    "qtriton.backend": 0, "qtriton.progress": 0, "qtriton.testing": 0,
    "qtriton.checks": 1,
    "qtriton.ops": 2,
    "qtriton.numpy_backend": 3, "qtriton.torch_backend": 3, "qtriton.triton_backend": 3,
    "qtriton.dispatch": 3, "qtriton.api": 3,
    "qtriton.model": 4,
    "qtriton.formats": 5,
    "qtriton.accuracy": 6,
    "qtriton.report": 7, "qtriton.cli": 7, "qtriton.demo": 7,
}


def tier(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in TIERS:
            return TIERS[".".join(parts[:i])]
    raise AssertionError(f"{module} is in no tier: add it to TIERS and docs/design.md")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, edges in graph.items() for b in edges if tier(b) > tier(a))


def test_imports_only_go_down_the_tiers():
    assert upward_imports(import_graph()) == []
    # The rule can fail: the model layer reaching up into calibration is found.
    assert upward_imports({"qtriton.model.nn": {"qtriton.accuracy.calibration", "qtriton.checks"}}) == [
        "qtriton.model.nn -> qtriton.accuracy.calibration"]


def test_moved_modules_keep_their_first_import_paths():
    """qtriton.nn, qtriton.hf, ... import as the very modules of the tier folders, and a pickle
    naming a class by its first path (a model saved whole before the move) loads."""
    import importlib
    import pickle

    import qtriton

    assert len(qtriton._MOVED) == 7
    for old, new in qtriton._MOVED.items():
        module = importlib.import_module(old)
        assert module is importlib.import_module(new) and module.__spec__.name == new, old
    from qtriton.nn import Int8Linear

    assert Int8Linear.__module__ == "qtriton.model.nn"
    assert pickle.loads(b"cqtriton.nn\nInt8Linear\n.") is Int8Linear
