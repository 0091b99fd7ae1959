"""Who may do what enters the audit log: one entry per principal and per API key stored
before this revision (change ``existing``), so ``audit verify``, which replays these
entries against the principals and api_keys tables, passes on databases made before it.
From this revision on, every change to a principal or key logs its own entry.

Revision ID: 0005
Revises: 0004
"""

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.audit.merkle import append_nodes, leaf_hash

revision = "0005"
down_revision = "0004"

_SHIFT = 56  # log_nodes keys are (level << 56) | index


def upgrade() -> None:
    log_existing(op.get_bind())


def log_existing(conn: sa.Connection) -> list[int]:
    """Append the state of every principal, then every key, oldest first; their leaves."""
    meta = sa.MetaData()
    principals = sa.Table("principals", meta, autoload_with=conn)
    keys = sa.Table("api_keys", meta, autoload_with=conn)
    now = datetime.now(UTC)
    entries = [(f"principals:{r['id']}", principal_entry(dict(r), now)) for r in conn.execute(
        sa.select(principals).order_by(principals.c.created_at, principals.c.id)).mappings()]
    entries += [(f"api_keys:{r['id']}", key_entry(dict(r), now)) for r in conn.execute(
        sa.select(keys).order_by(keys.c.created_at, keys.c.id)).mappings()]
    return append(conn, entries) if entries else []


# Frozen copies of the entry rules in store/entries.py (the tests hold them equal).
def _time(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def principal_entry(row: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    return {"kind": "principal_recorded", "change": "existing", "at": _time(at),
            "principal_id": row["id"], "name_sha256": _sha(row["name"]),
            "roles": str(row["roles"]).split(","), "subject_ref": row["subject_ref"],
            "disabled": bool(row["disabled"]), "created_at": _time(row["created_at"])}


def key_entry(row: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    return {"kind": "api_key_recorded", "change": "existing", "at": _time(at),
            "key_id": row["id"], "principal_id": row["principal_id"],
            "secret_sha256": row["secret_sha256"], "label_sha256": _sha(row["label"]),
            "created_at": _time(row["created_at"]), "revoked_at": _time(row["revoked_at"])}


def append(conn: sa.Connection, entries: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """RFC 9162 appends, as the audit log makes them (its leaves, nodes and head)."""
    meta = sa.MetaData()
    head = sa.Table("log_head", meta, autoload_with=conn)
    log = sa.Table("log_entries", meta, autoload_with=conn)
    nodes = sa.Table("log_nodes", meta, autoload_with=conn)
    size = int(conn.execute(sa.select(head.c.size).where(head.c.id == 1).with_for_update())
               .scalar_one())

    def read(wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        keys = [(lv << _SHIFT) | ix for lv, ix in wanted]
        found: dict[tuple[int, int], bytes] = {}
        for start in range(0, len(keys), 500):
            for r in conn.execute(sa.select(nodes.c.node, nodes.c.hash).where(
                    nodes.c.node.in_(keys[start:start + 500]))):
                found[(r.node >> _SHIFT, r.node & ((1 << _SHIFT) - 1))] = bytes(r.hash)
        return found

    bodies = [canonical_json(entry) for _, entry in entries]
    hashes = [leaf_hash(b) for b in bodies]
    made = append_nodes(size, hashes, read)
    now = datetime.now(UTC)
    conn.execute(sa.insert(log), [
        {"idx": size + i, "kind": entry["kind"], "record_id": record_id, "body": body,
         "leaf_hash": h, "appended_at": now}
        for i, ((record_id, entry), body, h) in enumerate(zip(entries, bodies, hashes,
                                                              strict=True))])
    conn.execute(sa.insert(nodes), [{"node": (lv << _SHIFT) | ix, "hash": h}
                                    for (lv, ix), h in made.items()])
    conn.execute(sa.update(head).where(head.c.id == 1).values(size=size + len(entries)))
    return list(range(size, size + len(entries)))


def downgrade() -> None:
    """Nothing to undo: the log is append-only, and the entries stay true history."""
