"""The storable check walks a request's input once, at its outermost model:
nested models skip the walk, and only while their enclosing model validates."""

from __future__ import annotations

import enum
import math
import random
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from api.journal import storable
from api.journal.entities import Part, Position, WorldNodeData
from tests.test_middleware_cost import _api_routes

VENUE = str(uuid.uuid4())


def _refusal(model: type, data: dict) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return str(caught.value)


def test_a_nested_models_unstorable_input_is_refused_by_the_outer_walk() -> None:
    message = _refusal(
        WorldNodeData,
        {"venue_id": VENUE, "kind": "K", "name": "n", "position": {"x": 1, "y": 2, "\ud800": 3}},
    )
    assert "position: a key contains a lone surrogate" in message


@pytest.mark.parametrize(
    "outer",
    [
        {"venue_id": VENUE, "kind": "K", "name": "n", "position": {"x": 1, "y": 2}},
        # fails inside the nested model: the skip must end all the same
        {"venue_id": VENUE, "kind": "K", "name": "n", "position": {"x": "no", "y": 2}},
    ],
)
def test_a_model_validated_after_an_outer_one_walks_its_input_again(outer: dict) -> None:
    try:
        WorldNodeData.model_validate(outer)
    except ValidationError:
        pass
    # The storable check, not pydantic's extra-field error, speaks first.
    message = _refusal(WorldNodeData, {"venue_id": VENUE, "kind": "K", "name": "n", "\ud800": 3})
    assert "a key contains a lone surrogate" in message
    assert "Extra inputs" not in message


async def test_parts_are_never_a_request_body(app: FastAPI) -> None:
    """A `Part` (a position, say) skips the storable walk: the entity holding it
    walked its input. Only safe while no endpoint takes one as its body."""
    bodies = [
        route.body_field.field_info.annotation
        for route in _api_routes(app.routes)
        if getattr(route, "body_field", None) is not None
    ]
    assert bodies
    assert not [b for b in bodies if isinstance(b, type) and issubclass(b, Part)]
    assert issubclass(Position, Part)


class _Kind(enum.StrEnum):
    a = "a"


_SCALARS = [0, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 1.5, math.nan, math.inf]
_SCALARS += ["a", "é", "\x00", "x\x00y", "\ud800", True, False, None, _Kind.a, (1, 2)]
_KEYS = ["k", "é", "\ud800", "\x00", 1, _Kind.a]


def _value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth > 36 or roll < 0.5:
        return rng.choice(_SCALARS)
    if roll < 0.75:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {
        (rng.choice(_KEYS) if rng.random() < 0.2 else f"k{i}"): _value(rng, depth + 1)
        for i in range(rng.randint(0, 4))
    }


def test_the_clean_fast_path_answers_as_the_full_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    cases = [
        (_value(rng, rng.choice([0, 0, 25, 31, 32])), rng.choice([32, 2, 3])) for _ in range(5000)
    ]
    fast = [storable.unstorable(value, depth) for value, depth in cases]
    monkeypatch.setattr(storable, "_clean", lambda *args: False)
    assert fast == [storable.unstorable(value, depth) for value, depth in cases]
    assert any(answer is None for answer in fast) and any(fast)
