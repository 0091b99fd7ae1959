"""`xai-sandbox llm-audit --quick` on the real models: every section, in HTML, PDF, JSON."""

from __future__ import annotations

import json

from xai_sandbox.reports.llm_audit import llm_audit


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
    assert doc["self_explanation"]["n_reports"] == 1
