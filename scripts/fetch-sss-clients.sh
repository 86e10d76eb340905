#!/bin/sh
# Fetches SSSD's NSS client, libnss_sss.so.2, of other Debian releases (default: bullseye
# and trixie) with apt, in a private apt state (the machine's sources and lists are not
# touched), and extracts each into DEST/RELEASE/libnss_sss.so.2. The SSSD-compatibility
# tests run every client found there (tests/it/sss_compat.rs), beside the host's.
# Usage: scripts/fetch-sss-clients.sh [DEST] [RELEASE...]
set -eu
dest=${1:-/var/cache/toolforge-nss-tests/sss-clients}
[ $# -gt 0 ] && shift
releases=${*:-bullseye trixie}
arch=$(dpkg --print-architecture)
mkdir -p "$dest"
for rel in $releases; do
    [ -f "$dest/$rel/libnss_sss.so.2" ] && continue
    state=$(mktemp -d)
    mkdir -p "$state/lists/partial" "$state/archives/partial" "$state/etc/preferences.d"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    echo "deb [signed-by=$keyring] http://deb.debian.org/debian $rel main" >"$state/etc/sources.list"
    opts="-o Dir::Etc::SourceList=$state/etc/sources.list -o Dir::Etc::SourceParts=/nonexistent \
        -o Dir::Etc::Preferences=$state/etc/preferences -o Dir::Etc::PreferencesParts=$state/etc/preferences.d \
        -o Dir::State::Lists=$state/lists -o Dir::Cache=$state -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
        -o APT::Architecture=$arch -o APT::Sandbox::User=root -o Debug::NoLocking=1"
    # shellcheck disable=SC2086
    apt-get $opts -qq update
    # shellcheck disable=SC2086
    (cd "$state/archives" && apt-get $opts -qq download "libnss-sss/$rel")
    mkdir -p "$state/x" "$dest/$rel"
    dpkg-deb -x "$state"/archives/libnss-sss_*.deb "$state/x"
    lib=$(find "$state/x" -name 'libnss_sss.so.2' | head -1)
    cp "$lib" "$dest/$rel/libnss_sss.so.2"
    dpkg-deb -f "$state"/archives/libnss-sss_*.deb Version >"$dest/$rel/VERSION"
    rm -rf "$state"
    echo "libnss_sss.so.2 of $rel ($(cat "$dest/$rel/VERSION")) in $dest/$rel" >&2
done
