#!/bin/sh
# Installs what building, testing and the demo need on a Debian machine, when missing:
# slapd and ldap-utils (a throwaway directory server for tests and the demo; preseeded so the
# package configures no system database and starts no system server), util-linux (unshare),
# gcc (crates that build C), mmdebstrap (the Debian root filesystems the image tests run in),
# binutils (readelf/objdump: the module's symbol check), python3-venv (the pinned release
# toolchain: install-build-tools.sh, run at the end), podman (builds the daemon's image),
# libnss-sss (SSSD's NSS client, which the SSSD-compatibility tests run against toolforge-nssd;
# its mount points /var/lib/sss/{pipes,mc} are made if missing, and
# scripts/fetch-sss-clients.sh adds bullseye's and trixie's client). Installing libnss-sss
# adds `sss` to /etc/nsswitch.conf; this script puts the machine's file back as it was.
# Needs root or sudo. Rust itself comes from rustup.
set -eu
need=""
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need="$need slapd"
command -v ldapsearch >/dev/null 2>&1 || need="$need ldap-utils"
command -v unshare >/dev/null 2>&1 || need="$need util-linux"
command -v getent >/dev/null 2>&1 || need="$need libc-bin"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v mmdebstrap >/dev/null 2>&1 || need="$need mmdebstrap"
command -v readelf >/dev/null 2>&1 || need="$need binutils"
command -v podman >/dev/null 2>&1 || need="$need podman"
command -v flock >/dev/null 2>&1 || need="$need util-linux"
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need="$need python3-venv"
ls /lib/*/libnss_sss.so.2 /usr/lib/*/libnss_sss.so.2 >/dev/null 2>&1 || need="$need libnss-sss"
here=$(dirname "$0")
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# The tests bind-mount over these (libnss-sss alone does not create them; sssd-common does).
[ -d /var/lib/sss/pipes ] && [ -d /var/lib/sss/mc ] || $SUDO mkdir -p /var/lib/sss/pipes /var/lib/sss/mc
if [ -n "$need" ]; then
    echo "installing:$need" >&2
    echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections 2>/dev/null || true
    saved=$(mktemp)
    cp -p /etc/nsswitch.conf "$saved" 2>/dev/null || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
    # libnss-sss's postinst edits the machine's nsswitch.conf: tests never depend on it, so
    # the machine keeps the file it had.
    if [ -s "$saved" ] && ! cmp -s "$saved" /etc/nsswitch.conf; then
        $SUDO cp -p "$saved" /etc/nsswitch.conf
    fi
    rm -f "$saved"
fi
# Other releases' libnss_sss.so.2 (bullseye, trixie) for the SSSD-compatibility tests: a
# private apt state, nothing installed; without network the tests use the host's alone.
$SUDO "$here/fetch-sss-clients.sh" || echo "warning: could not fetch other releases' libnss-sss" >&2
$SUDO "$here/install-build-tools.sh" >/dev/null
