#!/bin/sh
# Installs what building, testing and the demo need on a Debian machine, when missing:
# slapd and ldap-utils (a throwaway directory server for tests and the demo; preseeded so the
# package configures no system database and starts no system server), util-linux (unshare),
# gcc (crates that build C), mmdebstrap (the Debian root filesystems the image tests run in),
# binutils (readelf/objdump: the module's symbol check), python3-venv (the pinned release
# toolchain: install-build-tools.sh, run at the end), podman (builds and runs the daemon's
# image). Needs root or sudo. Rust itself comes from rustup.
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
here=$(dirname "$0")
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ -z "$need" ]; then $SUDO "$here/install-build-tools.sh" >/dev/null; exit 0; fi
echo "installing:$need" >&2
echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections 2>/dev/null || true
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
$SUDO "$here/install-build-tools.sh" >/dev/null
