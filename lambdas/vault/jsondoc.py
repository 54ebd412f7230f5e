"""JSON from outside the vault, parsed with a nesting limit.

Python's `json` recurses once per nesting level and raises `RecursionError` (not `ValueError`)
about a thousand levels down, which would escape every `except ValueError` as a 500. Every
document the vault reads from a caller or a provider (request bodies, identity tokens, proofs,
provider answers) goes through `loads`, or through `check_depth` first when a library parses it.
No legitimate document of the vault's is more than a few levels deep.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

MAX_DEPTH = 32
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class TooDeep(ValueError):
    """The document nests arrays/objects deeper than `MAX_DEPTH`."""


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise `TooDeep` when `text` opens more than `max_depth` arrays/objects at once (brackets
    inside strings do not count). Linear, no recursion; malformed text is left to the parser."""
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


def check_compact_jws(token: str, max_depth: int = MAX_DEPTH) -> None:
    """Check the depth of a compact JWS/JWT's header and payload before a JOSE library parses
    them (it would raise `RecursionError`); `ValueError` when either is too deep or not UTF-8."""
    for segment in token.split(".")[:2]:
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (ValueError, TypeError) as exc:
            raise ValueError("not base64url") from exc
        check_depth(raw.decode("utf-8"), max_depth)
