#!/usr/bin/env bash
# The browser test drives Debian's headless Chromium. `make test` calls this first: it installs the
# package with apt when it runs as root and Chromium is missing; otherwise it stops with the one
# command to run. AGENT_VAULT_CHROMIUM points the suite at another Chromium binary.
set -euo pipefail
chromium="${AGENT_VAULT_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$chromium" ] || command -v "$chromium" >/dev/null 2>&1; then
  exit 0
fi
if [ -n "${AGENT_VAULT_CHROMIUM:-}" ]; then
  echo "AGENT_VAULT_CHROMIUM=$chromium is not an executable; point it at a Chromium binary" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Chromium for the browser test (apt-get install chromium)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  exit 0
fi
echo "the browser test needs Chromium at $chromium: run \`sudo apt-get install -y chromium\`" \
  "(or set AGENT_VAULT_CHROMIUM to a Chromium binary), then make test again" >&2
exit 1
