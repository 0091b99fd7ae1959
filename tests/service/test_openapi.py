"""The OpenAPI document: every operation documents its successful answer with a schema
(a declared response model for JSON, or the media type of a file or page)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xai_sandbox.reports.report import Report
from xai_sandbox.service import create_app
from xai_sandbox.settings import Settings


def _document(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    app = create_app(Settings(data_dir=tmp_path, log_origin="test.example/openapi"),
                     start_workers=False)
    return app.openapi()


def test_every_operation_has_a_success_answer_with_a_schema(tmp_path: Path) -> None:
    doc = _document(tmp_path)
    models = doc["components"]["schemas"]
    operations = [(method.upper(), path, op) for path, ops in doc["paths"].items()
                  for method, op in ops.items()]
    assert len(operations) == 27  # every route of service/routes/
    missing = []
    for method, path, op in operations:
        success = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        if not success:
            missing.append(f"{method} {path}: no 2xx answer")
        for code, answer in success.items():
            content = answer.get("content") or {}
            files = [media for media in content if not media.startswith("application/json")]
            if files:  # a page, a PDF or the Prometheus text: its media type is declared
                continue
            schema = (content.get("application/json") or {}).get("schema") or {}
            ref = schema.get("$ref") or (schema.get("items") or {}).get("$ref")
            name = ref.rsplit("/", 1)[-1] if ref else None
            if name not in models or not models[name].get("properties"):
                missing.append(f"{method} {path} {code}: no response model ({schema})")
    assert not missing, "\n".join(missing)


def test_answers_with_files_declare_their_media_type(tmp_path: Path) -> None:
    paths = _document(tmp_path)["paths"]
    assert "application/pdf" in paths["/v1/decisions/{decision_id}/report.pdf"]["get"][
        "responses"]["200"]["content"]
    assert "text/html" in paths["/v1/decisions/{decision_id}/report.html"]["get"][
        "responses"]["200"]["content"]
    assert any(media.startswith("text/plain") for media in
               paths["/metrics"]["get"]["responses"]["200"]["content"])


def test_a_decision_documents_both_its_answers(tmp_path: Path) -> None:
    """201 (explained, or no explanation needed) and 202 (the explanation is a job)."""
    answers = _document(tmp_path)["paths"]["/v1/decisions"]["post"]["responses"]
    for code in ("201", "202"):
        assert answers[code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/DecisionRecorded"}


def test_the_full_report_documents_every_field_of_the_typed_report(tmp_path: Path) -> None:
    """The OpenAPI FullReport is derived from ``Report``: a field added to the report shows
    in the document, with the live record part required."""
    full = _document(tmp_path)["components"]["schemas"]["FullReport"]
    fields = {f.name for f in dataclasses.fields(Report)} - {"full"}
    assert set(full["properties"]) == fields
    assert {"final_outcome", "human_review", "receipt", "access_log"} <= set(full["required"])
    assert "explanations" not in full["required"]
    assert full["properties"]["receipt"] == {"$ref": "#/components/schemas/Receipt"}
