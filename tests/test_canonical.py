import math

import pytest

from xai_sandbox.audit.canonical import canonical_json, canonical_loads
from xai_sandbox.errors import InvalidInputError


def test_keys_sorted_and_compact():
    assert canonical_json({"b": 1, "a": [1.5, "x", None, True]}) == \
        b'{"a":[1.5,"x",null,true],"b":1}'


def test_numbers_use_the_shortest_round_trip_form():
    value = 0.1 + 0.2
    text = canonical_json([value, 1e21, 1.0])
    assert text == b"[0.30000000000000004,1e+21,1]"
    assert canonical_loads(text)[0] == value


def test_unicode_is_kept_as_utf8():
    assert canonical_json({"zh": "年龄"}) == '{"zh":"年龄"}'.encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_with_their_path(bad):
    with pytest.raises(InvalidInputError, match=r"value.x\[1\]: canonical JSON holds finite"):
        canonical_json({"x": [1.0, bad]})


def test_non_json_types_are_refused():
    with pytest.raises(InvalidInputError, match="JSON-compatible"):
        canonical_json({"x": object()})
