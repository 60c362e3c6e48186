"""`loomos events query|tail|verify|retention`: LoomDB, read straight from the database.

These talk to the database (`--db-url`, default: settings' loomdb.url), like an auditor's tool
should: `verify` in particular must not trust a server in between. Errors follow the CLI's
rule (loomos.cli.errors): one red line, exit code 2 for bad input, 1 for failures.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from loomos.cli.errors import EXIT_BAD_INPUT, console, err_console, fail, reported_errors

events_app = typer.Typer(no_args_is_help=True, add_completion=False)


LOOMDB = "cannot use LoomDB"  # what database errors are about
DB_URL_HELP = "LoomDB URL (sqlite:////path or postgresql://...); default: settings' loomdb.url"


def open_store(db_url: str | None) -> Any:
    """The LoomDB at --db-url, else at settings' loomdb.url."""
    from loomos.loomdb import open_event_store

    if db_url is None:
        from loomos.settings import load_settings

        db_url = load_settings().loomdb.url
    return open_event_store(db_url)


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 option value (UTC when it names no zone); None when not given."""
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-11-01T00:00:00Z)", param_hint=name
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _short(v: Any, width: int = 60) -> str:
    text = json.dumps(v, separators=(",", ":")) if not isinstance(v, str) else v
    return text if len(text) <= width else text[: width - 1] + "…"


def _events_table(events: list[Any]) -> Table:
    t = Table(show_lines=False)
    for col in ("pos", "recorded", "type", "stream", "v", "user", "data"):
        t.add_column(col, overflow="fold")
    for e in events:
        t.add_row(
            str(e.position),
            e.recorded_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.event_type,
            e.stream_id,
            str(e.stream_version),
            e.context.user_id or "",
            _short(e.data),
        )
    return t


@events_app.command("query")
def query(
    event_type: list[str] = typer.Option(
        [], "--type", "-t", help="event type or prefix (data.*); repeatable"
    ),
    stream: str | None = typer.Option(None, "--stream", help="only this stream"),
    since: str | None = typer.Option(None, help="from this time (ISO 8601; UTC if no zone)"),
    until: str | None = typer.Option(None, help="before this time"),
    filters: list[str] = typer.Option([], "--filter", "-f", help="PATH OP VALUE, e.g. 'data.gpu_count >= 4'"),
    order: str = typer.Option("asc", help="asc or desc"),
    limit: int = typer.Option(50, min=1, max=10000),
    cursor: str | None = typer.Option(None, help="next_cursor from a previous page"),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines, one event per line"),
    db_url: str | None = typer.Option(None, help=DB_URL_HELP),
) -> None:
    """Query events: types, time range, filters on any path, cursor pagination."""
    from loomos.loomdb import EventQuery

    if order not in ("asc", "desc"):
        raise typer.BadParameter("must be asc or desc", param_hint="--order")
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if start is not None and end is not None and end <= start:
        raise typer.BadParameter(f"must be after --since ({since})", param_hint="--until")
    with reported_errors(LOOMDB):
        q = EventQuery(
            event_types=event_type,
            stream_id=stream,
            start=start,
            end=end,
            filters=filters,
            order=order,
            limit=limit,
            cursor=cursor,
        )
        store = open_store(db_url)
        page = store.query(q)
    if as_json:
        for e in page.events:
            print(e.model_dump_json())
        if page.next_cursor:
            err_console.print(f"next cursor: {page.next_cursor}")
        return
    console.print(_events_table(page.events))
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


@events_app.command("tail")
def tail(
    event_type: list[str] = typer.Option([], "--type", "-t"),
    filters: list[str] = typer.Option([], "--filter", "-f"),
    from_position: int | None = typer.Option(
        None, min=0, help="start after this position (default: the head)"
    ),
    consumer: str | None = typer.Option(
        None, help="named consumer: resume after its last acknowledged event"
    ),
    count: int | None = typer.Option(None, min=1, help="stop after this many events"),
    as_json: bool = typer.Option(False, "--json"),
    db_url: str | None = typer.Option(None, help=DB_URL_HELP),
) -> None:
    """Follow events live (catch-up first when --from-position or --consumer is given)."""
    from loomos.loomdb import EventQuery

    with reported_errors(LOOMDB):
        q = EventQuery(event_types=event_type, filters=filters)
        store = open_store(db_url)
        if from_position is None and consumer is None:
            from_position = store.head()[0]

        async def follow() -> None:
            seen = 0
            sub = store.subscribe(q, from_position, consumer=consumer)
            try:
                async for batch in sub:
                    for e in batch.events:
                        if as_json:
                            print(e.model_dump_json(), flush=True)
                        else:
                            console.print(
                                f"[bold]{e.position}[/bold] {e.recorded_at:%H:%M:%S} "
                                f"[cyan]{e.event_type}[/cyan] {e.stream_id} {_short(e.data, 100)}",
                                highlight=False,
                            )
                        seen += 1
                        if count is not None and seen >= count:
                            if consumer:
                                await asyncio.to_thread(store.ack, consumer, e.position)
                            return
                    if consumer:
                        await asyncio.to_thread(store.ack, consumer, batch.position)
            finally:
                await sub.aclose()

        try:
            asyncio.run(follow())
        except KeyboardInterrupt:
            pass


@events_app.command("verify")
def verify(
    deep: bool = typer.Option(False, help="also re-read and re-hash every archived period"),
    as_json: bool = typer.Option(False, "--json"),
    db_url: str | None = typer.Option(None, help=DB_URL_HELP),
) -> None:
    """Check the hash chain; report the first altered, inserted or deleted event (exit 1)."""
    with reported_errors(LOOMDB):
        report = open_store(db_url).verify(deep_archives=deep)
    if as_json:
        print(json.dumps(report.as_dict()))
    elif report.ok:
        console.print(
            f"[green]ok[/green]: {report.checked} events verified "
            f"(positions {report.first_position}..{report.last_position}, "
            f"{report.archives_checked} archived periods linked); head {report.head_hash}"
        )
    else:
        p = report.problem
        assert p is not None
        console.print(
            f"[red]TAMPERED[/red]: first {p.kind} event at position {p.position}: {p.detail} "
            f"({report.checked} events verified before it)",
            highlight=False,
        )
    if not report.ok:
        raise typer.Exit(1)


@events_app.command("retention")
def retention(
    policy_file: Path = typer.Option(..., "--policy", help="YAML or JSON file with a RetentionPolicy"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be done; change nothing"),
    as_json: bool = typer.Option(False, "--json"),
    db_url: str | None = typer.Option(None, help=DB_URL_HELP),
) -> None:
    """Apply a retention policy: archive old months (JSON Lines, gzip, file:// or s3://), drop
    them, compress older partitions (Postgres), delete archive objects whose retention has
    expired; each action is recorded as an event."""
    import yaml

    from loomos.loomdb.retention import RetentionPolicy, apply_retention

    with reported_errors(LOOMDB):
        try:
            raw = yaml.safe_load(policy_file.read_text())
        except OSError as exc:
            fail(f"{policy_file}: cannot read ({exc.strerror})", EXIT_BAD_INPUT)
        except yaml.YAMLError as exc:
            fail(f"{policy_file}: not valid YAML or JSON: {exc}", EXIT_BAD_INPUT)
        if not isinstance(raw, dict):
            fail(f"{policy_file}: expected a mapping of RetentionPolicy fields", EXIT_BAD_INPUT)
        policy = RetentionPolicy.model_validate(raw)
        actions = apply_retention(open_store(db_url), policy, dry_run=dry_run)
    if as_json:
        print(json.dumps(actions))
        return
    if not actions:
        console.print("nothing to do: no period is old enough and no archive has expired")
        return
    t = Table(title="Retention dry run (nothing changed)" if dry_run else "Retention applied")
    for col in ("action", "period", "positions", "events", "archive", "expires"):
        t.add_column(col, overflow="fold")
    for a in actions:
        span = f"{a['first_position']}..{a['last_position']}" if "first_position" in a else ""
        action = a["action"] if "object" not in a else f"{a['action']} ({a['object']})"
        if a.get("dry_run"):  # what would be done: archive, compress, purge
            action = {"archived": "archive", "compressed": "compress", "purged": "purge"}[a["action"]]
        t.add_row(
            action, a["partition"], span, str(a["event_count"]), a.get("uri", ""), a.get("expires_at", "")
        )
    console.print(t)
