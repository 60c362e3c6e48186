"""`loomos login`, `logout`, `whoami` and `tokens`: credentials for the CLI and the SDK.

`loomos login` asks LoomCtl how to log in. With OIDC as the primary provider it runs the
authorization-code flow: a one-shot HTTP server on 127.0.0.1 receives the provider's redirect
(state checked, PKCE S256), and LoomCtl exchanges the code and opens a session. With
`--username` (or a local/LDAP primary) it prompts for the password, never echoed, then for an
MFA code if the account has one. The session is stored for this endpoint in the credentials
file (mode 0600; loomos.security.authn.credentials). Scripts set LOOMOS_API_TOKEN instead.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import secrets
import threading
import webbrowser
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlparse

import typer
from rich.markup import escape

from loomos.cli.errors import EXIT_BAD_INPUT, console, fail, reported_errors
from loomos.cli.formatting import EndpointOption
from loomos.client import LoomOSClient, LoomOSError

login_app = typer.Typer(add_completion=False)
logout_app = typer.Typer(add_completion=False)
whoami_app = typer.Typer(add_completion=False)
tokens_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Your API tokens.")

OIDC_TIMEOUT_S = 300.0


def _store(client: LoomOSClient, session: Any, kind: str) -> str:
    from loomos.security.authn import credentials

    path = credentials.save(
        client.endpoint,
        credentials.StoredCredential(
            token=session.token,
            kind=kind,
            username=session.subject,
            expires_at=session.expires_at.isoformat(),
            refresh_token=session.refresh_token,
        ),
    )
    return str(path)


@login_app.command("login", help="Log in to LoomCtl (OIDC in a browser, or --username for a password).")
def login(
    username: Annotated[str | None, typer.Option("--username", "-u", help="Log in with a password.")] = None,
    password: Annotated[
        str | None,
        typer.Option("--password", help="The password (prompted, hidden, when not given).", hidden=True),
    ] = None,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the OIDC URL instead.")] = False,
    endpoint: EndpointOption = None,
) -> None:
    with reported_errors(), LoomOSClient(endpoint, token="-") as client:
        client.token = None  # log in afresh, whatever is stored
        providers = client.auth_providers()
        if username is None and providers.primary == "oidc" and providers.oidc is not None:
            opener = _print_url if no_browser else _open_browser
            answer = oidc_login(client, providers.oidc, opener)
        else:
            if not providers.password_providers:
                fail(
                    "this LoomCtl takes no passwords: run `loomos login` without --username (OIDC)",
                    EXIT_BAD_INPUT,
                )
            username = username or typer.prompt("Username")
            password = password if password is not None else typer.prompt("Password", hide_input=True)
            answer = client.login(username, password)
            if answer.mfa_required:
                challenge = answer.challenge
                code = typer.prompt(f"MFA code ({', '.join(challenge.methods)})")
                answer = client.verify_mfa(challenge.challenge_id, code.strip())
        session = answer.session
        path = _store(client, session, "oidc" if session.auth_method == "oidc" else "session")
        console.print(
            f"logged in to {escape(client.endpoint)} as [bold]{escape(session.subject)}[/] "
            f"({session.auth_method}) until {session.expires_at:%Y-%m-%d %H:%M} UTC; saved to {escape(path)}",
            highlight=False,
        )


def _open_browser(url: str) -> None:
    console.print(f"opening your browser; if it does not open, visit:\n  {escape(url)}", highlight=False)
    webbrowser.open(url)


def _print_url(url: str) -> None:
    console.print(f"visit this URL to log in:\n  {escape(url)}", highlight=False)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def oidc_login(
    client: LoomOSClient, oidc: Any, open_url: Callable[[str], None], timeout: float = OIDC_TIMEOUT_S
) -> Any:
    """Run the authorization-code flow with a loopback redirect; LoomCtl's LoginResponse."""
    if not oidc.authorization_endpoint:
        raise LoomOSError(None, f"LoomCtl could not read the OIDC provider {oidc.issuer}'s configuration")
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    verifier, challenge = _pkce()
    received: dict[str, str] = {}
    done = threading.Event()

    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            ok = query.get("state") == state and "code" in query
            if ok or "error" in query:
                received.update(query)
                done.set()
            self.send_response(200 if ok else 400)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(
                b"LoomOS: logged in, you can close this tab." if ok else b"LoomOS: login failed."
            )

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Callback)
    redirect_uri = f"http://127.0.0.1:{server.server_port}/callback"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        params = {
            "response_type": "code",
            "client_id": oidc.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(oidc.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        open_url(f"{oidc.authorization_endpoint}?{urlencode(params)}")
        if not done.wait(timeout):
            raise LoomOSError(None, f"no answer from the OIDC provider within {timeout:g} s")
    finally:
        server.shutdown()
        server.server_close()
    if "error" in received:
        raise LoomOSError(
            None,
            f"the OIDC provider refused the login: {received.get('error_description') or received['error']}",
        )
    body = {"code": received["code"], "redirect_uri": redirect_uri, "code_verifier": verifier, "nonce": nonce}
    return client.oidc_callback(body)


@logout_app.command("logout", help="End the stored session and forget it.")
def logout(endpoint: EndpointOption = None) -> None:
    from loomos.security.authn import credentials

    with reported_errors(), LoomOSClient(endpoint) as client:
        stored = credentials.load(client.endpoint)
        if stored is not None and stored.kind in ("session", "oidc"):
            try:
                client.logout()
            except LoomOSError as err:
                if err.status_code != 401:  # already over: forgetting it is all that is left
                    raise
        forgot = credentials.forget(client.endpoint)
        console.print(
            "logged out" if forgot else f"no stored login for {escape(client.endpoint)}", highlight=False
        )


@whoami_app.command("whoami", help="Who the current credentials belong to.")
def whoami(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    endpoint: EndpointOption = None,
) -> None:
    with reported_errors(), LoomOSClient(endpoint) as client:
        me = client.me()
        if json_output:
            console.print_json(me.model_dump_json())
            return
        roles = ", ".join(f"{team}: {'/'.join(names)}" for team, names in me.roles.items()) or "none"
        lines = [
            f"[bold]{escape(me.subject)}[/]" + (f" ({escape(me.display_name)})" if me.display_name else ""),
            f"  team        {escape(me.team)}",
            f"  roles       {escape(roles)}",
            f"  via         {me.auth_method}"
            + (f", scope {', '.join(me.permissions)}" if me.permissions else ""),
            f"  MFA         {', '.join(me.mfa_enrolled) or 'none enrolled'}"
            + (f", passed {me.mfa_verified_at:%Y-%m-%d %H:%M} UTC" if me.mfa_verified_at else ""),
        ]
        if me.admin_needs_mfa:
            lines.append("  [yellow]platform_admin is withheld until MFA is passed (loomos login again)[/]")
        for line in lines:
            console.print(line, highlight=False)


@tokens_app.command("create", help="Create an API token (shown once).")
def create_token(
    name: Annotated[str, typer.Argument(help="What the token is for.")],
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="A permission (repeat); none: all yours.")
    ] = None,
    expires_in_days: Annotated[int | None, typer.Option("--expires-in-days", min=1)] = None,
    endpoint: EndpointOption = None,
) -> None:
    with reported_errors(), LoomOSClient(endpoint) as client:
        made = client.create_token(name, scope or None, expires_in_days)
        console.print(
            f"token {escape(made.id)} ({escape(made.prefix)}…), expires {made.expires_at:%Y-%m-%d}:"
        )
        console.print(made.token, highlight=False, soft_wrap=True)
        console.print("[dim]it is shown once; use it as LOOMOS_API_TOKEN or `Authorization: Bearer`[/]")


@tokens_app.command("list", help="Your live API tokens.")
def list_tokens(endpoint: EndpointOption = None) -> None:
    with reported_errors(), LoomOSClient(endpoint) as client:
        tokens = client.list_tokens()
        if not tokens:
            console.print("no tokens")
        for t in tokens:
            used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
            scopes = ",".join(t.scopes) if t.scopes is not None else "all"
            console.print(
                f"{t.id}  {escape(t.prefix)}…  {escape(t.name)}  scopes={scopes}  "
                f"expires {t.expires_at:%Y-%m-%d}  last used {used}",
                highlight=False,
            )


@tokens_app.command("revoke", help="Revoke one of your API tokens.")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="The token's id (loomos tokens list).")],
    endpoint: EndpointOption = None,
) -> None:
    with reported_errors(), LoomOSClient(endpoint) as client:
        revoked = client.revoke_token(token_id)
        console.print(f"revoked {escape(revoked.id)} ({escape(revoked.prefix)}…, {escape(revoked.name)})")
