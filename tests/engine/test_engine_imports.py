"""The engine stays I/O-free: no module of memspace.engine imports files, sockets, clocks or threads."""

from __future__ import annotations

import ast
from pathlib import Path

import memspace.engine

ENGINE_DIR = Path(memspace.engine.__file__).parent
FORBIDDEN = {
    "os", "time", "socket", "zmq", "grpc", "asyncio", "threading", "subprocess", "multiprocessing", "pathlib",
    "io", "logging", "shutil", "tempfile", "mmap", "select", "selectors", "signal", "sqlite3", "fcntl",
    "datetime", "random", "uuid", "secrets", "urllib", "http", "httpx", "requests", "concurrent",
}
# Optional extras may be imported lazily inside a function (they load a model or a C index).
LAZY_ALLOWED = {"model2vec", "hnswlib"}
# Inside memspace the engine may use only itself and the leaf modules without I/O.
MEMSPACE_ALLOWED = ("memspace.engine", "memspace.errors", "memspace.ids")


def imported_modules(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(module, line, at_module_level) for every import in the file."""
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((alias.name, child.lineno, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    out.append((f"memspace.engine.{child.module or ''}", child.lineno, top))
                else:
                    out.append((child.module or "", child.lineno, top))
            visit(child, inner)

    visit(tree, True)
    return out


def violations(source: str, name: str) -> list[str]:
    bad = []
    for module, line, top in imported_modules(ast.parse(source, name)):
        root = module.split(".")[0]
        if root in FORBIDDEN:
            bad.append(f"{name}:{line} imports {module}")
        elif root in LAZY_ALLOWED and top:
            bad.append(f"{name}:{line} imports the optional {module} at module level")
        elif root == "memspace" and not module.startswith(MEMSPACE_ALLOWED):
            bad.append(f"{name}:{line} imports {module} (outside the I/O-free core)")
    return bad


def test_engine_modules_import_no_io() -> None:
    files = sorted(ENGINE_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"store.py", "spreading.py", "decay.py", "embedder.py", "records.py",
                                       "policy.py", "__init__.py", "model.py", "tiers.py"}
    bad = [v for f in files for v in violations(f.read_text(), f.name)]
    assert bad == []


def test_the_walker_catches_forbidden_imports() -> None:
    assert violations("import os\n", "x.py") == ["x.py:1 imports os"]
    assert violations("from time import monotonic\n", "x.py") == ["x.py:1 imports time"]
    assert violations("import os.path as p\n", "x.py") == ["x.py:1 imports os.path"]
    assert violations("if True:\n    import socket\n", "x.py") == ["x.py:2 imports socket"]
    assert violations("import hnswlib\n", "x.py") == ["x.py:1 imports the optional hnswlib at module level"]
    assert violations("def f():\n    import hnswlib\n", "x.py") == []
    assert violations("def f():\n    import threading\n", "x.py") == ["x.py:2 imports threading"]
    assert violations("from memspace.storage import wal\n", "x.py") == [
        "x.py:1 imports memspace.storage (outside the I/O-free core)"]
    assert violations("from .store import Engine\nimport numpy\n", "x.py") == []
