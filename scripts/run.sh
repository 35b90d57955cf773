#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# scripts/run.sh - build fcgate and serve the notes example app behind
# nginx on http://127.0.0.1:8080 until Ctrl-C; then stop both.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT=${PORT:-8080}
ensure_packages $FCGATE_PACKAGES
build "$TOP/build"

RUN=$TOP/.run
mkdir -p "$RUN/nginx"
chmod 755 "$RUN"
SOCK=$RUN/fcgate.sock

# Workers and nginx's workers both run as www-data: the socket (0660) and
# the database directory belong to it.
chown www-data:www-data "$RUN"
cat > "$RUN/fcgate.conf" <<CONF
listen = [ "unix:$SOCK" ];
listen_mode = "0660";
user = "www-data";
group = "www-data";
mode = "threads";
workers = 2;
threads = 4;
app = { module = "$TOP/build/notes.so"; database = "$RUN/notes.db"; };
log = { level = "info"; error = "-"; access = "-"; };
CONF

cp /etc/nginx/fastcgi_params "$RUN/nginx/"
sed -e "s#unix:/run/fcgate/fcgate.sock#unix:$SOCK#" -e "s#127.0.0.1:8080#127.0.0.1:$PORT#" \
  "$TOP/nginx/fcgate.conf" > "$RUN/nginx/site.conf"
cat > "$RUN/nginx/nginx.conf" <<CONF
daemon off;
user www-data;
worker_processes 1;
pid $RUN/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $RUN/nginx/body;
    fastcgi_temp_path $RUN/nginx/fastcgi;
    proxy_temp_path $RUN/nginx/proxy;
    uwsgi_temp_path $RUN/nginx/uwsgi;
    scgi_temp_path $RUN/nginx/scgi;
    include $RUN/nginx/site.conf;
}
CONF

"$TOP/build/fcgate" -t -c "$RUN/fcgate.conf" > /dev/null
FCGATE_PID="" NGINX_PID=""
stop() {
  trap - INT TERM EXIT
  say "stopping"
  [[ -n $NGINX_PID ]] && kill -TERM "$NGINX_PID" 2> /dev/null
  [[ -n $FCGATE_PID ]] && kill -TERM "$FCGATE_PID" 2> /dev/null
  wait 2> /dev/null || true
  exit 0
}
trap stop INT TERM EXIT

"$TOP/build/fcgate" -c "$RUN/fcgate.conf" &
FCGATE_PID=$!
nginx -p "$RUN/nginx/" -c "$RUN/nginx/nginx.conf" -e stderr &
NGINX_PID=$!

ok=0
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/notes" 2> /dev/null && { ok=1; break; }
  kill -0 "$FCGATE_PID" 2> /dev/null && kill -0 "$NGINX_PID" 2> /dev/null || break
  sleep 0.1
done
((ok)) || die "fcgate or nginx did not come up (see the messages above)"
cat <<MSG

fcgate is serving the notes example at http://127.0.0.1:$PORT
  curl -i -X POST -H 'Content-Type: application/json' -d '{"text":"hello"}' http://127.0.0.1:$PORT/notes
  curl -i http://127.0.0.1:$PORT/notes
Ctrl-C stops nginx and fcgate.

MSG
wait "$FCGATE_PID"
