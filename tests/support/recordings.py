"""The recorded real sessions in ../shared/recordings, when present (tests skip without them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

RECORDINGS = Path(__file__).resolve().parents[2].parent / "shared" / "recordings"


def recording_files(prefix: str = "") -> list[Path]:
    if not RECORDINGS.is_dir():
        return []
    return sorted(p for p in RECORDINGS.glob(f"{prefix}*.yaml"))


def load(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    return [i for i in data["interactions"] if i.get("kind") == "message"]


def require_recordings() -> None:
    if not RECORDINGS.is_dir():
        pytest.skip(f"recordings not found at {RECORDINGS} (they live in the shared folder)")
