# SPDX-License-Identifier: BSD-2-Clause
# fcgate-sync: fcgate sync mode, 4 worker processes, one request at a time each.
TARGET_DESC="fcgate sync mode, workers=4, C bench module, FastCGI unix socket"
TARGET_KIND=fastcgi
source "$PEERS_DIR/lib/fcgate.sh"

target_start() { fcgate_start --mode sync --workers 4; }
