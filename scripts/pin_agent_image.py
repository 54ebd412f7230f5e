"""Pin agent/Dockerfile's base image to the digest its tag points at now (`make pin-agent-image`).

    python scripts/pin_agent_image.py                  # resolve the tag's digest, rewrite FROM
    python scripts/pin_agent_image.py --digest sha256:<64 hex>   # pin a digest you looked up
    python scripts/pin_agent_image.py --check          # exit 1 unless FROM carries a digest

The FROM line keeps the tag for readers and adds the digest, which is what is pulled:
`FROM python:3.13-slim@sha256:...`. The digest is the multi-platform index's, so one pin serves
every platform. Resolving needs a container tool that can read the registry, tried in order:
`docker buildx imagetools inspect`, `crane digest`, `skopeo inspect`. Re-run it to take a newer
patch release of the base image (security fixes), then rebuild and redeploy the agent.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parent.parent / "agent" / "Dockerfile"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
FROM_LINE = re.compile(
    r"^FROM[ \t]+(?P<image>[^\s@]+)(?:@(?P<digest>sha256:[0-9a-f]{64}))?(?P<rest>.*)$", re.MULTILINE
)


def base_image(dockerfile: str) -> tuple[str, str | None]:
    """(image:tag, digest or None) of the Dockerfile's one FROM line."""
    found = FROM_LINE.findall(dockerfile)
    if len(found) != 1:
        raise ValueError(f"expected one FROM line, found {len(found)}")
    image, digest, _ = found[0]
    return image, digest or None


def pin(dockerfile: str, digest: str) -> str:
    """The Dockerfile with its FROM line pinned to `digest` (replacing any earlier digest)."""
    if not DIGEST.match(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    base_image(dockerfile)  # exactly one FROM line
    return FROM_LINE.sub(lambda m: f"FROM {m['image']}@{digest}{m['rest']}", dockerfile)


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    done = subprocess.run(  # noqa: S603 # nosec B603
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def resolve_digest(image: str) -> str:
    """The digest the tag points at now, from the registry, through the first tool at hand."""
    attempts = (
        (
            ["docker", "buildx", "imagetools", "inspect", image, "--format", "{{json .Manifest}}"],
            lambda out: json.loads(out)["digest"],
        ),
        (["crane", "digest", image], lambda out: out),
        (["skopeo", "inspect", "--format", "{{.Digest}}", f"docker://{image}"], lambda out: out),
    )
    for command, parse in attempts:
        output = _run(command)
        if output:
            digest = str(parse(output)).strip()
            if DIGEST.match(digest):
                return digest
    raise SystemExit(
        f"could not resolve {image}: install docker (buildx), crane or skopeo, or"
        " pass --digest sha256:<digest> looked up elsewhere"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digest", help="pin this digest instead of resolving the tag")
    parser.add_argument("--check", action="store_true", help="exit 1 unless FROM has a digest")
    args = parser.parse_args(argv)
    text = DOCKERFILE.read_text(encoding="utf-8")
    image, current = base_image(text)
    if args.check:
        print(f"{image}@{current}" if current else f"{image}: not pinned by digest")
        return 0 if current else 1
    digest = args.digest or resolve_digest(image)
    DOCKERFILE.write_text(pin(text, digest), encoding="utf-8")
    print(f"agent/Dockerfile: FROM {image}@{digest}" + (f" (was {current})" if current else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
