"""The tier conformance suite against the in-memory reference and both file-backed tiers."""

from __future__ import annotations

from pathlib import Path

from memspace.engine.tiers import MemoryTier, TierStore
from memspace.storage.tiers import ColdTier, WarmTier
from memspace.testing.tiers import TierConformance


class TestMemoryTier(TierConformance):
    def make(self, tmp_path: Path) -> TierStore:
        return MemoryTier("warm")


class TestWarmTier(TierConformance):
    def make(self, tmp_path: Path) -> TierStore:
        return WarmTier.open(tmp_path / "warm", None)

    def reopen(self, tier: TierStore, tmp_path: Path) -> TierStore:
        assert isinstance(tier, WarmTier)
        state = tier.state()
        tier.close()
        return WarmTier.open(tmp_path / "warm", state)


class TestColdTier(TierConformance):
    def make(self, tmp_path: Path) -> TierStore:
        return ColdTier.open(tmp_path / "cold", None)

    def reopen(self, tier: TierStore, tmp_path: Path) -> TierStore:
        assert isinstance(tier, ColdTier)
        state = tier.state()
        tier.close()
        return ColdTier.open(tmp_path / "cold", state)


class TestWarmTierUnmerged(TestWarmTier):
    """The same checks with every add kept as its own segment (no merging of small segments)."""

    def make(self, tmp_path: Path) -> TierStore:
        return WarmTier.open(tmp_path / "warm", None, merge_below=0)

    def reopen(self, tier: TierStore, tmp_path: Path) -> TierStore:
        assert isinstance(tier, WarmTier)
        state = tier.state()
        tier.close()
        return WarmTier.open(tmp_path / "warm", state, merge_below=0)


class TestColdTierUnmerged(TestColdTier):
    def make(self, tmp_path: Path) -> TierStore:
        return ColdTier.open(tmp_path / "cold", None, merge_below=0)

    def reopen(self, tier: TierStore, tmp_path: Path) -> TierStore:
        assert isinstance(tier, ColdTier)
        state = tier.state()
        tier.close()
        return ColdTier.open(tmp_path / "cold", state, merge_below=0)
