#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# tests/packaging/test_packages.sh - the Debian packages, end to end, on
# this machine: build them with packaging/build-debs.sh, lintian them,
# install them with apt, check what the install created, build the
# fcgate-dev example module out of tree with its Makefile, run the
# installed fcgate the way fcgate.service does (user fcgate, group
# www-data, /run/fcgate as its RuntimeDirectory, sd_notify socket) behind
# the installed nginx with the shipped snippet and example site, serve
# the notes API, rotate the logs, reload, serve the example module with a
# second fcgate, upgrade to a rebuilt version keeping a changed conffile,
# and purge, checking that nothing the packages created is left.
#
# It installs and purges packages, so it runs only with
# FCGATE_TEST_PACKAGING=1 (.ci/run sets it) and as root; otherwise it
# exits 77, which ctest reports as skipped. Every process it starts is
# stopped by pid; on failure it still stops them and purges the packages.
set -uo pipefail

if [[ ${FCGATE_TEST_PACKAGING:-} != 1 ]]; then
  echo "skipped: the packaging test installs and purges packages on this machine;" \
    "set FCGATE_TEST_PACKAGING=1 (as root) to run it"
  exit 77
fi
[[ $(id -u) == 0 ]] || { echo "FAIL: the packaging test needs root (it installs packages)"; exit 1; }

source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
PKGS=(fcgate fcgate-dev fcgate-examples)
UPGRADE_VERSION=0.1.0+pkgtest1

T="" PIDS=() INSTALLED=0 PULLED=() USER_EXISTED=0 failures=0 checks=0
started=$(date +%s)

log() { printf '==> %s\n' "$*"; }
ok() { checks=$((checks + 1)); printf '  ok   %s\n' "$*"; }
bad() { checks=$((checks + 1)); failures=$((failures + 1)); printf '  FAIL %s\n' "$*"; }
# check "what" COMMAND... - one assertion.
check() {
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
# fatal "why" - a failure the rest of the test cannot go on from.
fatal() { bad "$*"; finish; }

stop_pid() { # stop_pid PID [SIGNAL] - TERM (or SIGNAL), wait up to 60 s, then KILL.
  local pid=$1 sig=${2:-TERM} i
  kill -0 "$pid" 2> /dev/null || return 0
  kill "-$sig" "$pid" 2> /dev/null
  for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2> /dev/null && kill -KILL "$pid" 2> /dev/null
  wait "$pid" 2> /dev/null
}

purge_packages() {
  local installed=() p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'installed\|config-files' && installed+=("$p")
  done
  ((${#installed[@]})) && "${APT[@]}" purge "${installed[@]}" > "$T/purge.log" 2>&1
  # Dependencies apt pulled in for the test (none when scripts/test.sh
  # installed fcgate's build packages first) go too.
  ((${#PULLED[@]})) && "${APT[@]}" purge "${PULLED[@]}" >> "$T/purge.log" 2>&1
  INSTALLED=0
}

# On failure, the logs that explain it.
show_logs() {
  local f
  for f in "$T/fcgate.err" "$T/hello.err" "$T/nginx/logs/error.log"; do
    [[ -s $f ]] || continue
    echo "---- last lines of $f"
    tail -20 "$f"
  done
}

finish() {
  trap - EXIT INT TERM
  local pid
  ((failures)) && [[ -n $T && -d $T ]] && show_logs
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
  ((INSTALLED)) && { log "cleaning up after a failure: purging the packages"; purge_packages; }
  [[ -n $T && -d $T ]] && rm -rf "$T"
  echo
  echo "packaging: $((checks - failures)) of $checks checks passed in $(($(date +%s) - started)) s"
  ((failures == 0)) || exit 1
  exit 0
}
trap finish EXIT
trap 'fatal "interrupted"' INT TERM

wait_for() { # wait_for SECONDS COMMAND... - until COMMAND succeeds.
  local deadline=$(($(date +%s) + $1)); shift
  until "$@" 2> /dev/null; do
    (($(date +%s) >= deadline)) && return 1
    sleep 0.1
  done
}

# ------------------------------------------------------------------ setup

for p in "${PKGS[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'installed\|config-files'; then
    echo "FAIL: $p is already installed here; the test would purge it. Remove it first."
    exit 1
  fi
done
[[ -e /etc/fcgate || -e /var/lib/fcgate || -e /var/log/fcgate || -e /run/fcgate ]] && {
  echo "FAIL: /etc/fcgate, /var/lib/fcgate, /var/log/fcgate or /run/fcgate exists; the test would remove it"
  exit 1
}
getent passwd fcgate > /dev/null && USER_EXISTED=1

ensure_packages $FCGATE_PACKAGES debhelper lintian logrotate || exit 1
T=$(mktemp -d /tmp/fcgate-pkgtest.XXXXXX)
chmod 755 "$T" # the fcgate and www-data users reach files in it
find_fcgate_paths() {
  find /etc /lib/systemd /usr /var/lib /var/log /run -xdev -iname '*fcgate*' \
    -not -path '/var/lib/dpkg/*' -not -path '/var/cache/*' 2> /dev/null | sort
}
find_fcgate_paths > "$T/paths.before"

# ------------------------------------------------------------------ build

log "building the packages: packaging/build-debs.sh"
t0=$(date +%s)
bash "$TOP/packaging/build-debs.sh" "$T/debs" > "$T/build.out" 2>&1 ||
  { cat "$T/build.out"; fatal "packaging/build-debs.sh failed"; }
ok "packages built in $(($(date +%s) - t0)) s"
ls "$T/debs"/*.deb | sed 's/^/       /'
for p in "${PKGS[@]}"; do
  deb=$(ls "$T/debs/${p}_"*.deb 2> /dev/null | head -1)
  [[ -n $deb ]] || fatal "no ${p}_*.deb was built"
  printf '       %-16s %s bytes, installed size %s KiB\n' "$p" "$(stat -c %s "$deb")" \
    "$(dpkg-deb -f "$deb" Installed-Size)"
done

log "lintian"
lintian --fail-on error --tag-display-limit 0 "$T/debs"/*.changes > "$T/lintian.out" 2>&1
lrc=$?
grep -v 'running with root privileges' "$T/lintian.out" | sed 's/^/       /'
printf '       lintian: %d errors, %d warnings, %d info (overrides not shown)\n' \
  "$(grep -c '^E: ' "$T/lintian.out")" "$(grep -c '^W: ' "$T/lintian.out")" \
  "$(grep -c '^I: ' "$T/lintian.out")"
check "lintian reports no errors" test "$lrc" = 0

# ---------------------------------------------------------------- install

log "installing with apt"
debs=()
for p in "${PKGS[@]}"; do debs+=("$(ls "$T/debs/${p}_"*.deb | head -1)"); done
# What apt would pull in besides ours, to purge it again at the end.
mapfile -t PULLED < <("${APT[@]}" install -s --no-install-recommends "${debs[@]}" 2> /dev/null |
  awk '/^Inst /{print $2}' | grep -vxE 'fcgate|fcgate-dev|fcgate-examples')
INSTALLED=1
"${APT[@]}" install --no-install-recommends "${debs[@]}" > "$T/install.log" 2>&1 ||
  { cat "$T/install.log"; fatal "apt-get install of the packages failed"; }
ok "installed ${PKGS[*]}${PULLED[*]:+ (and dependencies: ${PULLED[*]})}"

check "/usr/sbin/fcgate is installed" test -x /usr/sbin/fcgate
check "fcgate --version runs" /usr/sbin/fcgate --version
check "notes.so and bench.so in /usr/lib/fcgate/apps" \
  test -f /usr/lib/fcgate/apps/notes.so -a -f /usr/lib/fcgate/apps/bench.so
check "/etc/fcgate/fcgate.conf is a conffile" \
  grep -q ' /etc/fcgate/fcgate.conf ' <<< "$(dpkg-query -W -f='${Conffiles}\n' fcgate) "
check "system user fcgate with group fcgate" \
  bash -c '[[ $(id -u fcgate) -lt 1000 && $(id -gn fcgate) == fcgate ]]'
check "/var/lib/fcgate is fcgate:fcgate 750" \
  test "$(stat -c '%U:%G %a' /var/lib/fcgate)" = "fcgate:fcgate 750"
check "/var/log/fcgate is fcgate:adm 2750" \
  test "$(stat -c '%U:%G %a' /var/log/fcgate)" = "fcgate:adm 2750"
check "fcgate.service is enabled" test -L /etc/systemd/system/multi-user.target.wants/fcgate.service
check "fcgate.socket is not enabled (opt-in)" test ! -e /etc/systemd/system/sockets.target.wants/fcgate.socket
check "logrotate config, nginx snippet and example site installed" test -f /etc/logrotate.d/fcgate \
  -a -f /etc/nginx/snippets/fcgate.conf -a -f /usr/share/doc/fcgate/examples/nginx-site.conf
check "app.h and fcgate.pc installed; pkg-config finds fcgate" pkg-config --exists fcgate
for page in fcgate.8 fcgate.conf.5; do
  sec=${page##*.}
  check "man page $page installed and renders without warnings" bash -c \
    "f=\$(man -w $sec ${page%.*}) && w=\$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l \"\$f\" 2>&1 >/dev/null) && [[ -z \$w ]] || { echo \"\$w\"; false; }"
done

# The man pages cover every key of conf/fcgate.conf and every option of --help.
keys=$(grep -oE '^ *#?[a-z_]+ = ' "$TOP/conf/fcgate.conf" | tr -d ' #=' | sort -u)
page5=$(zcat /usr/share/man/man5/fcgate.conf.5.gz 2> /dev/null)
missing=$(for k in $keys; do grep -qE "^\.(B|BR|TP) $k( |\$)" <<< "$page5" || printf '%s ' "$k"; done)
check "fcgate.conf(5) documents every key of conf/fcgate.conf${missing:+ (missing: $missing)}" test -z "$missing"
page8=$(zcat /usr/share/man/man8/fcgate.8.gz 2> /dev/null)
missing=$(for o in $(/usr/sbin/fcgate --help | grep -oE -- '--[a-z-]+' | sort -u); do
  grep -qF -- "${o//-/\\-}" <<< "$page8" || printf '%s ' "$o"
done)
check "fcgate(8) documents every option of fcgate --help${missing:+ (missing: $missing)}" test -z "$missing"

if command -v systemd-analyze > /dev/null; then
  if systemd-analyze verify /lib/systemd/system/fcgate.service /lib/systemd/system/fcgate.socket \
    > "$T/verify.out" 2>&1; then
    ok "systemd-analyze verify fcgate.service fcgate.socket"
  else
    sed 's/^/       /' "$T/verify.out"
    bad "systemd-analyze verify fcgate.service fcgate.socket"
  fi
  systemd-analyze security --offline=true /lib/systemd/system/fcgate.service 2> /dev/null |
    grep -i 'overall exposure' | sed 's/^/       /'
else
  echo "  skip systemd-analyze is not installed: the units were not verified"
fi

log "fcgate -t -c /etc/fcgate/fcgate.conf"
out=$(/usr/sbin/fcgate -t -c /etc/fcgate/fcgate.conf 2>&1)
check "the packaged configuration is valid ($out)" test "$out" = "configuration ok"

log "building the fcgate-dev example out of tree"
cp -r /usr/share/doc/fcgate-dev/examples/hello "$T/hello"
if make -C "$T/hello" > "$T/hello-build.log" 2>&1; then
  ok "make in a copy of /usr/share/doc/fcgate-dev/examples/hello built hello.so"
  sed 's/^/       /' "$T/hello-build.log" | grep -v 'make\['
else
  cat "$T/hello-build.log"
  bad "the example module does not build against the installed fcgate-dev"
fi

# ------------------------------------------------- run it as the unit does

log "starting /usr/sbin/fcgate -c /etc/fcgate/fcgate.conf as fcgate.service would"
# RuntimeDirectory=fcgate, RuntimeDirectoryMode=0750, User=fcgate, Group=www-data.
install -d -o fcgate -g www-data -m 0750 /run/fcgate
# systemd's notification socket, to see READY=1 (Type=notify).
python3 - "$T/notify.sock" "$T/notify.log" > /dev/null 2>&1 << 'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        log.write(s.recv(4096).decode(errors="replace").replace("\n", " ") + "\n")
PY
PIDS+=($!)
wait_for 10 test -S "$T/notify.sock" || fatal "the notify listener did not start"
NOTIFY_SOCKET=$T/notify.sock setpriv --reuid=fcgate --regid=www-data --init-groups -- \
  /usr/sbin/fcgate -c /etc/fcgate/fcgate.conf > "$T/fcgate.out" 2> "$T/fcgate.err" &
FCGATE_PID=$!
PIDS+=("$FCGATE_PID")
if wait_for 20 grep -q 'READY=1' "$T/notify.log"; then
  ok "fcgate told systemd READY=1"
else
  bad "no READY=1 on NOTIFY_SOCKET within 20 s (systemd would time the start out)"
fi
wait_for 20 test -S /run/fcgate/fcgate.sock || { cat "$T/fcgate.err"; fatal "no socket /run/fcgate/fcgate.sock"; }
check "the socket is fcgate:www-data 0660" \
  test "$(stat -c '%U:%G %a' /run/fcgate/fcgate.sock)" = "fcgate:www-data 660"
check "the pidfile holds the supervisor's pid" test "$(cat /run/fcgate/fcgate.pid 2> /dev/null)" = "$FCGATE_PID"

log "starting nginx with the shipped example site and snippet"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
N=$T/nginx
mkdir -p "$N/conf" "$N/logs"
ln -s /etc/nginx/fastcgi_params "$N/conf/fastcgi_params"
ln -s /etc/nginx/snippets "$N/conf/snippets"
sed -e "s/^\( *\)listen 80;/\1listen 127.0.0.1:$PORT;/" -e '/listen \[::\]:80;/d' \
  /usr/share/doc/fcgate/examples/nginx-site.conf > "$N/conf/site.conf"
grep -q "listen 127.0.0.1:$PORT;" "$N/conf/site.conf" || fatal "the example site has no 'listen 80;' to point at a test port"
cat > "$N/conf/nginx.conf" << CONF
user www-data;
daemon off;
worker_processes 1;
pid $N/nginx.pid;
error_log $N/logs/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $N/body;
    fastcgi_temp_path $N/fastcgi;
    proxy_temp_path $N/proxy;
    uwsgi_temp_path $N/uwsgi;
    scgi_temp_path $N/scgi;
    include site.conf;
}
CONF
nginx -t -q -p "$N/" -c conf/nginx.conf -e "$N/logs/error.log" > "$T/nginx-t.log" 2>&1 ||
  { cat "$T/nginx-t.log"; fatal "nginx -t rejects the example site"; }
nginx -p "$N/" -c conf/nginx.conf -e "$N/logs/error.log" > /dev/null 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
URL=http://127.0.0.1:$PORT
wait_for 20 curl -s -o /dev/null "$URL/" || { cat "$N/logs/error.log"; fatal "nginx does not answer on $URL"; }

log "serving the notes API end to end: curl -> nginx -> fcgate -> notes.so -> sqlite"
curl -s -D "$T/post.h" -o "$T/post.b" -X POST -H 'Content-Type: application/json' \
  -d '{"text":"hello from the package test"}' "$URL/notes"
check "POST /notes answers 201 ($(head -1 "$T/post.h" | tr -d '\r'))" grep -q '^HTTP/1.1 201' "$T/post.h"
id=$(sed -nE 's/.*"id": *([0-9]+).*/\1/p' "$T/post.b")
check "POST /notes returns the note with its id ($(cat "$T/post.b"))" test -n "$id"
check "GET /notes lists it" bash -c "curl -sf '$URL/notes' | grep -q 'hello from the package test'"
check "GET /notes/$id returns it" bash -c "curl -sf '$URL/notes/$id' | grep -q 'hello from the package test'"
check "the database /var/lib/fcgate/notes.db belongs to fcgate" \
  test "$(stat -c %U /var/lib/fcgate/notes.db 2> /dev/null)" = fcgate
check "the access log /var/log/fcgate/access.log has the requests" \
  wait_for 5 grep -q '/notes' /var/log/fcgate/access.log
check "the access log is fcgate:adm 640" \
  test "$(stat -c '%U:%G %a' /var/log/fcgate/access.log 2> /dev/null)" = "fcgate:adm 640"

log "logrotate -f /etc/logrotate.d/fcgate (postrotate sends USR1)"
if logrotate -f -s "$T/logrotate.state" /etc/logrotate.d/fcgate > "$T/logrotate.log" 2>&1; then
  ok "logrotate ran the packaged configuration"
else
  cat "$T/logrotate.log"
  bad "logrotate failed on /etc/logrotate.d/fcgate"
fi
check "access.log was rotated to access.log.1" test -s /var/log/fcgate/access.log.1
curl -s -o /dev/null "$URL/notes?after-rotation=1"
check "after USR1, new requests go to the new access.log" \
  wait_for 5 grep -q 'after-rotation' /var/log/fcgate/access.log
check "... and not to the rotated one" bash -c "! grep -q after-rotation /var/log/fcgate/access.log.1"

log "reload: kill -HUP \$MAINPID (ExecReload)"
: > "$T/notify.log"
kill -HUP "$FCGATE_PID"
check "fcgate told systemd RELOADING=1 then READY=1" \
  wait_for 20 bash -c "grep -q RELOADING=1 '$T/notify.log' && grep -A100 RELOADING=1 '$T/notify.log' | grep -q READY=1"
check "still serving after the reload" bash -c "curl -sf '$URL/notes/$id' | grep -q 'hello from the package test'"

log "the out-of-tree example module, in a second fcgate, through cgi-fcgi"
cat > "$T/hello.conf" << CONF
listen = [ "unix:$T/hello.sock" ];
user = "fcgate";
group = "www-data";
mode = "sync";
workers = 1;
app = { module = "$T/hello/hello.so"; database = ""; settings = { greeting = "hi"; }; };
CONF
/usr/sbin/fcgate -c "$T/hello.conf" > "$T/hello.out" 2> "$T/hello.err" &
HELLO_PID=$!
PIDS+=("$HELLO_PID")
if wait_for 20 test -S "$T/hello.sock"; then
  answer=$(env -i REQUEST_METHOD=GET REQUEST_URI='/greet?name=debian' QUERY_STRING='name=debian' \
    SCRIPT_NAME=/greet SERVER_PROTOCOL=HTTP/1.1 cgi-fcgi -bind -connect "$T/hello.sock" 2>&1 | tr -d '\r')
  check "hello.so answers 'hi, debian'" grep -qx 'hi, debian' <<< "$answer"
  check "hello.so's worker runs as fcgate" bash -c "ps -o user= --ppid $HELLO_PID | grep -qx fcgate"
else
  cat "$T/hello.err"
  bad "the second fcgate did not open $T/hello.sock"
fi
stop_pid "$HELLO_PID"

log "upgrade to a rebuilt $UPGRADE_VERSION keeps a changed conffile"
sed -i -e 's/^workers = 4;$/workers = 3;/' /etc/fcgate/fcgate.conf
echo '# changed by the packaging test' >> /etc/fcgate/fcgate.conf
cp /etc/fcgate/fcgate.conf "$T/conf.changed"
FCGATE_DEB_VERSION=$UPGRADE_VERSION bash "$TOP/packaging/build-debs.sh" "$T/debs2" > "$T/build2.out" 2>&1 ||
  { cat "$T/build2.out"; fatal "building $UPGRADE_VERSION failed"; }
debs=()
for p in "${PKGS[@]}"; do debs+=("$(ls "$T/debs2/${p}_${UPGRADE_VERSION}_"*.deb | head -1)"); done
# stdin from /dev/null: a conffile question would fail the upgrade.
if "${APT[@]}" install --no-install-recommends "${debs[@]}" < /dev/null > "$T/upgrade.log" 2>&1; then
  ok "apt-get install of $UPGRADE_VERSION (an upgrade) asked nothing"
else
  cat "$T/upgrade.log"
  bad "the upgrade to $UPGRADE_VERSION failed"
fi
check "fcgate is now $UPGRADE_VERSION" test "$(dpkg-query -W -f='${Version}' fcgate)" = "$UPGRADE_VERSION"
check "the changed /etc/fcgate/fcgate.conf is kept" cmp -s /etc/fcgate/fcgate.conf "$T/conf.changed"
check "no .dpkg-dist / .dpkg-new left next to it" \
  bash -c '! ls /etc/fcgate/*.dpkg-* > /dev/null 2>&1'
check "the kept configuration is valid" /usr/sbin/fcgate -t -c /etc/fcgate/fcgate.conf
check "the user and directories survived the upgrade" \
  test "$(stat -c '%U' /var/lib/fcgate/notes.db 2> /dev/null)" = fcgate

log "stopping nginx and fcgate (TERM, as systemctl stop does)"
stop_pid "$NGINX_PID"
kill -TERM "$FCGATE_PID"
wait "$FCGATE_PID"
rc=$?
check "fcgate stopped cleanly on TERM (exit $rc)" test "$rc" = 0
check "fcgate told systemd STOPPING=1" grep -q STOPPING=1 "$T/notify.log"
check "fcgate removed its socket and pidfile" test ! -e /run/fcgate/fcgate.sock -a ! -e /run/fcgate/fcgate.pid
for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
PIDS=()

log "purge"
purge_packages
for p in "${PKGS[@]}"; do
  check "$p is purged" bash -c "! dpkg-query -W -f='\${Status}' $p 2> /dev/null | grep -q 'installed\|config-files'"
done
for path in /usr/sbin/fcgate /etc/fcgate /var/lib/fcgate /var/log/fcgate /run/fcgate \
  /etc/logrotate.d/fcgate /etc/nginx/snippets/fcgate.conf /lib/systemd/system/fcgate.service \
  /etc/systemd/system/multi-user.target.wants/fcgate.service /usr/lib/fcgate; do
  check "$path is gone" test ! -e "$path" -a ! -L "$path"
done
if ((USER_EXISTED)); then
  check "the fcgate user, which existed before, is kept" getent passwd fcgate
else
  check "the fcgate user and group are gone" bash -c '! getent passwd fcgate && ! getent group fcgate'
fi
find_fcgate_paths > "$T/paths.after"
if cmp -s "$T/paths.before" "$T/paths.after"; then
  ok "no path named *fcgate* is left that was not there before"
else
  diff "$T/paths.before" "$T/paths.after" | sed 's/^/       /'
  bad "paths named *fcgate* differ from before the install"
fi
