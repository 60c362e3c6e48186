"""The /api/v1/auth routes and get_identity over real HTTP, with the SDK and the CLI as the
clients (credentials file, LOOMOS_API_TOKEN, 401/403 messages)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import Depends
from typer.testing import CliRunner

from loomos.api.identity import IdentityDep, get_identity
from loomos.cli import app as cli_app
from loomos.client import LoomOSClient, LoomOSError
from loomos.models.identity import Identity
from tests.security.authn.conftest import CTX, PASSWORD
from tests.security.authn.serving import app_with_authn, serve

runner = CliRunner()


@pytest.fixture
def api(sqlite_url: str) -> Iterator[tuple[str, object]]:
    app = app_with_authn(sqlite_url)

    @app.get("/api/v1/test/identity", dependencies=[Depends(get_identity)])
    def echo(who: IdentityDep) -> Identity:  # a route as authorization will guard them
        return who

    app.state.authn.accounts.create_local("alice", PASSWORD, default_team="vision")
    with serve(app) as endpoint:
        yield endpoint, app


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cfg" / "credentials.json"
    monkeypatch.setenv("LOOMOS_CREDENTIALS", str(path))
    monkeypatch.delenv("LOOMOS_API_TOKEN", raising=False)
    return path


def cli(*args: str, **env: str):  # type: ignore[no-untyped-def]
    return runner.invoke(cli_app, list(args), env={"LOOMOS_DEBUG": "", **env})


def test_anonymous_requests_are_refused(api, creds: Path) -> None:  # type: ignore[no-untyped-def]
    endpoint, _ = api
    for path in ("/api/v1/auth/me", "/api/v1/test/identity"):
        r = httpx.get(endpoint + path)
        assert r.status_code == 401 and r.json()["detail"].startswith("not logged in")
    r = httpx.get(endpoint + "/api/v1/auth/me", headers={"Authorization": "Basic YWxpY2U6cHc="})
    assert r.status_code == 401 and "malformed Authorization header" in r.json()["detail"]
    with LoomOSClient(endpoint) as client, pytest.raises(LoomOSError, match=r"not logged in \(loomos login"):
        client.me()


def test_login_session_identity_and_cookie(api, creds: Path) -> None:  # type: ignore[no-untyped-def]
    endpoint, _ = api
    r = httpx.post(endpoint + "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD},
                   headers={"User-Agent": "browser/1", "X-Request-ID": "abc-123"})  # fmt: skip
    assert r.status_code == 200, r.text
    session = r.json()["session"]
    assert session["subject"] == "alice" and session["user_agent"] == "browser/1" and session["login_time"]
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie  # plain http
    who = httpx.get(endpoint + "/api/v1/test/identity", cookies={"loomos_session": session["token"]}).json()
    assert (who["subject"], who["team"], who["auth_method"]) == ("alice", "vision", "local")
    bearer = {"Authorization": f"Bearer {session['token']}", "X-Loomos-Team": "nlp", "X-Request-ID": "r-9"}
    who = httpx.get(endpoint + "/api/v1/test/identity", headers=bearer).json()
    assert (who["team"], who["request_id"], who["session_id"]) == ("nlp", "r-9", session["session_id"])
    bad_team = httpx.get(endpoint + "/api/v1/test/identity", headers={**bearer, "X-Loomos-Team": "../x"})
    assert bad_team.status_code == 400


def test_login_input_is_bounded(api) -> None:  # type: ignore[no-untyped-def]
    endpoint, _ = api
    r = httpx.post(endpoint + "/api/v1/auth/login", json={"username": "alice", "password": "x" * 5000})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "password"]
    r = httpx.post(endpoint + "/api/v1/auth/login", json={"username": "alice", "password": "nope-nope"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid username or password"


def test_cli_login_whoami_tokens_logout(api, creds: Path) -> None:  # type: ignore[no-untyped-def]
    endpoint, _ = api
    done = runner.invoke(cli_app, ["login", "-u", "alice", "--endpoint", endpoint], input=PASSWORD + "\n")
    assert done.exit_code == 0, done.output
    assert PASSWORD not in done.output  # prompted, not echoed
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    done = cli("whoami", "--endpoint", endpoint)
    assert done.exit_code == 0 and "alice" in done.output and "vision" in done.output, done.output

    done = cli(
        "tokens", "create", "ci", "--scope", "jobs:read", "--expires-in-days", "7", "--endpoint", endpoint
    )
    assert done.exit_code == 0, done.output
    token = next(w for w in done.output.split() if w.startswith("loomos_pat_"))
    with LoomOSClient(endpoint, token=token) as client:
        me = client.me()
        assert me.permissions == ["jobs:read"] and me.auth_method == "api_token"
    env_run = runner.invoke(cli_app, ["whoami", "--endpoint", endpoint], env={"LOOMOS_API_TOKEN": token})
    assert "api_token" in env_run.output and "jobs:read" in env_run.output, env_run.output

    listed = cli("tokens", "list", "--endpoint", endpoint)
    token_id = listed.output.split()[0]
    assert token[:15] in listed.output and token not in listed.output
    assert cli("tokens", "revoke", token_id, "--endpoint", endpoint).exit_code == 0
    with LoomOSClient(endpoint, token=token) as client, pytest.raises(LoomOSError, match="token revoked"):
        client.me()

    assert cli("logout", "--endpoint", endpoint).exit_code == 0
    done = cli("whoami", "--endpoint", endpoint)
    assert done.exit_code == 1 and "not logged in" in done.output


def test_token_scope_only_narrows(api, creds: Path) -> None:  # type: ignore[no-untyped-def]
    endpoint, _ = api
    with LoomOSClient(endpoint, token="-") as client:
        client.token = client.login("alice", PASSWORD).session.token
        narrow = client.create_token("narrow", ["jobs:read", "jobs:create"], 1)
    with LoomOSClient(endpoint, token=narrow.token) as client:
        with pytest.raises(LoomOSError, match="cannot grant more") as wider:
            client.create_token("wider", ["cluster:admin"])
        assert wider.value.status_code == 403
        narrower = client.create_token("narrower", ["jobs:read"])
        assert narrower.scopes == ["jobs:read"]
        with pytest.raises(LoomOSError) as unknown:
            client.create_token("bad", ["root:everything"])
        assert unknown.value.status_code == 422


def test_credentials_readable_by_others_are_refused(api, creds: Path) -> None:  # type: ignore[no-untyped-def]
    endpoint, _ = api
    creds.parent.mkdir(parents=True)
    creds.write_text('{"version": 1, "endpoints": {}}')
    os.chmod(creds, 0o644)
    done = cli("whoami", "--endpoint", endpoint)
    assert done.exit_code == 2 and "chmod 600" in done.output


def test_authenticated_request_overhead_is_small(api) -> None:  # type: ignore[no-untyped-def]
    """get_identity on a cached bearer, measured in-process (HTTP timing on a shared 2-core
    machine is noise): well under a millisecond per call."""
    import asyncio

    from starlette.requests import Request

    from loomos.api.identity import get_principal

    _, app = api
    grant = app.state.authn.login("alice", PASSWORD, CTX)
    headers = [(b"authorization", f"Bearer {grant.token}".encode())]

    async def one() -> None:
        request = Request({"type": "http", "headers": headers, "app": app, "client": ("127.0.0.1", 1)})
        principal = await get_principal(request)
        await get_identity(request, principal)

    async def measure() -> float:
        await one()  # fills the cache
        samples = []
        for _ in range(200):
            start = time.perf_counter()
            await one()
            samples.append(time.perf_counter() - start)
        return sorted(samples)[len(samples) // 2]

    p50 = asyncio.run(measure())
    assert p50 < 0.001, f"p50 {p50 * 1e6:.0f} µs"
