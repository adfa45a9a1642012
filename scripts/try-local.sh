#!/usr/bin/env bash
# tidemark on a local default, end to end, touching nothing of yours:
#   1. builds tidemark-agent and tidemark (release),
#   2. starts a throwaway PostgreSQL 15 (wal_level=logical) on a free
#      loopback port with a small Synapse-shaped sample database,
#   3. runs tidemark-agent into a local archive while writes happen,
#   4. stops it with SIGTERM and shows what was archived.
# The cluster is removed at the end; the archive stays (its path is printed).
#   ./scripts/try-local.sh [ARCHIVE_DIR] [SECONDS_OF_WRITES]
set -euo pipefail
cd "$(dirname "$0")/.."
archive=$(realpath -m "${1:-./try-local-archive}")
seconds=${2:-5}
bin=${TIDEMARK_PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$bin/initdb" ] || { echo "PostgreSQL 15 is missing: run scripts/install-test-deps.sh (or set TIDEMARK_PG_BIN)" >&2; exit 1; }

echo "== building tidemark (release)"
cargo build --release --quiet -p tidemark-agent -p tidemark
agent=target/release/tidemark-agent
tidemark=target/release/tidemark

work=$(mktemp -d /tmp/tidemark-try.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
agent_pid=
cleanup() {
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
    as_pg "$bin/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
[ "$(id -u)" -eq 0 ] && chown postgres "$work"

echo "== starting a throwaway PostgreSQL 15 on 127.0.0.1:$port"
as_pg "$bin/initdb" -D "$work/data" -U postgres -E UTF8 --locale=C.UTF-8 -A trust >/dev/null
as_pg "$bin/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $work -c wal_level=logical" start >/dev/null
psql() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE synapse"
psql -d synapse <<'SQL'
CREATE SEQUENCE events_stream_seq;
CREATE TABLE events (stream_ordering bigint PRIMARY KEY DEFAULT nextval('events_stream_seq'),
                     event_id text NOT NULL UNIQUE, room_id text NOT NULL, type text NOT NULL, content text);
CREATE TABLE room_memberships (event_id text NOT NULL, user_id text NOT NULL, room_id text NOT NULL, membership text);
CREATE UNIQUE INDEX room_memberships_event_id ON room_memberships (event_id);
CREATE TABLE e2e_one_time_keys_json (user_id text NOT NULL, device_id text NOT NULL, key_id text NOT NULL, key_json text NOT NULL);
INSERT INTO events (event_id, room_id, type, content)
  SELECT '$e' || g, '!room:example.org', 'm.room.message', '{"body":"hello ' || g || '"}' FROM generate_series(1, 1000) g;
SQL

echo "== running tidemark-agent into $archive"
mkdir -p "$archive"
TIDEMARK_LOG=${TIDEMARK_LOG:-info} "$agent" \
    --source "host=127.0.0.1 port=$port user=postgres dbname=synapse" \
    --archive "file://$archive" --metrics-addr 127.0.0.1:0 2>"$work/agent.log" &
agent_pid=$!
until psql -d synapse -Atc "SELECT count(*) FROM pg_replication_slots WHERE active" | grep -q 1; do
    kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log"; exit 1; }
    sleep 0.2
done

echo "== writing for $seconds s (messages, memberships, one-time keys that are never archived)"
end=$((SECONDS + seconds)); n=0
while [ $SECONDS -lt $end ]; do
    n=$((n + 1))
    psql -d synapse -c "
      INSERT INTO events (event_id, room_id, type, content) VALUES ('\$new$n', '!room:example.org', 'm.room.message', '{\"body\":\"message $n\"}');
      INSERT INTO room_memberships VALUES ('\$m$n', '@user$n:example.org', '!room:example.org', 'join');
      INSERT INTO e2e_one_time_keys_json VALUES ('@user$n:example.org', 'DEVICE', 'signed_curve25519:$n', '{\"key\":\"secret\"}');
      UPDATE room_memberships SET membership = 'leave' WHERE event_id = '\$m$((n / 2 + 1))';"
done
echo "   $n write transactions committed"
metrics_url=$(grep -o 'http://[^ ]*/metrics' "$work/agent.log" | head -n 1)
sleep 1
echo "== a few of the agent's metrics ($metrics_url)"
python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())" "$metrics_url" \
    | grep -E '^tidemark_(archived_transactions_total|excluded_changes_total|archive_lag_seconds|segments_written_total)' | sed 's/^/   /'

echo "== stopping tidemark-agent (SIGTERM)"
kill -TERM "$agent_pid"; wait "$agent_pid"; agent_pid=
grep -E "segment durable|stopped" "$work/agent.log" | tail -n 3 | sed 's/^/   /'

echo "== archived in $archive"
segments=$(ls "$archive/segments" | wc -l)
transactions=0
for s in "$archive"/segments/*.seg; do
    t=$("$tidemark" inspect "$s" | awk '/^transactions/ {print $2}')
    transactions=$((transactions + t))
done
echo "   $segments segments, $transactions transactions, $(du -sh "$archive" | cut -f1) on disk"
last=$(ls "$archive"/segments/*.seg | tail -n 1)
echo "== the last segment:"
"$tidemark" inspect "$last" --records | head -n 20 | sed 's/^/   /'
