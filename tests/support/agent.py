"""A test agent: an ES256 session key and DPoP-shaped proofs, signed with joserfc."""

from __future__ import annotations

import json
import secrets
from types import EllipsisType
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey

from tests.support.apigw import (
    DOMAIN,
    FUNCTION_URL_DOMAIN,
    HttpAnswer,
    build_event,
    function_url_handler,
    invoke,
)


def sign_proof(
    key: ECKey,
    *,
    method: str,
    url: str,
    iat: int,
    session_id: str | None,
    jti: str | None = None,
    **overrides: Any,
) -> str:
    claims: dict[str, Any] = {
        "jti": jti or secrets.token_urlsafe(24),
        "htm": method,
        "htu": url,
        "iat": iat,
    }
    if session_id is not None:
        claims["sid"] = session_id
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    return jws.serialize_compact(header, json.dumps(claims), key, algorithms=["ES256"])


class TestAgent:
    """One agent task: its IAM principal and its session key."""

    __test__ = False

    def __init__(
        self,
        role: str,
        task_id: str,
        clock: Any,
        account: str = "123456789012",
        *,
        function_url: bool = False,
    ):
        self.function_url = function_url
        """Call the vault at its function URL (`agent_endpoint: "function_url"`)."""
        self.domain = FUNCTION_URL_DOMAIN if function_url else DOMAIN
        self.role = role
        self.task_id = task_id
        self.arn = f"arn:aws:sts::{account}:assumed-role/{role}/{task_id}"
        self.key = ECKey.generate_key("P-256")
        self.clock = clock
        self.session_id: str | None = None

    def proof(
        self, method: str, path: str, *, session_id: str | EllipsisType | None = ..., **kw: Any
    ) -> str:
        """`session_id`: the agent's own unless given (None: a proof that names no session)."""
        sid = self.session_id if isinstance(session_id, EllipsisType) else session_id
        return sign_proof(
            self.key,
            method=method,
            url=f"https://{self.domain}{path}",
            iat=int(self.clock()),
            session_id=sid,
            **kw,
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        proof: str | bool | None = True,
        headers: dict[str, str] | None = None,
        principal_arn: str | EllipsisType | None = ...,
        raw_body: bytes | str | None = None,
        query: dict[str, str] | str | None = None,
    ) -> HttpAnswer:
        all_headers = dict(headers or {})
        if proof is True:
            sid = None if path == "/v1/sessions" else self.session_id
            all_headers["DPoP"] = self.proof(method, path, session_id=sid)
        elif isinstance(proof, str):
            all_headers["DPoP"] = proof
        payload = (
            raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
        )
        if payload is not None and not any(k.lower() == "content-type" for k in all_headers):
            all_headers["content-type"] = "application/json"
        event = build_event(
            method,
            path,
            body=payload,
            headers=all_headers,
            query=query,
            principal_arn=self.arn if isinstance(principal_arn, EllipsisType) else principal_arn,
            function_url=self.function_url,
        )
        return invoke(event, function_url_handler(path) if self.function_url else None)

    def start_session(self, user: dict[str, str], **extra: Any) -> HttpAnswer:
        answer = self.call("POST", "/v1/sessions", {"user": user, **extra})
        if answer.status == 201:
            self.session_id = answer.json["session_id"]
        return answer

    def token(self, provider: str, scopes: list[str], **kw: Any) -> HttpAnswer:
        return self.call(
            "POST",
            f"/v1/sessions/{self.session_id}/tokens",
            {"provider": provider, "scopes": scopes},
            **kw,
        )

    def proxy(
        self,
        method: str,
        path: str,
        provider: str = "calendar",
        *,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        query: str | None = None,
    ) -> HttpAnswer:
        """A call through the vault's egress proxy: `path` under the provider's API base URL."""
        return self.call(
            method,
            f"/v1/sessions/{self.session_id}/proxy/{provider}/{path}",
            raw_body=body,
            headers=headers,
            query=query,
        )

    def authorize(self, provider: str, scopes: list[str], **extra: Any) -> HttpAnswer:
        return self.call(
            "POST",
            f"/v1/sessions/{self.session_id}/authorizations",
            {"provider": provider, "scopes": scopes, **extra},
        )

    def complete(
        self, flow_id: str, user: dict[str, str], binding_code: str | None = None
    ) -> HttpAnswer:
        body: dict[str, Any] = {"user": user}
        if binding_code is not None:
            body["binding_code"] = binding_code
        return self.call("POST", f"/v1/flows/{flow_id}/complete", body, proof=False)

    def end(self) -> HttpAnswer:
        return self.call("DELETE", f"/v1/sessions/{self.session_id}")
