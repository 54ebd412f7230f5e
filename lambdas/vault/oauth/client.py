"""OAuth 2.0 client towards one provider: discovery, PKCE, code exchange, refresh, revocation.

Standard parts only (RFC 6749, 7636, 7009, 8414, 8707, 9207); provider quirks come from config
keys that presets fill (vault/presets/*.json): the scope parameter and separator, a JSON token
request body, a nested or form-encoded token answer, other token types and error codes. HTTP
goes through urllib3 (already in the Lambda runtime with botocore) with bounded timeouts and no
retries: a slow provider fails the request with 504, a broken one with 502.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import urllib3

from vault import jsondoc
from vault.config import ProviderConfig
from vault.errors import OAuthError, ProviderError, ProviderTimeout

METADATA_TTL_SECONDS = 3600
MAX_RESPONSE_BYTES = 64 * 1024


class AnswerLost(Exception):
    """Marks a provider failure after the request was sent: the provider may have processed it
    (e.g. rotated a refresh token) though no answer arrived. Never replay such a request."""


class ProviderAnswerTimeout(ProviderTimeout, AnswerLost):
    """The request was sent and the answer did not arrive in time."""


class ProviderAnswerDropped(ProviderError, AnswerLost):
    """The request was sent and the connection dropped before the answer arrived."""


def new_code_verifier() -> str:
    """RFC 7636 §4.1: 64 random bytes → an 86-character base64url verifier."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    expires_in: int
    refresh_token: str | None
    scopes: tuple[str, ...] | None
    """The granted scopes when the provider said; None when it omitted `scope`."""
    id_token: str | None = None
    """An OpenID Connect ID token, when the provider sent one (the flow asked for `openid`)."""


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str | None
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str | None
    iss_parameter_supported: bool
    s256_supported: bool
    dpop_es256_supported: bool = False
    """The metadata lists ES256 in `dpop_signing_alg_values_supported` (RFC 9449 §5.1)."""


@dataclass(frozen=True)
class _HttpAnswer:
    status: int
    body: bytes
    headers: dict[str, str]


class ProviderClient:
    """Talks to one configured provider."""

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        http: urllib3.PoolManager,
        client_secret: Callable[[], str | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config
        self._http = http
        self._client_secret = client_secret
        self._clock = clock
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._lock = threading.Lock()
        self.dpop_nonce: str | None = None
        """The last `DPoP-Nonce` the token endpoint sent (RFC 9449 §8), if any."""

    # --- discovery ------------------------------------------------------------------------

    def discovery_document(self) -> dict[str, Any]:
        """The provider's metadata document as published; {} without a discovery URL."""
        if not self.config.discovery_url:
            return {}
        return self._get_json(self.config.discovery_url)

    def metadata(self) -> ProviderMetadata:
        with self._lock:
            if self._metadata and self._clock() - self._metadata_at < METADATA_TTL_SECONDS:
                return self._metadata
            document = self.discovery_document()
            cfg = self.config
            authorization = cfg.authorization_endpoint or document.get("authorization_endpoint")
            token = cfg.token_endpoint or document.get("token_endpoint")
            if not isinstance(authorization, str) or not isinstance(token, str):
                raise ProviderError(f"provider {self.name!r} metadata lacks its endpoints")
            revocation = cfg.revocation_endpoint or document.get("revocation_endpoint")
            methods = document.get("code_challenge_methods_supported") or []
            dpop_algs = document.get("dpop_signing_alg_values_supported") or []
            self._metadata = ProviderMetadata(
                issuer=cfg.issuer or document.get("issuer"),
                authorization_endpoint=authorization,
                token_endpoint=token,
                revocation_endpoint=revocation if isinstance(revocation, str) else None,
                iss_parameter_supported=bool(
                    document.get("authorization_response_iss_parameter_supported")
                ),
                s256_supported="S256" in methods or cfg.assume_pkce_s256,
                dpop_es256_supported=isinstance(dpop_algs, list) and "ES256" in dpop_algs,
            )
            self._metadata_at = self._clock()
            return self._metadata

    # --- authorization request ------------------------------------------------------------

    def authorization_url(
        self, *, redirect_uri: str, state: str, verifier: str, scopes: tuple[str, ...]
    ) -> str:
        meta = self.metadata()
        if not meta.s256_supported:
            raise ProviderError(
                f"provider {self.name!r} does not advertise PKCE S256; set "
                f"providers.{self.name}.assume_pkce_s256 if it supports it"
            )
        cfg = self.config
        asked = list(dict.fromkeys((*scopes, *((cfg.offline_scope,) if cfg.offline_scope else ()))))
        params: dict[str, str] = {
            "response_type": "code",
            "client_id": cfg.client_id,
            "redirect_uri": redirect_uri,
            cfg.scope_parameter: cfg.scope_separator.join(asked),
            "state": state,
            "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        if cfg.resource:
            params["resource"] = cfg.resource
        if cfg.prompt_consent:
            params["prompt"] = "consent"
        params.update(cfg.extra_authorize_params)
        separator = "&" if "?" in meta.authorization_endpoint else "?"
        return meta.authorization_endpoint + separator + urlencode(params, quote_via=quote)

    # --- token endpoint -------------------------------------------------------------------

    def exchange_code(self, *, code: str, verifier: str, redirect_uri: str) -> TokenResponse:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return self._token_request(form)

    def refresh(
        self, refresh_token: str, scopes: tuple[str, ...] | None, *, dpop_proof: str | None = None
    ) -> TokenResponse:
        """A refresh; with `dpop_proof` (the agent's proof for the token endpoint, RFC 9449 §5)
        the provider binds the new access token to the proof's key."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scopes and self.config.narrow_scopes_on_refresh:
            form["scope"] = self.config.scope_separator.join(scopes)
        return self._token_request(form, dpop_proof=dpop_proof)

    def require_dpop(self) -> ProviderMetadata:
        """The metadata, if the provider advertises DPoP with ES256 (the session key's alg)."""
        meta = self.metadata()
        if not meta.dpop_es256_supported:
            raise ProviderError(
                f"provider {self.name!r} does not advertise DPoP with ES256"
                " (dpop_signing_alg_values_supported); set providers."
                f"{self.name}.dpop to false and give the agent another delivery"
            )
        return meta

    def revoke(self, token: str, hint: str) -> bool:
        """RFC 7009. True when revoked (200, even for an already-invalid token); False when the
        provider has no revocation endpoint."""
        endpoint = self.metadata().revocation_endpoint
        if not endpoint:
            return False
        answer = self._post(endpoint, {"token": token, "token_type_hint": hint})
        if answer.status == 200:
            return True
        raise self._oauth_error(answer.status, answer.body)

    def _token_request(self, form: dict[str, str], dpop_proof: str | None = None) -> TokenResponse:
        if self.config.resource:
            form["resource"] = self.config.resource
        extra = {"DPoP": dpop_proof} if dpop_proof is not None else {}
        http = self._post(self.metadata().token_endpoint, form, extra)
        nonce = http.headers.get("dpop-nonce")
        if nonce:
            self.dpop_nonce = nonce[:512]
        status, body = http.status, http.body
        if status != 200:
            raise self._oauth_error(status, body)
        answer = self._token_answer(body)
        if not isinstance(answer.get("access_token"), str) and isinstance(answer.get("error"), str):
            raise self._oauth_error(400, body)  # an error answered with 200 (GitHub, Slack)
        shape = self.config.token_response
        nested = answer.get(shape.path) if shape.path else None
        if isinstance(nested, dict) and "access_token" in nested:
            answer = nested
        access = answer.get("access_token")
        if not isinstance(access, str) or not access:
            raise ProviderError(f"provider {self.name!r} sent no access_token")
        token_type = answer.get("token_type")
        if dpop_proof is not None:  # a bearer token sent for a DPoP request would be replayable
            if not isinstance(token_type, str) or token_type.lower() != "dpop":
                raise ProviderError(
                    f"provider {self.name!r} sent token_type {str(token_type)[:16]!r}, not 'DPoP'"
                )
        else:
            accepted = {t.lower() for t in shape.token_types}
            if (token_type is not None or shape.token_type_required) and (
                not isinstance(token_type, str) or token_type.lower() not in accepted
            ):
                raise ProviderError(f"provider {self.name!r} sent token_type {token_type!r}")
        expires_in = answer.get("expires_in")
        if isinstance(expires_in, str) and expires_in.isdigit():
            expires_in = int(expires_in)  # form-encoded answers, some JSON ones too
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
            expires_in = self.config.default_token_lifetime_seconds
        refresh = answer.get("refresh_token")
        scope = answer.get("scope")
        scopes = None
        if isinstance(scope, str):
            scopes = tuple(s for s in scope.replace(",", " ").split() if s)
        elif isinstance(scope, list) and all(isinstance(s, str) for s in scope):
            scopes = tuple(scope)  # Twitch answers a JSON array
        if not isinstance(refresh, str) or not refresh:
            refresh = None
        id_token = answer.get("id_token")
        return TokenResponse(
            access_token=access,
            expires_in=expires_in,
            refresh_token=refresh,
            scopes=scopes,
            id_token=id_token if isinstance(id_token, str) and id_token else None,
        )

    def _token_answer(self, body: bytes) -> dict[str, Any]:
        """A token endpoint's answer: a JSON object, or a form-encoded one (GitHub without
        `Accept: application/json`)."""
        try:
            answer = jsondoc.loads(body)
        except ValueError:
            try:
                pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
            except (UnicodeDecodeError, ValueError):
                pairs = []
            answer = dict(pairs)
            if "access_token" not in answer and "error" not in answer:
                raise ProviderError(
                    f"provider {self.name!r} sent a token response that is neither JSON nor form"
                ) from None
        if not isinstance(answer, dict):
            raise ProviderError(
                f"provider {self.name!r} sent a token response that is not an object"
            )
        return answer

    def _oauth_error(self, status: int, body: bytes) -> Exception:
        if status >= 500:
            return ProviderError(f"provider {self.name!r} answered HTTP {status}")
        try:
            answer = self._token_answer(body)
            error = answer.get("error")
        except ProviderError:
            error = None
        if not isinstance(error, str):
            return ProviderError(
                f"provider {self.name!r} answered HTTP {status} without an OAuth error"
            )
        if error in self.config.token_response.invalid_grant_errors:
            error = "invalid_grant"
        description = answer.get("error_description")
        return OAuthError(
            error[:64], status, description[:200] if isinstance(description, str) else None
        )

    # --- HTTP -----------------------------------------------------------------------------

    def _auth(self, form: dict[str, str]) -> dict[str, str]:
        cfg = self.config
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        if cfg.client_auth_method == "none":
            form["client_id"] = cfg.client_id
            return headers
        secret = self._client_secret()
        if not secret:
            raise ProviderError(f"no client secret is set for provider {self.name!r}")
        if cfg.client_auth_method == "client_secret_post":
            form.update(client_id=cfg.client_id, client_secret=secret)
        else:  # RFC 6749 §2.3.1: form-encode, then base64
            pair = f"{quote(cfg.client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return headers

    def _post(
        self, url: str, form: dict[str, str], extra_headers: dict[str, str] | None = None
    ) -> _HttpAnswer:
        headers = self._auth(form) | (extra_headers or {})
        if self.config.request_format == "json":
            headers["Content-Type"] = "application/json"
            return self._request("POST", url, body=json.dumps(form).encode(), headers=headers)
        return self._request("POST", url, body=urlencode(form).encode(), headers=headers)

    def _get_json(self, url: str) -> dict[str, Any]:
        answer = self._request("GET", url, headers={"Accept": "application/json"})
        status, body = answer.status, answer.body
        if status != 200:
            raise ProviderError(f"provider {self.name!r} metadata answered HTTP {status}")
        try:
            document = jsondoc.loads(body)
        except ValueError as exc:
            raise ProviderError(f"provider {self.name!r} metadata is not JSON") from exc
        if not isinstance(document, dict):
            raise ProviderError(f"provider {self.name!r} metadata is not a JSON object")
        return document

    def _request(self, method: str, url: str, **kwargs: Any) -> _HttpAnswer:
        timeout = urllib3.Timeout(
            connect=min(2.0, self.config.timeout_seconds), read=self.config.timeout_seconds
        )
        try:
            response = self._http.request(
                method,
                url,
                timeout=timeout,
                retries=False,
                redirect=False,
                preload_content=False,
                **kwargs,
            )
            try:
                body = response.read(MAX_RESPONSE_BYTES + 1)
            finally:
                response.release_conn()
        except urllib3.exceptions.ConnectTimeoutError as exc:  # incl. NewConnectionError: unsent
            if isinstance(exc, urllib3.exceptions.NewConnectionError):
                raise ProviderError(f"provider {self.name!r} is unreachable") from exc
            raise ProviderTimeout(f"provider {self.name!r} did not answer in time") from exc
        except (urllib3.exceptions.TimeoutError, TimeoutError) as exc:  # a read timeout: sent
            raise ProviderAnswerTimeout(f"provider {self.name!r} did not answer in time") from exc
        except urllib3.exceptions.ProtocolError as exc:  # the connection dropped after sending
            raise ProviderAnswerDropped(
                f"provider {self.name!r} dropped the connection without an answer"
            ) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ProviderError(f"provider {self.name!r} is unreachable") from exc
        if len(body) > MAX_RESPONSE_BYTES:
            raise ProviderError(f"provider {self.name!r} answered with an oversized body")
        headers = {k.lower(): v for k, v in response.headers.items()}
        return _HttpAnswer(response.status, body, headers)
