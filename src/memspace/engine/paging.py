"""Paging through memories in id order with opaque cursors.

A cursor is the last id of the previous page, base64url-encoded without
padding: it names a position in id order, not an offset, so a walk stays
consistent while memories come and go (nothing present for the whole walk is
skipped or repeated). A cursor this module did not produce is InvalidArgument
naming ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Sequence

from memspace.engine import validate
from memspace.engine.validate import invalid
from memspace.errors import InvalidArgument

MAX_PAGE = 1000


def page_ids(ids: Sequence[str], limit: int, cursor: str | None) -> tuple[Sequence[str], str | None]:
    """The ids (sorted) after ``cursor``, at most ``limit``, and the next page's cursor (None
    when this page is the last)."""
    after = "" if cursor is None else decode_cursor(cursor)
    start = bisect.bisect_right(ids, after) if after else 0
    chunk = ids[start:start + limit]
    more = start + limit < len(ids)
    return chunk, encode_cursor(chunk[-1]) if more and chunk else None


def encode_cursor(memory_id: str) -> str:
    return base64.urlsafe_b64encode(memory_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The id ``cursor`` names; InvalidArgument (field ``cursor``) if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
        return validate.memory_id(raw, "cursor")
    except (binascii.Error, UnicodeDecodeError, InvalidArgument, TypeError):
        raise invalid("cursor", f"{cursor!r} is not a cursor this engine returned") from None
