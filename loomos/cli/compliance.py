"""`loomos compliance report`: the access audit of a time range, from LoomDB."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from loomos.cli.errors import console, err_console, reported_errors
from loomos.cli.events import DB_URL_HELP, LOOMDB, open_store, parse_time

compliance_app = typer.Typer(no_args_is_help=True, add_completion=False)


@compliance_app.command("report")
def report(
    start: str = typer.Option(..., help="ISO 8601 start (inclusive)"),
    end: str = typer.Option(..., help="ISO 8601 end (exclusive)"),
    fmt: str = typer.Option("table", "--format", help="table, json or csv"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write here instead of stdout"),
    db_url: str | None = typer.Option(None, help=DB_URL_HELP),
) -> None:
    """Access audit for a time range: who did what, denials, data access by classification."""
    from loomos.loomdb.analytics import compliance_report, report_csv

    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter("must be table, json or csv", param_hint="--format")
    s, e = parse_time(start, "--start"), parse_time(end, "--end")
    with reported_errors(LOOMDB):
        data = compliance_report(open_store(db_url), s, e)
    if fmt == "table":
        if output is not None:
            raise typer.BadParameter("--output needs --format json or csv", param_hint="--output")
        t = Table(title=f"Access audit {data['start']} .. {data['end']}")
        for col in ("user", "event type", "count", "first", "last"):
            t.add_column(col)
        for r in data["access_audit"]:
            t.add_row(r["user_id"] or "-", r["event_type"], str(r["count"]), r["first"], r["last"])
        console.print(t)
        d = Table(title="Denials")
        for col in ("pos", "when", "user", "type", "resource", "reason"):
            d.add_column(col)
        for r in data["denials"]:
            d.add_row(
                str(r["position"]),
                r["occurred_at"],
                r["user_id"] or "-",
                r["event_type"],
                r["stream_id"],
                r["reason"] or "",
            )
        console.print(d)
        c = Table(title="Data access by classification")
        for col in ("classification", "events", "users"):
            c.add_column(col)
        for r in data["data_access_by_classification"]:
            c.add_row(r["data_classification"], str(r["count"]), str(r["users"]))
        console.print(c)
        return
    text = json.dumps(data, indent=2) if fmt == "json" else report_csv(data)
    if output is None:
        print(text)
        return
    with reported_errors():
        output.write_text(text)
    err_console.print(f"wrote {output}")
