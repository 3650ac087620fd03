"""Reading a Server-Sent Events stream: the frames of the HTTP gateway's change feed.

:func:`parse_frames` turns the lines of a ``text/event-stream`` body into
:class:`Frame` objects, following the parts of the SSE format the gateway uses:
``id:``, ``event:``, ``data:`` (several are joined with newlines) and ``retry:``
fields, one optional space after the colon, a blank line ending each frame, and
``:`` comment lines (kept on the frame, as the gateway names the stream's start
position in one). Unknown fields are ignored, as the format asks. A frame still
open when the lines end is dropped: it was cut off, and the event is sent again
after a reconnect with ``Last-Event-ID``.

:class:`FeedItem` is one decoded item of the change feed
(:meth:`memspace.client_http.HttpTransport.stream_events`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: The comment that opens a feed: ``: subscribed to SPACE after SEQ``.
_SUBSCRIBED = re.compile(r"^subscribed to \S+ after (\d+)$")


@dataclass
class Frame:
    """One SSE frame: ``event`` is None when the frame names none (the format's "message")."""

    event: str | None = None
    data: list[str] = field(default_factory=list)
    id: str | None = None
    retry_ms: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.data)

    @property
    def empty(self) -> bool:
        return (self.event is None and not self.data and self.id is None and self.retry_ms is None
                and not self.comments)


def parse_frames(lines: Iterable[str]) -> Iterator[Frame]:
    """The frames of ``lines`` (without their line endings), each yielded at its blank line.

    A frame of comments only is yielded too (the gateway's ``: ping``), so a reader
    sees that the connection is alive.
    """
    frame = Frame()
    for line in lines:
        if not line:
            if not frame.empty:
                yield frame
            frame = Frame()
            continue
        if line.startswith(":"):
            frame.comments.append(line[1:].strip())
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            frame.data.append(value)
        elif name == "event":
            frame.event = value
        elif name == "id" and "\0" not in value:
            frame.id = value
        elif name == "retry" and value.isdigit():
            frame.retry_ms = int(value)


def subscribed_after(frame: Frame) -> int | None:
    """The position a feed starts at, from its opening ``: subscribed to SPACE after SEQ`` comment."""
    for comment in frame.comments:
        match = _SUBSCRIBED.match(comment)
        if match:
            return int(match.group(1))
    return None


@dataclass(frozen=True)
class FeedItem:
    """One item of the change feed.

    ``kind`` is ``"change"`` (a data event: ``data`` is the event as the ``events``
    op returns it, with ``seq`` and ``type``), ``"gap"`` (``{"after", "last_seq"}``:
    events after ``after`` are no longer kept), ``"lifecycle"`` (``{"space", "old",
    "new", ...}``: a state transition of the space), ``"error"`` (the error envelope's
    ``{"code", "message", "details"}``: the server reports a problem and retries or
    ends the stream) or ``"reconnecting"`` (``{"reason", "delay_s"}``: the connection
    was lost or refused for now; it is opened again after ``delay_s``).
    """

    kind: str
    data: dict[str, Any]


__all__ = ["FeedItem", "Frame", "parse_frames", "subscribed_after"]
