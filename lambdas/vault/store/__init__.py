"""The vault's data layer: the only code that reads or writes DynamoDB (and, in `envelope`, KMS).

One repository per aggregate, over one DynamoDB client (`dynamo`) and one generic item mapper
(`mapper`, driven by the layout in `schema`): sessions with their tokens, consent flows, grants
with their refresh lease, agents' machine tokens with their fetch lease, the proof replay cache,
delegations (child sessions), and read-only pages for the admin read API.
"""

from __future__ import annotations

from typing import Any

from vault.store.delegations import DelegationRepository
from vault.store.dynamo import Conflict, Dynamo
from vault.store.flows import FlowRepository
from vault.store.grants import GrantRepository
from vault.store.machine import MachineTokenRepository
from vault.store.pages import PageRepository
from vault.store.replay import ReplayRepository
from vault.store.sessions import SessionRepository

__all__ = ["Conflict", "Store"]


class Store:
    """The repositories, sharing one DynamoDB client."""

    def __init__(self, dynamodb: Any, table: str, replay_table: str) -> None:
        self._db = Dynamo(dynamodb)
        self.sessions = SessionRepository(self._db, table)
        self.flows = FlowRepository(self._db, table)
        self.grants = GrantRepository(self._db, table)
        self.machine = MachineTokenRepository(self._db, table)
        self.replay = ReplayRepository(self._db, replay_table)
        self.pages = PageRepository(self._db, table)
        self.delegations = DelegationRepository(self._db, table)
