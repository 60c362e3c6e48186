"""Authorization at LoomCtl, over real HTTP with real authentication (local users, API tokens,
the role store authorization implements), against a Temporal namespace no worker polls (a
submitted job waits there; nothing runs).

- the role x endpoint matrix: every route of the live API's OpenAPI, every role of the shipped
  policy (and no role, and an unknown role), expected allow or deny derived from policy.csv;
- 401 without credentials, 403 naming the permission and team, an API token's scope;
- jobs as the caller: user and team from the identity, other teams' jobs invisible;
- the admin API: grants checked, unknown roles refused by name, removed users;
- every decision is a LoomDB event, and the compliance report shows them;
- concurrent requests from many threads while other threads decide (as admission does).
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import insert
from temporalio.testing import WorkflowEnvironment

from loomos.api.app import create_app
from loomos.loomdb import EventQuery, open_event_store
from loomos.security.authn.audit import AuditWriter
from loomos.security.authn.authenticator import Authenticator
from loomos.security.authn.passwords import Passwords
from loomos.security.authz import tables as t
from loomos.security.authz.engine import PolicyView, enforcer_for
from loomos.security.authz.policy_files import read_policy_files
from loomos.security.authz.roles import open_role_store
from loomos.security.db import open_security_db
from loomos.settings import Settings
from loomos.temporal import search_attributes as sa
from tests.helpers.temporal_servers import IDLE_NAMESPACE
from tests.security.authn.serving import serve

pytestmark = pytest.mark.timeout(180)

# Routes that are not authorization's to guard: logging in and managing one's own credentials
# (authentication). Everything else, the Temporal UI's codec included, declares a permission.
NOT_PERMISSION_ROUTES = ("/healthz", "/api/v1/auth/")
# A role per user, all acting in team `vision` (their default team).
USERS = {
    "dana": {"vision": ["data_scientist"]},
    "mike": {"vision": ["ml_engineer"]},
    "root": {"*": ["platform_admin"]},
    "nora": {},  # no role at all
    "gus": {"vision": ["wizard"]},  # a role the policy does not know (stored by hand below)
}
EXPECTED_ROLE = {
    "dana": "data_scientist",
    "mike": "ml_engineer",
    "root": "platform_admin",
    "nora": None,
    "gus": None,
}


@dataclass
class Live:
    endpoint: str
    app: FastAPI
    authn: Authenticator
    tokens: dict[str, str]
    client: Any  # the dev server's Temporal client, on the idle namespace

    def http(self, user: str | None, token: str | None = None) -> httpx.Client:
        headers = {}
        if user is not None or token is not None:
            headers["Authorization"] = f"Bearer {token or self.tokens[user]}"  # type: ignore[index]
        return httpx.Client(base_url=self.endpoint, headers=headers, timeout=30)

    def token(self, user: str, scopes: list[str] | None = None) -> str:
        found = self.authn.accounts.get(user)
        assert found is not None
        return self.authn.tokens.create(found.id, f"t-{uuid.uuid4().hex[:6]}", scopes, 1)[0]

    def add_user(self, name: str, team: str = "vision") -> str:
        self.authn.accounts.create_local(name, "correct horse battery staple", default_team=team)
        self.tokens[name] = self.token(name)
        return self.tokens[name]


@pytest.fixture(scope="module")
def live(dev_server: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("authz-api")
    url = f"sqlite:///{folder / 'loomdb.sqlite'}"
    settings = Settings.model_validate(
        {
            "loomdb": {"url": url},
            "temporal": {
                "address": dev_server.client.service_client.config.target_host,
                "namespace": IDLE_NAMESPACE,
            },
            "security": {"authz": {"reload_interval_s": 0.1}},
        }
    )
    app = create_app(settings)
    engine = open_security_db(url)
    app.state.security_db = engine
    app.state.loomdb = open_event_store(url)
    app.state.authn = authn = Authenticator(
        settings.security.authn,
        engine,
        audit=AuditWriter(app.state.loomdb, interval_s=0.01),
        role_store=open_role_store(settings, engine),
        passwords=Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)),
    )
    for user, roles in USERS.items():
        authn.accounts.create_local(user, "correct horse battery staple", default_team="vision")
        for team, names in roles.items():
            if names != ["wizard"]:
                authn.role_store.grant_role(user, team, names[0])
    with engine.begin() as conn:  # an unknown role cannot be granted through the API: by hand
        conn.execute(
            insert(t.CasbinRule.__table__).values(ptype="g", v0="user:gus", v1="role:wizard", v2="vision")
        )
    authn.role_store.authorizer.reload()
    idle = type(dev_server.client)(**{**dev_server.client.config(), "namespace": IDLE_NAMESPACE})
    live = Live("", app, authn, {}, idle)
    live.tokens = {user: live.token(user) for user in USERS}
    with serve(app) as endpoint:
        live.endpoint = endpoint
        yield live
    app.state.authz_audit.close()


def policy_permissions() -> dict[str | None, set[str]]:
    """Each role's permissions as the shipped policy files say (not as the database says)."""
    files = read_policy_files()
    view = PolicyView.build(0, enforcer_for(files.model_text, files.rules), files.roles, [])
    out: dict[str | None, set[str]] = {role: view.role_permissions(role) for role in files.roles}
    out[None] = set()
    return out


def routes(live: Live) -> list[tuple[str, str, str]]:
    """(method, path, permission) of every route that declares one, from the live OpenAPI."""
    spec = httpx.get(live.endpoint + "/openapi.json").json()
    found = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            permission = op.get("x-required-permission")
            if path.startswith(NOT_PERMISSION_ROUTES) or path == "/healthz":
                continue
            assert permission, f"{method.upper()} {path} declares no permission"
            found.append((method.upper(), path, permission))
    return found


def concrete(path: str) -> str:
    return (
        path.replace("{job_id}", "mnist-0badc0de")
        .replace("{name}", "no_such_role")
        .replace("{subject}", "nobody")
    )


def request(client: httpx.Client, method: str, path: str) -> int:
    url = concrete(path)
    if path.endswith("/stream"):
        with client.stream(method, url) as r:
            return r.status_code
    # Bodies that do not validate: an allowed caller gets 4xx from validation (never 401/403)
    # and nothing is started, granted or appended.
    body = {} if method in ("POST", "PUT") else None
    return client.request(method, url, json=body).status_code


def test_every_route_declares_a_known_permission(live: Live) -> None:
    from loomos.models.permissions import Permission

    declared = routes(live)
    assert len(declared) >= 20
    assert {p for _, _, p in declared} <= {p.value for p in Permission}


def test_role_by_endpoint_matrix_from_the_policy_file(live: Live) -> None:
    permissions = policy_permissions()
    unexpected_allows, unexpected_denials, checked = [], [], 0
    for user, role in EXPECTED_ROLE.items():
        with live.http(user) as client:
            for method, path, permission in routes(live):
                status = request(client, method, path)
                assert status != 401, (user, method, path)
                allowed = status != 403
                expected = permission in permissions[role]
                checked += 1
                if allowed and not expected:
                    unexpected_allows.append((user, role, method, path, status))
                if expected and not allowed:
                    unexpected_denials.append((user, role, method, path))
    assert checked >= 5 * 20
    assert unexpected_allows == []
    assert unexpected_denials == []


def test_no_credentials_is_401_and_healthz_is_open(live: Live) -> None:
    with live.http(None) as anonymous:
        assert anonymous.get("/api/v1/jobs").status_code == 401
        assert anonymous.get("/api/v1/cluster/status").status_code == 401
        assert anonymous.get("/healthz").status_code == 200


def test_403_names_the_permission_and_the_team(live: Live) -> None:
    with live.http("dana") as dana:
        r = dana.post("/api/v1/jobs/mnist-0badc0de/cancel")
    assert r.status_code == 403
    assert r.json()["detail"].startswith("missing permission jobs:delete in team vision")
    with live.http("nora") as nora:
        r = nora.post("/api/v1/jobs", json={"name": "x", "entrypoint": "train.py"})
    assert r.json()["detail"] == "missing permission jobs:create in team vision (no role)"
    with live.http("dana") as dana:
        r = dana.get("/api/v1/jobs", headers={"X-Loomos-Team": "nlp"})
    assert r.status_code == 403 and "jobs:read in team nlp" in r.json()["detail"]


def test_an_api_token_scope_narrows(live: Live) -> None:
    narrow = live.token("root", ["cluster:read"])
    with live.http(None, narrow) as client:
        assert client.get("/api/v1/cluster/status", params={"pool": "nowhere"}).status_code == 404  # allowed
        r = client.get("/api/v1/jobs")
        assert r.status_code == 403 and "not in the API token's scope" in r.json()["detail"]


# --- jobs as the caller ----------------------------------------------------------------------------


async def summary(live: Live, job_id: str) -> dict[str, Any]:
    desc = await live.client.get_workflow_handle(f"job-{job_id}").describe()
    attrs = desc.typed_search_attributes
    return {"user": attrs.get(sa.USER), "team": attrs.get(sa.TEAM)}


async def test_a_job_runs_as_its_submitter(live: Live) -> None:
    spec = {"name": "mine", "entrypoint": "train.py"}
    with live.http("mike") as mike:
        r = mike.post("/api/v1/jobs", json=spec)
        assert r.status_code == 201, r.text
        job_id = r.json()["job_id"]
        assert await summary(live, job_id) == {"user": "mike", "team": "vision"}
        # Naming another user needs jobs:admin; another team, jobs:create there.
        r = mike.post("/api/v1/jobs", json={**spec, "user": "dana"})
        assert r.status_code == 403 and "missing permission jobs:admin in team vision" in r.json()["detail"]
        r = mike.post("/api/v1/jobs", json={**spec, "team": "nlp"})
        assert r.status_code == 403 and "missing permission jobs:create in team nlp" in r.json()["detail"]
        # Naming themselves and their team is fine.
        assert mike.post("/api/v1/jobs", json={**spec, "user": "mike", "team": "vision"}).status_code == 201
    with live.http("root") as root:
        r = root.post("/api/v1/jobs", json={**spec, "user": "dana", "team": "nlp"})  # on someone's behalf
        assert r.status_code == 201, r.text
        assert await summary(live, r.json()["job_id"]) == {"user": "dana", "team": "nlp"}


async def test_teams_see_their_own_jobs(live: Live) -> None:
    live.add_user("olga", team="nlp")
    live.authn.role_store.grant_role("olga", "nlp", "ml_engineer")
    live.tokens["olga"] = live.token("olga")  # a fresh token resolves her new role
    with live.http("olga") as olga:
        r = olga.post("/api/v1/jobs", json={"name": "nlp-job", "entrypoint": "train.py"})
        assert r.status_code == 201, r.text
        nlp_job = r.json()["job_id"]
    with live.http("mike") as mike:
        assert mike.get(f"/api/v1/jobs/{nlp_job}").status_code == 404  # another team's: invisible
        assert mike.post(f"/api/v1/jobs/{nlp_job}/cancel").status_code == 404
        assert mike.get(f"/api/v1/jobs/{nlp_job}/logs").status_code == 404
        deadline = time.monotonic() + 20
        while True:  # visibility is eventually consistent
            with live.http("root") as root:
                everything = {
                    j["job_id"] for j in root.get("/api/v1/jobs", params={"limit": 1000}).json()["jobs"]
                }
            if nlp_job in everything:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        mine = mike.get("/api/v1/jobs", params={"limit": 1000}).json()["jobs"]
        assert mine and {j["team"] for j in mine} == {"vision"}
        assert mike.get("/api/v1/jobs", params={"team": "nlp"}).status_code == 403
    with live.http("olga") as olga:
        assert {j["team"] for j in olga.get("/api/v1/jobs").json()["jobs"]} == {"nlp"}


# --- the admin API -------------------------------------------------------------------------------


def test_admin_api_grants_checks_and_removal(live: Live) -> None:
    live.add_user("newbie")
    with live.http("root") as root:
        r = root.post("/api/v1/admin/grants", json={"subject": "newbie", "role": "wizard", "team": "vision"})
        assert r.status_code == 400 and r.json()["detail"] == "unknown role 'wizard'"
        r = root.post(
            "/api/v1/admin/grants", json={"subject": "newbie", "role": "data_scientist", "team": "vision"}
        )
        assert r.status_code == 201 and r.json()["changed"] is True
        grants = root.get("/api/v1/admin/grants", params={"subject": "newbie"}).json()["grants"]
        assert grants == [{"subject": "newbie", "role": "data_scientist", "team": "vision"}]
        roles = {r["name"]: r for r in root.get("/api/v1/admin/roles").json()["roles"]}
        assert roles["data_scientist"]["constraints"]["max_concurrent_jobs"] == 10
        users = {u["subject"]: u for u in root.get("/api/v1/admin/users").json()["users"]}
        assert users["newbie"] == {
            "subject": "newbie",
            "roles": {"vision": ["data_scientist"]},
            "account": "active",
        }
        body = {"permissions": ["jobs:read"], "constraints": {"max_concurrent_jobs": -1}}
        bad = root.put("/api/v1/admin/roles/capped", json=body)
        assert bad.status_code == 422
    live.tokens["newbie"] = live.token("newbie")
    with live.http("newbie") as newbie:
        assert (
            newbie.get("/api/v1/cluster/status", params={"pool": "x"}).status_code == 404
        )  # cluster:read: in
    with live.http("mike") as mike:  # an ml_engineer is no security admin
        r = mike.post(
            "/api/v1/admin/grants", json={"subject": "mike", "role": "platform_admin", "team": "vision"}
        )
        assert r.status_code == 403 and "security:admin" in r.json()["detail"]
    with live.http("root") as root:
        removed = root.delete("/api/v1/admin/users/newbie/grants")
        assert removed.status_code == 200 and removed.json()["grants_removed"] == 1
    time.sleep(0.3)  # the bearer cache (tokens.cache_ttl_s) may still answer with the old roles...
    with live.http("newbie") as newbie:  # ...but a removed user's carried roles no longer count
        assert newbie.get("/api/v1/cluster/status", params={"pool": "x"}).status_code == 403


# --- the audit trail ---------------------------------------------------------------------------------


def test_every_decision_is_audited_and_in_the_compliance_report(live: Live) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    marker = f"audit-{uuid.uuid4().hex[:8]}"
    with live.http("nora") as nora:
        assert nora.get("/api/v1/cluster/status", headers={"X-Request-ID": marker}).status_code == 403
    with live.http("dana") as dana:
        assert dana.get("/api/v1/marketplace/catalog").status_code == 200
    assert live.app.state.authz_audit.flush(5)
    store = live.app.state.loomdb
    events = store.query(EventQuery(event_types=["security.access.*"], start=start, limit=1000)).events
    denied = [e for e in events if e.data.get("request_id") == marker]
    assert len(denied) == 1
    d = denied[0]
    assert d.event_type == "security.access.denied" and d.context.user_id == "nora"
    assert (
        d.data["team"] == "vision" and d.data["action"] == "cluster:read" and d.data["decision"] == "denied"
    )
    assert d.data["object"] == "GET /api/v1/cluster/status" and d.context.source_ip == "127.0.0.1"
    assert d.data["policy_version"] >= 1 and d.data["roles"] == []
    granted = [e for e in events if e.context.user_id == "dana" and e.event_type == "security.access.granted"]
    assert granted and granted[-1].data["matched_rule"] == "p, role:data_scientist, cluster:read"
    assert granted[-1].security.roles == ["data_scientist"]
    with live.http("root") as root:
        end = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        report = root.get("/api/v1/compliance/report", params={"start": start.isoformat(), "end": end}).json()
    who = {(r["user_id"], r["event_type"]) for r in report["access_audit"]}
    assert ("nora", "security.access.denied") in who and ("dana", "security.access.granted") in who
    reasons = [r["reason"] for r in report["denials"] if r["user_id"] == "nora"]
    assert "missing permission cluster:read in team vision (no role)" in reasons


# --- concurrency -----------------------------------------------------------------------------------


def test_concurrent_requests_and_decisions_from_many_threads(live: Live) -> None:
    """LoomCtl decides on its event loop while, in the same process, other threads decide too
    (a control worker's admission activities): all through one authorizer and its lock."""
    authorizer = live.authn.role_store.authorizer
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    failures: list[Any] = []
    deadline = time.monotonic() + 3

    def requests(user: str, expected: int) -> None:
        with live.http(user) as client:
            while time.monotonic() < deadline:
                status = client.get("/api/v1/marketplace/catalog").status_code
                if status != expected:
                    failures.append((user, status))

    def decisions() -> None:
        while time.monotonic() < deadline:
            try:
                if not authorizer.decide(
                    "mike", "vision", "jobs:delete", {"vision": ["ml_engineer"]}
                ).allowed:
                    failures.append("wrong decision")
            except Exception as err:  # noqa: BLE001
                failures.append(err)

    threads = [threading.Thread(target=requests, args=(u, s)) for u, s in (("dana", 200), ("nora", 403)) * 3]
    threads += [threading.Thread(target=decisions) for _ in range(4)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
    finally:
        sys.setswitchinterval(before)
    assert failures == []


# --- the CLI -------------------------------------------------------------------------------------


def cli(live: Live, user: str, *args: str) -> Any:
    from typer.testing import CliRunner

    from loomos.cli import app

    env = {"COLUMNS": "200", "LOOMOS_API_ENDPOINT": live.endpoint, "LOOMOS_API_TOKEN": live.tokens[user]}
    return CliRunner().invoke(app, list(args), env=env)


def test_cli_roles_grants_users(live: Live) -> None:
    live.add_user("carl")
    listed = cli(live, "root", "roles", "list")
    assert listed.exit_code == 0, listed.output
    assert "data_scientist" in listed.output and "max_concurrent_jobs=25" in listed.output
    shown = cli(live, "root", "roles", "show", "ml_engineer", "--json")
    assert shown.exit_code == 0 and '"inherits": [\n    "data_scientist"\n  ]' in shown.output
    added = cli(live, "root", "grants", "add", "carl", "ml_engineer", "--team", "vision")
    assert added.exit_code == 0 and "granted ml_engineer to carl in team vision" in added.output
    grants = cli(live, "root", "grants", "list", "--user", "carl")
    assert grants.exit_code == 0 and "ml_engineer" in grants.output and "1 grant(s)" in grants.output
    users = cli(live, "root", "users", "list")
    assert users.exit_code == 0 and "vision: ml_engineer" in users.output
    # An unknown role is bad input (exit 2); a grant the caller may not make fails (exit 1).
    unknown = cli(live, "root", "grants", "add", "carl", "wizard", "--team", "vision")
    assert unknown.exit_code == 2 and "unknown role 'wizard'" in unknown.output
    refused = cli(live, "mike", "grants", "add", "carl", "platform_admin", "--team", "vision")
    assert refused.exit_code == 1 and "missing permission security:admin in team vision" in refused.output
    removed = cli(live, "root", "grants", "remove", "carl", "ml_engineer", "--team", "vision")
    assert removed.exit_code == 0 and "revoked ml_engineer of carl in team vision" in removed.output
    assert cli(live, "dana", "roles", "list").exit_code == 1  # security:audit is not a data scientist's
