"""`loomos users|roles|grants`: authorization's admin API (/api/v1/admin) from the command line.

    loomos roles list                          every role, its permissions and limits
    loomos roles show ml_engineer
    loomos grants add alice ml_engineer --team vision      (--team '*': every team)
    loomos grants remove alice ml_engineer --team vision
    loomos grants list [--user alice] [--team vision]
    loomos users list                          users, their grants, their account state
    loomos users remove alice                  a user is gone: every grant goes

They speak to LoomCtl with the caller's credentials, like every other command; LoomCtl checks
security:audit to read and security:admin (in the grant's team) to change. A role that does not
exist is bad input (exit 2); a change the caller may not make is a failure (exit 1) that says
which permission they lack.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from loomos.cli.errors import console, reported_errors
from loomos.cli.formatting import EndpointOption

users_app = typer.Typer(no_args_is_help=True, add_completion=False)
roles_app = typer.Typer(no_args_is_help=True, add_completion=False)
grants_app = typer.Typer(no_args_is_help=True, add_completion=False)

ADMIN = "/api/v1/admin"
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")]
TeamOption = Annotated[str, typer.Option("--team", "-t", help="Team of the grant; '*' for every team.")]


def _call(endpoint: str | None, method: str, path: str, **kw: Any) -> Any:
    """One admin API call through the SDK (its endpoint, credentials and error handling)."""
    from loomos.client import LoomOSClient
    from loomos.client.calls import _Call

    with LoomOSClient(endpoint) as client:
        return client._send(_Call(method, ADMIN + path, lambda body: body, **kw))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _limits(constraints: dict[str, Any]) -> str:
    items = [
        f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in constraints.items() if v is not None
    ]
    return "; ".join(items) or "-"


# --- roles -------------------------------------------------------------------------------------


@roles_app.command("list")
def roles_list(endpoint: EndpointOption = None, as_json: JsonOption = False) -> None:
    """Every role: built in or custom, its permissions (inherited ones included), its limits."""
    with reported_errors():
        data = _call(endpoint, "GET", "/roles")
    if as_json:
        return _print_json(data)
    table = Table(
        show_edge=False, header_style="bold", title=f"roles (policy version {data['policy_version']})"
    )
    for column in ("ROLE", "KIND", "PERMISSIONS", "LIMITS"):
        table.add_column(column, overflow="fold")
    for role in data["roles"]:
        table.add_row(
            escape(role["name"]),
            "built in" if role["builtin"] else "custom",
            escape(", ".join(role["permissions"]) or "-"),
            escape(_limits(role["constraints"])),
        )
    console.print(table)


@roles_app.command("show")
def roles_show(
    name: Annotated[str, typer.Argument(help="Role name, e.g. data_scientist.")],
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """One role: description, permissions, what it inherits and its limits."""
    with reported_errors():
        role = _call(endpoint, "GET", f"/roles/{quote(name, safe='')}")
    if as_json:
        return _print_json(role)
    console.print(f"[bold]{escape(role['name'])}[/] ({'built in' if role['builtin'] else 'custom'})")
    console.print(f"  {escape(role['description'] or '-')}", highlight=False)
    console.print(f"  permissions: {escape(', '.join(role['permissions']) or '-')}", highlight=False)
    console.print(f"  inherits:    {escape(', '.join(role['inherits']) or '-')}", highlight=False)
    console.print(f"  limits:      {escape(_limits(role['constraints']))}", highlight=False)


# --- grants ------------------------------------------------------------------------------------


@grants_app.command("list")
def grants_list(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's grants.")] = None,
    team: Annotated[str | None, typer.Option("--team", "-t", help="Only grants in this team ('*').")] = None,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Role grants, by user and team."""
    params = {k: v for k, v in (("subject", user), ("team", team)) if v is not None}
    with reported_errors():
        data = _call(endpoint, "GET", "/grants", params=params)
    if as_json:
        return _print_json(data)
    table = Table(show_edge=False, header_style="bold")
    for column in ("USER", "TEAM", "ROLE"):
        table.add_column(column)
    for g in data["grants"]:
        table.add_row(
            escape(g["subject"]),
            escape("every team (*)" if g["team"] == "*" else g["team"]),
            escape(g["role"]),
        )
    console.print(table)
    console.print(f"{len(data['grants'])} grant(s), policy version {data['policy_version']}", style="dim")


@grants_app.command("add")
def grants_add(
    user: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="Role to grant.")],
    team: TeamOption,
    endpoint: EndpointOption = None,
) -> None:
    """Grant a role to a user in a team (needs security:admin there, and the role's permissions)."""
    body = {"subject": user, "role": role, "team": team}
    with reported_errors():
        done = _call(endpoint, "POST", "/grants", json=body)
    what = f"{escape(role)} to {escape(user)} in team {escape(team)}"
    console.print(f"granted {what}" if done["changed"] else f"{what}: already granted", highlight=False)


@grants_app.command("remove")
def grants_remove(
    user: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="Role to revoke.")],
    team: TeamOption,
    endpoint: EndpointOption = None,
) -> None:
    """Revoke a role grant (also stops the role counting where a session still carries it)."""
    params = {"subject": user, "role": role, "team": team}
    with reported_errors():
        done = _call(endpoint, "DELETE", "/grants", params=params)
    what = f"{escape(role)} of {escape(user)} in team {escape(team)}"
    console.print(f"revoked {what}" if done["changed"] else f"{what}: no stored grant (revocation recorded)")


# --- users -------------------------------------------------------------------------------------


@users_app.command("list")
def users_list(endpoint: EndpointOption = None, as_json: JsonOption = False) -> None:
    """Users with their role grants (team: roles) and their account state."""
    with reported_errors():
        data = _call(endpoint, "GET", "/users")
    if as_json:
        return _print_json(data)
    table = Table(show_edge=False, header_style="bold")
    for column in ("USER", "ACCOUNT", "ROLES"):
        table.add_column(column, overflow="fold")
    for u in data["users"]:
        roles = "; ".join(f"{team}: {', '.join(names)}" for team, names in sorted(u["roles"].items()))
        table.add_row(escape(u["subject"]), u["account"], escape(roles or "-"))
    console.print(table)


@users_app.command("remove")
def users_remove(
    user: Annotated[str, typer.Argument(help="User name.")],
    endpoint: EndpointOption = None,
) -> None:
    """A user is gone: remove every grant, and stop honouring roles their sessions carry."""
    with reported_errors():
        done = _call(endpoint, "DELETE", f"/users/{quote(user, safe='')}/grants")
    console.print(f"removed {done['grants_removed']} grant(s) of {escape(user)}", highlight=False)
