"""config/relay.example.toml documents every setting and loads as it stands."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from relay.settings import Settings, load_settings

EXAMPLE = Path(__file__).parents[1] / "config" / "relay.example.toml"


def test_example_documents_every_setting() -> None:
    text = EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.MULTILINE))
    missing = set(Settings.model_fields) - documented
    assert not missing, f"undocumented settings: {sorted(missing)}"


def test_example_loads_and_matches_defaults(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    values = tomllib.loads(EXAMPLE.read_text())["relay"]
    from_file = load_settings(EXAMPLE)
    defaults = Settings()
    for key, value in values.items():
        assert getattr(from_file, key) == getattr(defaults, key), key
        assert getattr(from_file, key) == value, key
