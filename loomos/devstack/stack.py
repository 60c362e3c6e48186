"""The embedded stack on one machine: a Temporal dev server, a control worker, a node worker
and LoomCtl, each its own process, started in order and stopped in reverse.

`loomos dev` (make up) runs it until Ctrl-C; `loomos demo` runs an ephemeral one around a
job. Beyond one machine none of this is used: operators run `loomos worker control`,
`loomos worker node` and `loomos api` against their Temporal cluster (see the README).

Every child gets its settings as the environment variables of loomos/settings.py (ENV_VARS),
so a child reads the same temporal-dev.yaml and differs only where the stack says so (ports,
state folders). Children are tied to this process (loomos/processes.py): a Ctrl-C or SIGTERM
stops them in order, and a SIGKILL of this process still ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, GetSystemInfoRequest

from loomos.devstack.binaries import temporal_cli
from loomos.processes import spawn_tied_to_parent
from loomos.security.authn.bootstrap import DevAdmin, bootstrap_dev_admin
from loomos.settings import Settings
from loomos.temporal.client import connect_temporal, ensure_search_attributes, search_attribute_definitions
from loomos.temporal.names import CONTROL_TASK_QUEUE, node_task_queue

START_TIMEOUT_S = 60.0
# Time each service gets to stop after SIGTERM before it is killed. The node worker's covers
# the final checkpoint of a running attempt (node.cancel_grace_s) plus its own shutdown.
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 15


class StackError(RuntimeError):
    """Something the user can act on: a port in use, a service that would not start."""


class StartInterrupted(StackError):
    """Ctrl-C (or SIGTERM) arrived while the stack was starting."""


@dataclass
class Service:
    name: str
    cmd: list[str]
    log_path: Path
    stop_grace_s: float = STOP_GRACE_S
    proc: subprocess.Popen[bytes] | None = None
    _pump: threading.Thread | None = None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class StackLayout:
    """Where a stack listens and keeps its state."""

    settings: Settings
    state_dir: Path
    node_id: str
    persistent: bool = True  # keep Temporal's history in temporal.db_file across restarts
    echo: Callable[[str, str], None] | None = None  # (service, line) for `loomos dev`'s console

    def __post_init__(self) -> None:
        # The stack's own dev server is plaintext and keyless: this process (waiting for it,
        # registering search attributes) must not use a Temporal Cloud profile or API key
        # configured on this machine, any more than its children do.
        self.settings = self.settings.for_local_dev_server()
        # Dev mode for this stack and its children: a local admin and its token are made at
        # start (loomos.security.authn.bootstrap); LoomCtl still refuses anonymous requests.
        self.settings.security.authn.dev_bootstrap = True

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "stack-logs"

    def child_env(self) -> dict[str, str]:
        """Each child's environment: this stack's settings as every variable of ENV_VARS (so a
        child arrives at them whatever its temporal-dev.yaml says), with the node id chosen
        here and a plain connection to the stack's own dev server: no Temporal client profile,
        TLS or API key from this machine, which a dev server would refuse."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOMOS_", "TEMPORAL_"))}
        for keep in ("LOOMOS_CONFIG", "LOOMOS_DEBUG", "LOOMOS_TEMPORAL_CLI"):
            if keep in os.environ:
                env[keep] = os.environ[keep]
        settings = self.settings.model_copy(deep=True)
        settings.node.node_id = self.node_id
        env.update(settings.as_env())
        env["PYTHONUNBUFFERED"] = "1"
        return env


def listening_ports(settings: Settings) -> list[tuple[str, str, int]]:
    """(setting, host, port) of everything the stack binds, for the port check."""
    t, a = settings.temporal, settings.api
    return [
        ("temporal.address (TEMPORAL_ADDRESS)", t.host, t.port),
        ("temporal.ui_port (LOOMOS_TEMPORAL_UI_PORT)", t.host, t.ui_port),
        ("api.port (LOOMOS_API_PORT)", a.host, a.port),
    ]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # SO_REUSEADDR, as the servers themselves bind: on Linux a listening socket still makes
        # the bind fail, while connections of a stopped server lingering in TIME_WAIT do not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_ports_free(settings: Settings) -> None:
    taken = []
    seen: set[int] = set()
    for key, host, port in listening_ports(settings):
        if port in seen:
            raise StackError(f"{key}: port {port} is given to two services; each needs its own")
        seen.add(port)
        if not port_is_free(host, port):
            taken.append(f"{key}: port {port} on {host} is already in use")
    if taken:
        raise StackError(
            "; ".join(taken)
            + " (is `loomos dev` or another Temporal server already running? stop it, or choose other"
            " ports in temporal-dev.yaml or with the variables named)"
        )


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free right now (all held open together while they are chosen)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]


def _loomos_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "loomos.cli", *args]


def codec_endpoint(settings: Settings) -> str:
    """LoomCtl's codec server, as the Temporal UI is given it (it appends /decode, /encode)."""
    return f"{settings.api_url}/api/v1/codec"


def ensure_dev_keyring(settings: Settings) -> str | None:
    """With a local keyring that does not exist yet, create it (a dev stack starts on a fresh
    clone, and secret variables and payload encryption need a key); returns the new key id, if
    one was made."""
    crypto = settings.security.crypto
    if crypto.key_provider != "local":
        return None
    from loomos.security.crypto.keys import key_provider_from_settings

    provider = key_provider_from_settings(crypto)
    if provider.keyring.exists():
        return None
    info, _ = provider.rotate()
    return info.key_id


def plan_services(layout: StackLayout) -> list[Service]:
    s = layout.settings
    logs = layout.log_dir
    temporal = [
        temporal_cli(), "server", "start-dev",
        "--ip", s.temporal.host,
        "--port", str(s.temporal.port),
        "--ui-port", str(s.temporal.ui_port),
        # Its shutdown alone logs a screenful of warnings about its own stopped pollers.
        "--log-level", "error",
    ]  # fmt: skip
    if s.temporal.namespace != "default":
        temporal += ["--namespace", s.temporal.namespace]
    if layout.persistent and s.temporal.db_file:
        temporal += ["--db-filename", s.temporal.db_file]
    # Registered at start on a fresh database; ensure_search_attributes covers an old one.
    for name, kind in search_attribute_definitions(s).items():
        temporal += ["--search-attribute", f"{name}={kind}"]
    if s.security.crypto.payload_encryption:
        # The UI shows payloads in clear through LoomCtl's codec endpoint (for a logged-in user
        # with jobs:read); Temporal's own database holds only ciphertext.
        temporal += ["--ui-codec-endpoint", codec_endpoint(s)]
    node_grace = s.node.cancel_grace_s + STOP_GRACE_S
    return [
        Service("temporal", temporal, logs / "temporal.log"),
        Service("control", _loomos_cmd("worker", "control"), logs / "control-worker.log"),
        Service("node", _loomos_cmd("worker", "node"), logs / "node-worker.log", stop_grace_s=node_grace),
        Service("api", _loomos_cmd("api"), logs / "api.log"),
    ]


class LocalStack:
    """Start with `start()` (or as a context manager), stop with `stop()`; `check()` raises
    StackError when a service died on its own. `admin` is the dev admin made at start."""

    def __init__(self, layout: StackLayout, interrupted: threading.Event | None = None) -> None:
        self.layout = layout
        self.services = plan_services(layout)
        self.interrupted = interrupted or threading.Event()
        self._stopping = False
        self.admin: DevAdmin | None = None

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- start -------------------------------------------------------------------------------

    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        s = self.layout.settings
        self.layout.log_dir.mkdir(parents=True, exist_ok=True)
        for folder in (s.checkpoints.root, s.logs.root):
            if "://" not in folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
        if s.temporal.db_file and self.layout.persistent:
            Path(s.temporal.db_file).parent.mkdir(parents=True, exist_ok=True)
        made = ensure_dev_keyring(s)
        if made:
            progress(f"created the payload keyring {s.security.crypto.key_file} (key {made})")
        temporal, *workers, api = self.services
        # Before LoomCtl starts: it finds the security tables migrated and the admin there.
        self.admin = bootstrap_dev_admin(s, s.api_url, self.layout.state_dir)

        progress(f"starting the Temporal dev server on {s.temporal.address}")
        self._launch(temporal)
        asyncio.run(self._await_temporal(temporal))
        progress("starting the control worker, a node worker and LoomCtl")
        for service in (*workers, api):
            self._deadline_check(None, float("inf"), "")
            self._launch(service)
        asyncio.run(self._await_pollers())
        self._await_api(api)

    def _launch(self, service: Service) -> None:
        service.log_path.parent.mkdir(parents=True, exist_ok=True)
        service.proc = spawn_tied_to_parent(
            service.cmd,
            env=self.layout.child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        # The service's output goes to its log file and, for `loomos dev`, to the console.
        service._pump = threading.Thread(
            target=_pump_output, args=(service, self.layout.echo), name=f"pump-{service.name}", daemon=True
        )
        service._pump.start()

    def _deadline_check(self, service: Service | None, deadline: float, what: str) -> None:
        if self.interrupted.is_set():
            raise StartInterrupted("interrupted while starting; stopping what was started")
        self.check()
        if time.monotonic() > deadline:
            where = f"; its log ({service.log_path}) ends with:\n{service.tail()}" if service else ""
            raise StackError(f"{what} within {START_TIMEOUT_S:.0f} s{where}")

    async def _await_temporal(self, temporal: Service) -> None:
        s = self.layout.settings
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self._deadline_check(temporal, deadline, f"Temporal did not answer on {s.temporal.address}")
            try:
                client = await connect_temporal(s)
                await client.workflow_service.get_system_info(GetSystemInfoRequest(), retry=False)
                break
            except Exception:
                await asyncio.sleep(0.2)
        added = await ensure_search_attributes(client, s.temporal.namespace, search_attribute_definitions(s))
        if added and self.layout.echo:
            self.layout.echo("stack", f"registered search attributes: {', '.join(added)}")

    async def _await_pollers(self) -> None:
        """Ready means polling: the control worker on its queue, the node worker on its own."""
        s = self.layout.settings
        client = await connect_temporal(s)
        control, node = self.services[1], self.services[2]
        wanted = [
            (control, CONTROL_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
            (node, node_task_queue(self.layout.node_id), TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
        ]
        deadline = time.monotonic() + START_TIMEOUT_S
        for service, queue, kind in wanted:
            while True:
                self._deadline_check(service, deadline, f"the {service.name} worker did not poll {queue}")
                described = await client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=s.temporal.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
                    )
                )
                if described.pollers:
                    break
                await asyncio.sleep(0.2)

    def _await_api(self, api: Service) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        url = self.layout.settings.api_url + "/healthz"
        while True:
            self._deadline_check(api, deadline, f"LoomCtl did not answer on {url}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)

    # --- watch and stop ----------------------------------------------------------------------

    def check(self) -> None:
        """Raise StackError if a started service has exited (unless we are stopping it)."""
        if self._stopping:
            return
        for service in self.services:
            if service.proc is not None and service.proc.poll() is not None:
                code = service.proc.returncode
                raise StackError(
                    f"{service.name} exited with code {code}; its log ({service.log_path}) ends with:\n"
                    f"{service.tail()}"
                )

    def wait(self, stop: threading.Event, interval: float = 0.5) -> None:
        """Block until `stop` is set; raise StackError if a service dies meanwhile."""
        while not stop.wait(interval):
            self.check()

    def stop(self) -> list[str]:
        """Stop every service, last started first; return the ones that had to be killed."""
        self._stopping = True
        killed = []
        for service in reversed(self.services):
            if service.proc is None:
                continue
            if service.proc.poll() is None:
                service.proc.send_signal(signal.SIGTERM)
                try:
                    service.proc.wait(service.stop_grace_s)
                except subprocess.TimeoutExpired:
                    killed.append(service.name)
                    # Its own session: the whole group, so helpers it started go too.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(service.proc.pid, signal.SIGKILL)
                    service.proc.wait()
            if service._pump is not None:
                service._pump.join(5)
        return killed



def _pump_output(service: Service, echo: Callable[[str, str], None] | None) -> None:
    assert service.proc is not None and service.proc.stdout is not None
    with open(service.log_path, "ab") as log:
        stream: IO[bytes] = service.proc.stdout
        for raw in iter(stream.readline, b""):
            log.write(raw)
            log.flush()
            if echo is not None:
                echo(service.name, raw.decode(errors="replace").rstrip("\n"))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM (Ctrl-C, `kill`), instead of KeyboardInterrupt
    landing wherever the main thread happens to be."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
