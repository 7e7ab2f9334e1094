"""The package's shape: no import cycles, data flowing one way, small files."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "src" / "imu_fast"

# A module may import from its own layer and the layers below it, never above.
LAYERS = [
    ("ops", "kernels", "_native", "dispatch", "errors", "model_io", "checks", "modes", "distributed", "extras"),
    ("forget_set",),
    ("capture", "causal_lm", "stages"),
    ("statistics", "sketch"),
    ("influence",),
    ("weights", "losses", "config", "report"),
    ("methods",),
    ("unlearning", "metrics", "lm", "scripts"),
    ("integrations",),  # adapters for other frameworks, over everything below
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(importer: str, is_package: bool, node) -> list[str]:
    """Absolute names of the package modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("imu_fast")]
    if node.level == 0:
        base = node.module or ""
        if not base.startswith("imu_fast"):
            return []
    else:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    names = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        names.append(candidate if (ROOT.parent / (candidate.replace(".", "/") + ".py")).exists()
                     or (ROOT.parent / candidate.replace(".", "/")).is_dir() else base)
    return names


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in ROOT.rglob("*.py"):
        name = module_name(path)
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(resolve(name, path.name == "__init__.py", node))
        graph[name] = {e for e in edges if e != name}
    return graph


def test_no_import_cycles():
    graph = import_graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
            # a package importing its own submodules, which import siblings, is not a cycle
            outside = [m for m in component if not any(m.startswith(o + ".") for o in component)]
            if len(outside) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def layer_of(module: str) -> int | None:
    top = module.split(".")[1] if module.count(".") else None
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    return None


def test_data_flows_one_way():
    upward = []
    for importer, imported in import_graph().items():
        low = layer_of(importer)
        for target in imported:
            high = layer_of(target)
            if low is not None and high is not None and high > low:
                upward.append(f"{importer} -> {target}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("path", sorted(p for p in ROOT.rglob("*.py") if "studies" not in p.parts), ids=str)
def test_files_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 400, f"{path.relative_to(ROOT)} has {lines} lines; split it by concept"
