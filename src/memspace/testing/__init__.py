"""Fakes for the seams (clock, spawner, router view) and conformance suites, shipped with the package."""

from memspace.testing.clock import FakeClock
from memspace.testing.spawner import FakeSpawner, RecordingRouter

__all__ = ["FakeClock", "FakeSpawner", "RecordingRouter"]
