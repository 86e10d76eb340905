#!/usr/bin/env bash
# Builds the .deb with cargo-deb and checks it: the files it ships, its metadata, that the
# daemon and CLI run from an unpacked root, that the shipped config is valid, and that the
# module has the right SONAME. Installs cargo-deb when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
# cargo deb builds the daemon package; the CLI is built with the workspace, the module as
# releases ship it (against the glibc 2.17 baseline).
cargo build --release --workspace
./scripts/build-module.sh >/dev/null
deb=$(cargo deb -p toolforge-nssd --no-build 2>/dev/null | tail -n 1)
[ -f "$deb" ] || { echo "no package built" >&2; exit 1; }
echo "package: $deb"
dpkg-deb -c "$deb" | awk '{print $6}' | sort | tee /tmp/toolforge-nss-deb-files.txt
fail=0
for f in ./usr/sbin/toolforge-nssd ./usr/bin/toolforge-nssctl \
         ./usr/lib/x86_64-linux-gnu/libnss_toolforge.so.2 ./lib/systemd/system/toolforge-nssd.service \
         ./etc/toolforge-nss/config.toml ./usr/share/doc/toolforge-nss/examples/config.toml; do
    grep -qx "$f" /tmp/toolforge-nss-deb-files.txt || { echo "missing from the package: $f" >&2; fail=1; }
done
dpkg-deb -f "$deb" Package Depends Section
dpkg-deb -e "$deb" /tmp/toolforge-nss-deb-control.$$
grep -q '/etc/toolforge-nss/config.toml' /tmp/toolforge-nss-deb-control.$$/conffiles || { echo "config is not a conffile" >&2; fail=1; }
if grep -Eq 'sed|>>? */etc/nsswitch' /tmp/toolforge-nss-deb-control.$$/postinst; then echo "postinst edits nsswitch.conf" >&2; fail=1; fi
# The daemon's fixed uid: the postinst creates it, the unit runs as it, the module trusts it.
grep -q '^DAEMON_UID=64100$' /tmp/toolforge-nss-deb-control.$$/postinst || { echo "postinst does not create uid 64100" >&2; fail=1; }
grep -q 'useradd --system --uid "$DAEMON_UID"' /tmp/toolforge-nss-deb-control.$$/postinst || { echo "postinst does not create the daemon user" >&2; fail=1; }
grep -q 'DEFAULT_DAEMON_UID: u32 = 64_100;' nss-module/src/trust.rs || { echo "the module's default daemon uid is not 64100" >&2; fail=1; }
rm -rf /tmp/toolforge-nss-deb-control.$$
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg -x "$deb" "$root"
"$root/usr/sbin/toolforge-nssd" --version
"$root/usr/bin/toolforge-nssctl" --version
"$root/usr/sbin/toolforge-nssd" --check-config "$root/etc/toolforge-nss/config.toml"
grep -qx 'User=toolforge-nss' "$root/lib/systemd/system/toolforge-nssd.service" || { echo "the unit does not run as toolforge-nss" >&2; fail=1; }
if grep -q '^DynamicUser=yes' "$root/lib/systemd/system/toolforge-nssd.service"; then echo "the unit uses a dynamic uid" >&2; fail=1; fi
mod="$root/usr/lib/x86_64-linux-gnu/libnss_toolforge.so.2"
readelf -d "$mod" | grep -q 'SONAME.*libnss_toolforge.so.2' || { echo "wrong SONAME" >&2; fail=1; }
# The packaged module is the baseline build: no GLIBC_ version above 2.17, no debug info.
newest=$(objdump -T "$mod" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -n 1)
echo "module: $(stat -c %s "$mod") bytes, newest symbol version $newest"
[ "$(printf '%s\nGLIBC_2.17\n' "$newest" | sort -V | tail -n 1)" = GLIBC_2.17 ] || { echo "the packaged module needs $newest (baseline GLIBC_2.17)" >&2; fail=1; }
readelf -S "$mod" | grep -Eq '\.(debug_|symtab)' && { echo "the packaged module is not stripped" >&2; fail=1; }
[ $fail = 0 ] && echo "package ok: 1 passed, 0 failed" || { echo "package: 0 passed, 1 failed"; exit 1; }
