"""The depth guard every outside JSON document passes (SECURITY row 32)."""

from __future__ import annotations

import base64

import pytest

from vault import jsondoc


def test_documents_up_to_the_limit_parse_and_deeper_ones_are_a_value_error() -> None:
    at_limit = "[" * jsondoc.MAX_DEPTH + "]" * jsondoc.MAX_DEPTH
    assert jsondoc.loads(at_limit) == eval(at_limit)  # noqa: S307 - a literal built above
    with pytest.raises(ValueError):
        jsondoc.loads("[" + at_limit + "]")
    with pytest.raises(ValueError):  # far beyond the interpreter's recursion limit
        jsondoc.loads(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"a": "' + "[{" * 500 + '\\"' + "[" * 100 + '", "b": ["]]]"]}'
    assert jsondoc.loads(text)["b"] == ["]]]"]


def test_compact_jws_segments_are_checked_before_a_jose_library_parses_them() -> None:
    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    shallow = ".".join((b64('{"alg": "ES256"}'), b64('{"x": [[1]]}'), "sig"))
    assert jsondoc.unverified_jws(shallow) == ({"alg": "ES256"}, {"x": [[1]]})
    deep = "[" * 40 + "]" * 40
    for token in (".".join((b64(deep), b64("{}"), "sig")), ".".join((b64("{}"), b64(deep), "s"))):
        with pytest.raises(ValueError):
            jsondoc.unverified_jws(token)
    with pytest.raises(ValueError):  # not UTF-8
        jsondoc.unverified_jws(base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".e30.sig")
    for malformed in ("e30.e30", "e30.e30.s.x", b64("[]") + ".e30.sig", "e30.bm90IGpzb24.sig"):
        with pytest.raises(ValueError):  # two or four segments, a header that is no object, no JSON
            jsondoc.unverified_jws(malformed)
