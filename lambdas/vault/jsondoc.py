"""JSON from outside the vault, parsed with a nesting limit.

Python's `json` recurses once per nesting level and raises `RecursionError` (not `ValueError`)
about a thousand levels down, which would escape every `except ValueError` as a 500. Every
document the vault reads from a caller or a provider (request bodies, identity tokens, proofs,
provider answers) goes through `loads`, or through `check_depth` first when a library parses it.
No legitimate document of the vault's is more than a few levels deep.
"""

from __future__ import annotations

import json
import re
from typing import Any

from joserfc.util import urlsafe_b64decode

MAX_DEPTH = 32
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class TooDeep(ValueError):
    """The document nests arrays/objects deeper than `MAX_DEPTH`."""


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise `TooDeep` when `text` opens more than `max_depth` arrays/objects at once (brackets
    inside strings do not count). Linear, no recursion; malformed text is left to the parser."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # fewer brackets in all (strings' included) than the limit: nothing to scan
    depth = 0
    for bracket in _BRACKETS.finditer(_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            if depth > max_depth:
                raise TooDeep(f"JSON nested deeper than {max_depth} levels")
        else:
            depth -= 1


def loads(data: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` for untrusted input: UTF-8 only; `ValueError` (or its `TooDeep`) for anything
    that is not a JSON document of at most `max_depth` levels."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    check_depth(text, max_depth)
    try:
        return json.loads(text)
    except RecursionError as exc:  # unreachable under the limit; never a 500 either way
        raise TooDeep("JSON nested too deeply") from exc


def unverified_jws(token: str, max_depth: int = MAX_DEPTH) -> tuple[dict[str, Any], Any]:
    """The header and payload of a compact JWS/JWT, parsed under the nesting limit and NOT
    verified: to check a token's form before a JOSE library parses it (which would raise
    `RecursionError` on deep nesting), or to read what selects the key (`iss`, `jwk`).

    `ValueError` when it is not three segments, a segment is not base64url, UTF-8 and JSON, the
    header is not an object, or either is too deep. The one unverified decoder: the service, local
    mode and the tests read tokens with it.
    """
    segments = token.split(".")
    if len(segments) != 3:
        raise ValueError("not a compact JWS")
    header, payload = (_b64url_json(segment, max_depth) for segment in segments[:2])
    if not isinstance(header, dict):
        raise ValueError("the JWS header is not a JSON object")
    return header, payload


def _b64url_json(segment: str, max_depth: int) -> Any:
    try:  # joserfc's own decoder: what it would refuse when it parses the token, this refuses
        raw = urlsafe_b64decode(segment.encode("ascii"))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc
    return loads(raw, max_depth)
