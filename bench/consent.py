"""The consent flow end to end against the local oidc-provider, as a user and an agent see it.

Timed per iteration: authorize (agent API) → the user's login and consent forms at the provider
(agent_vault_local.consent_forms.complete_consent, a scripted browser) → the OAuth callback
(handler) → complete/binding (agent API, which verifies the user's ID token) → the first token
(a refresh narrowed to the asked scopes). Every iteration is a new agent task and session
(started before the timer), so every consent is a whole new grant.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.rig import GRANTED, PROVIDER, SCOPES, Rig
from bench.timing import percentile
from tests.support.harness import binding_code_of


def measure(rig: Rig, iterations: int) -> dict[str, Any]:
    vault = rig.vault
    steps: dict[str, list[float]] = {
        k: []
        for k in ("authorize", "provider_forms", "callback", "complete", "first_token", "total")
    }
    for _ in range(iterations):
        agent = vault.agent()
        started_session = agent.start_session(vault.user("alice"))
        assert started_session.status == 201, started_session.body
        t0 = time.perf_counter()
        started = agent.authorize(PROVIDER, list(GRANTED))
        assert started.status == 201, started.body
        t1 = time.perf_counter()
        query = vault.consent_at_provider(started.json["authorization_url"], "alice")
        t2 = time.perf_counter()
        back = vault.callback(query)
        assert back.status == 302, back.body
        t3 = time.perf_counter()
        bound = agent.complete(started.json["flow_id"], vault.user("alice"), binding_code_of(back))
        assert bound.status == 200, bound.body
        t4 = time.perf_counter()
        token = agent.token(PROVIDER, SCOPES)
        assert token.status == 200, token.body
        t5 = time.perf_counter()
        for name, (a, b) in {
            "authorize": (t0, t1),
            "provider_forms": (t1, t2),
            "callback": (t2, t3),
            "complete": (t3, t4),
            "first_token": (t4, t5),
            "total": (t0, t5),
        }.items():
            steps[name].append((b - a) * 1000)
    return {
        "iterations": iterations,
        "median_ms": round(statistics.median(steps["total"]), 1),
        "p95_ms": round(percentile(steps["total"], 95), 1),
        "steps_median_ms": {
            k: round(statistics.median(v), 1) for k, v in steps.items() if k != "total"
        },
        "note": "in-process handlers over moto (moto's emulation time included) and the local "
        "oidc-provider on loopback; the browser is scripted (no rendering, no human)",
    }
