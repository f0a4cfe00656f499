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
