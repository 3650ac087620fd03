"""Memory space ids and memory ids: what is valid, and errors that say where a bad id came from.

A space id is 3-64 characters of ``[a-z0-9_-]`` starting with a letter or
digit. It names a directory and a zmq identity, so nothing is ever
normalised: ``Alpha`` is rejected, not lower-cased.
"""

from __future__ import annotations

import re
import secrets
import time

from memspace.errors import InvalidArgument, InvalidSpaceId

_SPACE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{2,63}")
# Memory ids are chosen by clients; they travel in URLs and file records, so keep them plain.
_MEMORY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")



def validate_space_id(value: object, source: str = "argument") -> str:
    """Return ``value`` if it is a valid space id, else raise InvalidSpaceId naming ``source``."""
    if not isinstance(value, str):
        raise InvalidSpaceId(
            f"memory space id from {source} must be a string, got {type(value).__name__}",
            {"source": source},
        )
    if _SPACE_ID.fullmatch(value):
        return value
    shown = value if len(value) <= 80 else value[:77] + "..."
    if not value:
        why = "it is empty"
    elif len(value) < 3:
        why = "it is shorter than 3 characters"
    elif len(value) > 64:
        why = f"it is {len(value)} characters long (at most 64)"
    elif not (value[0].isascii() and (value[0].islower() or value[0].isdigit())):
        why = "it must start with a lower-case letter or a digit"
    else:
        bad = sorted({c for c in value if not re.fullmatch(r"[a-z0-9_-]", c)})
        why = "it contains " + ", ".join(repr(c) for c in bad) + " (allowed: a-z 0-9 _ -)"
    raise InvalidSpaceId(
        f"invalid memory space id {shown!r} from {source}: {why}",
        {"source": source, "value": shown},
    )


def is_valid_space_id(value: object) -> bool:
    return isinstance(value, str) and _SPACE_ID.fullmatch(value) is not None


def validate_memory_id(value: object, field: str = "id") -> str:
    if isinstance(value, str) and _MEMORY_ID.fullmatch(value):
        return value
    shown = repr(value)[:80]
    raise InvalidArgument(
        f"invalid memory id {shown} in {field!r}: 1-128 characters of A-Z a-z 0-9 . _ : @ -, "
        "starting with a letter or digit",
        {"field": field},
    )


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_memory_id() -> str:
    """A 26-character lower-case ULID: 48-bit millisecond time + 80 random bits.

    Ids sort by creation time, which keeps pages and logs readable.
    """
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))
