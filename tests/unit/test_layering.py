"""The dependency direction and the module map of docs/architecture.md, held to the code.

The SDK (`agent_vault`) and the service (`vault`) never import each other, and neither imports
local mode or the sample agent (local mode imports all of them). Inside the service, handlers →
flows → rules, `oauth/` and `store/`: nothing imports a handler but a handler, and the rules,
the provider client and the store import no flow. The module map names every module, once
each, and nothing that is gone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PACKAGES = {
    "agent_vault": ROOT / "agent_vault",
    "vault": ROOT / "lambdas" / "vault",
    "sample_agent": ROOT / "agent" / "sample_agent",
    "agent_vault_local": ROOT / "local" / "agent_vault_local",
}
FLOWS = (
    "vault.sessions",
    "vault.consent",
    "vault.tokens",
    "vault.revocation",
    "vault.delegation",
)
RULES = (
    "vault.audit",
    "vault.caller",
    "vault.config",
    "vault.errors",
    "vault.identity",
    "vault.jsondoc",
    "vault.models",
    "vault.observability",
    "vault.policy",
    "vault.proofs",
    "vault.routes",
    "vault.schemas",
)


def _dotted(package: str, path: Path) -> str:
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    return ".".join((package, *parts)).removesuffix(".__init__")


def _modules(package: str) -> dict[str, set[str]]:
    """Each module of `package` and the absolute names it imports (`from a import b`: a.b)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGES[package].rglob("*.py")):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[_dotted(package, path)] = imported
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _offenders(
    package: str,
    forbidden: tuple[str, ...],
    *,
    among: tuple[str, ...] | None = None,
    besides: tuple[str, ...] = (),
) -> dict[str, list[str]]:
    """The modules of `package` (those `among`, but not `besides`) that import a `forbidden` one."""
    found: dict[str, list[str]] = {}
    for module, imported in _modules(package).items():
        if (among is not None and not _within(module, among)) or _within(module, besides):
            continue
        hits = sorted(i for i in imported if _within(i, forbidden))
        if hits:
            found[module] = hits
    return found


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("agent_vault", ("vault", "agent_vault_local", "sample_agent")),
        ("vault", ("agent_vault", "agent_vault_local", "sample_agent")),
        ("sample_agent", ("vault", "agent_vault_local")),
    ],
)
def test_the_distributions_import_only_downwards(package: str, forbidden: tuple[str, ...]) -> None:
    assert _offenders(package, forbidden) == {}


def test_only_handlers_import_handlers() -> None:
    assert _offenders("vault", ("vault.handlers",), besides=("vault.handlers",)) == {}


def test_rules_oauth_and_store_import_no_flow() -> None:
    assert set(RULES) <= set(_modules("vault")), "a rules module was renamed: update RULES"
    assert _offenders("vault", FLOWS, among=(*RULES, "vault.oauth", "vault.store")) == {}


def _module_map() -> set[str]:
    """The dotted names in backticks in the "Packages and modules" section."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Packages and modules", 1)[1].split("\n## ", 1)[0]
    pattern = rf"`((?:{'|'.join(PACKAGES)})(?:\.[a-z_]+)*)`"
    return set(re.findall(pattern, section))


def test_the_module_map_names_every_module_and_no_other() -> None:
    every = {name for package in PACKAGES for name in _modules(package)}
    with_code = {  # an empty __init__.py (a namespace of modules) needs no line of its own
        _dotted(package, path)
        for package, base in PACKAGES.items()
        for path in base.rglob("*.py")
        if path.name != "__init__.py" or path.read_text(encoding="utf-8").strip()
    }
    named = _module_map()
    assert sorted(with_code - named) == [], "add these to docs/architecture.md's module map"
    assert sorted(named - every) == [], "docs/architecture.md names modules that do not exist"
