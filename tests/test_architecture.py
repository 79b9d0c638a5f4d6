"""The shape of the package, checked so it stays true: module size, import cycles, layers.

Every import of an ``rrsis`` module counts, including imports inside functions: an import
cycle hidden in a function body is still a cycle. Layers point down:
``data`` -> ``models`` -> ``infer`` / ``eval`` -> ``engine`` / ``serve`` -> ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 400
#: Lower numbers are lower layers; a module may import its own layer or lower ones only.
LAYERS = {
    "errors": 0,
    "weights": 0,
    "data": 1,
    "models": 2,
    "infer": 3,
    "eval": 3,
    "engine": 4,
    "serve": 4,
    "cli": 5,
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / "rrsis").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``rrsis`` modules that ``name`` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules]
            # `from rrsis.cli import data` imports the submodule, not (only) the package.
            candidates = subs if len(subs) == len(node.names) else [module, *subs]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in modules and c != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_no_module_over_the_line_limit() -> None:
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in _modules().items()
    }
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_layers_point_down() -> None:
    upward = [
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if _layer(source) is not None
        and _layer(target) is not None
        and _layer(target) > _layer(source)
    ]
    assert not upward, f"imports that reach a higher layer: {upward}"


def test_serve_stands_on_inference_alone() -> None:
    # The web app is a front end of the one inference path, beside the training engine.
    allowed = ("errors", "weights", "data", "models", "infer", "serve")
    wrong = [
        f"{source} -> {target}"
        for source, targets in _graph().items()
        if source.startswith("rrsis.serve")
        for target in targets
        if len(target.split(".")) > 1 and target.split(".")[1] not in allowed
    ]
    assert not wrong, f"rrsis.serve imports outside inference: {wrong}"


def test_imports_inside_functions_count(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from rrsis.infer import scene\n    return scene\n")
    modules = {"rrsis.infer.scene": Path("scene.py"), "rrsis.infer": Path("__init__.py")}
    assert _imports("rrsis.data.probe", module, modules) == {"rrsis.infer.scene"}
