# SPDX-License-Identifier: BSD-2-Clause
# peers/lib/pg.sh - the private PostgreSQL of a run (workloads pg-item,
# pg-sleep): Debian's postgresql-15 binaries run directly, as in
# tests/integration/pg.py, never the system's cluster. initdb into
# $RUN_ROOT/postgres as `nobody` (PostgreSQL refuses root), then `postgres`
# in its own session, tracked in $RUN_ROOT/postgres/pids and stopped by PID
# with the targets' servers (SIGINT: fast shutdown). Unix socket in that
# directory plus 127.0.0.1:$PG_PORT, trust auth (nothing else can reach it),
# fsync off: a throw-away cluster.
#
# Every target's app reaches it through PG_HOST (the socket directory),
# PG_PORT, database `app`, user `postgres`; PG_CONNINFO is the libpq form.

PG_BIN=/usr/lib/postgresql/15/bin
: "${PG_MAX_CONNECTIONS:=300}" "${PG_PORT_BASE:=18200}"

pg_as() { setpriv --reuid=nobody --regid=nogroup --clear-groups env -i PATH=/usr/bin:/bin LC_ALL=C.UTF-8 "$@"; }

pg_psql() { # pg_psql DB SQL -> unaligned, tuples only
  pg_as "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d "$1" -c "$2"
}

# pg_start: initdb, start, create database app and items(id, name, qty)
# with the same ITEM_ROWS rows as the sqlite db (create_db).
pg_start() {
  local RUN_DIR=$RUN_ROOT/postgres i
  PG_HOST=$RUN_DIR
  PG_PORT=$(pick_port "$PG_PORT_BASE")
  mkdir -p "$RUN_DIR" && : > "$RUN_DIR/pids" && chown nobody:nogroup "$RUN_DIR"
  pg_as "$PG_BIN/initdb" -D "$RUN_DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync \
    > "$RUN_DIR/initdb.log" 2>&1 || { tail -5 "$RUN_DIR/initdb.log" >&2; die "initdb failed"; }
  # max_connections covers the target with the most: the async targets
  # hold workers x postgres_pool, gunicorn-gevent workers x PG_POOL.
  STOP_SIGNAL=INT spawn postgres setpriv --reuid=nobody --regid=nogroup --clear-groups \
    env -i PATH=/usr/bin:/bin LC_ALL=C.UTF-8 \
    "$PG_BIN/postgres" -D "$RUN_DIR/data" -k "$RUN_DIR" -h 127.0.0.1 -p "$PG_PORT" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections="$PG_MAX_CONNECTIONS" -c shared_buffers=64MB -c logging_collector=off
  for ((i = 0; i < 300; i++)); do
    pg_as "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" && break
    pid_alive "$(awk '{print $1; exit}' "$RUN_DIR/pids")" || { tail -5 "$RUN_DIR/postgres.log" >&2; die "postgres exited"; }
    sleep 0.1
  done
  pg_psql postgres "CREATE DATABASE app" > /dev/null || die "CREATE DATABASE failed"
  pg_psql app "CREATE TABLE items(id integer PRIMARY KEY, name text NOT NULL, qty integer NOT NULL);
INSERT INTO items SELECT x, format('item-%s', lpad(x::text, 5, '0')), (x * 7919) % 1000
  FROM generate_series(1, $ITEM_ROWS) x" > /dev/null || die "creating items in PostgreSQL failed"
  pg_psql app "VACUUM ANALYZE items" > /dev/null || die "VACUUM failed"
  [[ $(pg_psql app "SELECT count(*) FROM items") == "$ITEM_ROWS" ]] || die "PostgreSQL items check failed"
  PG_CONNINFO="host=$PG_HOST port=$PG_PORT dbname=app user=postgres"
  export PG_HOST PG_PORT PG_CONNINFO
  log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on $PG_HOST port $PG_PORT (max_connections $PG_MAX_CONNECTIONS)"
}

# pg_ceiling: what the database itself allows for /pg-sleep on this
# machine at this moment: PostgreSQL's own client, pgbench, holding
# PG_CEILING_CONNS connections (default 2 x PG_POOL: the async targets'
# 2 workers x postgres_pool), each running SELECT pg_sleep(PG_SLEEP_MS
# ms) as a prepared statement back to back, nothing else in the way. The
# pool's arithmetic ceiling (connections / sleep) assumes a server that
# answers a 20 ms sleep in 20 ms; on a loaded 2-core machine it does not.
# Writes "conns tps latency_avg_ms" to $RUN_ROOT/pg-ceiling.tsv.
pg_ceiling() {
  local conns=${PG_CEILING_CONNS:-$((2 * PG_POOL))} script=$RUN_ROOT/postgres/sleep.sql out
  printf 'SELECT pg_sleep(%s);\n' "$(awk -v ms="$PG_SLEEP_MS" 'BEGIN{printf "%.3f", ms / 1000}')" > "$script"
  chmod 644 "$script"
  pg_as "$PG_BIN/pgbench" -h "$PG_HOST" -p "$PG_PORT" -U postgres -n -M prepared -c "$conns" -j 2 \
    -T "$WARMUP" -f "$script" app > /dev/null 2>&1
  out=$(pg_as "$PG_BIN/pgbench" -h "$PG_HOST" -p "$PG_PORT" -U postgres -n -M prepared -c "$conns" -j 2 \
    -T "$DURATION" -f "$script" app 2>&1) || { log "  pgbench failed: $(tail -1 <<< "$out")"; return 0; }
  local tps lat
  tps=$(awk '/^tps = /{print $3; exit}' <<< "$out")
  lat=$(awk '/^latency average = /{print $4; exit}' <<< "$out")
  printf '%s\t%s\t%s\n' "$conns" "$tps" "$lat" > "$RUN_ROOT/pg-ceiling.tsv"
  log "  pgbench ceiling: pg_sleep(${PG_SLEEP_MS} ms) x $conns connections: $tps tps, latency average $lat ms (arithmetic $((conns * 1000 / PG_SLEEP_MS)))"
}

# pg_expect_item ID -> the /item JSON of row ID as PostgreSQL has it, to
# check it against the sqlite answer (same rows, same bytes).
pg_expect_item() {
  pg_psql app "SELECT format('{\"id\":%s,\"name\":\"%s\",\"qty\":%s}', id, name, qty) FROM items WHERE id = $1"
}

# pg_pids -> the postmaster's PID and its children's: each backend calls
# setsid() (so that the postmaster can signal its process group), so they
# are sessions of their own, not the postmaster's.
pg_pids() {
  local pm
  pm=$(awk '{print $1; exit}' "$RUN_ROOT/postgres/pids" 2> /dev/null)
  [[ -n $pm ]] || return 0
  echo "$pm"
  ps -o pid= --ppid "$pm" 2> /dev/null
}
