#!/bin/sh
# Installs, once, the release toolchain pieces that come from PyPI into a private virtualenv
# (never the system Python): ziglang (zig, the linker against old glibc stubs) and
# cargo-zigbuild (builds the module against the glibc 2.17 baseline), and kubernetes-validate
# (checks deploy/*.yaml against the Kubernetes API schema, offline). Versions are pinned.
# Prints the venv's bin directory. Needs python3 with venv (install-deps.sh installs it).
#   TOOLFORGE_NSS_TOOLS  where the venv lives (default /opt/toolforge-nss-tools)
set -eu
venv=${TOOLFORGE_NSS_TOOLS:-/opt/toolforge-nss-tools}
pins="ziglang==0.17.1 cargo-zigbuild==0.24.1 kubernetes-validate==1.37.0"
stamp=$venv/.installed
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ]; then echo "$venv/bin"; exit 0; fi
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
rm -rf "$venv"
"$py" -m venv "$venv" >&2 || { echo "install-build-tools: '$py -m venv' failed (apt-get install python3-venv)" >&2; exit 1; }
# shellcheck disable=SC2086
"$venv/bin/pip" install --quiet --disable-pip-version-check $pins >&2
echo "$pins" > "$stamp"
echo "$venv/bin"
