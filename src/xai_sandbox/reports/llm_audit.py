"""The LLM audit report: every text capability run on the real models, in one HTML/PDF.

MiniLM with its sentiment head (the classifier a complaint-triage or review model would
be) gets token heatmaps (integrated gradients, with the phrase anchors they hit),
attention rollout, per-layer probe curves with their controls and a universal-trigger
red-team table; SmolLM2-135M (the assistant) gets an activation-patching map and the
self-explanation check. ``quick`` shrinks every sample for a smoke run.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xai_sandbox.explainers.explanation import library_versions

__all__ = ["LLMAudit", "llm_audit"]


@dataclass(frozen=True)
class LLMAudit:
    html: Path
    pdf: Path
    json: Path
    sections: tuple[str, ...]


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _timed(timings: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    out = fn()
    timings[name] = round(time.perf_counter() - started, 2)
    return out


def llm_audit(out: Path, *, quick: bool = False, log: Callable[[str], None] = print
              ) -> LLMAudit:
    """Run the audit and write ``llm-audit.html``, ``llm-audit.pdf`` and
    ``llm-audit.json`` into ``out``."""
    from xai_sandbox.datasets.sentiment import ATTRIBUTION, load_movie_snippets
    from xai_sandbox.reports.render import render_pdf_html
    from xai_sandbox.reports.text_plots import patching_map_png, probe_curve_png, token_heatmap_png
    from xai_sandbox.semantics.anchors import align_text, load_anchors
    from xai_sandbox.text.attention import attention_rollout
    from xai_sandbox.text.attribution import token_attributions
    from xai_sandbox.text.catalog import minilm_sentiment, smollm2
    from xai_sandbox.text.patching import patch
    from xai_sandbox.text.probing import probe_layers
    from xai_sandbox.text.triggers import search_trigger, trigger_table

    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    data = load_movie_snippets()
    log("loading MiniLM with its sentiment head (trained once, then cached)")
    minilm = _timed(timings, "load MiniLM", minilm_sentiment)
    model = minilm.model
    test = [int(i) for i in minilm.test]
    examples = [data.texts[i] for i in test if len(data.texts[i].split()) <= 20][:3]
    anchors = load_anchors("customer-complaints")

    log("token attributions and rollout")
    ig = _timed(timings, "integrated gradients", lambda: token_attributions(model, examples))
    roll = _timed(timings, "attention rollout", lambda: attention_rollout(model, examples))
    tokens_ig = []
    for i, text in enumerate(examples):
        tokens = ig.parameters["tokens"][i]
        n = len(tokens)
        matches = align_text(ig, anchors, row=i)
        tokens_ig.append({
            "text": text, "label": ig.parameters["target_class"][i],
            "completeness_error": float(abs(ig.delta[i]) / max(abs(
                ig.explained_output()[i] - ig.expected_value[i]), 1e-12)),
            "ig_png": _uri(token_heatmap_png(tokens, ig.values[i][:n],
                                             f"Integrated gradients, example {i + 1}")),
            "rollout_png": _uri(token_heatmap_png(
                roll.parameters["tokens"][i], roll.values[i][:len(roll.parameters["tokens"][i])],
                f"Attention rollout (CLS row), example {i + 1}")),
            "anchors": [{"anchor": m.anchor, "label": m.label["en"],
                         "sensitivity": m.sensitivity, "hit": m.hit}
                        for m in matches if m.sensitivity > 0]})

    log("probing the layers")
    n_probe = 80 if quick else 400
    probe_idx = test[:n_probe]
    report = _timed(timings, "linear probes", lambda: probe_layers(
        model, [data.texts[i] for i in probe_idx], data.y[probe_idx],
        n_bootstrap=200 if quick else 1000))
    probe = {"png": _uri(probe_curve_png(report)), "rows": n_probe,
             "summary": _probe_rows(report)}

    log("red-teaming with a universal trigger")
    negatives = [data.texts[i] for i in test if data.y[i] == 0][: 24 if quick else 64]
    held_out = [data.texts[i] for i in test if data.y[i] == 0][64:64 + (24 if quick else 80)]
    trigger = _timed(timings, "universal trigger", lambda: search_trigger(
        model, negatives, target="positive", length=2 if quick else 3,
        n_candidates=5 if quick else 40, beam=1 if quick else 3,
        iterations=1 if quick else 8, held_out_texts=held_out,
        n_random=20, n_boot=300 if quick else 1000))
    triggers = trigger_table(trigger)

    log("loading SmolLM2-135M")
    lm = _timed(timings, "load SmolLM2", smollm2)
    clean = "The film was wonderful. The review is"
    corrupted = "The film was dreadful. The review is"
    log("activation patching")
    patched = _timed(timings, "activation patching", lambda: patch(
        lm, clean, corrupted, target=" positive", foil=" negative",
        sites=("resid_pre",) if quick else ("resid_pre", "attn_out", "mlp_out")))
    patching = {"clean": clean, "corrupted": corrupted, "m_clean": patched.m_clean,
                "m_corr": patched.m_corr,
                "maps": [{"component": c, "png": _uri(patching_map_png(patched, c))}
                         for c in patched.scores]}

    log("self-explanation: parse rate, then the check")
    labels = ["positive", "negative"]
    selfexp = _self_explanation(lm, data, test, labels, examples, quick, timings)

    result = {
        "schema_version": "xai-sandbox.llm-audit/1",
        "created_at": datetime.now(UTC).isoformat(),
        "models": {"classifier": {"model_id": model.model_id, "version": model.version,
                                  "fingerprint_sha256": model.fingerprint(),
                                  "held_out_accuracy": minilm.accuracy},
                   "assistant": {"model_id": lm.model_id, "version": lm.version,
                                 "fingerprint_sha256": lm.fingerprint()}},
        "data": ATTRIBUTION, "quick": quick,
        "tokens": [{k: v for k, v in t.items() if not k.endswith("_png")}
                   for t in tokens_ig],
        "probe": probe["summary"], "triggers": triggers,
        "patching": {k: v for k, v in patched.to_dict().items()
                     if k in ("m_clean", "m_corr", "tokens", "degenerate", "scores",
                              "target_name", "foil_name", "n_forwards")},
        "self_explanation": {k: v for k, v in selfexp.items() if k != "examples"},
        "timings_s": timings,
        "library_versions": library_versions()}
    json_path = out / "llm-audit.json"
    json_path.write_text(json.dumps(result, indent=2, default=_jsonable), encoding="utf-8")
    html = _render(result, tokens_ig, probe, patching, selfexp)
    html_path = out / "llm-audit.html"
    html_path.write_text(html, encoding="utf-8")
    pdf_path = out / "llm-audit.pdf"
    pdf_path.write_bytes(render_pdf_html(html))
    return LLMAudit(html_path, pdf_path, json_path,
                    ("token heatmaps", "rollout", "probe curves", "triggers", "patching",
                     "self-explanation"))


PARSE_TEXTS = 30     # snippets asked for the parse rate (quick runs too: the rate is the claim)


def _self_explanation(lm: Any, data: Any, test: list[int], labels: list[str],
                      examples: list[str], quick: bool, timings: dict[str, float]
                      ) -> dict[str, Any]:
    """SmolLM2's self-explanations: first how often they parse on held-out snippets
    (constrained decoding; a full run also measures free greedy decoding on the same
    snippets), then the full check of a few of them. ``results`` says whether any checked
    answer was valid: the report shows no table built on none."""
    from xai_sandbox.text.selfexplain import check_self_explanation, parse_rate, summarise

    chosen = [i for i in test if len(data.texts[i].split()) <= 25][:PARSE_TEXTS * (
        1 if quick else 2)]
    texts = [data.texts[i] for i in chosen]
    truth = ["positive" if data.y[i] else "negative" for i in chosen]
    # One thread: decoding feeds one token at a time (see parse_rate).
    rate = _timed(timings, "self-explanation parse rate", lambda: parse_rate(
        lm, texts, labels, truth=truth, threads=1))
    free = None if quick else _timed(timings, "self-explanation parse rate (free)",
                                     lambda: parse_rate(lm, texts[:PARSE_TEXTS], labels,
                                                        decoding="greedy", threads=1,
                                                        truth=truth[:PARSE_TEXTS]))
    reviews = examples[: 1 if quick else 3]
    n_perm = 200 if quick else 1000
    checks = _timed(timings, "self-explanation", lambda: [
        check_self_explanation(lm, text, labels, n_permutations=n_perm,
                               n_steps=16 if quick else 50,
                               tolerance=0.5 if quick else 0.05, internal_batch_size=4)
        for text in reviews])
    summary = summarise(checks, n_permutations=n_perm)
    return {"decoding": "constrained", "parse_rate": rate, "free_parse_rate": free,
            "summary": summary, "results": summary["n_valid"] > 0,
            "examples": [c.to_dict() for c in checks]}


def _probe_rows(report: Any) -> list[dict[str, Any]]:
    rows = []
    names = list(report.layer_names)
    acc = [float(a) for a in report.accuracies]
    none: list[float | None] = [None] * len(acc)
    rand = none if report.random_init_accuracies is None else [
        float(a) for a in report.random_init_accuracies]
    control = none if report.control_accuracies is None else [
        float(a) for a in report.control_accuracies]
    sel = none if report.selectivity is None else [float(a) for a in report.selectivity]
    for i, name in enumerate(names[:len(acc)]):
        rows.append({"layer": name, "accuracy": acc[i], "random_init": rand[i],
                     "control": control[i], "selectivity": sel[i]})
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _render(result: dict[str, Any], tokens: list[dict[str, Any]], probe: dict[str, Any],
            patching: dict[str, Any], selfexp: dict[str, Any]) -> str:
    from xai_sandbox.reports.render import environment

    return environment().get_template("llm_audit.html").render(
        r=result, tokens=tokens, probe=probe, patching=patching, selfexp=selfexp)
