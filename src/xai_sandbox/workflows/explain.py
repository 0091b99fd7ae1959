"""Explain a decision: every method the policy names, assessed, turned into reasons that
are checked against the explanation, with counterfactuals, reliability, anchors, fairness
and a provenance chain; and explain an input that is not a decision (ad hoc).

The result is the explained part of a :class:`~xai_sandbox.reports.report.Report`,
computed once and stored by the caller with the decision or its job.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.counterfactuals.search import NO_FEASIBLE_CHANGE, find_counterfactuals
from xai_sandbox.errors import ExplanationError, InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.explainers.explanation import Explanation, library_versions
from xai_sandbox.explainers.shapley import ExactShapley, OwenShapley, owen_coalitions
from xai_sandbox.models.registry import RegisteredModel
from xai_sandbox.models.schema import LOCALES
from xai_sandbox.quality.assess import assessed
from xai_sandbox.quality.gate import STOCHASTIC
from xai_sandbox.reports.report import REPORT_SCHEMA, Report
from xai_sandbox.semantics.anchors import AnchorMatch, align
from xai_sandbox.semantics.notices import DEFAULT_REGIMES, DISCLAIMER, subject_text
from xai_sandbox.semantics.reasons import check_reasons, principal_reasons
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.workflows.context import Context
from xai_sandbox.workflows.reviews import add_working_days
from xai_sandbox.workflows.scoring import score
from xai_sandbox.workflows.served import ServedModel

__all__ = ["EXACT_EVALUATIONS", "STOCHASTIC_METHODS", "build_report", "counterfactual_block",
           "exact_fallback", "exact_limit", "explain_adhoc", "explain_decision",
           "explain_within_budget", "fairness_block", "method_block", "owen_limit",
           "provenance_chain", "reliability_block", "shapley_method", "shapley_route"]

log = logging.getLogger("xai_sandbox.reports")
STOCHASTIC_METHODS = STOCHASTIC
EXACT_EVALUATIONS = 1 << 18
"""The most model evaluations (coalitions x background rows) exact Shapley values may
cost one decision on a model without the batched torch path; past it they are sampled."""


def explain_decision(ctx: Context, decision_id: str, methods: Sequence[str]) -> Report:
    """The stored part of a decision's report: everything computed once."""
    row = ctx.store.decision(decision_id)
    features = ctx.store.payload(decision_id)
    if features is None:
        raise InvalidInputError("decision_id", "has no input any more (erased)",
                                decision_id)
    return build_report(ctx, row, features, methods)



def exact_fallback(model: RegisteredModel) -> str | None:
    """Why exact Shapley values cannot explain one of ``model``'s decisions, or ``None``
    when they can (see :func:`exact_limit`)."""
    return shapley_route(model)[1]


def shapley_route(model: RegisteredModel) -> tuple[str, str | None]:
    """:func:`shapley_method` for one of ``model``'s decisions: its schema's players, its
    background rows, and whether it has the batched torch path."""
    sizes = ([len(members) for _, members in model.schema.players()]
             if model.schema is not None else
             [1] * int(np.prod(model.adapter.sample_shape or (0,))))
    rows = model.background.shape[0] if model.background is not None else 1
    return shapley_method(sizes, rows, differentiable=model.adapter.differentiable)


def shapley_method(sizes: Sequence[int], rows: int, *, differentiable: bool
                   ) -> tuple[str, str | None]:
    """The method that gives a decision over players of these sizes (a declared group of
    g features, or a feature alone) its Shapley values within budget, and why it is not
    ``exact_shapley`` (``None`` when it is): exact values (:func:`exact_limit`); else exact
    Owen values over the declared groups where they are within reach
    (:func:`owen_limit`); else ``permutation_shap``."""
    why = exact_limit(sum(sizes), rows, differentiable=differentiable)
    if why is None:
        return "exact_shapley", None
    if any(g > 1 for g in sizes) and owen_limit(sizes, rows,
                                                differentiable=differentiable) is None:
        return "owen_shapley", why
    return "permutation_shap", why


def exact_limit(players: int, rows: int, *, differentiable: bool) -> str | None:
    """Why exact Shapley values over ``players`` against ``rows`` background rows are out
    of reach, or ``None``: more players than the exact method enumerates, or (for a model
    without the batched torch path) more model evaluations than
    :data:`EXACT_EVALUATIONS`."""
    limit = ExactShapley().max_players
    if players > limit:
        return (f"exact Shapley values enumerate 2^d coalitions: {players} features exceed "
                f"its limit of {limit}")
    cost = (1 << players) * rows
    if not differentiable and cost > EXACT_EVALUATIONS:
        return (f"exact Shapley values would cost 2^{players} coalitions x {rows} background "
                f"rows = {cost:,} model evaluations, over the {EXACT_EVALUATIONS:,} one "
                "decision may take")
    return None


def owen_limit(sizes: Sequence[int], rows: int, *, differentiable: bool) -> str | None:
    """Why exact Owen values over unions of these sizes are out of reach, or ``None``:
    more coalitions than the method's ``max_coalitions``, or (without the batched torch
    path) more model evaluations than :data:`EXACT_EVALUATIONS`."""
    coalitions = owen_coalitions(sizes)
    limit = OwenShapley().max_coalitions
    if coalitions > limit:
        return (f"exact Owen values over {len(sizes)} groups would evaluate {coalitions:,} "
                f"coalitions, over its limit of {limit:,}")
    if not differentiable and coalitions * rows > EXACT_EVALUATIONS:
        return (f"exact Owen values would cost {coalitions:,} coalitions x {rows} background "
                f"rows, over the {EXACT_EVALUATIONS:,} model evaluations one decision may "
                "take")
    return None


def explain_within_budget(model: RegisteredModel, x: np.ndarray, method: str, target: Any,
                          seed: int) -> Explanation:
    """``explain`` of one decision. Exact Shapley values past :func:`exact_limit` are
    computed another way (:func:`shapley_route`) and the explanation says so
    (``requested_method``, ``fallback``): as exact Owen values over the schema's declared
    feature groups, or estimated by ``permutation_shap`` with the estimate's
    ``error_bound``."""
    unions = model.schema.declared_groups() if model.schema is not None else {}
    if method == "owen_shapley":   # over the schema's groups, as the policy means it
        return explain(model, x, method=method, target=target, random_state=seed,
                       unions=unions)
    route, why = shapley_route(model) if method == "exact_shapley" else (method, None)
    if why is None:
        return explain(model, x, method=method, target=target, random_state=seed)
    if route == "owen_shapley":
        found = explain(model, x, method=route, target=target, random_state=seed,
                        unions=unions)
        fallback = (f"owen_shapley over the schema's feature groups ({', '.join(unions)}), "
                    f"because {why}; its values are exact Owen values: Shapley values "
                    "between the groups, and within each group")
    else:
        found = explain(model, x, method=route, target=target, random_state=seed)
        fallback = (f"permutation_shap, because {why}; its values are estimates within "
                    f"error_bound {found.parameters['error_bound']:.3g} (95%)")
    log.info("decision explained with %s instead of exact_shapley: %s", route, why)
    return dataclasses.replace(found, parameters={
        **found.parameters, "requested_method": method, "fallback": fallback})


def build_report(ctx: Context, row: Mapping[str, Any], features: Mapping[str, Any],
                 methods: Sequence[str]) -> Report:
    """The part of a decision's report computed once: every method's explanation with its
    quality block, the principal reasons (checked against the explanation), the
    counterfactuals, reliability, anchors, fairness and provenance, and the subject's words
    (by digest). A report whose reasons fail the check or whose explanation fails the
    quality gate is not shown to the subject: it opens a human review instead."""
    decision_id = row["id"]
    served = ctx.model_by_key(row["model_key"])
    model, schema, policy = served.model, served.schema, served.policy
    output = json.loads(row["output_json"])
    x = schema.encode(features)
    target = output["decision"]
    seed = int.from_bytes(hashlib.sha256(decision_id.encode()).digest()[:4], "big")
    explanations = [explain_within_budget(model, x, method, target, seed)
                    for method in methods]
    primary = explanations[0]
    reference = (schema.decode(np.atleast_2d(model.reference))[0]
                 if model.reference is not None else None)
    outcome_label = policy.outcome_labels[target]
    reasons = principal_reasons(primary, schema, features, outcome=outcome_label,
                                adverse=bool(output["adverse"]), reference=reference)
    # Every reason re-derived from the explanation, the schema and the input; a false
    # statement blocks the report from the subject (a person reviews it instead).
    violations = check_reasons(reasons, primary, schema, features, outcome=outcome_label,
                               reference=reference)
    if violations:
        log.error("decision %s: %d principal reasons failed the truth check: %s",
                  decision_id, len(violations), "; ".join(violations))
    counterfactuals = counterfactual_block(ctx, served, features, output)
    # Stochastic methods again with another seed: stability, and anchor confidence.
    reruns = [explain(model, x, method=e.method, target=target, random_state=seed + 1)
              for e in explanations if e.method in STOCHASTIC_METHODS]
    explanations, quality = assessed(model, x, explanations, reruns=reruns,
                                     thresholds=policy.quality)
    reliability = reliability_block(served, x, output, explanations, quality)
    if violations:
        reliability.update(level="low", shown=False, why_low=[
            *reliability["why_low"], "principal reasons failed the truth check"])
    matches = (align([*explanations, *reruns], served.anchors, row=features)
               if served.anchors is not None else None)
    explained_at = datetime.now(UTC)
    body: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA,
        "decision": {"decision_id": decision_id, "case_ref": row["case_ref"],
                     "subject_ref": row["subject_ref"],
                     "decided_at": rfc3339(row["decided_at"]),
                     "explained_at": rfc3339(explained_at)},
        "parties": {"deployer": {"name": ctx.settings.deployer_name,
                                 "contact": ctx.settings.deployer_contact},
                    "provider": {"name": ctx.settings.provider_name,
                                 "contact": ctx.settings.provider_contact}},
        "model": {"model_id": model.model_id, "version": model.version,
                  "fingerprint_sha256": model.fingerprint,
                  "training_data": served.card.training_data,
                  "purpose": served.card.purpose,
                  "validation_status": served.card.validation_status},
        "input": {"commitment": row["input_commitment"],
                  "commitment_scheme": "SHA-256(salt || RFC 8785 JSON of the input)",
                  "schema_version": schema.version,
                  "data_sources": list(served.card.data_sources),
                  "data_sources_by_locale": {
                      loc: [t[loc] for t in served.card.data_source_texts]
                      for loc in LOCALES}},
        "output": output,
        "explanations": [method_block(e) for e in explanations],
        "reasons": {**reasons.to_dict(), "check": {"passed": not violations,
                                                   "violations": violations}},
        "counterfactuals": counterfactuals,
        "reliability": reliability,
        "quality": quality,
        "regimes": list(served.card.regimes or DEFAULT_REGIMES),
        "provenance": provenance_chain(row, served, explanations, reasons.catalogue_version,
                                       matches),
        "fairness": fairness_block(served, explanations[0]),
    }
    if not reliability["shown"]:
        # Not shown to the subject: a person reviews the decision instead, opened in
        # the transaction that stores this report.
        due = add_working_days(explained_at, ctx.sla_days)
        gate = "reason_check" if violations else "quality_gate"
        why = violations if violations else quality["verdict"]["why"]
        body["review_required"] = {
            "kind": "human_review", "channel": gate,
            "requested_by": f"system:{'reason-check' if violations else 'explanation-quality'}",
            "due_at": rfc3339(due),
            "reason": ("principal reasons failed the truth check: " if violations else
                       "explanation not reliable enough to show: ") + "; ".join(why)}
    if matches is not None and served.anchors is not None:
        body["anchors"] = {"library": served.anchors.version,
                           "matches": [m.to_dict() for m in matches],
                           "hits": [m.anchor for m in matches if m.hit]}
    subject = {loc: subject_text(body, loc) for loc in LOCALES}
    body["subject_text"] = {loc: {"sha256": hashlib.sha256(canonical_json(v)).hexdigest()}
                            for loc, v in subject.items()}
    body["notices"] = ({"adverse_action_notice": {
        "date": rfc3339(explained_at), "channel": "subject view",
        "content_sha256": body["subject_text"]}} if output["adverse"] else {})
    return Report(**body)



def method_block(e: Explanation) -> dict[str, Any]:
    """An assessed explanation as a report's method block (attributions by feature)."""
    if not e.assessed or e.quality is None:
        # Never served without its quality block (see quality.assess.assessed).
        raise ExplanationError("explanation", "must be assessed before it is served",
                               e.method)
    names = e.feature_names or tuple(str(i) for i in range(e.values.shape[1]))
    baseline = e.baseline
    own = dict(e.quality.get("methods", {}).get(e.method) or {})
    fallback = ({"requested_method": e.parameters["requested_method"],
                 "fallback": e.parameters["fallback"]} if "fallback" in e.parameters else {})
    return {"method": e.method, **fallback, "parameters": dict(e.parameters),
            "quality": {"assessed": True, "checks": own,
                        "verdict": dict(e.quality.get("verdict") or {})},
            "library_versions": dict(e.library_versions), "seed": e.seed,
            "baseline_sha256": hashlib.sha256(np.ascontiguousarray(
                baseline, dtype=np.float64).tobytes()).hexdigest()
            if baseline is not None else None,
            "output_space": e.output_space,
            "expected_value": float(np.ravel(e.expected_value)[0])
            if e.expected_value is not None else None,
            "completeness_error": e.completeness_error,
            "wall_time_s": e.wall_time_s,
            "attributions": {n: float(v) for n, v in zip(names, e.values[0], strict=True)}}



def counterfactual_block(ctx: Context, served: ServedModel, features: Mapping[str, Any],
                         output: Mapping[str, Any]) -> dict[str, Any]:
    """What the subject could change (adverse decisions only): options that bring the
    adverse probability below the policy's threshold, each re-scored as a decision."""
    k = served.policy.counterfactuals
    if not output["adverse"] or k == 0:
        return {"requested": False, "options": [],
                "message": "not adverse: no change needed" if k else "disabled by policy"}
    favourable = [c for c in served.model.class_names if c != served.policy.adverse_class]
    probs = output["probabilities"]
    desired = max(favourable, key=lambda c: probs[c])
    adverse = served.model.class_index(served.policy.adverse_class)
    threshold = served.policy.threshold
    found = find_counterfactuals(
        served.model, features, desired_class=desired, k=k,
        constraints=ctx.action_constraints(served),
        # The policy decides, not the most probable class: below the threshold.
        reaches=lambda p: p[:, adverse] < threshold)
    schema = served.schema
    options = []
    for rank, option in enumerate(found.options, 1):
        # Re-score the changed applicant through the same path as a decision.
        _, rescored = score(served, option.row)
        options.append({
            "rank": rank, "cost": option.cost, "probability_desired": option.probability,
            "ood_score": option.ood_score,
            "neighbour_distance": option.neighbour_distance,
            "valid": rescored["decision"] == desired,
            "rescored_decision": rescored["decision"],
            "changes": [{"feature": c.feature, "before": c.before, "after": c.after,
                         "display": {loc: {
                             "feature": schema.display_name(c.feature, loc),
                             "before": schema.display_value(c.feature, c.before, loc),
                             "after": schema.display_value(c.feature, c.after, loc)}
                             for loc in LOCALES}}
                        for c in option.changes]})
    return {"requested": True, "desired_class": desired, "options": options,
            "message": found.message if found.found else NO_FEASIBLE_CHANGE,
            "original_ood_score": found.original_ood_score,
            "dropped": dict(found.dropped),
            "constraints": {**dict(found.constraints),
                            "never_changed": [f.name for f in schema.features
                                              if f.protected or not f.mutable]},
            "disclaimer": DISCLAIMER}



def reliability_block(served: ServedModel, x: np.ndarray, output: Mapping[str, Any],
                 explanations: Sequence[Explanation], quality: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """COMPLIANCE.md field 10, from the training profile and the quality block."""
    model = served.model
    ood = model.profile.assess(x)[0].to_dict() if model.profile is not None else None
    fidelity = {e.method: e.completeness_error for e in explanations}
    stability: dict[str, Any] = {}
    for method, block in quality["methods"].items():
        seeds = block.get("seed_stability")
        stability[method] = ({"deterministic": False, "seeds": seeds["seeds"],
                              "spearman": seeds["spearman"],
                              "kendall": seeds["kendall"]}
                             if seeds is not None else {"deterministic": True})
    reasons: list[str] = []
    if ood is not None and ood["out_of_distribution"]:
        reasons.append("input far from the training data (out of distribution)")
    reasons += quality["verdict"]["why"]
    # "normal" only for a validated explanation: its faithfulness was measured.
    principal = quality.get("methods", {}).get(quality.get("principal"), {})
    if (principal.get("curves") or {}).get("gap") is None:
        reasons.append("explanation not validated: its faithfulness (deletion/insertion "
                       "gap) could not be measured")
    return {"model_confidence": output["confidence"], "fidelity": fidelity,
            "stability": stability, "out_of_distribution": ood,
            "level": "low" if reasons else "normal", "why_low": reasons,
            "shown": quality["verdict"]["action"] != "withhold",
            "known_limits": list(served.card.known_limits)}



def fairness_block(served: ServedModel, explanation: Explanation) -> dict[str, Any]:
    """The share of the attribution on protected features (and, by name, on each), and
    on their likely proxies (features associated with them in the training data)."""
    values = np.abs(np.asarray(explanation.values[0], dtype=np.float64))
    total = float(values.sum())
    names = list(explanation.feature_names or ())

    def share(name: str) -> float:
        return float(values[names.index(name)]) / total if total and name in names \
            else 0.0

    shares = {f.name: share(f.name) for f in served.schema.features
              if f.protected and f.name in names}
    proxies = sorted({p for group in served.proxies.values() for p in group})
    return {"protected_share": float(sum(shares.values())), "by_feature": shares,
            "proxy_share": float(sum(share(p) for p in proxies)),
            "proxies": {k: list(v) for k, v in served.proxies.items()},
            "proxy_tests": {k: [dict(t) for t in v] for k, v in served.proxy_tests.items()},
            "method": explanation.method}



def provenance_chain(row: Mapping[str, Any], served: ServedModel,
                     explanations: Sequence[Explanation], catalogue: str,
                     matches: Sequence[AnchorMatch] | None = None) -> list[dict[str, Any]]:
    """input -> layer activations -> gradient weighting -> anchor match -> regulatory
    rule -> hash: each link names what it used, so the chain can be re-walked."""
    adapter = served.model.adapter
    layers = ("not applicable: " + type(getattr(adapter, "estimator", adapter)).__name__
              + " has no layers (tree ensemble or estimator)"
              if adapter.framework != "torch" else
              "; ".join(f"{name}: {type(m).__name__}" for name, m in
                        adapter.module.named_modules() if name))  # type: ignore[attr-defined]
    chain = [
        {"step": "input", "detail": f"commitment {row['input_commitment']}, schema "
                                    f"{served.schema.version}"},
        {"step": "layer activations", "detail": layers},
        {"step": "gradient weighting",
         "detail": "; ".join(f"{e.method} ({e.output_space or 'output'}, "
                             f"completeness error {e.completeness_error})"
                             for e in explanations)},
        {"step": "anchor match", "detail": "; ".join(
            f"{m.anchor} sensitivity {m.sensitivity:.3f} risk {m.risk:.2f}"
            f"{' HIT' if m.hit else ''}" for m in matches)
         if matches else "feature schema reason codes (no semantic anchors registered "
                         "for this model)"},
        {"step": "regulatory rule", "detail": f"Regulation B 12 CFR 1002.9(b)(2): at most "
                                              f"four principal reasons, catalogue "
                                              f"{catalogue}; protected features excluded"},
    ]
    digest = hashlib.sha256(canonical_json(chain) + b"".join(
        canonical_json(e.to_dict()) for e in explanations)).hexdigest()
    chain.append({"step": "hash", "detail": digest})
    return chain



def explain_adhoc(ctx: Context, *, model_id: str, features: Mapping[str, Any], method: str,
                  actor: str, version: str | None = None, target: str | None = None,
                  params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Explain an input that is not a decision; the log commits to input and result."""
    served = ctx.model(model_id, version)
    x, output = score(served, features)
    e = explain(served.model, x, method=method, target=target or output["decision"],
                random_state=0, **dict(params or {}))
    [e], quality = assessed(served.model, x, [e], thresholds=served.policy.quality)
    salt = secrets.token_bytes(32)
    commitment = hashlib.sha256(salt + canonical_json(dict(features))).hexdigest()
    result = e.to_dict()
    digest = hashlib.sha256(canonical_json(result)).hexdigest()
    matches = (align(e, served.anchors, row=features)
               if served.anchors is not None else None)
    chain = provenance_chain({"input_commitment": commitment}, served, [e],
                             "reg-b-form-c1", matches)
    entry_id, leaf = ctx.store.record_adhoc(model_key=served.key, actor=actor,
                                             method=method, input_commitment=commitment,
                                             explanation_sha256=digest)
    return {"explanation_id": entry_id, "model": served.key, "output": output,
            "input_salt": base64.b64encode(salt).decode(),
            "explanation": method_block(e), "explanation_sha256": digest,
            "provenance": chain, "receipt": ctx.store.receipt(leaf).to_dict(),
            "anchors": [m.to_dict() for m in matches] if matches is not None else None,
            "fairness": fairness_block(served, e), "quality": quality,
            "library_versions": library_versions()}
