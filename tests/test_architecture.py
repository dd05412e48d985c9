"""The layout DESIGN.md fixes, checked on the source with the stdlib's `ast`.

- No import cycles among the modules of `gateway/` and `storage/`, counting every import:
  module level, inside functions and under `TYPE_CHECKING` alike, so a cycle cannot be
  hidden by deferring one side of it.
- An import inside a function is only for an optional extra chosen at run time (JetStream,
  the Python client, one of the two HTTP servers), never to dodge a cycle.
- `storage` never imports `gateway`; nats-py is imported only inside `storage/jetstream/`
  and the gateway modules that the jetstream backend alone loads.
- The plain install (no extras) can import everything the embedded default runs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "storage")

# What a function may import, and why: each is an optional part chosen at run time.
DEFERRED_IMPORTS = {
    "storage.jetstream": "the jetstream extra (nats-py), only when that backend is chosen",
    "gateway.groups.jetstream_store": "needs storage.jetstream, likewise",
    "logway_client.cli": "the client package, installed on its own",
    "gateway.cli": "the server's command line, not loaded for a client command (gateway/entry.py)",
    "granian": "one of two HTTP servers; jemalloc's settings must precede its import",
    "hypercorn": "the other HTTP server",
    "gateway.kafka": "the Kafka listener (the kafka extra: crc32c, cramjam), only with a port",
}
# Modules that load nats-py, and so only the jetstream backend may load them.
NATS_MODULES = ("storage.jetstream", "gateway.groups.jetstream_store")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    deferred: bool  # inside a function


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            deferred = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            line = getattr(child, "lineno", 0)
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from gateway.groups import errors` imports the submodule
                names = [f"{base}.{alias.name}" for alias in child.names] or [base]
            for name in names:
                yield Import(module, name, line, in_function)
            yield from visit(child, deferred)

    yield from visit(tree, False)


def all_imports() -> list[Import]:
    modules = source_modules()
    return [
        found for module, path in modules.items() for found in imports_of(module, path, modules)
    ]


def test_no_import_cycles() -> None:
    modules = source_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for found in all_imports():
        target = _resolve(found.imported, modules)
        if target is not None and target != found.importer:
            graph[found.importer].add(target)
    # Tarjan's strongly connected components: any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
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

    for node in sorted(graph):
        if node not in index:
            connect(node)
    assert not cycles, f"import cycles: {cycles}"


def test_function_level_imports_are_only_optional_parts() -> None:
    offenders = [
        f"{found.importer}:{found.line} imports {found.imported}"
        for found in all_imports()
        if found.deferred
        and not any(
            found.imported == allowed or found.imported.startswith(allowed + ".")
            for allowed in DEFERRED_IMPORTS
        )
    ]
    assert not offenders, "import at module level (or add an optional extra): " + "; ".join(
        offenders
    )


def test_storage_never_imports_gateway() -> None:
    offenders = [
        f"{found.importer}:{found.line}"
        for found in all_imports()
        if found.importer.startswith("storage") and found.imported.split(".")[0] == "gateway"
    ]
    assert not offenders


def test_nats_is_imported_only_by_the_jetstream_parts() -> None:
    offenders = [
        f"{found.importer}:{found.line}"
        for found in all_imports()
        if found.imported.split(".")[0] == "nats" and not found.importer.startswith(NATS_MODULES)
    ]
    assert not offenders
    # and those modules are reached from the rest only by a deferred import
    eager = [
        f"{found.importer}:{found.line} imports {found.imported}"
        for found in all_imports()
        if found.imported.startswith(NATS_MODULES)
        and not found.importer.startswith(NATS_MODULES)
        and not found.deferred
    ]
    assert not eager


@pytest.mark.parametrize("module", ["gateway.cli", "gateway.app", "gateway.server"])
def test_the_embedded_default_imports_without_nats(module: str) -> None:
    """Import the entry points with nats-py made unimportable: the README's run command."""
    code = (
        "import sys; sys.modules['nats'] = None\n"  # `import nats` now raises ImportError
        f"import {module}\n"
        "loaded = [m for m in sys.modules if m.startswith(('storage.jetstream', 'nats'))]\n"
        "assert loaded == ['nats'], loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
