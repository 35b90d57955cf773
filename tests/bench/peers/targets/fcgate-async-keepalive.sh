# SPDX-License-Identifier: BSD-2-Clause
# fcgate-async-keepalive: fcgate-async behind nginx with upstream keep-alive
# (keepalive 64, fastcgi_keep_conn on): no connect/accept/close per request.
TARGET_DESC="fcgate async mode, workers=2 worker_connections=1000 blocking_threads=4, C bench module, FastCGI unix socket; nginx upstream keepalive 64 + fastcgi_keep_conn"
TARGET_KIND=fastcgi
source "$PEERS_DIR/lib/fcgate.sh"
fcgate_keepalive

target_start() { FCGATE_BLOCKING_THREADS=${FCGATE_BLOCKING_THREADS:-4} fcgate_start --mode async --workers 2 --worker-connections 1000; }
