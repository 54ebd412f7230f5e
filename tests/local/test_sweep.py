"""Local mode runs the deployed schedule of the unbound-flow sweep: the admin function gets a
`Scheduled Event` every few minutes (here every 0.2 s), in its container, and audits it."""

from __future__ import annotations

import threading
from typing import Any

from agent_vault_local.runner import SWEEP_SECONDS, LocalMode
from stacks.constructs.unbound_flow_sweep import SWEEP_MINUTES


def test_local_mode_sweeps_unbound_flows_on_the_deployed_schedule() -> None:
    assert SWEEP_SECONDS == SWEEP_MINUTES * 60  # local mode's default is the stack's rate
    sweeps: list[dict[str, Any]] = []
    two = threading.Event()

    def on_audit(event: dict[str, Any]) -> None:
        if event.get("action") == "flows.sweep":
            sweeps.append(event)
            if len(sweeps) >= 2:
                two.set()

    with LocalMode(with_agent=False, on_audit=on_audit, sweep_seconds=0.2):
        assert two.wait(timeout=30), f"the sweep ran {len(sweeps)} times in 30 s"
    assert all(e["outcome"] == "done" and e["count"] == 0 for e in sweeps[:2]), sweeps
