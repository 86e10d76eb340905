#!/bin/sh
# Makes (once) a minimal Debian root filesystem for the tests that run programs inside real
# images: `mmdebstrap --variant=minbase SUITE` (with PACKAGEs added by `--include`, if given),
# kept under ${TOOLFORGE_NSS_ROOTFS_CACHE:-/var/cache/toolforge-nss-tests}/rootfs/NAME, NAME
# being SUITE or SUITE+PACKAGE+..., and rebuilt only when missing. Never modified afterwards:
# tests lay the base-image recipe over it (overlayfs; see tests/src/rootfs.rs).
# Prints the directory on success. Exit 2: this machine cannot make it (no mmdebstrap, not
# root, or the mirror does not serve SUITE); the message says which.
# The mirror is mmdebstrap's default for the suite unless $TOOLFORGE_NSS_MIRROR names one
# (bullseye leaves the main mirror for the archive one day: name that one then).
#   usage: scripts/make-rootfs.sh SUITE [PACKAGE...]
set -eu
suite=${1:?usage: make-rootfs.sh SUITE [PACKAGE...]}
shift
mirror=${TOOLFORGE_NSS_MIRROR:-}
cache=${TOOLFORGE_NSS_ROOTFS_CACHE:-/var/cache/toolforge-nss-tests}
name=$suite include=""
for p in "$@"; do
    case $p in *[!a-z0-9.+-]*|'') echo "make-rootfs: bad package name '$p'" >&2; exit 2;; esac
    name=$name+$p include=${include:+$include,}$p
done
dir=$cache/rootfs/$name
case $suite in *[!a-z0-9-]*|'') echo "make-rootfs: bad suite name '$suite'" >&2; exit 2;; esac
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi
[ "$(id -u)" -eq 0 ] || { echo "make-rootfs: needs root (mmdebstrap into $dir)" >&2; exit 2; }
command -v mmdebstrap >/dev/null 2>&1 || { echo "make-rootfs: mmdebstrap is not installed (scripts/install-deps.sh installs it)" >&2; exit 2; }
mkdir -p "$cache/rootfs"
# One builder per suite at a time (parallel test threads, or two test runs).
exec 9>"$cache/rootfs/.$name.lock"
flock 9
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi
tmp=$dir.tmp
rm -rf "$tmp" "$dir"
log=$cache/rootfs/$name.log
echo "make-rootfs: mmdebstrap --variant=minbase $suite ${mirror:-(default mirror)} (log: $log)" >&2
# shellcheck disable=SC2086
if ! mmdebstrap --variant=minbase --mode=root --quiet ${include:+--include=$include} \
        "$suite" "$tmp" $mirror >"$log" 2>&1; then
    rm -rf "$tmp"
    echo "make-rootfs: mmdebstrap $suite from ${mirror:-the default mirror} failed (does the mirror still serve $suite? see $log):" >&2
    tail -n 5 "$log" >&2
    exit 2
fi
touch "$tmp/.complete"
mv "$tmp" "$dir"
echo "$dir"
