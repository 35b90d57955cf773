# SPDX-License-Identifier: BSD-2-Clause
# fcgate-threads: fcgate threads mode, 2 workers x 4 threads.
TARGET_DESC="fcgate threads mode, workers=2 threads=4, C bench module, FastCGI unix socket"
TARGET_KIND=fastcgi
source "$PEERS_DIR/lib/fcgate.sh"

target_start() { fcgate_start --mode threads --workers 2 --threads 4; }
