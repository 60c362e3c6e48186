"""Workflows call activities through the stubs of loomos.temporal.activities; the workers
register the implementations. Each stub must have exactly one implementation registered on
its worker, under the same name, with the same input and result types, or a workflow's call
would go unanswered (or be decoded as the wrong model) at run time."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity

from loomos.settings import Settings
from loomos.temporal.activities import ControlActivities, NodeActivities
from loomos.workers.control import control_activities
from loomos.workers.node import node_activities


def definitions(callables: list[Any]) -> dict[str, activity._Definition]:
    found: dict[str, activity._Definition] = {}
    for fn in callables:
        defn = activity._Definition.must_from_callable(fn)
        assert defn.name not in found, f"{defn.name} registered twice"
        found[defn.name] = defn
    return found


def stubs(interface: type) -> dict[str, activity._Definition]:
    methods = [m for _, m in inspect.getmembers(interface, inspect.isfunction)]
    return definitions([m for m in methods if activity._Definition.from_callable(m) is not None])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings()
    s.loomdb.url = f"sqlite:///{tmp_path}/loomdb.sqlite"
    s.logs.root = str(tmp_path / "logs")
    s.checkpoints.root = str(tmp_path / "checkpoints")
    return s


@pytest.mark.parametrize("worker", ["control", "node"])
def test_each_stub_has_its_implementation(settings: Settings, worker: str) -> None:
    if worker == "control":
        interface, registered = ControlActivities, definitions(control_activities(settings))
    else:
        interface, registered = NodeActivities, definitions(node_activities(settings, "node-a"))
    declared = stubs(interface)
    assert set(registered) == set(declared)
    for name, stub in declared.items():
        impl = registered[name]
        assert (impl.arg_types, impl.ret_type) == (stub.arg_types, stub.ret_type), name
