"""Bearer tokens (``auth.mode = "token"``), checked by the router for every surface.

Every request reaches the router, whichever surface it came through, so the
router is where tokens are checked: the HTTP and gRPC gateways only pass on the
caller's token (``Authorization: Bearer ...`` header or metadata), the Python
client and the CLI send theirs (``connect(url, token=...)``, ``--token`` /
``$MEMSPACE_TOKEN``). With ``auth.mode = "none"`` (the default, for loopback use)
nothing is checked.

The tokens file (``auth.tokens_file``, TOML) never holds a token, only its SHA-256::

    [[token]]
    name = "tenant-alpha"            # shown in errors and logs, never the token itself
    sha256 = "9f86d0..."             # printf %s "$TOKEN" | sha256sum
    spaces = ["alpha", "alpha-2"]    # spaces this token may use; ["*"] = every space
    admin = false                    # list spaces, status, metrics (deployment-wide operations)

Rules: a space operation, or a lifecycle operation on one space (create, get,
delete, drain, hibernate, restart, repair), needs a token whose ``spaces``
include that space; ``list_spaces``, ``status`` and ``metrics`` need ``admin``.
No token or an unknown one -> UNAUTHENTICATED (401); a known token outside its
rights -> FORBIDDEN (403).
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memspace.errors import Forbidden, InvalidArgument, Unauthenticated
from memspace.ids import is_valid_space_id

DEPLOYMENT_OPS = frozenset({"list_spaces", "status", "metrics"})
REMEDY = ("send a token: `Authorization: Bearer <token>` (HTTP), metadata `authorization: Bearer <token>` "
          "(gRPC), --token or $MEMSPACE_TOKEN (CLI), connect(url, token=...) (Python)")


@dataclass(frozen=True)
class Grant:
    name: str
    digest: str
    spaces: frozenset[str]
    admin: bool

    def may_use(self, space: str) -> bool:
        return "*" in self.spaces or space in self.spaces


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_grants(path: str | Path) -> dict[str, Grant]:
    """Grants by SHA-256 digest. Raises InvalidArgument naming the file and entry on any mistake."""
    p = Path(path)
    try:
        table = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgument(f"auth.tokens_file {p} does not exist", {"file": str(p)}) from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"auth.tokens_file {p} is not valid TOML: {e}", {"file": str(p)}) from None
    grants: dict[str, Grant] = {}
    for i, entry in enumerate(table.get("token", [])):
        where = f"auth.tokens_file {p}, token #{i + 1}"
        sha = str(entry.get("sha256", "")).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise InvalidArgument(f"{where}: sha256 must be 64 hex digits", {"file": str(p), "entry": i})
        spaces = entry.get("spaces", [])
        if not isinstance(spaces, list) or not all(s == "*" or is_valid_space_id(s) for s in spaces):
            raise InvalidArgument(f"{where}: spaces must be a list of space ids or \"*\"", {"file": str(p)})
        grants[sha] = Grant(str(entry.get("name", f"token #{i + 1}")), sha, frozenset(spaces),
                            bool(entry.get("admin", False)))
    return grants


class Authorizer:
    """Checks a request's token; remembers tokens already seen so a check is one dict lookup."""

    def __init__(self, grants: dict[str, Grant]) -> None:
        self.grants = grants
        self._seen: dict[str, Grant | None] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> Authorizer | None:
        if cfg["auth.mode"] != "token":
            return None
        if not cfg["auth.tokens_file"]:
            raise InvalidArgument("auth.mode = token needs auth.tokens_file", {"setting": "auth.tokens_file"})
        return cls(load_grants(cfg["auth.tokens_file"]))

    def grant(self, token: object) -> Grant:
        if not isinstance(token, str) or not token:
            raise Unauthenticated(f"this server requires a token: {REMEDY}")
        grant = self._seen.get(token, False)
        if grant is False:
            found = self.grants.get(digest(token))
            # constant-time compare of what we found, against timing probes of the digest table
            grant = found if found is not None and hmac.compare_digest(found.digest, digest(token)) else None
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[token] = grant
        if grant is None:
            raise Unauthenticated("token not recognised by this server")
        return grant  # type: ignore[return-value]

    def check(self, token: object, space: str, op: str) -> None:
        grant = self.grant(token)
        if op in DEPLOYMENT_OPS:
            if not grant.admin:
                raise Forbidden(f"token {grant.name!r} may not {op}: it needs admin = true",
                                {"token": grant.name, "op": op})
        elif not grant.may_use(space):
            raise Forbidden(f"token {grant.name!r} may not use memory space {space!r}",
                            {"token": grant.name, "space": space, "op": op})
