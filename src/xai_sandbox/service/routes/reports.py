"""Full reports (JSON, HTML, PDF): reviewer, compliance_officer, auditor, admin; every read
is written to the audit log before the report is assembled."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response
from fastapi.responses import HTMLResponse

from xai_sandbox.reports.render import render_html, render_json, render_pdf
from xai_sandbox.service.deps import RT, Uuid, Who, read_report
from xai_sandbox.service.schemas import FullReport
from xai_sandbox.service.strict import resource_router

router = resource_router("reports")


@router.get("/v1/decisions/{decision_id}/report", response_model=FullReport,
            responses={200: {"content": {"application/json": {}}, "description": "the report"}})
def report_json(decision_id: Uuid, rt: RT, who: Who,
                purpose: Annotated[str, Query(min_length=1, max_length=200)] = "review"
                ) -> Response:
    """The full report (every field of COMPLIANCE.md) as canonical JSON."""
    report = read_report(rt, who, decision_id, "read", purpose)
    return Response(render_json(report), media_type="application/json")


@router.get("/v1/decisions/{decision_id}/report.html",
            responses={200: {"content": {"text/html": {}}, "description": "the report"}})
def report_html(decision_id: Uuid, rt: RT, who: Who,
                purpose: Annotated[str, Query(min_length=1, max_length=200)] = "review"
                ) -> HTMLResponse:
    """The full report as one self-contained HTML page."""
    return HTMLResponse(render_html(read_report(rt, who, decision_id, "read", purpose)))


@router.get("/v1/decisions/{decision_id}/report.pdf",
            responses={200: {"content": {"application/pdf": {}}, "description": "the report"}})
def report_pdf(decision_id: Uuid, rt: RT, who: Who,
               purpose: Annotated[str, Query(min_length=1, max_length=200)] = "export"
               ) -> Response:
    """The full report as PDF (an export: logged as such)."""
    report = read_report(rt, who, decision_id, "export", purpose)
    return Response(render_pdf(report), media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="report-{decision_id}.pdf"'})
