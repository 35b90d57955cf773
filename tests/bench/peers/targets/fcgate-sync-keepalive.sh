# SPDX-License-Identifier: BSD-2-Clause
# fcgate-sync-keepalive: fcgate-sync behind nginx with upstream keep-alive
# (keepalive 64, fastcgi_keep_conn on): no connect/accept/close per request.
TARGET_DESC="fcgate sync mode, workers=4, C bench module, FastCGI unix socket; nginx upstream keepalive 64 + fastcgi_keep_conn"
TARGET_KIND=fastcgi
source "$PEERS_DIR/lib/fcgate.sh"
fcgate_keepalive

target_start() { fcgate_start --mode sync --workers 4; }
