"""Strict inputs, never a 500: every POST body, arbitrary JSON or a valid example with one
field replaced, gets success or a 4xx whose message names the field; error bodies are
strict JSON (no NaN, no unpaired surrogate) without server paths or native traces."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from xai_sandbox.demos.credit import credit_models
from xai_sandbox.service.schemas import (
    DecisionRequest,
    ExplainRequest,
    ModelRequest,
    ReviewDecision,
    ReviewRequest,
    TextExplainRequest,
)

ROWS = credit_models().data.rows
SCHEMA = credit_models().data.schema

# Written into the body as they stand: what a Python client cannot produce from a float.
RAW_NUMBERS = ("NaN", "Infinity", "-Infinity", "1e999", "-1E400", "1" + "0" * 320,
               "-" + "9" * 500)
_RAW = "\ue000raw:"   # a private-use marker, replaced by the raw number after encoding


def _raw(token: str) -> str:
    return f"{_RAW}{token}"


def encode(body: Any) -> bytes:
    """``body`` as JSON with Python's extensions (NaN, Infinity), surrogates escaped, and
    the raw numbers spliced in."""
    text = json.dumps(body, allow_nan=True)
    return re.sub(r'"\\ue000raw:([^"]*)"', r"\1", text).encode()


_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=12)
_scalars = (st.none() | st.booleans() | st.integers()
            | st.builds(pow, st.sampled_from([10, -10]), st.integers(300, 320))
            | st.floats(allow_nan=True, allow_infinity=True)
            | st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0])
            | st.sampled_from(RAW_NUMBERS).map(_raw)
            | _text | st.sampled_from(["NaN", "true", "12", "A11", "", "\x00"]))
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_text, children, max_size=4),
    max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a member of a dict or list inside ``value``."""
    out: list[tuple[Any, ...]] = []
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, member in items:
        out.append((*prefix, key))
        out.extend(_paths(member, (*prefix, key)))
    return out


@st.composite
def mutated(draw: st.DrawFn, example: dict[str, Any]) -> Any:
    """``example`` with one member replaced by arbitrary JSON, removed, or one added."""
    body = copy.deepcopy(example)
    path = draw(st.sampled_from(_paths(example)))
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(json_values)
    elif action == "remove":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(_text)] = draw(json_values)
    else:
        parent.append(draw(json_values))
    return body


def bodies(example: dict[str, Any]) -> st.SearchStrategy[Any]:
    return json_values | mutated(example)


def example_of(model: type) -> dict[str, Any]:
    return copy.deepcopy(model.model_config["json_schema_extra"]["examples"][0])


_LEAK = re.compile(r"Stack trace|\[bt\]|site-packages|\.so\b|\.cc:\d|Traceback")
_PARAMETER = re.compile(r"^[\w.\[\]/-]+: \S")


def _strict_json(raw: bytes) -> Any:
    def refuse(token: str) -> Any:
        raise AssertionError(f"the answer holds {token}, which is not JSON")

    return json.loads(raw.decode("utf-8"), parse_constant=refuse)


def check_answer(r: httpx.Response) -> None:
    """Success, or a 4xx whose detail names the field (a ``loc``) or the parameter."""
    assert r.status_code < 500, r.text
    if r.status_code < 400:
        return
    body = _strict_json(r.content)
    assert not _LEAK.search(r.text), r.text
    detail = body["detail"]
    if isinstance(detail, str):
        assert _PARAMETER.match(detail), detail
        return
    assert isinstance(detail, list) and detail, body
    for entry in detail:
        assert entry["loc"] and entry["loc"][0] in ("body", "path", "query"), entry
        assert isinstance(entry["msg"], str) and entry["msg"], entry


@pytest.fixture(scope="module")
def targets(live) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Per request model: the route, a key whose role gets past the route's role check,
    and a valid example body."""
    with live.client("bob") as c:
        asked = c.post(f"/v1/decisions/{live.decisions['bob']}/reviews",
                       json=example_of(ReviewRequest))
        assert asked.status_code == 201, asked.text
    review_id = asked.json()["review_id"]
    explain = {**example_of(ExplainRequest), "input": ROWS[0]}
    decision = {**example_of(DecisionRequest), "features": ROWS[1]}
    # An unknown text model: the body is validated in full, but a valid one is a quick
    # 404 rather than integrated gradients through a transformer.
    text = {**example_of(TextExplainRequest), "model_id": "no-such-text-model"}
    return {
        "ModelRequest": ("/v1/models", "olivia-operator", example_of(ModelRequest)),
        "DecisionRequest": ("/v1/decisions", "olivia-operator", decision),
        "ExplainRequest": ("/v1/explain", "olivia-operator", explain),
        "TextExplainRequest": ("/v1/explain/text", "olivia-operator", text),
        "ReviewRequest": (f"/v1/decisions/{live.decisions['alice']}/reviews", "alice",
                          example_of(ReviewRequest)),
        "ReviewDecision": (f"/v1/reviews/{review_id}/decision", "rita-reviewer",
                           example_of(ReviewDecision)),
    }


@pytest.fixture(scope="module")
def clients(live) -> Iterator[Callable[[str], httpx.Client]]:
    """One client per key for the module (a client is slow to make)."""
    made: dict[str, httpx.Client] = {}

    def client(who: str) -> httpx.Client:
        if who not in made:
            made[who] = live.client(who, **{"content-type": "application/json"})
        return made[who]

    try:
        yield client
    finally:
        for c in made.values():
            c.close()


MODELS = ["ModelRequest", "DecisionRequest", "ExplainRequest", "TextExplainRequest",
          "ReviewRequest", "ReviewDecision"]


def test_every_post_body_is_a_listed_model():
    from fastapi.routing import APIRoute

    from xai_sandbox.service.routes import RESOURCES
    from xai_sandbox.service.strict import StrictJSONRoute

    # One router per resource (the aggregate router holds them as included routers).
    routes = [r for resource in RESOURCES for r in resource.router.routes
              if isinstance(r, APIRoute)]
    assert all(isinstance(r, StrictJSONRoute) for r in routes)
    bodies = {r.body_field.field_info.annotation.__name__ for r in routes
              if r.body_field is not None}
    # A route that reads its own body (JSON or multipart) declares the JSON model in the
    # OpenAPI document instead, and validates it with that model.
    for r in routes:
        content = (r.openapi_extra or {}).get("requestBody", {}).get("content", {})
        ref = content.get("application/json", {}).get("schema", {}).get("$ref")
        if ref is not None:
            bodies.add(ref.rsplit("/", 1)[-1])
    assert bodies == set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_the_examples_are_valid(clients, targets, model):
    """Each example passes validation, so its mutations are one field from valid."""
    path, who, example = targets[model]
    r = clients(who).post(path, content=encode(example))
    assert r.status_code < 400 or (model == "TextExplainRequest" and r.status_code == 404), \
        r.text


@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_json_gets_a_named_4xx_or_success(clients, targets, model, data):
    path, who, example = targets[model]
    body = data.draw(bodies(example), label="body")
    r = clients(who).post(path, content=encode(body))
    event(f"status {r.status_code}")
    check_answer(r)


# ---------------------------------------------------------------------- the cases named
def _decide(live, raw: bytes) -> httpx.Response:
    with live.client("olivia-operator", **{"content-type": "application/json"}) as c:
        return c.post("/v1/decisions", content=raw)


def _with_feature(name: str, value: Any) -> bytes:
    row = {**ROWS[0], name: value}
    return encode({"model_id": "credit", "subject_id": "applicant-strict", "features": row})


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1E400",
                                   "1" + "0" * 400, "1" + "0" * 5000])
def test_non_finite_numbers_are_422_naming_the_feature(live, token):
    r = _decide(live, _with_feature("duration", _raw(token)))
    assert r.status_code == 422, r.text
    entry = _strict_json(r.content)["detail"][0]
    assert entry["loc"] == ["body", "features", "duration"]
    assert "finite" in entry["msg"] and entry["message"].startswith("features.duration:")


@pytest.mark.parametrize(("name", "value", "rule"), [
    ("duration", "NaN", "must be a number"),
    ("duration", "12", "must be a number"),
    ("duration", True, "must be a number"),
    ("credit_amount", False, "must be a number"),
    ("duration", [12], "Input should be"),
    ("checking_status", 12, "must be one of the categories"),
    ("checking_status", 1.5, "must be one of the categories"),
    ("checking_status", True, "must be one of the categories"),
])
def test_a_value_of_the_wrong_json_type_is_422_naming_the_feature(live, name, value, rule):
    r = _decide(live, _with_feature(name, value))
    assert r.status_code == 422, r.text
    entry = r.json()["detail"][0]
    assert entry["loc"][:3] == ["body", "features", name] and entry["msg"].startswith(rule)


def test_true_is_not_an_income_of_one(live):
    """Today's bug: ``true`` read as 1 (and the applicant decided on it)."""
    row = {**ROWS[0], "credit_amount": True}
    r = _decide(live, encode({"model_id": "credit", "subject_id": "a", "features": row}))
    assert r.status_code == 422
    assert r.json()["detail"][0]["message"] == ("features.credit_amount: must be a number; "
                                                "got True")


@pytest.mark.parametrize(("where", "raw", "loc"), [
    ("explain input", b'{"model_id": "credit", "input": [1.0, NaN]}', ["body", "input", 1]),
    ("policy", b'{"model_id": "m", "source": {"kind": "builtin", "name": "x"}, '
               b'"policy": {"threshold": Infinity}}', ["body", "policy", "threshold"]),
    ("text", b'{"model_id": "credit", "subject_id": "\\ud800", "features": {}}',
     ["body", "subject_id"]),
    ("NUL", b'{"model_id": "credit", "subject_id": "a\\u0000", "features": {}}',
     ["body", "subject_id"]),
    ("a key", b'{"model_id": "credit", "subject_id": "a", "features": {"\\udfff": 1}}',
     ["body", "features", "\\udfff"]),
])
def test_what_json_cannot_hold_is_422_naming_the_field(live, where, raw, loc):
    with live.client("olivia-operator", **{"content-type": "application/json"}) as c:
        path = "/v1/explain" if "input" in where else (
            "/v1/models" if where == "policy" else "/v1/decisions")
        r = c.post(path, content=raw)
    assert r.status_code == 422, r.text
    assert _strict_json(r.content)["detail"][0]["loc"] == loc


def test_nesting_and_encoding_are_bounded(live):
    deep = b'{"model_id": "credit", "subject_id": "a", "features": ' + b"[" * 5000 + \
        b"]" * 5000 + b"}"
    r = _decide(live, deep)
    assert r.status_code == 422 and "nest at most" in r.text
    r = _decide(live, b'{"model_id": "credit", "features": {"a": "\xff"}}')
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]


def test_a_garbage_xgboost_model_is_422_without_paths_or_native_trace(live):
    spec = {"model_id": "garbage-xgb", "version": "1",
            "source": {"kind": "xgboost_json", "schema": SCHEMA.to_dict(),
                       "class_names": ["good", "bad"]},
            "policy": {"methods": ["tree_shap"], "adverse_class": "bad"}}
    with live.client("olivia-operator") as c:
        for model in ("{garbage", '{"learner": 5}', '{"learner": {"gradient_booster": 1}}'):
            r = c.post("/v1/models", json={**spec, "source": {**spec["source"],
                                                              "model": model}})
            assert r.status_code == 422, r.text
            entry = r.json()["detail"][0]
            assert entry["loc"] == ["body", "source", "model"]
            assert "is not a loadable XGBoost model" in entry["msg"]
            assert not _LEAK.search(r.text) and "/" not in entry["msg"], r.text
            assert "\n" not in entry["message"]


def test_clean_message_strips_native_traces_and_paths():
    from xai_sandbox.service.strict import clean_message

    native = ("is not a loadable XGBoost model ([14:44:47] /__w/xgboost/src/common/json.cc:"
              "409: Expecting: \"L\"\nStack trace:\n  [bt] (0) /srv/venv/lib/xgboost/lib/"
              "libxgboost.so(+0x2c1a8c) [0x7fef682c1a8c]\n  [bt] (1) /srv/x.so(+0x3) [0x1]\n\n)")
    assert clean_message(native) == 'is not a loadable XGBoost model (Expecting: "L")'
    assert clean_message("data: cannot read /home/x/data.csv") == \
        "data: cannot read <path>"
    assert clean_message("a\ud800b") == "a\\ud800b"
    assert clean_message("url: got 'https://hooks.example/a/b'") == \
        "url: got 'https://hooks.example/a/b'"
