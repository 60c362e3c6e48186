"""pycasbin's enforce re-parses its matcher with ast.parse on every call; on CPython 3.11,
ast.parse from several threads at once can raise `SystemError: AST constructor recursion depth
mismatch` (CPython gh-106905). The authorizer calls Casbin behind a lock. The first test puts
many threads through the authorizer at once and fails without that lock; the second shows the
same load does break a bare enforcer (so the first one can fail)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from loomos.security.authz.authorizer import Authorizer

THREADS = 8
SECONDS = 1.5
ROLES = {"vision": ["ml_engineer"]}


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    # Switch threads as often as the interpreter can: the race shows within a second.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def hammer(call: Callable[[int], None], seconds: float = SECONDS) -> tuple[list[BaseException], int]:
    errors: list[BaseException] = []
    calls = [0] * THREADS
    start = threading.Barrier(THREADS)
    deadline = time.monotonic() + seconds

    def worker(index: int) -> None:
        start.wait()
        while time.monotonic() < deadline and not errors:
            try:
                call(index)
            except BaseException as err:  # noqa: BLE001 - what breaks is the point
                errors.append(err)
            calls[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors, sum(calls)


def test_concurrent_decisions_are_right_and_never_raise(
    authorizer: Authorizer, tiny_switch_interval: None
) -> None:
    cases = [
        ("jobs:create", "vision", True),
        ("jobs:delete", "vision", True),
        ("security:admin", "vision", False),
        ("jobs:read", "nlp", False),
    ]

    def decide(index: int) -> None:
        permission, team, expected = cases[index % len(cases)]
        decision = authorizer.decide(f"user{index}", team, permission, ROLES)
        if decision.allowed is not expected:
            raise AssertionError(f"{permission} in {team}: {decision}")

    errors, calls = hammer(decide)
    assert not errors, f"{len(errors)} failures, first: {errors[0]!r}"
    assert calls > THREADS * 10


def test_the_same_load_breaks_an_enforcer_without_the_lock(
    authorizer: Authorizer, tiny_switch_interval: None
) -> None:
    enforcer = authorizer.view.enforcer  # bypassing PolicyView.lock on purpose

    def decide(index: int) -> None:
        enforcer.enforce("role:ml_engineer", "vision", "jobs:create")

    errors, _ = hammer(decide, seconds=5)
    if not errors:
        pytest.skip(f"this CPython ({sys.version.split()[0]}) did not show gh-106905 under load")
    assert any(isinstance(e, SystemError) and "recursion depth" in str(e) for e in errors), errors[:3]
