"""Which package may import which: read from the source with ast, nothing imported or run."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import services

SERVICES = Path(services.__file__).parent


def imported_modules(source: str, package: str) -> Iterator[str]:
    """Every module a file of `package` imports, wherever the import stands (a function body counts too)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield module
            # `from services import gateway` imports the package too.
            yield from (f"{module}.{alias.name}" for alias in node.names)


def imports_of(package: str, forbidden: str) -> list[str]:
    found = []
    for path in sorted((SERVICES.parent / package.replace(".", "/")).rglob("*.py")):
        within = ".".join(path.relative_to(SERVICES.parent).parts[:-1])
        for module in imported_modules(path.read_text(), within):
            if module == forbidden or module.startswith(forbidden + "."):
                found.append(f"{path.relative_to(SERVICES.parent)} imports {module}")
    return found


def test_the_read_models_never_import_the_gateway() -> None:
    # The gateway reads through services.readmodel; the other way round would be a cycle.
    assert imports_of("services.readmodel", "services.gateway") == []


def test_every_form_of_import_is_seen() -> None:
    source = """
import services.gateway.tokens
from services.gateway.operations import PENDING
from services import gateway
from ..gateway import auth

def late():
    from services.gateway import models
"""
    found = set(imported_modules(source, "services.readmodel"))
    assert {
        "services.gateway.tokens",
        "services.gateway.operations",
        "services.gateway",
        "services.gateway.auth",
        "services.gateway.models",
    } <= found


def package_graph(*, top_level_only: bool = False) -> dict[str, set[str]]:
    """Each part of services/ (a package, or a module like cli) -> the other parts it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SERVICES.rglob("*.py")):
        part = path.relative_to(SERVICES).with_suffix("").parts[0]
        within = ".".join(path.relative_to(SERVICES.parent).parts[:-1])
        source = path.read_text()
        if top_level_only:
            tree = ast.parse(source)
            source = "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom))
        used = graph.setdefault(part, set())
        for module in imported_modules(source, within):
            names = module.split(".")
            if names[0] == "services" and len(names) > 1 and names[1] != part:
                used.add(names[1])
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle of `graph`, each once, from the first of its parts in sorted order."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(path: list[str]) -> None:
        for following in sorted(graph.get(path[-1], ())):
            if following == path[0] and frozenset(path) not in seen:
                seen.add(frozenset(path))
                found.append([*path, following])
            elif following not in path:
                walk([*path, following])

    for start in sorted(graph):
        walk([start])
    return found


def test_no_two_packages_depend_on_each_other_even_through_a_third() -> None:
    # A cycle means neither side can be read, tested or changed without the other.
    assert cycles(package_graph()) == []


def test_the_cycle_finder_sees_a_cycle_through_a_third_package() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_production_package_imports_the_dev_tooling() -> None:
    # services/dev is not in the image; only the command line reaches it, when asked for it.
    graph = package_graph()
    assert sorted(part for part, used in graph.items() if "dev" in used and part not in ("dev", "cli")) == []
    assert "dev" not in package_graph(top_level_only=True)["cli"]
