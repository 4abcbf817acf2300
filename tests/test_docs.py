"""The operations guide lists every setting, so operators never have to read the code."""

from __future__ import annotations

from pathlib import Path

from relay.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_operations_guide_lists_every_setting() -> None:
    text = (DOCS / "operations.md").read_text()
    missing = [name for name in Settings.model_fields if f"`{name}`" not in text]
    assert not missing, f"settings missing from docs/operations.md: {missing}"
