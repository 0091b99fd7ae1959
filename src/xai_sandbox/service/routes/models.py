"""Models: register (operator, admin); list (every staff role)."""

from __future__ import annotations

from typing import Any

from xai_sandbox.service.deps import RT, STAFF, Who, require
from xai_sandbox.service.schemas import ModelRequest, ModelSummary
from xai_sandbox.service.strict import resource_router

router = resource_router("models")


@router.post("/v1/models", status_code=201, response_model=ModelSummary)
def register_model(body: ModelRequest, rt: RT, who: Who) -> dict[str, Any]:
    """Register a model: a built-in one, or an XGBoost model in its JSON format (a data
    format: no code is loaded), with its feature schema, explanation policy and card."""
    require(who, "operator", "admin")
    spec = body.model_dump(by_alias=True, exclude_none=True)
    served = rt.decider.register(spec)
    return served.summary()


@router.get("/v1/models", response_model=list[ModelSummary])
def list_models(rt: RT, who: Who) -> list[dict[str, Any]]:
    require(who, *STAFF)
    return [m.summary() for m in rt.decider.models()]
