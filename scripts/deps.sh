#!/usr/bin/env bash
# Installs the Debian 12 packages Stargazer needs to build, test and run.
# Sourced by run.sh and test.sh; safe to run again (installs only what is missing).
set -euo pipefail

STARGAZER_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git python3
  libboost-dev libmsgpack-cxx-dev rapidjson-dev libcli11-dev libfmt-dev catch2
  libhiredis-dev libssl-dev zlib1g-dev
  redis-server redis-sentinel redis-tools
  python3-aiohttp python3-discord  # the Discord test server and its fidelity check (test/support/discord)
  python3-matrix-nio  # the Matrix test server's fidelity check (test/support/matrix)
  libcmark-dev  # Markdown to HTML for Matrix messages (CommonMark's reference implementation)
  chromium  # the browser test (test/browser, driven by playwright-core from npm)
  clang libclang-rt-14-dev  # the fuzz targets (test/fuzz); libFuzzer is only a Recommends of clang
)
# Node.js and npm for the browser test, unless the machine already has them (e.g. a
# Node.js 20 from elsewhere, whose npm is not a Debian package).
command -v node >/dev/null || STARGAZER_PACKAGES+=(nodejs)
command -v npm >/dev/null || STARGAZER_PACKAGES+=(npm)

install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "Installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_packages "${STARGAZER_PACKAGES[@]}" "$@"

# The tests also start the official MCP servers (npm, pinned in test/mcp/package-lock.json)
# as real processes; installed into test/mcp/node_modules when missing or stale.
if [ -n "${SG_DEPS_TEST_SERVERS:-}" ]; then
  mcp_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../test/mcp" && pwd)"
  (
    flock 9
    if ! cmp -s "$mcp_dir/package-lock.json" "$mcp_dir/node_modules/.stargazer-lock" 2>/dev/null; then
      echo "Installing the MCP test servers from npm into $mcp_dir/node_modules"
      (cd "$mcp_dir" && npm ci --no-audit --no-fund --loglevel=error)
      cp "$mcp_dir/package-lock.json" "$mcp_dir/node_modules/.stargazer-lock"
    fi
  ) 9>"${TMPDIR:-/tmp}/stargazer-mcp-npm.lock"
fi
