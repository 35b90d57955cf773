#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# fcgate-conf.sh IN OUT - the packaged /etc/fcgate/fcgate.conf: the
# documented conf/fcgate.conf with the Debian settings switched on. Fails
# if conf/fcgate.conf no longer has a line this script edits, so the two
# cannot drift apart silently.
set -eu
in=$1 out=$2
mkdir -p "$(dirname "$out")"
sed -e '1a\
#\
# Debian: this file is a conffile of the fcgate package; dpkg keeps your\
# changes on upgrades. fcgate.service runs fcgate as user fcgate, group\
# www-data (nginx'"'"'s group, so nginx can connect to the 0660 socket) and\
# sends the error log (stderr) to the journal: journalctl -u fcgate.\
# Unlike the defaults documented below, this file sets user, group,\
# pidfile and log.access. Apply changes with:\
#     fcgate -t -c /etc/fcgate/fcgate.conf && systemctl reload fcgate' \
    -e 's|^#user = "fcgate";$|user = "fcgate";|' \
    -e 's|^#group = "www-data";$|group = "www-data";|' \
    -e 's|^#pidfile = "/run/fcgate/fcgate.pid";$|pidfile = "/run/fcgate/fcgate.pid";|' \
    -e 's|^    access = "off";$|    access = "/var/log/fcgate/access.log";|' \
    "$in" > "$out"
for line in 'user = "fcgate";' 'group = "www-data";' 'pidfile = "/run/fcgate/fcgate.pid";' \
    '    access = "/var/log/fcgate/access.log";' 'listen = [ "unix:/run/fcgate/fcgate.sock" ];' \
    '    module = "/usr/lib/fcgate/apps/notes.so";' '    database = "/var/lib/fcgate/notes.db";'; do
    grep -qxF "$line" "$out" || { echo "fcgate-conf.sh: $in has no line for: $line" >&2; exit 1; }
done
