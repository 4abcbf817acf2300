"""The recorded real sessions, copied into tests/data/recordings (source and licence in its README)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).resolve().parents[1] / "data"
RECORDINGS = DATA / "recordings"


def recording_files(prefix: str = "") -> list[Path]:
    return sorted(p for p in RECORDINGS.glob(f"{prefix}*.yaml"))


def load(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    return [i for i in data["interactions"] if i.get("kind") == "message"]


def require_recordings() -> None:
    """The recordings ship with the repository: their absence is a broken checkout, not a skip."""
    assert recording_files(), f"no recordings in {RECORDINGS}"
