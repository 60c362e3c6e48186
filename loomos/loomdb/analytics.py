"""Analytics and compliance reports, computed in SQL over the event table.

Group-by paths go through the same path grammar and bound parameters as queries.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import TYPE_CHECKING, Any

from loomos.loomdb.canonical import iso
from loomos.loomdb.errors import QueryError
from loomos.loomdb.query import resolve_path

if TYPE_CHECKING:
    from loomos.loomdb.store import EventStore

SUCCESS_TYPES = ("job.succeeded", "model.training.completed")
FAILURE_TYPES = ("job.failed", "model.training.failed")
COST_TYPE = "cost.recorded"
COST_DIMENSIONS = {"cost_center": "context.cost_center", "gpu_type": "data.gpu_type", "team": "data.team"}


def _group_expr(store: EventStore, path: str) -> tuple[str, list[Any]]:
    rp = resolve_path(path)
    if rp.kind == "json":
        sql, params = store.backend.json_text(rp.column, rp.keys)
        return sql, params
    if rp.kind in ("text", "int", "uuid", "time"):
        return f"CAST({rp.column} AS TEXT)", []
    raise QueryError(f"cannot group by {path!r}: pick a column, context./security. field or a data path")


def _range(store: EventStore, start: datetime | None, end: datetime | None) -> tuple[str, list[Any]]:
    for ts in (start, end):
        if ts is not None and ts.tzinfo is None:
            raise QueryError("timestamps need a timezone")
    if start is not None and end is not None and end <= start:
        raise QueryError("end must be after start")
    clauses, params = [], []
    if start is not None:
        clauses.append("occurred_at >= %s")
        params.append(store.backend.ts(start))
    if end is not None:
        clauses.append("occurred_at < %s")
        params.append(store.backend.ts(end))
    return (" AND " + " AND ".join(clauses)) if clauses else "", params


def _fetch(store: EventStore, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with store.backend.read() as cur:
        cur.execute(store.backend.sql(sql), params)
        return cur.fetchall()


def success_rate(
    store: EventStore, group_by: str, start: datetime | None = None, end: datetime | None = None
) -> list[dict[str, Any]]:
    """Training runs that ended, per month (of occurred_at) and value at `group_by`."""
    gexpr, gparams = _group_expr(store, group_by)
    rng, rparams = _range(store, start, end)
    types = [*SUCCESS_TYPES, *FAILURE_TYPES]
    month = store.backend.month_of("occurred_at")
    succ = ", ".join(["%s"] * len(SUCCESS_TYPES))
    sql = (
        f"SELECT {month} AS month, {gexpr} AS grp, "
        f"SUM(CASE WHEN event_type IN ({succ}) THEN 1 ELSE 0 END), COUNT(*) "
        f"FROM loomdb_events WHERE event_type IN ({', '.join(['%s'] * len(types))}){rng} "
        f"GROUP BY 1, 2 ORDER BY 1, 2"
    )
    # Parameters in textual order: group expression, success list, type list, range.
    rows = _fetch(store, sql, [*gparams, *SUCCESS_TYPES, *types, *rparams])
    return [
        {
            "month": m,
            "group": g,
            "succeeded": int(s),
            "runs": int(n),
            "success_rate": round(int(s) / int(n), 4),
        }
        for m, g, s, n in rows
    ]


def cost_by(
    store: EventStore, dimension: str, start: datetime | None = None, end: datetime | None = None
) -> list[dict[str, Any]]:
    """Sum of cost.recorded amounts by cost_center, gpu_type, team, or any path."""
    path = COST_DIMENSIONS.get(dimension, dimension)
    gexpr, gparams = _group_expr(store, path)
    amount, aparams = store.backend.json_text("data", ["amount_usd"])
    hours, hparams = store.backend.json_text("data", ["gpu_hours"])
    rng, rparams = _range(store, start, end)
    sql = (
        f"SELECT {gexpr}, SUM(CAST({amount} AS DOUBLE PRECISION)), "
        f"SUM(CAST(COALESCE({hours}, '0') AS DOUBLE PRECISION)), COUNT(*) "
        f"FROM loomdb_events WHERE event_type = %s{rng} GROUP BY 1 ORDER BY 2 DESC"
    )
    rows = _fetch(store, sql, [*gparams, *aparams, *hparams, COST_TYPE, *rparams])
    return [
        {
            dimension: g,
            "amount_usd": round(float(a or 0), 6),
            "gpu_hours": round(float(h or 0), 6),
            "records": int(n),
        }
        for g, a, h, n in rows
    ]


DENIAL_TYPES = ("security.access.denied", "security.authentication.failed")


def compliance_report(store: EventStore, start: datetime, end: datetime) -> dict[str, Any]:
    """Access audit for [start, end): who did what, denials, data access by classification."""
    rng, rparams = _range(store, start, end)
    who = _fetch(
        store,
        "SELECT COALESCE(user_id, ''), event_type, COUNT(*), MIN(occurred_at), MAX(occurred_at) "
        f"FROM loomdb_events WHERE TRUE{rng} GROUP BY 1, 2 ORDER BY 1, 2",
        rparams,
    )
    outcome, oparams = store.backend.json_text("data", ["outcome"])
    reason, qparams = store.backend.json_text("data", ["reason"])
    denials = _fetch(
        store,
        f"SELECT position, occurred_at, COALESCE(user_id, ''), event_type, stream_id, source_ip, {reason} "
        f"FROM loomdb_events WHERE (event_type IN (%s, %s) OR {outcome} = %s){rng} ORDER BY position",
        [*qparams, *DENIAL_TYPES, *oparams, "denied", *rparams],
    )
    by_class = _fetch(
        store,
        "SELECT COALESCE(data_classification, 'unclassified'), COUNT(*), COUNT(DISTINCT user_id) "
        f"FROM loomdb_events WHERE event_type LIKE %s{rng} GROUP BY 1 ORDER BY 1",
        ["data.%", *rparams],
    )
    ts = _ts_text
    return {
        "start": ts(start),
        "end": ts(end),
        "totals": {
            "events": sum(int(r[2]) for r in who),
            "users": len({r[0] for r in who if r[0]}),
            "denials": len(denials),
        },
        "access_audit": [
            {"user_id": u or None, "event_type": t, "count": int(n), "first": ts(a), "last": ts(b)}
            for u, t, n, a, b in who
        ],
        "denials": [
            {
                "position": int(p),
                "occurred_at": ts(o),
                "user_id": u or None,
                "event_type": t,
                "stream_id": s,
                "source_ip": ip,
                "reason": r,
            }
            for p, o, u, t, s, ip, r in denials
        ],
        "data_access_by_classification": [
            {"data_classification": c, "count": int(n), "users": int(k)} for c, n, k in by_class
        ],
    }


def _ts_text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return iso(v)


CSV_COLUMNS = (
    "section",
    "user_id",
    "event_type",
    "data_classification",
    "count",
    "users",
    "first",
    "last",
    "position",
    "occurred_at",
    "stream_id",
    "source_ip",
    "reason",
)


def _cell(v: Any) -> Any:
    # Values come from event data; one starting like a formula would run in a spreadsheet.
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return "" if v is None else v


def report_csv(report: dict[str, Any]) -> str:
    """One CSV with a `section` column: access_audit, denials, data_access_by_classification."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for section in ("access_audit", "denials", "data_access_by_classification"):
        for row in report[section]:
            w.writerow({"section": section, **{k: _cell(v) for k, v in row.items()}})
    return buf.getvalue()
