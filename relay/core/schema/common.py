"""Building blocks shared by the GA and beta client-event models.

Models are strict (no coercion: the API rejects ``"5"`` for an integer) and forbid unknown keys
(the API answers them with ``unknown_parameter``). Discriminated unions use tags that start with
``TAG_MARK`` so error locations can be turned back into the API's ``param`` paths.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

TAG_MARK = "§"

EventId = Annotated[str, StringConstraints(max_length=512)]
ItemId = Annotated[str, StringConstraints(max_length=32)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def tag_of(key: str) -> Any:
    """A callable discriminator over ``key`` that marks its tag values."""

    def discriminate(value: Any) -> str | None:
        found = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        return f"{TAG_MARK}{found}" if isinstance(found, str) else None

    return discriminate


def tag(value: str) -> str:
    return TAG_MARK + value


class FunctionTool(Strict):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolChoiceFunction(Strict):
    type: Literal["function"]
    name: str


class NoiseReduction(Strict):
    type: Literal["near_field", "far_field"]


Voice = Literal["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"]


class CustomVoice(Strict):
    id: str


Metadata = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(max_length=512)],
    ],
    Field(max_length=16),
]
