"""The house's structure: no import circle between cnnlab's modules (counting the imports made
inside functions, which hide one), and the README's code map names every file it maps."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cnnlab"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """cnnlab module -> the cnnlab modules it imports, anywhere in its body. Importing a
    package's submodule counts as importing the submodule, not the package."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
                    break  # the most specific module the import names
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_circle_hidden_in_a_function():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    graph = import_graph()
    assert "cnnlab.data" in graph["cnnlab.training"]  # the graph sees the real imports
    assert circles(graph) == []


def test_hardware_modules_import_nothing_of_the_data_package():
    graph = import_graph()
    for module in ("cnnlab.devices", "cnnlab.distributed", "cnnlab.threads"):
        assert not {m for m in graph[module] if m.startswith("cnnlab.data")}, module


def code_map() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Development"):]
    return section[section.index("```") + 3:section.index("```", section.index("```") + 3)]


def test_the_readme_code_map_names_every_file_and_only_files_that_exist():
    text = code_map()
    entries = re.findall(r"^(\S+)\s", text, re.M)  # the paths the map's lines begin with
    for entry in entries:
        assert (ROOT / entry).exists(), f"the code map names {entry}, which does not exist"
    names = set(re.findall(r"[\w.]+\.(?:py|sh|gz|md)\b", text))
    mapped_folders = [entry for entry in entries if entry.endswith("/")]
    for folder in mapped_folders:
        for path in (ROOT / folder).iterdir():
            if path.is_file() and path.suffix in (".py", ".sh", ".gz", ".md") and folder != "tests/":
                assert path.name in names or path.name == "__init__.py", f"{folder}{path.name} is not in the code map"
    for path in PACKAGE.glob("*.py"):
        assert f"cnnlab/{path.name}" in text, f"cnnlab/{path.name} is not in the code map"
    for path in PACKAGE.iterdir():
        if path.is_dir() and path.name != "__pycache__":
            assert f"cnnlab/{path.name}/" in text, f"cnnlab/{path.name}/ is not in the code map"
