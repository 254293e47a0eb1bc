"""Structure rules of slicert_ops (docs/architecture.md), checked on the source with ast:

- no import cycle among slicert_ops modules (module level and function level imports alike:
  a lazy import is still a dependency);
- no module imports another module's ``_private`` name.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "slicert_ops"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(mod: str, path: Path, known: set[str]) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every slicert_ops import."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("slicert_ops"):
                    out.append((a.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, is_pkg, node)
            if not target.startswith("slicert_ops"):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:  # `from pkg import module`
                    out.append((sub, None, node.lineno))
                else:
                    out.append((target, a.name, node.lineno))
    return out


def _in_type_checking(path: Path) -> set[int]:
    """Lines under `if TYPE_CHECKING:` (annotations only: not a runtime dependency)."""
    tree = ast.parse(path.read_text())
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            for sub in node.body:
                for n in ast.walk(sub):
                    if hasattr(n, "lineno"):
                        lines.add(n.lineno)
    return lines


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    g: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        skip = _in_type_checking(path)
        for target, _, line in imports_of(mod, path, known):
            if line in skip or target == mod:
                continue
            # a package's __init__ importing its own submodules is how packages export
            if target.startswith(mod + ".") and path.name == "__init__.py":
                continue
            if target in known:
                g[mod].add(target)
    return g


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    cycles = find_cycles(graph())
    assert not cycles, "import cycles among slicert_ops modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_no_private_names_imported_across_modules() -> None:
    mods = modules()
    bad = []
    for mod, path in mods.items():
        for target, name, line in imports_of(mod, path, set(mods)):
            if name and name.startswith("_") and not name.startswith("__") and target != mod:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {name} from {target}")
    assert not bad, "private names imported from other modules:\n" + "\n".join(bad)


def test_the_checker_finds_a_cycle() -> None:
    """The rule can fail: a two-module cycle and a private import are reported."""
    g = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert find_cycles(g) == [["a", "b"]]
    tree_mod = "slicert_ops.x"
    node = ast.parse("from .y import _z").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve(tree_mod, False, node) == "slicert_ops.y"
