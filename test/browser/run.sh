#!/usr/bin/env bash
# CTest's entry to the browser tests (label `browser`):
#   test/browser/run.sh <stargazer binary> <output dir for the screenshot>
# Installs the npm packages of package-lock.json into test/browser/node_modules when they
# are missing or stale (no terminal needed), then runs webchat.test.mjs and
# webchat_auth.test.mjs (sign-in), each starting its own redis-server and stargazer. Exits 77 (CTest: skipped) only when chromium is absent;
# scripts/deps.sh installs it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary="$1"
out="$2"

chromium="${SG_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "SKIPPED: $chromium not found; the browser test needs Debian's chromium (scripts/deps.sh installs it)"
  exit 77
fi
command -v node >/dev/null || { echo "FAILED: node not found (scripts/deps.sh installs nodejs)"; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "FAILED: playwright-core needs Node.js 20 or newer; this is $(node --version)"
  exit 1
fi

# npm ci when the installed tree does not match the lock file (one install at a time).
(
  flock 9
  if ! cmp -s "$here/package-lock.json" "$here/node_modules/.stargazer-lock" 2>/dev/null; then
    echo "installing npm packages into $here/node_modules"
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$here/package-lock.json" "$here/node_modules/.stargazer-lock"
  fi
) 9>"${TMPDIR:-/tmp}/stargazer-browser-npm.lock"

node "$here/webchat.test.mjs" --binary "$binary" --out "$out"
exec node "$here/webchat_auth.test.mjs" --binary "$binary" --out "$out"
