"""The storable check walks a request's input once, at its outermost model:
nested models skip the walk, and only while their enclosing model validates."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from api.entities import Position, WorldNodeData

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
    message = _refusal(Position, {"x": 1, "y": 2, "\ud800": 3})
    assert "a key contains a lone surrogate" in message
    assert "Extra inputs" not in message
