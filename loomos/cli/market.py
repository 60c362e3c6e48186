"""`loomos market ...`: GPU offers, estimates, provider comparison, catalog refresh.

Errors follow the CLI's rule (loomos.cli.errors): what the user typed (bad spec, unknown GPU
type, unreadable catalog) prints one line and exits 2; an infeasible request prints why and
exits 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from loomos.cli.errors import EXIT_BAD_INPUT, EXIT_FAILED, console, err_console, fail, reported_errors

market_app = typer.Typer(no_args_is_help=True, add_completion=False)

CatalogOpt = Annotated[
    Path | None,
    typer.Option(
        "--catalog", help="catalog file (default: $LOOMOS_CATALOG_PATH, ~/.loomos/catalog.json, shipped)"
    ),
]
OnPremOpt = Annotated[
    Path | None,
    typer.Option("--onprem-config", help="YAML of owned node types (default: $LOOMOS_ONPREM_CONFIG)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def _guard(fn: Callable[[], Any]) -> Any:
    """Run `fn`; a failure becomes one error line and its exit code."""
    with reported_errors():
        return fn()


def _load(catalog: Path | None, onprem: Path | None) -> Any:
    from loomos.marketplace.catalog import load_catalog

    return _guard(lambda: load_catalog(catalog, onprem))


def _age(days: float) -> str:
    if days < 1:
        return f"{days * 24:.0f}h"
    return f"{days:.0f}d"


def _money(v: float | None) -> str:
    return "-" if v is None else f"{v:,.3f}"


def _warn_stale(cat: Any, max_age: float | None) -> None:
    from loomos.marketplace.catalog import max_age_days

    limit = max_age if max_age is not None else _guard(max_age_days)
    for name, age in cat.stale_providers(datetime.now(UTC), limit):
        as_of = cat.providers[name].as_of
        err_console.print(
            f"[yellow]warning:[/yellow] {name} prices are {age:.0f} days old (as of {as_of}, limit {limit:g} "
            "days); run `loomos market refresh`",
            highlight=False,
        )


@market_app.command("offers")
def offers_cmd(
    gpu: Annotated[
        str | None, typer.Option(help="GPU type: H100, A100 (both sizes), A100-80GB, L4, ...")
    ] = None,
    count: Annotated[int | None, typer.Option(help="at least this many GPUs per machine")] = None,
    provider: Annotated[list[str] | None, typer.Option(help="aws, gcp, azure, onprem (repeatable)")] = None,
    region: Annotated[list[str] | None, typer.Option(help="region (repeatable)")] = None,
    spot: Annotated[bool, typer.Option("--spot", help="only rows with a spot price; sort by it")] = False,
    max_price: Annotated[float | None, typer.Option(help="USD per machine-hour")] = None,
    limit: Annotated[int, typer.Option(min=1, help="rows to show")] = 50,
    max_age_days: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="warn when prices are older (default $LOOMOS_CATALOG_MAX_AGE_DAYS or 30)"
        ),
    ] = None,
    catalog: CatalogOpt = None,
    onprem_config: OnPremOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List GPU offers, cheapest per GPU-hour first, with each row's age."""
    from loomos.marketplace.offer_filters import filter_offers, offer_row

    cat = _load(catalog, onprem_config)
    rows = _guard(
        lambda: filter_offers(cat.offers, gpu, count, provider or (), region or (), spot, max_price)
    )
    now = datetime.now(UTC)
    if as_json:
        print(json.dumps({"count": len(rows), "offers": [offer_row(o, now) for o in rows[:limit]]}))
        return
    _warn_stale(cat, max_age_days)
    if not rows:
        fail("no offers match these filters", EXIT_FAILED)
    table = Table(title=f"GPU offers ({len(rows)} match, showing {min(limit, len(rows))})")
    for col in (
        "provider",
        "region",
        "zone",
        "instance",
        "GPUs",
        "vCPU",
        "mem GB",
        "on-demand $/h",
        "spot $/h",
        "$/GPU-h",
        "age",
        "note",
    ):
        table.add_column(col, justify="right" if "$" in col or col in ("vCPU", "mem GB", "age") else "left")
    for o in rows[:limit]:
        per_gpu = (o.price_spot if spot and o.price_spot else o.price_on_demand) / o.gpu_count
        table.add_row(
            o.provider,
            o.region,
            o.zone or "-",
            o.instance_type,
            f"{o.gpu_count}x {o.gpu_type}",
            f"{o.vcpus:g}",
            f"{o.memory_gb:g}",
            _money(o.price_on_demand),
            _money(o.price_spot),
            f"{per_gpu:,.3f}",
            _age(o.age_days(now)),
            "stale-prone" if o.stale_prone else "",
        )
    console.print(table)
    for name, meta in sorted(cat.providers.items()):
        console.print(f"[dim]{name}: as of {meta.as_of} - {meta.source}[/dim]", highlight=False)


def _load_spec(path: Path) -> Any:
    from loomos.models.spec import load_spec

    return _guard(lambda: load_spec(path))


@market_app.command("estimate")
def estimate_cmd(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="JobSpec YAML/JSON")],
    provider: Annotated[str | None, typer.Option(help="only this provider")] = None,
    pricing: Annotated[
        str, typer.Option(help="auto (spot too if the job is preemptible), on_demand, spot")
    ] = "auto",
    weights: Annotated[
        str | None, typer.Option(help="e.g. cost=0.4,performance=0.3,availability=0.3 (the default)")
    ] = None,
    top: Annotated[int, typer.Option(min=1, max=200, help="options to show")] = 10,
    catalog: CatalogOpt = None,
    onprem_config: OnPremOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ranked placements for a JobSpec with the reason for each rank, and the cost breakdown
    (compute, storage, network) of the best one."""
    from dataclasses import replace

    from loomos.marketplace.estimate import estimate_option
    from loomos.marketplace.optimizer import OfferRequest, Weights, parse_providers, rank_offers

    spec = _load_spec(spec_path)
    cat = _load(catalog, onprem_config)
    if pricing not in ("auto", "on_demand", "spot"):
        fail(f"--pricing must be auto, on_demand or spot, got {pricing!r}", EXIT_BAD_INPUT)
    if pricing == "spot" and not spec.preemptible:
        fail("--pricing spot needs a preemptible job (set preemptible: true in the spec)", EXIT_BAD_INPUT)
    models = ("on_demand", "spot") if pricing == "auto" else (pricing,)
    w = _guard(lambda: Weights.parse(weights)) if weights else Weights()
    request = _guard(lambda: OfferRequest.from_spec(spec))
    if provider is not None:
        only = _guard(lambda: parse_providers([provider]))
        if request.providers is not None and not only <= request.providers:
            fail(f"the spec allows providers {sorted(request.providers)}, not {provider}", EXIT_BAD_INPUT)
        request = replace(request, providers=only)
    ranking = _guard(lambda: rank_offers(cat.index(), request, w, limit=top, pricing_models=models))
    best = ranking.options[0] if ranking.options else None
    estimate = _guard(lambda: estimate_option(best, spec, cat)) if best is not None else None
    if as_json:
        print(
            json.dumps(
                {
                    "feasible": ranking.feasible,
                    "reasons": ranking.reasons,
                    "options": [o.to_dict() for o in ranking.options],
                    "estimate": estimate.model_dump(mode="json") if estimate else None,
                }
            )
        )
        raise typer.Exit(0 if ranking.feasible else 1)
    if not ranking.options:
        for r in ranking.reasons:
            err_console.print(f"[red]infeasible:[/red] {r}", highlight=False)
        raise typer.Exit(1)
    _warn_stale(cat, None)
    now = datetime.now(UTC)
    table = Table(title=f"{spec.name}: {ranking.feasible_count} feasible options, best first")
    for col in (
        "#",
        "provider",
        "where",
        "instance",
        "model",
        "$/h (all nodes)",
        "exp. hours",
        "exp. cost",
        "score",
        "age",
        "why",
    ):
        table.add_column(col, overflow="fold")
    for o in ranking.options:
        where = o.offer.region + (f"/{o.offer.zone}" if o.offer.zone else "")
        table.add_row(
            str(o.rank),
            o.offer.provider,
            where,
            f"{o.nodes}x {o.offer.instance_type}",
            o.pricing_model.replace("_", "-"),
            f"{o.price_per_hour:,.2f}",
            f"{o.expected_hours:.1f}",
            f"{o.expected_cost:,.2f}",
            f"{o.score:.3f}",
            _age(o.offer.age_days(now)),
            _short_reason(o, request.runtime_hours),
        )
    console.print(table)
    for note in ranking.reasons + list(request.assumptions):
        console.print(f"[dim]note: {note}[/dim]", highlight=False)
    if estimate is not None:
        b = estimate.breakdown
        console.print(
            f"Estimate for #1 ({estimate.price_record.offer_key}, {estimate.pricing_model}): "
            f"compute ${b.compute:,.2f} + storage ${b.storage:,.2f} + network ${b.network:,.2f} = "
            f"[bold]${b.total:,.2f}[/bold]  (price ${estimate.price_record.price_per_hour:,.4g}/h per node, "
            f"catalog as of {estimate.price_record.catalog_as_of})",
            highlight=False,
        )


def _short_reason(o: Any, runtime: float) -> str:
    """The reason in a table cell: the score's parts and what moved them."""
    parts = [f"cost {o.cost_score:.2f} perf {o.performance_score:.2f} avail {o.availability_score:.2f}"]
    if o.pricing_model == "spot":
        parts.append(f"~{o.expected_interruptions:.1f} interruptions (+{o.expected_hours - runtime:.1f} h)")
    if "(cheapest)" in o.reason:
        parts.append("cheapest")
    if o.offer.stale_prone:
        parts.append("stale-prone price")
    return "; ".join(parts)


@market_app.command("compare")
def compare_cmd(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="JobSpec YAML/JSON")],
    catalog: CatalogOpt = None,
    onprem_config: OnPremOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Best option per provider (aws, gcp, azure, onprem), ranked by cost per performance."""
    from loomos.marketplace.estimate import compare_providers

    spec = _load_spec(spec_path)
    cat = _load(catalog, onprem_config)
    rows = _guard(lambda: compare_providers(spec, catalog=cat))
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    _warn_stale(cat, None)
    table = Table(title=f"{spec.name}: providers by cost per performance")
    for col in (
        "provider",
        "instance",
        "where",
        "model",
        "compute $",
        "storage $",
        "network $",
        "total $",
        "$ / perf",
        "note",
    ):
        table.add_column(col, overflow="fold")
    for r in rows:
        if not r.feasible or r.estimate is None:
            table.add_row(r.provider, "-", "-", "-", "-", "-", "-", "-", "-", "; ".join(r.reasons))
            continue
        e, b = r.estimate, r.estimate.breakdown
        table.add_row(
            r.provider,
            f"{e.option['nodes']}x {e.option['instance_type']}",
            e.option["region"] + (f"/{e.option['zone']}" if e.option["zone"] else ""),
            e.pricing_model.replace("_", "-"),
            f"{b.compute:,.2f}",
            f"{b.storage:,.2f}",
            f"{b.network:,.2f}",
            f"{b.total:,.2f}",
            f"{r.cost_per_performance:,.2f}",
            f"as of {e.price_record.catalog_as_of}",
        )
    console.print(table)
    if not any(r.feasible for r in rows):
        raise typer.Exit(1)


@market_app.command("refresh")
def refresh_cmd(
    provider: Annotated[
        list[str] | None, typer.Option(help="aws, gcp, azure (repeatable; default all)")
    ] = None,
    region: Annotated[
        list[str] | None,
        typer.Option(
            help="region to query, as PROVIDER:REGION (e.g. aws:us-east-1; a bare region when one "
            "--provider is given); repeatable; default: each provider's usual GPU regions"
        ),
    ] = None,
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog", help="file to write (default $LOOMOS_CATALOG_PATH or ~/.loomos/catalog.json)"
        ),
    ] = None,
) -> None:
    """Fetch current prices through the providers' SDKs and rewrite the catalog atomically.
    A provider that fails keeps its previous rows; the failure is reported and the exit code is 1."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from loomos.marketplace.catalog import CatalogError
    from loomos.marketplace.providers import CLOUD_PROVIDERS, make_source
    from loomos.marketplace.refresh import refresh_catalog

    names = [p.lower() for p in (provider or CLOUD_PROVIDERS)]
    if bad := [n for n in names if n not in CLOUD_PROVIDERS]:
        fail(
            f"unknown provider(s) {', '.join(bad)} for refresh; expected {', '.join(CLOUD_PROVIDERS)} "
            "(on-prem offers come from --onprem-config / $LOOMOS_ONPREM_CONFIG)",
            EXIT_BAD_INPUT,
        )
    names = list(dict.fromkeys(names))
    regions = _regions_by_provider(region or [], names)
    sources = _guard(lambda: [make_source(n, regions.get(n)) for n in names])
    with Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        TextColumn("{task.fields[what]}"),
        TimeElapsedColumn(),
        console=err_console,
    ) as progress:
        tasks = {s.name: progress.add_task(s.name, total=1, what="") for s in sources}

        def hook_for(name: str) -> Callable[[int, int, str], None]:
            def hook(done: int, total: int, what: str) -> None:
                progress.update(tasks[name], completed=done, total=max(total, 1), what=what)

            return hook

        try:
            report = refresh_catalog(sources, catalog, progress_for=hook_for)
        except CatalogError as exc:
            fail(str(exc), EXIT_BAD_INPUT)
        except OSError as exc:
            fail(f"cannot write catalog: {exc}", EXIT_BAD_INPUT)
    table = Table(title=f"refresh -> {report.path}")
    for col in ("provider", "result", "rows", "rejected", "detail"):
        table.add_column(col, overflow="fold")
    for o in report.outcomes:
        detail = o.error or (
            "; ".join(f"{r.ident}: {r.reason}" for r in o.rejected[:3]) if o.rejected else ""
        )
        table.add_row(
            o.provider,
            "[green]ok[/green]" if o.ok else "[red]failed, kept previous rows[/red]",
            str(o.rows),
            str(len(o.rejected)),
            detail,
        )
    console.print(table)
    if not report.ok:
        raise typer.Exit(1)


def _regions_by_provider(values: list[str], names: list[str]) -> dict[str, list[str]]:
    """`--region` values grouped by provider. Region names differ per cloud, so with several
    providers each value must say whose region it is; a provider without any keeps its defaults."""
    out: dict[str, list[str]] = {}
    for value in values:
        prov, sep, reg = value.partition(":")
        if not sep:
            if len(names) != 1:
                fail(
                    f"--region {value!r}: write it as PROVIDER:REGION (e.g. aws:us-east-1) when "
                    "refreshing more than one provider",
                    EXIT_BAD_INPUT,
                )
            prov, reg = names[0], value
        prov = prov.strip().lower()
        if prov not in names:
            fail(
                f"--region {value!r}: provider {prov!r} is not being refreshed ({', '.join(names)})",
                EXIT_BAD_INPUT,
            )
        if not reg.strip():
            fail(f"--region {value!r}: empty region name", EXIT_BAD_INPUT)
        out.setdefault(prov, []).append(reg.strip())
    return out


@market_app.command("catalog")
def catalog_cmd(
    catalog: CatalogOpt = None, onprem_config: OnPremOpt = None, as_json: JsonOpt = False
) -> None:
    """Where the prices come from: as_of, source, row and rejected-row counts per provider."""
    cat = _load(catalog, onprem_config)
    meta = cat.metadata()
    if as_json:
        print(json.dumps(meta))
        return
    table = Table(title=f"catalog {meta['origin']}" + (" (shipped snapshot)" if meta["shipped"] else ""))
    for col in ("provider", "as of", "rows", "rejected", "source", "last error"):
        table.add_column(col, overflow="fold")
    for name, p in meta["providers"].items():
        table.add_row(
            name, p["as_of"], str(p["rows"]), str(len(p["rejected"])), p["source"], p["last_error"] or ""
        )
    console.print(table)
