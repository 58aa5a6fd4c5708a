"""The package's layering, read from its source (every import statement, those inside functions too):
no import circles, and the core imports nothing of the DALI side."""

import ast
from pathlib import Path

import dali_ipmix

PACKAGE = Path(dali_ipmix.__file__).parent

#: The array core: arrays in, arrays out; usable without DALI.
CORE = ("arrays", "config", "ops", "laws", "plan", "execute", "augment", "keys", "checks", "constants")
#: The DALI side (besides every module that imports nvidia.dali itself).
DALI_SIDE = ("presets", "sources", "graphs", "fn", "native", "iterator", "mixing_cache", "demo", "cli")


def _modules():
    """``{dotted name relative to the package ("" for __init__): path}``."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name, path, modules):
    """The package modules ``name`` imports (and "nvidia.dali" when it imports DALI)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                target = "dali_ipmix" + ("." + target if target else "")
            else:
                target = node.module
            subs = [f"{target}.{a.name}" for a in node.names]
            subs = [s for s in subs if s.removeprefix("dali_ipmix.") in modules]
            # ``from . import checks`` imports the submodule; ``from dali_ipmix import X`` the package.
            targets = subs if len(subs) == len(node.names) else [target, *subs]
        else:
            continue
        for t in targets:
            if t.startswith("nvidia.dali"):
                found.add("nvidia.dali")
            elif t == "dali_ipmix" or t.startswith("dali_ipmix."):
                mod = t.removeprefix("dali_ipmix").removeprefix(".")
                if mod in modules and mod != name:
                    found.add(mod)
    return found


def import_graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _circles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _reach(graph, start):
    seen, todo = set(), [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_graph_is_read():
    graph = import_graph()
    assert set(CORE) <= set(graph) and "plan" in graph["augment"] and "nvidia.dali" in graph["fn"]


def test_no_import_circles():
    assert _circles(import_graph()) == []


def test_the_core_imports_nothing_of_the_dali_side():
    graph = import_graph()
    dali_side = set(DALI_SIDE) | {"nvidia.dali"} | {m for m, deps in graph.items() if "nvidia.dali" in deps}
    bad = {m: sorted(_reach(graph, m) & dali_side) for m in CORE}
    assert {m: v for m, v in bad.items() if v} == {}
