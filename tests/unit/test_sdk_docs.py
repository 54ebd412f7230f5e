"""docs/sdk.md documents the SDK's whole public surface: every name of `agent_vault.__all__`, and
for each public class its fields, constructor parameters, properties and public methods."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import agent_vault

ROOT = Path(__file__).resolve().parents[2]
SDK_DOC = ROOT / "docs" / "sdk.md"


def _code_words() -> set[str]:
    """Every identifier inside the doc's code spans and code blocks."""
    text = SDK_DOC.read_text(encoding="utf-8")
    code = re.findall(r"```.*?```|`[^`\n]+`", text, re.S)
    return {word for span in code for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span)}


def _members(cls: type) -> set[str]:
    names: set[str] = set()
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    init = vars(cls).get("__init__")
    if init is not None:
        names |= {
            p.name
            for p in inspect.signature(init).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"
        }
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property | classmethod) or inspect.isfunction(value):
            names.add(name)
    return names


def test_every_public_name_is_documented() -> None:
    words = _code_words()
    missing = sorted(name for name in agent_vault.__all__ if name not in words)
    assert missing == [], f"docs/sdk.md does not mention {missing}"


def test_every_public_class_has_its_attributes_and_methods_documented() -> None:
    words = _code_words()
    missing = {
        name: sorted(_members(value) - words)
        for name in agent_vault.__all__
        if inspect.isclass(value := getattr(agent_vault, name))
    }
    assert {name: gaps for name, gaps in missing.items() if gaps} == {}


def test_the_sdk_doc_links_the_openapi_document() -> None:
    for doc in ("sdk.md", "api.md"):
        assert "](openapi.json)" in (ROOT / "docs" / doc).read_text(encoding="utf-8"), doc
