"""The console's decisions list over 100,000 stored decisions: the target is under 200 ms
on the server for a page, whatever the filters and however deep the page.

The decisions go in by the store's own write path (``record_decisions``: rows, payloads,
audit-log entries, facets); their reports and reviews are not computed (100,000
explanations would take an hour): the facets a report and a review would set (anchor
hits, reliability, review status) are written straight to the facets table, in realistic
shares. Pages are rendered by the running application in this process (no network), each
query timed over repeated requests, median and 95th percentile.

Side by side, the same lists without the facets table (the outcome read from the
decision's JSON column, the count by a full scan): what a list over the records alone
costs.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse
from xai_sandbox.service import create_app
from xai_sandbox.service.demo import setup_demo
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t
from xai_sandbox.store.store import DecisionFilter

TARGET_MS = 200.0


def populate(store: Store, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch = 2000
    for first in range(0, n, batch):
        items = []
        for i in range(first, min(n, first + batch)):
            outcome = "bad" if rng.random() < 0.3 else "good"
            items.append({"model_key": "credit@3" if i % 4 else "credit-mlp@1",
                          "subject_id": f"applicant-{i}", "inputs": {"row": i},
                          "output": {"decision": outcome, "adverse": outcome == "bad",
                                     "label": {"en": outcome, "zh": outcome}},
                          "policy_version": "1", "case_ref": f"APP-{i:06d}",
                          "decided_at": start + timedelta(minutes=5 * i)})
        store.record_decisions(items)
    # What reports and reviews would have set: 95% explained, 8% low reliability, 1%
    # withheld, 6% with an anchor hit, 3% with a review (a third of them decided).
    f = t.decision_facets
    with store.writer.begin() as conn:
        ids = conn.execute(select(f.c.decision_id)).scalars().all()
        for share, values in ((0.95, {"reliability": "normal", "anchor_hits": 0}),
                              (0.08, {"reliability": "low"}), (0.01, {"reliability":
                                                                       "withheld"}),
                              (0.06, {"anchor_hits": 1}), (0.03, {"review_status":
                                                                  "pending"}),
                              (0.01, {"review_status": "reversed"})):
            chosen = rng.sample(ids, int(share * len(ids)))
            for part in range(0, len(chosen), 5000):
                conn.execute(update(f).where(f.c.decision_id.in_(chosen[part:part + 5000]))
                             .values(**values))


QUERIES = [
    ("first page, no filter", ""),
    ("page 100 (rows 4,951-5,000)", "page=100"),
    ("page 1,000 (rows 49,951-50,000)", "page=1000"),
    ("model and outcome", "model=credit%403&outcome=bad"),
    ("anchor hit and low reliability", "anchor=yes&reliability=low"),
    ("review pending, one month", "review=pending&since=2026-03-01&until=2026-03-31"),
    ("withheld, model, page 2", "reliability=withheld&model=credit%403&page=2"),
]


def timed(fn, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def naive(store: Store, outcome: str | None, offset: int) -> int:
    """The list without the facets: outcome from the JSON column, count by full scan."""
    d = t.decisions
    where = [d.c.output_json.like(f'%"decision":"{outcome}"%')] if outcome else []
    with store.engine.connect() as conn:
        conn.execute(select(d.c.id, d.c.case_ref, d.c.output_json).where(*where)
                     .order_by(d.c.decided_at.desc()).limit(50).offset(offset)).all()
        return int(conn.execute(select(func.count()).select_from(d).where(*where))
                   .scalar_one())


def main() -> None:
    args = parse(__doc__ or "", [("--decisions", {"type": int, "default": 100_000})])
    n = 5_000 if args.quick else args.decisions
    repeats = 5 if args.quick else 30
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-console-")),
                        rate_limit_key_per_minute=1_000_000)
    store = Store(settings)
    made = setup_demo(store)
    started = time.perf_counter()
    populate(store, n)
    with store.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(t.decisions)).scalar_one()
        if store.engine.dialect.name == "sqlite":
            conn.execute(text("ANALYZE"))
            conn.commit()
    print(f"{stored:,} decisions stored in {time.perf_counter() - started:.1f} s "
          f"(the store's write path, audit log included)")
    store.close()

    app = create_app(settings, start_workers=False)
    with TestClient(app) as client:
        session = app.state.rt.sessions.start(made["keys"]["carl-compliance"])
        headers = {"cookie": f"xai_console={session.token}"}
        print(f"\n{'decisions page (server, in process)':40} {'median':>9} {'p95':>9}  rows")
        worst = 0.0
        for name, query in QUERIES:
            def get(query: str = query) -> None:
                r = client.get(f"/console/decisions?{query}", headers=headers)
                assert r.status_code == 200, r.text[:500]
            median, p95 = timed(get, repeats)
            r = client.get(f"/console/decisions?{query}", headers=headers)
            rows = r.text.count("<tr><td><a href=\"/console/decisions/")
            worst = max(worst, p95)
            print(f"{name:40} {median:7.1f}ms {p95:7.1f}ms  {rows}")
        verdict = "within" if worst < TARGET_MS else "OVER"
        print(f"worst p95 {worst:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target")

    store = Store(settings)
    try:
        print(f"\n{'the query alone':40} {'facets':>9} {'no facets':>10} {'ratio':>7}")
        for name, outcome, page in (("first page, no filter", None, 1),
                                    ("outcome bad, first page", "bad", 1),
                                    ("outcome bad, page 100", "bad", 100)):
            ours, _ = timed(lambda o=outcome, p=page: store.search_decisions(
                DecisionFilter(outcome=o), limit=50, offset=(p - 1) * 50), repeats)
            theirs, _ = timed(lambda o=outcome, p=page: naive(store, o, (p - 1) * 50),
                              repeats)
            print(f"{name:40} {ours:7.1f}ms {theirs:8.1f}ms {theirs / ours:6.1f}x")
        print("(the facets count stops at 10,000 and the page says 'more than'; the full "
              "scan counts every row)")
    finally:
        store.close()


if __name__ == "__main__":
    main()
