"""The package's shape, checked: no import cycle at module level, small modules, modes asked
rather than their names compared, and every store file name spelled inside ``lth.store``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "lth"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _top_level_imports(name: str) -> set[str]:
    """The lth modules ``name`` imports when it is imported (not inside functions, not under
    ``if TYPE_CHECKING``): ``from x import y`` counts x, and x.y where that is a module."""
    tree = ast.parse(MODULES[name].read_text())
    base = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if _type_checking(node):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in MODULES)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = base.split(".")
                    parts = parts[:len(parts) - node.level + 1]
                    target = ".".join(parts + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                submodules = {f"{target}.{a.name}" for a in node.names} & MODULES.keys()
                found.update(submodules)
                if target in MODULES and len(submodules) < len(node.names):
                    found.add(target)  # names defined by the package's __init__ itself

    visit(tree.body)
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            strongconnect(v)
    return out


def _graph() -> dict[str, set[str]]:
    """Module -> the modules importing it runs: what it names, and before ``a.b.c`` the
    ``__init__`` of ``a`` and ``a.b``, except the packages the importer is inside of (they
    are already being imported when they import their own submodules)."""
    graph = {}
    for name in MODULES:
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges = set()
        for target in _top_level_imports(name):
            parts = target.split(".")
            edges.add(target)
            edges.update(p for i in range(1, len(parts))
                         if (p := ".".join(parts[:i])) in MODULES and p not in own)
        graph[name] = edges - {name}
    return graph


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_at_module_level():
    # lth/__init__ gathers the public API from every subpackage; a subpackage importing
    # "from .. import x" would be a cycle through it and is reported like any other.
    cycles = _cycles(_graph())
    assert not cycles, "import cycles at module level:\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_no_module_over_the_size_limit():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


# A mode's name may be compared only in the module that defines its objects.
MODE_NAMES = {"schedule": "lth.pruning.schedules", "supermask": "lth.pruning.supermask",
              "structure": "lth.pruning.structures", "masks_from_mode": "lth.pruning.copies",
              "allocation": "lth.pruning.allocation"}


def _str_constants(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_str_constants(e) for e in node.elts)
    return False


def _mode_of(node: ast.expr) -> str | None:
    """Which mode an expression names: ``cfg.schedule``, ``prune.supermask``,
    ``reinit.mode`` / ``cfg.mode`` (the reinit mode) ..."""
    if isinstance(node, ast.Attribute):
        if node.attr in MODE_NAMES:
            return node.attr
        if node.attr == "mode":
            return "reinit"
    if isinstance(node, ast.Name) and node.id in MODE_NAMES:
        return node.id
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
            and node.slice.value in MODE_NAMES:
        return node.slice.value  # settings["prune"]["schedule"]
    return None


def _mode_comparisons(name: str) -> list[str]:
    tree = ast.parse(MODULES[name].read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            modes = {m for s in sides if (m := _mode_of(s))}
            if modes and any(_str_constants(s) for s in sides):
                out.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            if any(isinstance(s, ast.Name) and s.id == "KEEP_TRAINED" for s in sides):
                out.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "isinstance" and len(node.args) == 2 \
                and "NetworkCriterion" in ast.unparse(node.args[1]) \
                and name != "lth.pruning.network":
            out.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_modes_are_asked_not_compared_by_name():
    allowed = {"lth.reinitialization", *MODE_NAMES.values()}
    found = [line for name in MODULES if name not in allowed
             for line in _mode_comparisons(name)]
    assert not found, "mode names compared outside their modules:\n" + "\n".join(found)


STORE_FILE = re.compile(r"(\.safetensors|\.json|\.ckpt|^failures|mlflow_run_id|"
                        r"^levels\.csv$)")


def _store_names(name: str) -> list[str]:
    tree = ast.parse(MODULES[name].read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                    ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings and " " not in node.value \
                and STORE_FILE.search(node.value):
            out.append(f"{name}:{node.lineno}: {node.value!r}")
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values
                           if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if " " not in text and STORE_FILE.search(text):
                out.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_store_file_names_live_in_the_store_package():
    found = [line for name in MODULES if not name.startswith("lth.store")
             for line in _store_names(name)]
    assert not found, "store file names spelled outside lth.store:\n" + "\n".join(found)


@pytest.mark.parametrize("finder", [_store_names, _mode_comparisons])
def test_the_finders_see_what_they_look_for(finder, tmp_path, monkeypatch):
    code = ('x = prune.schedule == "one_shot"\ny = "summary.json"\n'
            'z = isinstance(c, NetworkCriterion)\n')
    fake = tmp_path / "fake.py"
    fake.write_text(code)
    monkeypatch.setitem(MODULES, "lth.fake", fake)
    assert finder("lth.fake")
