"""The ``memspace.v1`` protobuf messages, generated from the packaged proto when first imported.

Nothing generated is committed. On import, :func:`load` looks for the Python code
generated from ``memspace/proto/memspace/v1/memspace.proto`` (package data) in a cache
directory keyed by a hash of the proto text and the protoc / protobuf versions, runs
``grpc_tools.protoc`` into that directory if it is missing, and imports the result
under a private module name. So an edited proto is picked up on the next start, and
an installed package works without the source tree.

Only the message module (``memspace_pb2``) is generated. Services are built from its
descriptors: :func:`generic_handler` turns a servicer object into a gRPC handler and
:func:`stub` gives a client object with one callable per method, for sync and aio
channels alike. That keeps the generated code free of imports by module path (the
generated ``*_pb2_grpc`` module would import ``memspace.v1``, which is not a package).

Cache location: ``$MEMSPACE_PROTO_CACHE``, else ``$XDG_CACHE_HOME/memspace/proto`` (or
``~/.cache/memspace/proto``), else a per-user directory under the system temp dir.
Failure semantics: if protoc fails, :class:`RuntimeError` carries protoc's exit code;
concurrent first imports in several processes are safe (each generates into its own
temporary directory and renames it into place; the loser discards its copy).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import grpc
from google.protobuf import __version__ as protobuf_version

PACKAGE = "memspace.v1"
PROTO = "memspace/v1/memspace.proto"
SERVICES = (f"{PACKAGE}.Spaces", f"{PACKAGE}.Memories")
_MODULE_NAME = "memspace.api._memspace_v1_pb2"


def proto_source() -> bytes:
    """The canonical proto file, read from the package data."""
    return (importlib.resources.files("memspace") / "proto" / PROTO).read_bytes()


def _cache_roots() -> list[Path]:
    roots = []
    if os.environ.get("MEMSPACE_PROTO_CACHE"):
        roots.append(Path(os.environ["MEMSPACE_PROTO_CACHE"]))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    roots.append(Path(xdg) / "memspace" / "proto")
    roots.append(Path(tempfile.gettempdir()) / f"memspace-proto-{os.getuid()}")
    return roots


def _key(source: bytes) -> str:
    from grpc_tools import grpc_version

    h = hashlib.sha256(source)
    h.update(f"\0{grpc_version.VERSION}\0{protobuf_version}".encode())
    return h.hexdigest()[:24]


def _generate(source: bytes, target: Path) -> None:
    """Run protoc into a fresh directory beside ``target`` and rename it into place."""
    from grpc_tools import protoc

    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(tempfile.mkdtemp(prefix=".gen-", dir=target.parent))
    try:
        (work / PROTO).parent.mkdir(parents=True)
        (work / PROTO).write_bytes(source)
        include = str(importlib.resources.files("grpc_tools") / "_proto")
        code = protoc.main(["grpc_tools.protoc", f"-I{work}", f"-I{include}", f"--python_out={work}",
                            f"--pyi_out={work}", str(work / PROTO)])
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit code {code}); see its messages above")
        try:
            os.rename(work, target)
        except OSError:
            if not (target / _generated_file()).exists():   # not a lost race: a real failure
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _generated_file() -> str:
    return PROTO.removesuffix(".proto") + "_pb2.py"


def _usable(root: Path) -> bool:
    """A cache root we may write to and trust: ours, not writable by others."""
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = root.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022 and os.access(root, os.W_OK)


def load() -> ModuleType:
    """Import (generating first if needed) the message module; cached per process."""
    module = sys.modules.get(_MODULE_NAME)
    if module is not None:
        return module
    source = proto_source()
    key = _key(source)
    errors: list[str] = []
    for root in _cache_roots():
        if not _usable(root):
            errors.append(f"{root}: not a private writable directory")
            continue
        target = root / key
        try:
            if not (target / _generated_file()).exists():
                _generate(source, target)
        except OSError as e:
            errors.append(f"{root}: {e}")
            continue
        return _import(target / _generated_file())
    raise RuntimeError("no usable cache directory for the generated protobuf code: " + "; ".join(errors))


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODULE_NAME]
        raise
    return module


#: The generated message module: ``pb2.RememberRequest``, ``pb2.Memory``, ...
pb2: Any = load()


def _method_handler(method: Any, behaviour: Any) -> grpc.RpcMethodHandler:
    deserialize = _message_class(method.input_type.full_name).FromString
    serialize = _message_class(method.output_type.full_name).SerializeToString
    if method.client_streaming:
        raise NotImplementedError(f"client streaming is not used ({method.full_name})")
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(behaviour, request_deserializer=deserialize,
                                                    response_serializer=serialize)
    return grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=deserialize,
                                               response_serializer=serialize)


def _message_class(full_name: str) -> Any:
    """The generated class for a message of this package (or a well-known type)."""
    if full_name.startswith(PACKAGE + "."):
        return getattr(pb2, full_name.removeprefix(PACKAGE + "."))
    from google.protobuf import symbol_database

    return symbol_database.Default().GetSymbol(full_name)


def generic_handler(service: str, servicer: object) -> grpc.GenericRpcHandler:
    """A handler serving every method of ``service`` with the servicer's same-named methods.

    A method the servicer lacks is a programming error, reported here rather than as
    UNIMPLEMENTED at call time.
    """
    descriptor = pb2.DESCRIPTOR.services_by_name[service.removeprefix(PACKAGE + ".")]
    handlers = {}
    for method in descriptor.methods:
        behaviour = getattr(servicer, method.name, None)
        if behaviour is None:
            raise TypeError(f"{type(servicer).__name__} does not implement {method.full_name}")
        handlers[method.name] = _method_handler(method, behaviour)
    return grpc.method_handlers_generic_handler(descriptor.full_name, handlers)


def stub(channel: Any, service: str) -> SimpleNamespace:
    """A client for ``service`` on a ``grpc.Channel`` or ``grpc.aio.Channel``: ``stub(ch, "Memories").Recall(req)``."""
    descriptor = pb2.DESCRIPTOR.services_by_name[service.removeprefix(PACKAGE + ".")]
    calls = {}
    for method in descriptor.methods:
        path = f"/{descriptor.full_name}/{method.name}"
        serialize = _message_class(method.input_type.full_name).SerializeToString
        deserialize = _message_class(method.output_type.full_name).FromString
        factory = channel.unary_stream if method.server_streaming else channel.unary_unary
        calls[method.name] = factory(path, request_serializer=serialize, response_deserializer=deserialize)
    return SimpleNamespace(**calls)
