#!/usr/bin/env bash
# The whole test suite: the README's test command, and what CI runs (.ci/run).
# Installs the real components the tests use when they are missing, then runs
# formatting, lints, and every test. A test never skips for a missing tool: it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v ovsdb-server >/dev/null 2>&1 || need_pkgs+=(openvswitch-vtep openvswitch-common)
command -v vtep-ctl >/dev/null 2>&1 || need_pkgs+=(openvswitch-vtep)
command -v keepalived >/dev/null 2>&1 || need_pkgs+=(keepalived)
command -v haproxy >/dev/null 2>&1 || need_pkgs+=(haproxy)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "== installing: ${need_pkgs[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: ${need_pkgs[*]} missing and not root; install them (apt-get install ${need_pkgs[*]})" >&2
    exit 1
  fi
  # Keep package scripts from starting system daemons (ovsdb-server, keepalived, haproxy).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
# Stop any daemon a package install may have started anyway.
pkill -x haproxy 2>/dev/null || true
pkill -x keepalived 2>/dev/null || true

# A one-shot build gains nothing from incremental caches (they were 3 GB).
export CARGO_INCREMENTAL=0
echo "== disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins --locked
echo "== cargo test"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
echo "== all tests passed"
