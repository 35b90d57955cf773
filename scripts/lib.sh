# SPDX-License-Identifier: BSD-2-Clause
# scripts/lib.sh - shared by run.sh and test.sh. Sourced, not executed.

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The Debian 12 packages fcgate builds, runs and tests with.
FCGATE_PACKAGES="build-essential cmake pkg-config libfcgi-dev libfcgi-bin libconfig-dev
  libsqlite3-dev libpq-dev libjansson-dev libcmocka-dev nginx curl python3 iproute2 procps"
# clang: sanitizers and fuzzers; debhelper, lintian, logrotate, systemd
# (systemd-analyze): tests/packaging. postgresql-15, pgbouncer: the
# PostgreSQL tests run a private cluster (and pgbouncer) of their own.
FCGATE_TEST_PACKAGES="clang libclang-rt-14-dev debhelper lintian logrotate systemd man-db python3-prometheus-client chromium prometheus postgresql-15 pgbouncer"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ensure_packages PKG... - installs what is missing (apt-get update once).
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "missing packages (${missing[*]}); run as root to install them"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q > /dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" > /dev/null
  # The nginx package starts the system nginx where it can: fcgate runs
  # its own instances and must not depend on (or collide with) that one.
}

# build DIR [CMAKE ARGS...] - configure and build into DIR.
build() {
  local dir=$1; shift
  cmake -S "$TOP" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" > "$dir.cmake.log" 2>&1 ||
    { cat "$dir.cmake.log" >&2; die "cmake failed for $dir"; }
  cmake --build "$dir" -j"$(nproc)" > "$dir.build.log" 2>&1 ||
    { tail -50 "$dir.build.log" >&2; die "build failed in $dir"; }
}
