#!/usr/bin/env bash
# The one command that tests tidemark on a fresh machine: installs what the
# tests need (scripts/install-test-deps.sh: PostgreSQL 15, promtool, Garage),
# then checks formatting and lints, unit-tests the Prometheus alert rules,
# and runs every test of the workspace,
# unit, golden, property and end-to-end (real PostgreSQL clusters and a real
# Garage S3 server on loopback). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== promtool: alert rules" >&2
promtool check rules deploy/prometheus/tidemark-alerts.yml
(cd deploy/prometheus && promtool test rules tidemark-alerts.test.yml)
echo "== cargo test" >&2
# --benches runs each benchmark once on a small input, so they cannot rot.
cargo test --workspace --all-targets --locked
