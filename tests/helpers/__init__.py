"""Test helpers shared across the suite: real-parts harnesses, builders and recorded responses.

Tests import them as `tests.helpers...`; nothing here is collected as a test.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HISTORIES = REPO / "tests" / "histories"
