#!/usr/bin/env bash
# Checks that this machine can run tidemark against a PostgreSQL server:
# PostgreSQL 15 client tools (pg_dump must be at least as new as the server)
# and, if the server given by the libpq variables (PGHOST, PGPORT, PGUSER,
# PGDATABASE, PGPASSWORD...) answers, whether it is ready for logical
# replication. Changes nothing.
set -uo pipefail

bin=${TIDEMARK_PG_BIN:-/usr/lib/postgresql/15/bin}
status=0
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FIX   %s\n' "$*"; status=1; }

echo "tidemark setup check"
if [ -x "$bin/pg_dump" ]; then
    ok "pg_dump: $("$bin/pg_dump" --version)"
else
    bad "no pg_dump in $bin: apt-get install postgresql-client-15 (or set TIDEMARK_PG_BIN)"
fi

psql=("$bin/psql" -X -At -v ON_ERROR_STOP=1)
if ! "${psql[@]}" -c 'SELECT 1' >/dev/null 2>&1; then
    echo "  --    no server reachable with the libpq defaults (host ${PGHOST:-local socket}, port ${PGPORT:-5432}, user ${PGUSER:-$(id -un)}); set PGHOST/PGPORT/PGUSER/PGDATABASE to check one"
    exit $status
fi
server=$("${psql[@]}" -c 'SHOW server_version_num')
ok "server $("${psql[@]}" -c 'SHOW server_version') reachable"
[ "$server" -ge 150000 ] || bad "server is older than PostgreSQL 15; tidemark needs 15 or later"
client=$("$bin/pg_dump" --version | grep -oE '[0-9]+' | head -n 1)
[ "$client" -ge "$((server / 10000))" ] || bad "pg_dump $client is older than the server $((server / 10000)): install postgresql-client-$((server / 10000))"
wal_level=$("${psql[@]}" -c 'SHOW wal_level')
if [ "$wal_level" = logical ]; then ok "wal_level = logical"; else bad "wal_level = $wal_level: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"; fi
read -r slots used_slots < <("${psql[@]}" -F ' ' -c "SELECT current_setting('max_replication_slots'), (SELECT count(*) FROM pg_replication_slots)")
if [ "$used_slots" -lt "$slots" ]; then ok "replication slots: $used_slots of $slots used"; else bad "all $slots replication slots are used: raise max_replication_slots and restart"; fi
role=$("${psql[@]}" -c "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user")
if [ "$role" = t ]; then ok "role $("${psql[@]}" -c 'SELECT current_user') may replicate"; else bad "role lacks REPLICATION: ALTER ROLE $("${psql[@]}" -c 'SELECT current_user') REPLICATION"; fi
exit $status
