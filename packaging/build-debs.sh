#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# packaging/build-debs.sh [OUTDIR] - build fcgate's Debian binary packages
# (fcgate, fcgate-dev, fcgate-examples, and their -dbgsym) from this tree.
#
# dpkg-buildpackage wants debian/ at the root of the source tree; fcgate
# keeps it in packaging/debian. So this copies the tree (the files git
# tracks plus untracked, not ignored ones: what you have, committed or
# not) to a temporary fcgate-VERSION/ directory, puts packaging/debian
# there as debian/, runs `dpkg-buildpackage -us -uc -b` in it, and moves
# the results to OUTDIR (default: build-deb/ in this tree). The build log
# is OUTDIR/build.log. Build dependencies: see packaging/debian/control
# (debhelper, cmake, pkg-config, libconfig-dev, libsqlite3-dev, libpq-dev,
# libjansson-dev, libfcgi-dev); dpkg-checkbuilddeps names what is missing.
#
# FCGATE_DEB_VERSION=V builds version V instead of the changelog's (a
# changelog entry is added in the copy): the packaging test uses it to
# build an upgrade.
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$TOP/build-deb}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

die() { printf 'build-debs: %s\n' "$*" >&2; exit 1; }

command -v dpkg-buildpackage > /dev/null || die "dpkg-buildpackage not found: apt-get install dpkg-dev debhelper"
version=$(dpkg-parsechangelog -l "$TOP/packaging/debian/changelog" -S Version)
upstream=${version%%-*}
cmake_version=$(sed -nE 's/^project\(fcgate VERSION ([0-9.]+).*/\1/p' "$TOP/CMakeLists.txt")
if [[ $upstream != "$cmake_version" ]]; then
  printf 'build-debs: warning: packaging/debian/changelog says %s, CMakeLists.txt %s\n' \
    "$upstream" "$cmake_version" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fcgate-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/fcgate-$upstream
mkdir "$src"

# The source tree, without build directories and other ignored files.
if git -C "$TOP" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  (cd "$TOP" && git ls-files -z --cached --others --exclude-standard |
    tar --null -T - --ignore-failed-read -cf - 2> /dev/null) | tar -xf - -C "$src"
else
  tar -C "$TOP" --exclude='./build*' --exclude='./.run' --exclude='./.git' -cf - . |
    tar -xf - -C "$src"
fi
rm -rf "$src/debian"
cp -a "$TOP/packaging/debian" "$src/debian"
if [[ -n ${FCGATE_DEB_VERSION:-} ]]; then
  maint=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Maintainer)
  { printf 'fcgate (%s) unstable; urgency=medium\n\n  * Rebuild of %s as %s.\n\n -- %s  %s\n\n' \
      "$FCGATE_DEB_VERSION" "$version" "$FCGATE_DEB_VERSION" "$maint" "$(date -R)"
    cat "$src/debian/changelog"; } > "$src/debian/changelog.new"
  mv "$src/debian/changelog.new" "$src/debian/changelog"
  version=$FCGATE_DEB_VERSION
fi

if ! missing=$(cd "$src" && dpkg-checkbuilddeps 2>&1); then
  die "missing build dependencies: ${missing#*: }"
fi

log=$OUT/build.log
printf 'build-debs: building fcgate %s in %s (log: %s)\n' "$version" "$src" "$log" >&2
if ! (cd "$src" && dpkg-buildpackage -us -uc -b -J"$(nproc)") > "$log" 2>&1; then
  tail -40 "$log" >&2
  die "dpkg-buildpackage failed; the whole log is $log"
fi

shopt -s nullglob
results=("$work"/*.deb "$work"/*.ddeb "$work"/*.buildinfo "$work"/*.changes)
((${#results[@]})) || die "dpkg-buildpackage made no packages"
for f in "${results[@]}"; do
  rm -f "$OUT/${f##*/}"
  mv "$f" "$OUT/"
done
printf 'build-debs: packages in %s:\n' "$OUT" >&2
(cd "$OUT" && ls -l ./*.deb ./*.ddeb 2> /dev/null) >&2
