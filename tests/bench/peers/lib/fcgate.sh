# SPDX-License-Identifier: BSD-2-Clause
# peers/lib/fcgate.sh - shared start-up for the fcgate-* targets.
# fcgate runs in the foreground (its supervisor is the tracked PID; TERM is
# a graceful stop that ends the workers too) and speaks FastCGI on a unix
# socket in the target's run dir. The bench module answers the workloads.
#
# FCGATE_BIN and FCGATE_APP default to the Release build that
# tests/bench/run.sh makes: <repo>/build-bench/fcgate and bench.so.

FCGATE_REPO=$(cd "$PEERS_DIR/../../.." 2> /dev/null && pwd)
: "${FCGATE_BIN:=$FCGATE_REPO/build-bench/fcgate}" "${FCGATE_APP:=$FCGATE_REPO/build-bench/bench.so}"
TARGET_PACKAGES="libconfig9 libsqlite3-0"

# fcgate_start MODE-OPTIONS... - the options are passed on the command
# line; the rest (user, socket mode, backlog, blocking threads, the app's
# cpu_iters, and when the run has a PostgreSQL (lib/pg.sh) app.postgres
# and app.postgres_pool = PG_POOL) goes into a config file that is
# recorded with the command. postgres_pool only bounds async mode: sync
# and threads keep one connection per serving thread.
fcgate_start() {
  local sock=$RUN_DIR/fcgate.sock conf=$RUN_DIR/fcgate.conf
  TARGET_UPSTREAM=unix:$sock
  [[ -x $FCGATE_BIN ]] || { log "  no fcgate binary at $FCGATE_BIN (build it, or set FCGATE_BIN)"; return 1; }
  [[ -r $FCGATE_APP ]] || { log "  no bench module at $FCGATE_APP (set FCGATE_APP)"; return 1; }
  # user = "root": the harness runs as root and so do nginx and the peer
  # servers (shared unix sockets and db in the run dir); fcgate refuses
  # root workers unless told so.
  local pg=""
  [[ -n ${PG_CONNINFO:-} ]] && pg=" postgres = \"$PG_CONNINFO\"; postgres_pool = ${PG_POOL:-64};"
  cat > "$conf" <<CONF
user = "root";
listen_mode = "0666";
listen_backlog = 2048;
${FCGATE_BLOCKING_THREADS:+blocking_threads = $FCGATE_BLOCKING_THREADS;}
graceful_timeout = 5;
app = { settings = { cpu_iters = $CPU_ITERS; };$pg };
log = { level = "warn"; error = "-"; access = "off"; };
CONF
  local args=(-c "$conf" "$@" --listen "unix:$sock" --app "$FCGATE_APP" --database "$PEERS_DB")
  "$FCGATE_BIN" -t "${args[@]}" > "$RUN_DIR/fcgate-check.log" 2>&1 ||
    { cat "$RUN_DIR/fcgate-check.log" >&2; return 1; }
  note_cmd fcgate.conf "$(sed '/^$/d' "$conf" | tr '\n' ' ')"
  spawn fcgate "$FCGATE_BIN" "${args[@]}"
}

target_versions() {
  "$FCGATE_BIN" --version 2>&1 | head -1
  echo "fcgate build: $(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$(dirname "$FCGATE_BIN")/CMakeCache.txt" 2> /dev/null || echo '?'), $(git -C "$FCGATE_REPO" describe --always --dirty 2> /dev/null || echo 'no git')"
}

# The keep-alive variant of a target (fcgate-*-keepalive): nginx keeps idle
# FastCGI connections to fcgate (upstream keepalive + fastcgi_keep_conn),
# as nginx/fcgate.conf's keep-alive variant does. Idle ones cost fcgate no
# serving slot (parked, or a coroutine), so the pool is sized as without.
fcgate_keepalive() { nginx_keepalive "${FCGATE_KEEPALIVE:-64}"; }
