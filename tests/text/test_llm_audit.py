"""`xai-sandbox llm-audit --quick` on the real models: every section, in HTML, PDF, JSON; the
self-explanation section states its parse rate and shows no results built on no answer."""

from __future__ import annotations

import json
import re
from typing import Any

from xai_sandbox.reports.llm_audit import PARSE_TEXTS, _render, llm_audit
from xai_sandbox.text.selfexplain import (
    SelfExplanationReport,
    parse_self_explanation,
    summarise,
)

LABELS = ("positive", "negative")


def test_llm_audit_writes_every_section(tmp_path) -> None:
    result = llm_audit(tmp_path, quick=True, log=lambda _: None)
    html = result.html.read_text(encoding="utf-8")
    for heading in ("Token attributions", "Attention rollout", "Linear probes",
                    "universal adversarial triggers", "Activation patching",
                    "Self-explanation consistency"):
        assert heading in html, heading
    assert html.count("data:image/png;base64,") >= 3 + 3 + 1 + 1
    assert result.pdf.read_bytes().startswith(b"%PDF")
    doc = json.loads(result.json.read_text(encoding="utf-8"))
    assert doc["models"]["classifier"]["held_out_accuracy"] > 0.6
    assert all(t["completeness_error"] <= 0.05 for t in doc["tokens"])
    assert len(doc["probe"]) == 7 and doc["triggers"][0]["n_random"] >= 20
    assert doc["patching"]["m_clean"] != doc["patching"]["m_corr"]
    selfexp = doc["self_explanation"]
    # SmolLM2's answers, constrained to the schema, parse on real snippets (issue 14.9).
    rate = selfexp["parse_rate"]
    assert rate["decoding"] == "constrained" and rate["n"] >= PARSE_TEXTS >= 30
    assert rate["rate"] >= 0.8, rate
    assert rate["answers_with_hallucination_rate"] == 0.0
    assert f"Answers that parse: {rate['n_valid']} of {rate['n']}" in html
    assert selfexp["summary"]["n_reports"] == 1
    assert selfexp["results"] == (selfexp["summary"]["n_valid"] > 0)


# ---------------------------------------------------------------------------- the section
def _report(raw: str, text: str = "a fine film") -> SelfExplanationReport:
    return SelfExplanationReport(text=text, labels=LABELS, prompt="", answer=(
        parse_self_explanation(raw, text, LABELS)), model_kind="causal_lm", removal="delete",
        attribution="integrated_gradients")


def _page(reports: list[SelfExplanationReport], rate: dict[str, Any]) -> str:
    summary = summarise(reports, n_permutations=20)
    selfexp = {"decoding": "constrained", "parse_rate": rate, "free_parse_rate": None,
               "summary": summary, "results": summary["n_valid"] > 0, "examples": []}
    r = {"created_at": "2026-12-01T00:00:00+00:00", "quick": True, "data": "test data",
         "models": {"classifier": {"model_id": "c", "version": "1", "held_out_accuracy": 0.9,
                                   "fingerprint_sha256": "0" * 64},
                    "assistant": {"model_id": "a", "version": "1",
                                  "fingerprint_sha256": "1" * 64}},
         "triggers": [], "timings_s": {}, "library_versions": {}}
    probe = {"png": "", "rows": 0, "summary": []}
    patching = {"clean": "", "corrupted": "", "m_clean": 0.0, "m_corr": 0.0, "maps": []}
    html = _render(r, [], probe, patching, selfexp)
    return html[html.index("6. Self-explanation"):html.index("<h2>Run</h2>")]


def _rate(n_valid: int, n: int) -> dict[str, Any]:
    return {"n": n, "n_valid": n_valid, "rate": n_valid / n, "decoding": "constrained",
            "failures": {"malformed JSON": n - n_valid} if n > n_valid else {},
            "answers_with_hallucination_rate": None, "labels": {"positive": n_valid,
                                                                "negative": 0},
            "label_accuracy": None, "examples": [], "wall_time_s": 0.0}


def test_no_valid_answer_means_a_plain_statement_and_no_table() -> None:
    section = _page([_report('{"label": "positive", "evidence": ["pos')], _rate(0, 30))
    assert "Answers that parse: 0 of 30 (0%)" in section
    assert "No self-explanation results." in section
    assert "malformed JSON: 1" in section
    assert "<table>" not in section and "Answers checked" not in section


def test_valid_answers_get_the_results_table() -> None:
    good = _report('{"label": "positive", "evidence": ["fine"], "confidence": 0.8}')
    bad = _report("no json")
    section = _page([good, bad], _rate(29, 30))
    assert "Answers that parse: 29 of 30 (97%)" in section
    assert "No self-explanation results" not in section
    rows = re.findall(r"<tr><th>([^<]+)</th>", section)
    assert rows[0] == "Answers checked" and "1 of 2 valid" in section
    assert "Redaction: stated label changed" in rows
