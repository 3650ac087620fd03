"""File-backed lower tiers: warm (memory-mapped float16) and cold (zlib-compressed blocks).

Both implement :class:`memspace.engine.tiers.TierStore` over immutable segment
files in one directory (``<space>/warm/`` or ``<space>/cold/``):

* :mod:`.tier`: the tier over a directory of segments (add, discard, the
  manifest, open, compaction, collect): the contract both tiers keep;
* :mod:`.segment`: the segment file header, its checks and durable writing;
* :mod:`.warm` and :mod:`.cold`: the two segment formats.
"""

from __future__ import annotations

from memspace.storage.tiers.segment import FORMAT, HEADER_SIZE
from memspace.storage.tiers.tier import ColdTier, WarmTier, plan_compaction

__all__ = ["FORMAT", "HEADER_SIZE", "ColdTier", "WarmTier", "plan_compaction"]
