# SPDX-License-Identifier: BSD-2-Clause
# fcgate-async: fcgate async mode, 2 workers x 1000 connections (one
# coroutine each), 4 blocking threads per worker for sqlite.
TARGET_DESC="fcgate async mode, workers=2 worker_connections=1000 blocking_threads=4, C bench module, FastCGI unix socket"
TARGET_KIND=fastcgi
source "$PEERS_DIR/lib/fcgate.sh"

target_start() { FCGATE_BLOCKING_THREADS=${FCGATE_BLOCKING_THREADS:-4} fcgate_start --mode async --workers 2 --worker-connections 1000; }
