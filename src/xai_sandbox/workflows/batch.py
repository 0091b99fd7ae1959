"""Explain a whole table of rows: Ray tasks over shards, resumable, exactly once.

The input (CSV or Parquet, raw features as the schema names them) is read in shards of
``shard_rows`` rows, never whole. Each shard is one Ray task: it scores its rows with the
served model (put in Ray's object store once), explains them with one method and writes
one Parquet file, first under a temporary name and then renamed, so a shard's file exists
only complete. A batch started again with the same arguments into the same folder skips
the shards whose files exist and computes the others; every shard's rows and seed depend
on its number alone, so a shard computed twice (a worker killed and its task retried)
gives the same file. When every shard is there the manifest is written: the model's
fingerprint, the method and its parameters, library versions and each shard's SHA-256.
With ``record=`` a store, each row also becomes a decision in it with its report
(:mod:`~xai_sandbox.workflows.batch_record`), each once.

Ray is started on this machine with its cores when no ``address`` is given, or joined at
``address`` (``auto``, ``host:port`` of a running cluster, or ``ray://`` with Ray's client).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xai_sandbox.audit.canonical import sha256_file
from xai_sandbox.errors import InvalidInputError, SchemaError, XaiSandboxError, number_in
from xai_sandbox.explainers import EXPLAINERS, explain
from xai_sandbox.explainers.explanation import library_versions
from xai_sandbox.semantics.reasons import reason_codes
from xai_sandbox.settings import Settings
from xai_sandbox.store.store import Store
from xai_sandbox.workflows.batch_record import decision_ids, record_shard
from xai_sandbox.workflows.scoring import outcomes
from xai_sandbox.workflows.served import ServedModel

__all__ = ["BATCH_FORMAT", "BatchPlan", "BatchProgress", "BatchResult", "batch_model_key",
           "explain_batch", "explain_shard", "read_shards"]

BATCH_FORMAT = "xai-sandbox-batch/1"
PLAN = "plan.json"
MANIFEST = "manifest.json"
TOP_REASONS = 4


@dataclass(frozen=True)
class BatchPlan:
    """What identifies a batch: a folder holds one plan, and a batch started again into it
    must have the same one (then it resumes)."""

    model_key: str
    fingerprint: str
    method: str
    params: Mapping[str, Any]
    seed: int
    shard_rows: int
    key_column: str | None
    input: Mapping[str, Any]     # path, size and modification time of the input file
    features: tuple[str, ...]
    record: bool = False         # each row also recorded as a decision with its report
    subject_column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": BATCH_FORMAT, "model_key": self.model_key,
                "fingerprint": self.fingerprint, "method": self.method,
                "params": dict(self.params), "seed": self.seed,
                "shard_rows": self.shard_rows, "key_column": self.key_column,
                "input": dict(self.input), "features": list(self.features),
                "record": self.record, "subject_column": self.subject_column}


@dataclass(frozen=True)
class BatchProgress:
    """Where a running batch stands (given to the progress callback after each shard)."""

    rows_done: int
    shards_done: int
    shards_skipped: int
    rows_total: int | None
    elapsed_s: float
    rows_kept: int = 0          # of rows_done, those in shards an earlier run had written

    @property
    def rows_per_s(self) -> float:
        """Rows computed (not kept) per second."""
        done = self.rows_done - self.rows_kept
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class BatchResult:
    output: Path
    manifest: dict[str, Any]
    rows: int
    shards_computed: int
    shards_skipped: int
    elapsed_s: float
    cores: float                # Ray's CPUs (0: every shard was kept, Ray not started)
    nodes: int = 0              # the Ray nodes that computed this run's shards
    recorded: int = 0           # decisions this run wrote to the store (record=)


def shard_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def _column(name: str) -> str:
    return f"attr.{name}"


def _in_input(exc: SchemaError, first_row: int) -> SchemaError:
    """A shard's error about ``rows[i]`` as one about the input's row ``first_row + i``."""
    found = re.match(r"rows\[(\d+)\](.*)", exc.parameter)
    if found is None:
        return exc
    where = f"input row {first_row + int(found.group(1))}{found.group(2)}"
    return SchemaError(where, exc.rule, exc.value)


def explain_shard(served: ServedModel, frame: Any, index: int, first_row: int,
                  plan: Mapping[str, Any], output: str) -> dict[str, Any]:
    """Explain one shard's rows and write its Parquet file (what one Ray task runs).

    Returns the shard's entry of the manifest: name, first row, rows and SHA-256.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xai_sandbox.datasets.rows import schema_rows

    schema = served.schema
    try:
        rows = schema_rows(schema, frame)
        x = schema.encode(rows)
    except SchemaError as exc:
        raise _in_input(exc, first_row) from None
    probs = served.model.probabilities(x)
    decided, adverse = outcomes(served, probs)
    names = served.model.class_names
    # The seed of a shard is its number's: the same file however often it is computed.
    seed = int.from_bytes(hashlib.sha256(f"{plan['seed']}:{index}".encode()).digest()[:4],
                          "big")
    e = explain(served.model, x, method=plan["method"], target=decided, random_state=seed,
                **plan["params"])
    values = np.asarray(e.values, dtype=np.float64)
    if e.feature_names != schema.names:
        raise InvalidInputError("method", "must give one value per schema feature in a "
                                "batch", plan["method"])
    key_column = plan["key_column"]
    keys = ([str(k) for k in frame[key_column]] if key_column is not None
            else [str(first_row + i) for i in range(len(rows))])
    reference = (schema.decode(np.atleast_2d(served.model.reference))[0]
                 if served.model.reference is not None else None)
    columns: dict[str, Any] = {"key": keys}
    for j, name in enumerate(schema.names):
        columns[_column(name)] = values[:, j]
    delta = (np.asarray(e.delta, dtype=np.float64) if e.delta is not None
             else np.full(len(rows), np.nan))
    columns.update({
        "decision": [names[int(k)] for k in decided],
        "adverse": adverse.astype(bool),
        "score": probs[:, names.index(served.policy.adverse_class)].astype(np.float64),
        "prediction": e.explained_output(),
        "expected_value": np.broadcast_to(np.asarray(e.expected_value, dtype=np.float64),
                                          (len(rows),)),
        "completeness_error": delta,
        "output_space": [e.output_space] * len(rows)})
    reasons = [reason_codes(values[r], schema, rows[r], adverse=bool(adverse[r]),
                            reference=reference) for r in range(len(rows))]
    for k in range(TOP_REASONS):
        columns[f"reason_{k + 1}"] = [rs[k][1] if k < len(rs) else None for rs in reasons]
        columns[f"reason_{k + 1}_feature"] = [rs[k][0] if k < len(rs) else None
                                              for rs in reasons]
    table = pa.table(columns)
    final = Path(output) / shard_name(index)
    temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, temporary)
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, final)     # the shard exists complete, or not at all
    return {"name": final.name, "first_row": first_row, "rows": len(rows),
            "sha256": sha256_file(final)}


def _explain_shard_task(served: ServedModel, frame: Any, index: int, first_row: int,
                        plan: Mapping[str, Any], output: str, threads: int,
                        settings: Settings | None) -> tuple[dict[str, Any], str, list[Any]]:
    """:func:`explain_shard` as a Ray task runs it, with torch on the task's ``threads``
    cores: the shard's entry, the id of the node it ran on, and with ``settings`` (a
    recording batch) the shard's decisions prepared for the driver to write."""
    import ray
    import torch

    from xai_sandbox.workflows.batch_record import prepare_shard

    torch.set_num_threads(threads)
    entry = explain_shard(served, frame, index, first_row, plan, output)
    made = (prepare_shard(served, frame, index, first_row, plan, settings)
            if settings is not None else [])
    return entry, ray.get_runtime_context().get_node_id(), made


def _input_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size,
            "modified_ns": stat.st_mtime_ns}


def _plan(served: ServedModel, source: Path, method: str | None,
          params: Mapping[str, Any] | None, seed: int, shard_rows: int,
          key_column: str | None, record: bool, subject_column: str | None) -> BatchPlan:
    chosen = method or served.policy.methods[0]
    if chosen not in EXPLAINERS:
        raise InvalidInputError("method", f"must be one of {sorted(EXPLAINERS)}", chosen)
    if params is not None and not isinstance(params, Mapping):
        raise InvalidInputError("params", "must be a mapping of parameter to value", params)
    number_in(shard_rows, 1, 1_000_000, "shard_rows", integer=True)
    number_in(seed, 0, 2**32 - 1, "seed", integer=True)
    if not source.is_file():
        raise InvalidInputError("input", "must be an existing CSV or Parquet file",
                                str(source))
    return BatchPlan(model_key=served.key, fingerprint=served.model.fingerprint,
                     method=chosen, params=dict(params or {}), seed=seed,
                     shard_rows=shard_rows, key_column=key_column,
                     input=_input_identity(source), features=served.schema.names,
                     record=record, subject_column=subject_column)


def _claim_folder(output: Path, plan: BatchPlan) -> None:
    """Make ``output`` this batch's folder, or check it already is (a resumed batch)."""
    output.mkdir(parents=True, exist_ok=True)
    found = output / PLAN
    wanted = json.loads(json.dumps(plan.to_dict()))
    if found.exists():
        held = json.loads(found.read_text())
        differs = sorted(k for k in set(held) | set(wanted) if held.get(k) != wanted.get(k))
        if differs:
            raise InvalidInputError(
                "output", f"holds another batch (its {', '.join(differs)} differ): use a new "
                "folder, or the same arguments to resume it", str(output))
    else:
        temporary = output / f".{PLAN}.tmp"
        temporary.write_text(json.dumps(wanted, indent=2, sort_keys=True))
        os.replace(temporary, found)
    for stale in output.glob(".part-*.tmp"):   # a shard being written when it stopped
        stale.unlink(missing_ok=True)


def _frames(source: Path, plan: BatchPlan) -> Iterator[Any]:
    from xai_sandbox.datasets.tables import iter_table

    columns = list(plan.features) + [c for c in (plan.key_column, plan.subject_column)
                                     if c and c not in plan.features]
    columns = list(dict.fromkeys(columns))
    return iter_table(source, plan.shard_rows, columns=columns)


def _ray(address: str | None, num_cpus: int | None) -> Any:
    import ray

    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": False}
        if address is None:
            # "local": a Ray of our own even where a cluster runs on this machine (ray.init
            # without an address would join it); --address auto joins one on purpose.
            options["num_cpus"] = num_cpus or os.cpu_count() or 1
        ray.init(address=address or "local", **options)
    return ray


def _rows_total(source: Path) -> int | None:
    if source.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(source).metadata.num_rows)
    return None


def explain_batch(served: ServedModel, source: str | Path, output: str | Path, *,
                  method: str | None = None, params: Mapping[str, Any] | None = None,
                  seed: int = 0, shard_rows: int = 4096, key_column: str | None = None,
                  address: str | None = None, num_cpus: int | None = None,
                  max_in_flight: int | None = None, cpus_per_task: int = 1,
                  record: Store | None = None, subject_column: str | None = None,
                  progress: Callable[[BatchProgress], None] | None = None) -> BatchResult:
    """Explain every row of ``source`` with ``served`` into Parquet shards in ``output``.

    Parameters
    ----------
    method, params:
        The explanation method (default: the model's policy's first) and its parameters.
    seed:
        The batch's seed; shard i's methods draw from a seed derived from it and i.
    shard_rows:
        Rows per shard: one Ray task, one file, and (with ``max_in_flight``) what bounds
        the memory the batch holds.
    key_column:
        The input's column that identifies a row (kept in the output); default: the row's
        number in the input, from 0.
    address:
        A running Ray cluster (``auto``, ``host:port``, ``ray://host:port``); default: Ray
        started on this machine with ``num_cpus`` (default: every core).
    max_in_flight:
        Shards submitted and not yet written at any time (default: twice Ray's CPUs).
    record, subject_column:
        A store: each row also becomes a decision in it, with its full report (or its
        explanation job, as the model's policy says), written in transactions of many
        decisions; once each, however often the batch is interrupted and resumed. The
        subject of each is ``subject_column``'s value (default: ``row-`` and the row's
        key). The workers open the store with its settings (its secrets with them).
    cpus_per_task:
        Cores each shard's task holds, and torch's threads in it (default 1: one task per
        core; more suits a method whose model calls are large, such as exact Shapley on a
        neural network, where torch's threads share one call).
    progress:
        Called after every shard with a :class:`BatchProgress`.
    """
    source, out = Path(source), Path(output)
    plan = _plan(served, source, method, params, seed, shard_rows, key_column,
                 record is not None, subject_column)
    if subject_column is not None and record is None:
        raise InvalidInputError("subject_column", "is for a recording batch (record=)",
                                subject_column)
    if max_in_flight is not None:
        number_in(max_in_flight, 1, 10_000, "max_in_flight", integer=True)
    number_in(cpus_per_task, 1, 1024, "cpus_per_task", integer=True)
    if num_cpus is not None:
        number_in(num_cpus, 1, 4096, "num_cpus", integer=True)
        if address is not None:
            raise InvalidInputError("num_cpus", "is for a Ray started here; a cluster at "
                                    "address brings its own cores", num_cpus)
    _claim_folder(out, plan)
    frames = _frames(source, plan)          # opened now: a bad file fails before Ray starts
    plan_dict = plan.to_dict()
    started = time.perf_counter()
    total = _rows_total(source)
    entries: dict[int, dict[str, Any]] = {}
    pending: dict[Any, int] = {}
    skipped = rows_done = rows_kept = recorded = 0
    settings = record.settings if record is not None else None
    engine: dict[str, Any] = {}             # Ray, started at the first shard to compute
    nodes: set[str] = set()                 # the Ray nodes that computed shards

    def submit(frame: Any, index: int, first: int) -> None:
        if not engine:
            ray = _ray(address, num_cpus)
            cores = int(ray.cluster_resources().get("CPU", 1))
            if cpus_per_task > cores:         # Ray would wait for such a node for ever
                raise InvalidInputError("cpus_per_task", f"must be at most the {cores} "
                                        "cores Ray has", cpus_per_task)
            engine.update(ray=ray, model=ray.put(served),      # once, not per task
                          task=ray.remote(_explain_shard_task).options(
                              max_retries=3, retry_exceptions=False, num_cpus=cpus_per_task,
                              scheduling_strategy="SPREAD"),     # over every node
                          limit=max_in_flight or max(2, 2 * cores // cpus_per_task))
        ref = engine["task"].remote(engine["model"], frame, index, first, plan_dict, str(out),
                                    cpus_per_task, settings)
        pending[ref] = index

    def report() -> None:
        if progress is not None:
            progress(BatchProgress(rows_done=rows_done, shards_done=len(entries),
                                   shards_skipped=skipped, rows_total=total,
                                   elapsed_s=time.perf_counter() - started,
                                   rows_kept=rows_kept))

    def collect(block: bool) -> None:
        nonlocal rows_done, recorded
        if not pending:
            return
        ray = engine["ray"]
        while pending and (block or len(pending) >= engine["limit"]):
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                index = pending.pop(ref)
                try:
                    entries[index], node, made = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, XaiSandboxError):    # a bad row, say
                        raise exc.cause from None
                    raise
                nodes.add(node)
                if record is not None:
                    recorded += record_shard(record, made)
                rows_done += entries[index]["rows"]
            report()
            block = block and bool(pending)

    try:
        first = 0
        for index, frame in enumerate(frames):
            done = out / shard_name(index)
            if done.exists() and not (record is not None and _unrecorded(
                    record, plan_dict, index, len(frame))):
                entries[index] = {"name": done.name, "first_row": first, "rows": len(frame),
                                  "sha256": sha256_file(done)}
                rows_done += len(frame)
                rows_kept += len(frame)
                skipped += 1
                report()
            else:
                submit(frame, index, first)
                collect(block=False)
            first += len(frame)
        collect(block=True)
    except BaseException:
        for ref in pending:                 # stop cleanly: written shards stay, for a resume
            with contextlib.suppress(Exception):
                engine["ray"].cancel(ref, force=True)
        raise
    elapsed = time.perf_counter() - started
    manifest = _write_manifest(out, plan, served, entries)
    cores = float(engine["ray"].cluster_resources().get("CPU", 0.0)) if engine else 0.0
    return BatchResult(output=out, manifest=manifest, rows=rows_done,
                       shards_computed=len(entries) - skipped, shards_skipped=skipped,
                       elapsed_s=elapsed, cores=cores, nodes=len(nodes), recorded=recorded)


def _unrecorded(store: Store, plan: Mapping[str, Any], index: int, rows: int) -> bool:
    """Whether a written shard of a recording batch has decisions not yet in the store
    (the driver stopped between the shard's file and its transaction): then it is
    computed again, the same, and its missing decisions written."""
    ids = decision_ids(plan, index, rows)
    return len(store.recorded(ids)) < len(ids)


def _write_manifest(out: Path, plan: BatchPlan, served: ServedModel,
                    entries: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    shards = [dict(entries[i]) for i in sorted(entries)]
    if [s["name"] for s in shards] != [shard_name(i) for i in range(len(shards))]:
        raise InvalidInputError("output", "is missing shards", sorted(entries))
    manifest = {**plan.to_dict(), "model": {"model_id": served.model.model_id,
                                           "version": served.model.version,
                                           "fingerprint_sha256": served.model.fingerprint},
                "rows": sum(s["rows"] for s in shards), "shards": shards,
                "library_versions": library_versions(),
                "columns": {"key": "the row's key", **{
                    _column(n): f"attribution of {n}" for n in plan.features},
                    "prediction": "the model's output explained, in output_space",
                    "expected_value": "the explanation's base value",
                    "completeness_error": "sum of attributions - (prediction - expected)"}}
    temporary = out / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(temporary, out / MANIFEST)
    return manifest


def batch_model_key(output: str | Path) -> str:
    """The key of the model a finished batch in ``output`` was explained with."""
    path = Path(output) / MANIFEST
    if not path.is_file():
        raise InvalidInputError("output", "must be a finished batch's folder (it has no "
                                "manifest.json)", str(output))
    return str(json.loads(path.read_text())["model_key"])


def read_shards(output: str | Path, columns: Sequence[str] | None = None) -> Iterator[Any]:
    """The shards of a finished batch, in order, as pyarrow tables, each checked against
    the manifest's SHA-256 before it is read."""
    import pyarrow.parquet as pq

    out = Path(output)
    manifest_path = out / MANIFEST
    if not manifest_path.exists():
        raise InvalidInputError("output", "has no manifest: the batch has not finished "
                                "(run it again with the same arguments)", str(out))
    manifest = json.loads(manifest_path.read_text())
    for shard in manifest["shards"]:
        path = out / shard["name"]
        if not path.exists() or sha256_file(path) != shard["sha256"]:
            raise InvalidInputError("output", f"shard {shard['name']} does not match the "
                                    "manifest's SHA-256", str(path))
        yield pq.read_table(path, columns=list(columns) if columns else None)
