import math

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6),
                                                                       children, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fast_path_is_byte_identical_to_rfc8785(value):
    assert canonical_json(value) == bytes(rfc8785.dumps(value))


def test_integers_beyond_the_safe_range_are_refused():
    with pytest.raises(InvalidInputError, match=r"within \+-\(2\^53 - 1\)"):
        canonical_json({"n": 2**53})
