"""The import graph of yolo_prune, read with ast (function-local imports included): the layering holds.

Packages are the first name below ``yolo_prune`` (top-level modules count as their own package). No module and
no package takes part in an import cycle, except the known ones listed below (none today): fixing one only
shrinks the list, a new one fails.
"""
import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# package -> the yolo_prune packages it may import (docs/ARCHITECTURE.md, "direction of dependencies")
ALLOWED = {
    "layers": set(),
    "graph": {"layers"},
    # models/ is below everything that trains or prunes; the family registry keeps it free of train/ (losses)
    "models": {"layers", "io", "offline"},
    # prune/ never imports train/ (Taylor gets its gradient function from the caller) nor the pipeline
    "prune": {"layers", "graph", "models", "data", "eval", "export", "io", "versions", "runtime"},
    # runtime/ (backends, ONNX sessions, runners, host threads) is below eval/ and export/, which both use it
    "runtime": set(),
    # eval/ runs ONNX files through runtime/, never through export/ (export/ imports eval/, not the reverse)
    "eval": {"layers", "data", "models", "io", "runtime"},
    # the report draws plain data the pipeline gathers: it reads no stage, model or export module
    "report": {"io", "plotting"},
    "plotting": {"io"},
    # the tools' parsers: below both the tools (commands/) and the pipeline, which writes commands with them
    "flags": {"prune", "train"},
}
# single modules of the core that other packages import: they may only lean on layers/
# models.validate (the size/structure limits) imports nothing of ours, so the spec may use it
LEAF_MODULES = {"yolo_prune.models.spec": {"yolo_prune.layers", "yolo_prune.models.validate"},
                "yolo_prune.models.validate": set(), "yolo_prune.eval.profile": {"yolo_prune.layers"}}
# leaf modules that import nothing of ours (checked above): any package may use them without an upward edge or
# a cycle (runtime/ checks ONNX metadata with the same validators as the model loaders)
SHARED_LEAVES = {"yolo_prune.models.validate"}
# cycles that remain elsewhere (module -> module edges that close them); fixing one only shrinks this list
KNOWN_CYCLE_EDGES: set = set()


def _modules() -> dict:
    """{dotted module name: (path, is package __init__)} of every module of yolo_prune."""
    mods = {}
    for f in (ROOT / "yolo_prune").rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return mods


def _targets(module: str, is_pkg: bool, node, mods: dict) -> list:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in mods]
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # `from pkg import sub` imports the submodule when there is one, else a name of pkg/__init__
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]


@lru_cache(maxsize=1)
def import_graph() -> dict:
    """{module: set of yolo_prune modules it imports anywhere in its body}."""
    mods = _modules()
    edges = {}
    for name, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.setdefault(name, set()).update(
                    t for t in _targets(name, is_pkg, node, mods) if t in mods and t != name)
    return edges


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "yolo_prune"


def _reaches(graph: dict, start, goal) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph.get(node, ()))
    return False


def cycle_edges(edges: dict) -> set:
    """Module edges that close a cycle, between modules or between their packages."""
    packages = {}
    for a, targets in edges.items():
        packages.setdefault(_package(a), set()).update(_package(b) for b in targets if _package(b) != _package(a))
    return {(a, b) for a, targets in edges.items() for b in targets
            if _reaches(edges, b, a) or (_package(a) != _package(b) and _reaches(packages, _package(b), _package(a)))}


def test_import_graph_sees_function_local_imports():
    edges = import_graph()
    assert "yolo_prune.models.ultralytics" in edges["yolo_prune.models"]  # imported inside a function
    assert "yolo_prune.graph.trace" in edges["yolo_prune.graph"]


def test_core_packages_import_only_downward():
    for module, targets in import_graph().items():
        allowed = ALLOWED.get(_package(module))
        if allowed is not None:
            bad = {t for t in targets if _package(t) != _package(module) and _package(t) not in allowed
                   and t not in SHARED_LEAVES}
            assert not bad, f"{module} imports {sorted(bad)}; {_package(module)}/ may only import {sorted(allowed)}"
        if module in LEAF_MODULES:
            bad = targets - LEAF_MODULES[module]
            assert not bad, f"{module} imports {sorted(bad)}; it may only import {sorted(LEAF_MODULES[module])}"


def test_cycle_edges_finds_module_and_package_cycles():
    # the detector itself: a module cycle, and a package cycle made of modules that do not form one
    assert cycle_edges({"p.a.x": {"p.b.y"}, "p.b.y": {"p.a.x"}}) == {("p.a.x", "p.b.y"), ("p.b.y", "p.a.x")}
    assert cycle_edges({"p.a.x": {"p.b.y"}, "p.b.z": {"p.a.w"}}) == {("p.a.x", "p.b.y"), ("p.b.z", "p.a.w")}
    assert cycle_edges({"p.a.x": {"p.b.y"}, "p.b.y": {"p.c.z"}}) == set()


def test_eval_and_export_share_runtime_without_a_cycle():
    edges = import_graph()
    assert "yolo_prune.runtime.ort" in edges["yolo_prune.eval.infer"]  # .onnx models run through runtime/
    assert any(_package(t) == "eval" for t in edges["yolo_prune.export.benchmark"])
    assert not any(_package(t) == "export" for m, ts in edges.items() if _package(m) == "eval" for t in ts)


def test_no_new_import_cycle():
    new = cycle_edges(import_graph()) - KNOWN_CYCLE_EDGES
    assert not new, "import cycle(s) through: " + ", ".join(f"{a} -> {b}" for a, b in sorted(new))
