"""Hostile input: each of these gets its 4xx, says what is wrong, and leaves nothing behind (no
workflow started). The spec-level checks are in loomos/models/input_limits.py and spec.py; the
body cap in loomos/api/body_limit.py."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from loomos.api.app import create_app
from loomos.models import input_limits as limits
from loomos.models.spec import SpecError, load_spec, parse_spec
from loomos.temporal import names
from tests.helpers.authz import authenticated
from tests.helpers.temporal_servers import settings_for

GOOD: dict[str, Any] = {"name": "hostile", "entrypoint": "train.py"}
URI = "checkpoint_config.storage_uri"
ENV = "environment_variables"


def ckpt(uri: str) -> dict[str, Any]:
    return {"checkpoint_config": {"storage_uri": uri}}

BAD_SPECS = [
    ({"entrypoint": "../../etc/passwd"}, "entrypoint", "'..'"),
    ({"entrypoint": "a\x00b.py"}, "entrypoint", "NUL"),
    ({"working_directory": "/srv/jobs/../../etc"}, "working_directory", "'..'"),
    (
        {"checkpoint_config": {"storage_uri": "file:///ckpt/../../etc"}},
        "checkpoint_config.storage_uri",
        "'..'",
    ),
    (
        {"checkpoint_config": {"storage_uri": "file://evil.host/etc"}},
        "checkpoint_config.storage_uri",
        "absolute",
    ),
    (ckpt("ftp://x/y"), URI, "s3://"),
    (ckpt("relative/dir"), URI, "absolute"),
    (ckpt("s3:///nobucket"), URI, "no bucket"),
    ({"environment_variables": {"LD_PRELOAD": "/tmp/x.so"}}, "environment_variables", "dynamic loader"),
    ({"environment_variables": {"PYTHONPATH": "/tmp"}}, "environment_variables", "PYTHONPATH"),
    ({"environment_variables": {"DYLD_INSERT_LIBRARIES": "x"}}, "environment_variables", "launcher"),
    (
        {"environment_variables": {"X": "a" * (limits.MAX_ENV_VALUE_CHARS + 1)}},
        "environment_variables",
        "at most",
    ),
    ({"args": ["x"] * (limits.MAX_ARGS + 1)}, "args", "at most"),
    ({"args": ["x" * 30_000] * 10}, "args", "bytes; at most"),
    ({"command": [], "entrypoint": None}, "command", "must not be empty"),
    ({"metadata": json.loads('{"a":' * 40 + "1" + "}" * 40)}, "metadata", "nests deeper"),
    ({"metadata": {"blob": "x" * (limits.MAX_METADATA_BYTES + 10)}}, "metadata", "bytes as JSON"),
    ({"tags": ["t"] * (limits.MAX_TAGS + 1)}, "tags", "at most"),
    ({"max_runtime_hours": float("nan")}, "max_runtime_hours", "finite"),
    ({"retry_policy": {"retry_delay_seconds": float("inf")}}, "retry_policy.retry_delay_seconds", "finite"),
    ({"priority": -1}, "priority", "greater than or equal to 0"),
    ({"resources": {"gpu_count": -2}}, "resources.gpu_count", "greater than or equal to 0"),
]


@pytest.mark.parametrize(("change", "field", "needle"), BAD_SPECS, ids=[b[1] + ":" + b[2] for b in BAD_SPECS])
def test_bad_spec_names_the_field(change: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**GOOD, **change})
    problems = dict(caught.value.errors)
    assert field in problems, problems
    assert needle in problems[field], problems[field]


def test_good_paths_still_pass() -> None:
    spec = parse_spec(
        {
            **GOOD,
            "entrypoint": "src/train.py",
            "working_directory": "/srv/jobs/mnist",
            "checkpoint_config": {"storage_uri": "s3://bucket/prefix"},
            "environment_variables": {"HF_HOME": "/cache", "PATH": "/usr/bin"},
        }
    )
    assert spec.entrypoint == "src/train.py"
    assert parse_spec({**GOOD, "checkpoint_config": {"storage_uri": "file:///ckpt/x"}})


def test_yaml_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = [
        "name: bomb",
        "entrypoint: train.py",
        "metadata:",
        '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    ]
    prev = "a"
    for level in "bcdefghij":
        lines.append(f"  {level}: &{level} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = level
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(SpecError, match="aliases expand it"):
        load_spec(path)
    assert time.monotonic() - started < 2


def test_aliases_within_bounds_still_work(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text("name: ok\nentrypoint: t.py\nmetadata:\n  base: &b {lr: 0.1}\n  copy: *b\n")
    assert load_spec(path).metadata["copy"] == {"lr": 0.1}


def test_oversized_spec_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: big\nentrypoint: t.py\n# " + "x" * limits.MAX_SPEC_FILE_BYTES + "\n")
    with pytest.raises(SpecError, match="bytes; at most"):
        load_spec(path)


# --- through LoomCtl, against a real Temporal: nothing is started ----------------------------


@pytest.fixture
async def http(dev_server: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    app = authenticated(create_app(settings_for(dev_server.client), dev_server.client))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://loomctl") as client:
        yield client


async def job_workflows(env: WorkflowEnvironment) -> int:
    return len([w async for w in env.client.list_workflows(f'WorkflowType = "{names.JOB_WORKFLOW}"')])


async def test_hostile_bodies_get_4xx_and_start_nothing(
    http: httpx.AsyncClient, dev_server: WorkflowEnvironment
) -> None:
    before = await job_workflows(dev_server)
    cases: list[tuple[Any, int, str]] = [
        (json.dumps({**GOOD, "entrypoint": "../../x.py"}), 422, "'..'"),
        ('{"name": "a", "entrypoint": "t.py", "max_runtime_hours": NaN}', 422, "finite"),
        (b'{"name": "a\xff\xfe", "entrypoint": "t.py"}', 400, "parsing the body"),
        ('{"metadata": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}", 400, "parsing the body"),
        (b"x" * (3 * 1024 * 1024), 413, "request body over"),
        (json.dumps({**GOOD, "environment_variables": {"LD_PRELOAD": "/x.so"}}), 422, "LD_PRELOAD"),
    ]
    for body, status, needle in cases:
        r = await http.post("/api/v1/jobs", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, (r.status_code, r.text[:300])
        assert needle in r.text
    # A spec under the body cap but over what a workflow input may be (Temporal: 2 MB).
    big = {**GOOD, "args": ["y" * 30_000] * 8, "description": "d" * 4000}
    big["environment_variables"] = {f"V{i}": "z" * 30_000 for i in range(40)}
    r = await http.post("/api/v1/jobs", json=big)
    assert r.status_code == 413 and "at most" in r.json()["detail"], r.text[:300]
    assert await job_workflows(dev_server) == before
