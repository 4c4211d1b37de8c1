#!/usr/bin/env bash
# Install the Debian packages PaperTrader needs, only the ones that are missing:
# redis-server, redis-sentinel, postgresql, gnupg, Python's venv module, Node.js (the web client's
# codec tests) and Chromium with its driver and NSS's certutil (the browser tests of
# the web client).
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Redis with Sentinel (issue 17): the tests run real Sentinels.
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi
command -v gpg >/dev/null 2>&1 || missing+=(gnupg)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# certutil: the browser tests give Chromium the test stack's CA in an NSS database.
command -v certutil >/dev/null 2>&1 || missing+=(libnss3-tools)
python=${1:-python3}
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "Installing missing OS packages: ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: ${missing[*]} missing and this is not a Debian-like system: install them with your package manager" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The Debian postgresql package starts a system cluster; PaperTrader runs its own
# private one and does not need it, but leaves it alone.
