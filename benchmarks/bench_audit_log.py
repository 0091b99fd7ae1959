"""The audit log: durable appends, inclusion proofs and full verification, beside pymerkle.

Ours: every append writes the decision, its payload, the log entry and the new Merkle
nodes in one transaction (SQLite WAL with synchronous=FULL; PostgreSQL with fsync and
synchronous_commit on), one at a time or batched (group commit). pymerkle's SqliteTree
appends bare leaves. Proofs are timed at the full size (1,000,000 entries by default);
``verify`` recomputes every leaf from the stored records, every node, and every
checkpoint.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import parse, versions
from xai_sandbox.audit.merkle import inclusion_proof, verify_inclusion
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store.log import SqlNodes
from xai_sandbox.store.verify import verify_log

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from pgserver import MissingPostgresError, PostgresServer

FP = "ab" * 32


def _item(i: int) -> dict[str, object]:
    return {"model_key": "m@1", "subject_id": f"subject-{i}", "inputs": {"i": i, "age": 40},
            "output": {"score": 0.5, "decision": "approved"}, "policy_version": "p/1"}


def appends(store: Store, single: int, batches: int, batch: int) -> tuple[float, float]:
    start = time.perf_counter()
    for i in range(single):
        store.record_decision(**_item(i))  # type: ignore[arg-type]
    one = single / (time.perf_counter() - start)
    start = time.perf_counter()
    for b in range(batches):
        store.record_decisions([_item(b * batch + i) for i in range(batch)])
    many = batches * batch / (time.perf_counter() - start)
    return one, many


def pymerkle_appends(folder: Path, single: int, batches: int, batch: int) -> tuple[float, float]:
    from pymerkle import SqliteTree

    tree = SqliteTree(str(folder / "pymerkle.db"))
    start = time.perf_counter()
    for i in range(single):
        tree.append_entry(f"entry-{i}".encode())
    one = single / (time.perf_counter() - start)
    start = time.perf_counter()
    for b in range(batches):
        tree.append_entries([f"entry-{b}-{i}".encode() for i in range(batch)])
    many = batches * batch / (time.perf_counter() - start)
    tree.close()
    return one, many


def main() -> None:
    args = parse(__doc__ or "")
    n = 20_000 if args.quick else 1_000_000
    single, batches, batch = (50, 10, 200) if args.quick else (300, 20, 500)
    print(f"Audit log benchmark ({versions()})")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = []
        backends: list[tuple[str, str | None]] = [("SQLite", None)]
        server = None
        try:
            server = PostgresServer()
            server.start()
            backends.append(("PostgreSQL", server.new_database()))
        except MissingPostgresError as exc:
            print(f"  (PostgreSQL skipped: {exc})")
        try:
            for name, url in backends:
                store = Store(Settings(data_dir=folder / name, database_url=url))
                store.register_model("m", "1", FP)
                rows.append((name, *appends(store, single, batches, batch)))
                store.close()
        finally:
            if server is not None:
                server.stop()
        rows.append(("pymerkle SqliteTree (bare leaves)",
                     *pymerkle_appends(folder, single, batches, batch)))
        print(f"\n  durable appends per second (batches of {batch}):")
        for name, one, many in rows:
            print(f"    {name:<36} one at a time {one:9.0f}/s   batched {many:9.0f}/s")

        # ---------------------------------------------------------------- n entries
        store = Store(Settings(data_dir=folder / "big"))
        store.register_model("m", "1", FP)
        start = time.perf_counter()
        chunk = 10_000
        while store.log.size() < n:
            todo = min(chunk, n - store.log.size())
            store.record_decisions([_item(i) for i in range(todo)])
        build = time.perf_counter() - start
        store.log.checkpoint()
        size = store.log.size()
        root = store.log.root(size)
        rng = random.Random(0)
        picks = [rng.randrange(size) for _ in range(1000)]
        times = []
        with store.engine.connect() as conn:
            read = SqlNodes(conn).read
            for i in picks:
                t0 = time.perf_counter()
                inclusion_proof(i, size, read)
                times.append(time.perf_counter() - t0)
            proof = inclusion_proof(picks[0], size, read)
        leaf = store.log.receipt(picks[0]).leaf_hash
        verify_inclusion(picks[0], size, leaf, proof, root)
        ours_proof = statistics.median(times)
        start = time.perf_counter()
        report = verify_log(store.engine, store.keys.verifiers(), store.log.origin)
        verify_time = time.perf_counter() - start
        store.close()

        from pymerkle import SqliteTree

        tree = SqliteTree(str(folder / "pymerkle-big.db"))
        start = time.perf_counter()
        for s in range(0, size, 100_000):
            tree.append_entries([f"e{i}".encode() for i in range(s, min(size, s + 100_000))])
        pm_build = time.perf_counter() - start
        tree.prove_inclusion(1, size)
        pm_times = []
        for i in picks[:200]:
            t0 = time.perf_counter()
            tree.prove_inclusion(i + 1, size)  # pymerkle counts leaves from 1
            pm_times.append(time.perf_counter() - t0)
        tree.close()
        pm_proof = statistics.median(pm_times)
        print(f"\n  {size:,} entries (decisions with payloads; pymerkle: bare leaves)")
        print(f"    build: ours {build:7.1f} s ({size / build:8.0f}/s)   pymerkle "
              f"{pm_build:7.1f} s ({size / pm_build:8.0f}/s)")
        print(f"    inclusion proof, median: ours {ours_proof * 1e3:.3f} ms   pymerkle "
              f"{pm_proof * 1e3:.3f} ms   ratio {pm_proof / ours_proof:.1f}x")
        print(f"    full verify (records, leaves, nodes, checkpoints): {verify_time:.1f} s "
              f"({'OK' if report.ok else report.problems[0]}); pymerkle has no equivalent")


if __name__ == "__main__":
    main()
