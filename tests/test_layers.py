"""The layers import one way (DESIGN.md): nothing imports upward, nothing imports sideways
between train and search, and no module takes part in an import cycle."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# lower number: lower layer; a module may import its own layer and any lower one
LAYERS = {"search_spaces": 0, "supernet": 1, "nas.errors": 2, "nas.io": 3, "nas.config": 3, "nas.plots": 4,
          "nas.pose": 5, "nas.subnet": 6, "nas.latency": 7, "nas.train": 8, "nas.search": 8, "nas.app": 9, "nas": 10}
PACKAGES = ("nas", "supernet", "search_spaces")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    """The longest LAYERS key that ``module`` lies in."""
    return max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)


def project_imports() -> dict[str, set[str]]:
    """Every project module and the project modules it imports (at any depth of its code)."""
    graph = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name, found = module_name(path), set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                elif isinstance(node, ast.Import):
                    found |= {a.name for a in node.names}
            graph[name] = found
    modules = set(graph)
    return {name: {m for m in found if m in modules and m != name} for name, found in graph.items()}


def test_no_module_imports_a_higher_layer_or_a_sibling_one():
    wrong = []
    for name, imported in project_imports().items():
        for other in imported:
            a, b = layer(name), layer(other)
            if LAYERS[b] > LAYERS[a] or (LAYERS[b] == LAYERS[a] and a != b and not other.startswith(a + ".")):
                wrong.append(f"{name} ({a}) imports {other} ({b})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = project_imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_no_module_compares_a_head_types_name_outside_the_heads_and_the_space():
    """A head type is an interface (``supernet.heads``, ``nas.pose.codecs``): everything else asks
    the head of an arch config, so a new head type touches its head, its codec and its space entry."""
    import re

    from search_spaces.space import HEAD_TYPES

    owners = ("supernet/heads/", "nas/pose/codecs/", "search_spaces/space.py")
    named = re.compile(r"""(==|!=|\bin)\s*\(?\s*["'](%s)["']|["'](%s)["']\s*(==|!=|\bin\b)""" % (
        "|".join(HEAD_TYPES), "|".join(HEAD_TYPES)))
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for package in PACKAGES for path in (ROOT / package).rglob("*.py")
             if not str(path.relative_to(ROOT)).startswith(owners)
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if named.search(line)]
    assert not found, "\n".join(found)
