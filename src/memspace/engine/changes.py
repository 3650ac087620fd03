"""Change events: what a space's feed (SSE, gRPC Subscribe, ``memspace events``) says about a record.

One event per WAL record that changes memories, identified by the record's
sequence number, so a subscriber resumes exactly where it stopped. TOUCH
records (recall reinforcement) are not changes and produce no event. A
restore (an import) is a "remember" event whose memories have the outcome
"restored"; its ``at`` is when the restore was made, not the memories' own times.
"""

from __future__ import annotations

from typing import Any

from memspace.engine import records

_OUTCOME = {"store": "stored", "merge": "merged", "update": "updated"}


def change_event(seq: int, rec: records.Record) -> dict[str, Any] | None:
    if isinstance(rec, records.Remember):
        memories = []
        at = 0.0
        for entry in rec.entries:
            item: dict[str, Any] = {"id": entry.id, "outcome": _OUTCOME[entry.op], "tags": list(entry.tags)}
            if isinstance(entry, records.MergeEntry):
                item["similarity"] = entry.similarity
                at = max(at, entry.at)
            elif isinstance(entry, records.StoreEntry):
                item["content"] = entry.content
                at = max(at, entry.created_at)
            else:
                item["content"] = entry.content
                at = max(at, entry.at)
            memories.append(item)
        return {"seq": seq, "type": "remember", "at": at, "memories": memories}
    if isinstance(rec, records.Restore):
        return {"seq": seq, "type": "remember", "at": rec.at,
                "memories": [{"id": e.id, "outcome": "restored", "tags": list(e.tags), "content": e.content}
                             for e in rec.entries]}
    if isinstance(rec, records.Forget):
        return {"seq": seq, "type": "forget", "ids": list(rec.ids)}
    if isinstance(rec, records.Link):
        return {"seq": seq, "type": "link", "at": rec.created_at, "source": rec.source, "target": rec.target,
                "weight": rec.weight, "kind": rec.kind}
    return None
