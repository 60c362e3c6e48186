"""The demo's stack: the configured settings moved onto free ports and the demo's own state
folder, so a demo never disturbs a `loomos dev` that is running. `loomos demo` (loomos.cli.demo)
runs a job on it; benchmarks reuse it.
"""

from __future__ import annotations

from pathlib import Path

from loomos.devstack.stack import StackError, free_port, free_ports
from loomos.settings import Settings

DEMO_SPEC = Path("examples") / "ddp-demo.yaml"
DEMO_NODE_ID = "demo-node"


def demo_settings(base: Settings, state_dir: Path) -> Settings:
    """The configured settings, moved onto free ports and the demo's own state folder."""
    data = base.model_dump()
    host = base.temporal.host
    temporal_port, ui_port = free_ports(2, host)
    data["temporal"].update(address=f"{host}:{temporal_port}", ui_port=ui_port, db_file=None)
    data["api"].update(host="127.0.0.1", port=free_port())
    data["loomdb"]["url"] = f"sqlite:///{(state_dir / 'loomdb.sqlite').resolve()}"
    data["checkpoints"]["root"] = str((state_dir / "checkpoints").resolve())
    data["logs"]["root"] = str((state_dir / "logs").resolve())
    data["node"]["node_id"] = DEMO_NODE_ID
    return Settings.model_validate(data)


def find_demo_spec(root: Path) -> Path:
    path = root / DEMO_SPEC
    if not path.is_file():
        raise StackError(f"{DEMO_SPEC} not found under {root}: run `loomos demo` from a LoomOS checkout")
    return path
