#!/usr/bin/env bash
# Installs what tidemark's tests need on a fresh Debian machine, and reuses
# whatever is already there:
#   - PostgreSQL 15 server and client binaries (apt: postgresql-15)
#   - promtool (apt: prometheus), openssl (apt)
#   - Garage 2.5.0, a single-node S3 server (cargo install; 12-17 min on 2 cores,
#     skipped when the same version is already on PATH or in ~/.cargo/bin)
# Needs root (or sudo) for apt. Safe to run again.
set -euo pipefail

GARAGE_VERSION=2.5.0
PG_BIN=/usr/lib/postgresql/15/bin

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_packages=()
for tool in postgres initdb pg_ctl pg_dump psql pgbench pg_recvlogical; do
    [ -x "$PG_BIN/$tool" ] || { apt_packages+=(postgresql-15 postgresql-client-15); break; }
done
command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)
# The TLS tests make throwaway certificates with the openssl command.
command -v openssl >/dev/null 2>&1 || apt_packages+=(openssl)

if [ "${#apt_packages[@]}" -gt 0 ]; then
    log "installing with apt: ${apt_packages[*]}"
    as_root apt-get update -qq
    # The postgresql package would start a system cluster; tests start their own.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${apt_packages[@]}" >/dev/null
    # Debian's prometheus package starts a daemon on :9090; the tests only need promtool.
    if command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
    pkill -x prometheus 2>/dev/null || true
else
    log "PostgreSQL 15 and promtool are already installed"
fi

export PATH="$HOME/.cargo/bin:$PATH"
if garage --version 2>/dev/null | grep -qE "(^|[^0-9.])${GARAGE_VERSION//./\\.}([^0-9]|$)"; then
    log "garage $GARAGE_VERSION is already installed: $(command -v garage)"
else
    log "building garage $GARAGE_VERSION with cargo install (about 15 minutes on 2 cores)"
    cargo install garage --locked --version "$GARAGE_VERSION" \
        --no-default-features --features bundled-libs,sqlite
fi

"$PG_BIN/postgres" --version >&2
promtool --version 2>&1 | head -n 1 >&2
garage --version >&2
