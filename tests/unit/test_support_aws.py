"""The suite's moto (tests/support/aws.py): what it changes is for speed only. A KMS key's key
pair is made on first use, and every test's boto3 session reads the service models once."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key
from moto.kms.models import kms_backends

from tests.support.aws import _LOADER, ACCOUNT, REGION, KeyPairOnFirstUse, aws
from vault.store.schema import create_tables


def test_a_kms_key_makes_its_key_pair_only_when_it_signs() -> None:
    with aws() as session:
        kms = session.client("kms")
        symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=symmetric, Plaintext=b"secret")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"
        pair = kms_backends[ACCOUNT][REGION].keys[symmetric].private_key
        assert isinstance(pair, KeyPairOnFirstUse) and pair.made is None
        with pytest.raises(ClientError) as refused:  # refused as by moto itself
            kms.sign(KeyId=symmetric, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
        assert refused.value.response["Error"]["Code"] == "ValidationException"
        assert pair.made is None

        signing = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
        key_id = signing["KeyMetadata"]["KeyId"]
        signed = kms.sign(KeyId=key_id, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
        verified = kms.verify(
            KeyId=key_id,
            Message=b"m",
            Signature=signed["Signature"],
            SigningAlgorithm="ECDSA_SHA_256",
        )
        assert verified["SignatureValid"] is True
        public = load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
        assert isinstance(public, EllipticCurvePublicKey)
        assert kms_backends[ACCOUNT][REGION].keys[key_id].private_key.made is not None


def test_each_test_gets_its_own_session_over_one_model_loader() -> None:
    with aws() as first:
        dynamodb = first.client("dynamodb")
        create_tables(dynamodb, "only-here", "only-here-replay")
        assert dynamodb.list_tables()["TableNames"] == ["only-here", "only-here-replay"]
        paths = list(_LOADER.search_paths)
    with aws() as second:
        assert second is not first
        assert second._session.get_component("data_loader") is _LOADER
        assert second.client("dynamodb").list_tables()["TableNames"] == []  # a fresh account
    assert _LOADER.search_paths == paths  # boto3's data folder once, however many sessions
    assert len(set(paths)) == len(paths)
