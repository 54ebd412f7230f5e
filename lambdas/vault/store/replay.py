"""The proof replay cache: each proof of possession's `jti` is accepted once per key."""

from __future__ import annotations

import hashlib

from vault.store.dynamo import Conflict, Dynamo
from vault.store.mapper import PROOF_JTIS
from vault.store.schema import ProofJti


class ReplayRepository:
    def __init__(self, db: Dynamo, table: str) -> None:
        self._db = db
        self.table = table

    def remember(self, jkt: str, jti: str, expires_at: float) -> bool:
        """Record a proof's jti once; False when it was seen before (a replay)."""
        digest = hashlib.sha256(f"{jkt}\x00{jti}".encode()).hexdigest()
        try:
            self._db.call(
                "put_item",
                TableName=self.table,
                Item=PROOF_JTIS.to_item(ProofJti(digest, int(expires_at) + 1)),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except Conflict:
            return False
        return True
