#!/bin/sh
# Installs what building, testing and the demo need on a Debian machine, when missing:
# slapd and ldap-utils (a throwaway directory server for tests and the demo; preseeded so the
# package configures no system database and starts no system server), util-linux (unshare),
# gcc (crates that build C), libnss-sss (SSSD's NSS client, which the SSSD-compatibility tests
# run against toolforge-nssd; its mount points /var/lib/sss/{pipes,mc} are made if missing, and
# scripts/fetch-sss-clients.sh adds bullseye's and trixie's client).
# Needs root or sudo. Rust itself comes from rustup.
set -eu
need=""
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need="$need slapd"
command -v ldapsearch >/dev/null 2>&1 || need="$need ldap-utils"
command -v unshare >/dev/null 2>&1 || need="$need util-linux"
command -v getent >/dev/null 2>&1 || need="$need libc-bin"
command -v cc >/dev/null 2>&1 || need="$need gcc"
ls /lib/*/libnss_sss.so.2 /usr/lib/*/libnss_sss.so.2 >/dev/null 2>&1 || need="$need libnss-sss"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# The tests bind-mount over these (libnss-sss alone does not create them; sssd-common does).
[ -d /var/lib/sss/pipes ] && [ -d /var/lib/sss/mc ] || $SUDO mkdir -p /var/lib/sss/pipes /var/lib/sss/mc
# Other releases' libnss_sss.so.2 (bullseye, trixie) for the SSSD-compatibility tests: a
# private apt state, nothing installed; without network the tests use the host's alone.
$SUDO "$(dirname "$0")/fetch-sss-clients.sh" || echo "warning: could not fetch other releases' libnss-sss" >&2
[ -z "$need" ] && exit 0
echo "installing:$need" >&2
echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections 2>/dev/null || true
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
