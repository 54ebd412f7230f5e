"""moto's table backups share stream records (agent_vault_local/moto_streams.py): a failed
transaction still rolls everything back, and the records written before it are the same
objects afterwards, not copies (a copy per transaction is what made moto slow down)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import StreamShard

from agent_vault_local import moto_streams
from tests.support.aws import ACCOUNT, REGION, aws
from vault.store.schema import create_tables

TABLE = "moto-streams"


def _item(n: int) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"USER#{n}"}, "sk": {"S": "GRANT#calendar"}, "type": {"S": "grant"}}


def test_a_rolled_back_transaction_keeps_the_stream_and_shares_its_records() -> None:
    with aws() as session:
        dynamodb = session.client("dynamodb")
        create_tables(dynamodb, TABLE, f"{TABLE}-replay")
        for n in range(5):
            dynamodb.put_item(TableName=TABLE, Item=_item(n))
        backend = dynamodb_backends[ACCOUNT][REGION]
        records = list(backend.tables[TABLE].stream_shard.items)
        assert len(records) == 5
        with pytest.raises(ClientError) as cancelled:
            dynamodb.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": TABLE, "Item": _item(9)}},
                    {
                        "Put": {
                            "TableName": TABLE,
                            "Item": _item(0),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
        restored = backend.tables[TABLE]
        # the rollback is intact: no item, no record of the cancelled transaction
        assert (
            dynamodb.get_item(
                TableName=TABLE, Key={"pk": {"S": "USER#9"}, "sk": {"S": "GRANT#calendar"}}
            ).get("Item")
            is None
        )
        assert restored.stream_shard.table is restored
        # ...and the backup shared the records instead of copying them
        assert len(restored.stream_shard.items) == len(records)
        assert all(a is b for a, b in zip(restored.stream_shard.items, records, strict=True))
        # a later write still numbers its record after the others
        dynamodb.put_item(TableName=TABLE, Item=_item(7))
        sequence = [
            int(r.to_json()["dynamodb"]["SequenceNumber"])
            for r in backend.tables[TABLE].stream_shard.items
        ]
        assert sequence == sorted(sequence) and len(set(sequence)) == 6


def test_the_patch_refuses_a_moto_whose_stream_shard_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    moto_streams.share_stream_records()  # idempotent
    assert StreamShard.__dict__["__deepcopy__"] is moto_streams._shallow_records_copy
    monkeypatch.setattr(StreamShard, "__deepcopy__", lambda self, memo: self)
    with pytest.raises(RuntimeError, match=r"review agent_vault_local/moto_streams\.py"):
        moto_streams.share_stream_records()
