"""Imports point one way. Walks every import statement of the project (module level and
inside functions: a lazy import is still a dependency) with `ast`, and checks the layer
rules of docs/architecture.md, then that no import cycle exists at module level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edgestack", "training", "export", "serving", "batch", "bundle", "clients", "benchmarks", "cli")
WEB = {"bentoml", "starlette", "fastapi", "uvicorn", "httptools", "uvloop"}
TORCH = {"torch", "torchvision", "transformers", "safetensors", "onnxscript"}

# layer -> the project layers it may import (itself included)
ALLOWED = {
    "families": {"families"},
    "core": {"families", "core"},
    "training": {"families", "core", "training"},
    "export": {"families", "core", "training", "export"},
    "serving": {"families", "core", "serving"},
    "batch": {"families", "core", "batch"},
    "bundle": {"families", "core", "bundle", "edge_runner"},  # the bundle maker ships (and runs) the runner
    "edge_runner": {"families", "edge_runner"},
    "clients": {"families", "core", "clients"},
    "benchmarks": {"families", "core", "training", "export", "serving", "batch", "bundle", "edge_runner", "clients",
                   "benchmarks"},
    "cli": {"families", "core", "training", "export", "serving", "batch", "bundle", "clients", "benchmarks", "cli"},
}
# layer -> third-party packages it must not import
FORBIDDEN = {"families": WEB | TORCH | {"onnxruntime", "onnx"}, "core": WEB | TORCH, "serving": TORCH,
             "batch": WEB | TORCH, "bundle": WEB | TORCH, "edge_runner": WEB | TORCH | {"PIL"},
             "clients": TORCH, "export": WEB, "training": WEB}


def layer(module: str) -> str | None:
    """The layer of a project module name, None for anything else (stdlib, third party)."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] == "edgestack":
        if len(parts) > 1 and parts[1] == "families":
            return "families"
        return "core"
    if parts[0] == "bundle" and len(parts) > 1 and parts[1] == "edge_runner":
        return "edge_runner"
    return parts[0]


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            parts = list(relative.parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, *, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file; relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((name, node.lineno))
            found += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]
        elif top_level_only and isinstance(node, ast.Try):  # `try: from .families import x` at module level
            found += imports_of_nodes(node, module, path)
    return found


def imports_of_nodes(node, module, path):
    source = ast.Module(body=node.body, type_ignores=[])
    return [(n.module, n.lineno) for n in ast.walk(source) if isinstance(n, ast.ImportFrom) and n.module and not n.level]


def problems_of(module: str, path: Path) -> list[str]:
    """Every import of `module` (the file `path`) that breaks the layer rules, as 'line N: ...'."""
    own = layer(module)
    problems = []
    for name, line in imports_of(module, path):
        target = layer(name)
        if target is None:
            if name.split(".")[0] in FORBIDDEN.get(own, set()):
                problems.append(f"line {line}: {own} must not import {name}")
        elif target not in ALLOWED[own]:
            problems.append(f"line {line}: {own} ({module}) imports {name} ({target})")
    return problems


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports at module level."""
    graph = {}
    for module, path in modules.items():
        edges = set()
        for name, _ in imports_of(module, path, top_level_only=True):
            while name and name not in modules:  # `from a.b import c` names a.b.c: walk up to a module
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.add(name)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import cycle (a -> b -> ... -> a) in `graph`, or None. A package importing its own
    submodule is how packages work, not a cycle."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(cycle, cycle[1:])):
                    return cycle
            elif nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


MODULES = project_modules()


def test_every_package_is_found():
    assert {"edgestack.registry", "edgestack.families.image", "cli", "export.build", "serving.service",
            "bundle.edge_runner.image", "benchmarks.timing"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module):
    problems = problems_of(module, MODULES[module])
    assert not problems, "\n".join(problems)


def test_no_import_cycle_at_module_level():
    cycle = find_cycle(import_graph(MODULES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    """Write modules {dotted name: source} under `root` as files; returns {name: path}."""
    written = {}
    for name, source in files.items():
        path = root.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        written[name] = path
    return written


def test_the_rules_fail_on_modules_that_break_them(tmp_path):
    """The checker itself, shown modules that break each kind of rule (written to a temporary
    folder, never into the tree): every break is caught, with its line."""
    bad = write(tmp_path, {
        "edgestack.leaky": "import numpy\n\ndef f():\n    from cli.serve import main\n    import torch\n",
        "bundle.edge_runner.heavy": "from edgestack import artifact\n",
        "serving.webbed": "from ..training import image\n",  # a relative import that climbs out of serving
        "edgestack.families.netted": "import onnxruntime\n",
    })
    assert problems_of("edgestack.leaky", bad["edgestack.leaky"]) == [
        "line 4: core (edgestack.leaky) imports cli.serve (cli)",
        "line 4: core (edgestack.leaky) imports cli.serve.main (cli)",
        "line 5: core must not import torch"]
    assert any("edge_runner" in p and "edgestack" in p for p in problems_of("bundle.edge_runner.heavy",
                                                                                bad["bundle.edge_runner.heavy"]))
    assert problems_of("serving.webbed", bad["serving.webbed"])[0].startswith("line 1: serving (serving.webbed) imports "
                                                                              "training")
    assert problems_of("edgestack.families.netted", bad["edgestack.families.netted"]) == [
        "line 1: families must not import onnxruntime"]
    # and modules that follow the rules pass
    good = write(tmp_path / "good", {"serving.fine": "import numpy\nfrom edgestack import artifact\n"})
    assert problems_of("serving.fine", good["serving.fine"]) == []


def test_the_cycle_check_fails_on_a_cycle(tmp_path):
    modules = write(tmp_path, {"serving.a": "from serving import b\n", "serving.b": "import serving.c\n",
                               "serving.c": "from serving.a import x\n", "serving.d": "import serving.a\n"})
    assert find_cycle(import_graph(modules)) == ["serving.a", "serving.b", "serving.c", "serving.a"]
    modules = write(tmp_path / "ok", {"serving.a": "from serving import b\n", "serving.b": "import numpy\n"})
    assert find_cycle(import_graph(modules)) is None
