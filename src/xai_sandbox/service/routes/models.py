"""Models: register (operator, admin), from a JSON spec or a multipart upload of a model
file; list (every staff role)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.service.deps import RT, STAFF, Who, allowed, require
from xai_sandbox.service.schemas import ModelRequest, ModelSummary
from xai_sandbox.service.strict import resource_router
from xai_sandbox.service.uploads import UPLOAD_FORM, new_folder, upload_arguments

router = resource_router("models")

# Two bodies: a JSON spec (a built-in model, or an XGBoost JSON document inline), or a
# multipart upload of a model file with its schema and training sample.
REGISTER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/ModelRequest"}},
    "multipart/form-data": {"schema": UPLOAD_FORM}}}}
# The largest text field or schema part of an upload's form (files are not bound by it).
_FORM_PART_BYTES = 1 << 20


@router.post("/v1/models", dependencies=[allowed("operator", "admin")],
             status_code=201, response_model=ModelSummary,
             openapi_extra=REGISTER_BODY)
async def register_model(request: Request, rt: RT, who: Who) -> dict[str, Any]:
    """Register a model. As JSON: a built-in one, or an XGBoost model in its JSON format,
    with its feature schema, explanation policy and card. As ``multipart/form-data``: a
    model file in any format of ``xai-sandbox models formats`` (read as data, never as
    code), its schema, and optionally a training sample (CSV or Parquet), up to the
    upload limit (``XAI_SANDBOX_MAX_UPLOAD_BYTES``, 512 MiB by default)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        from xai_sandbox.workflows.upload import register_file

        async with request.form(max_files=4, max_fields=32,
                                max_part_size=_FORM_PART_BYTES) as form:
            with new_folder() as folder:
                args = await run_in_threadpool(upload_arguments, form, Path(folder))
                served = await run_in_threadpool(register_file, rt.decider, **args)
        return served.summary()
    if kind != "application/json":
        raise InvalidInputError("content-type", "must be application/json or "
                                "multipart/form-data", kind)
    try:
        raw = await request.json()
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos),
                                       "msg": f"JSON decode error: {exc.msg}"}]) from None
    try:
        body = ModelRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors()]) from None
    spec = body.model_dump(by_alias=True, exclude_none=True)
    served = await run_in_threadpool(rt.decider.register, spec)
    return served.summary()


@router.get("/v1/models", response_model=list[ModelSummary])
def list_models(rt: RT, who: Who) -> list[dict[str, Any]]:
    require(who, *STAFF)
    return [m.summary() for m in rt.decider.models()]
