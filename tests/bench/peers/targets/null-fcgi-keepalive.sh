# SPDX-License-Identifier: BSD-2-Clause
# null-fcgi-keepalive: null-fcgi behind nginx with upstream keep-alive
# (keepalive 64, fastcgi_keep_conn on), the floor for the
# fcgate-*-keepalive targets.
source "$PEERS_DIR/targets/null-fcgi.sh"
TARGET_DESC="null FastCGI responder (apps/null_fcgi.c), 2 processes, unix socket; /hello only; nginx upstream keepalive 64 + fastcgi_keep_conn"
nginx_keepalive 64
