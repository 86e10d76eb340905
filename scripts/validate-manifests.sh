#!/bin/sh
# Validates every Kubernetes manifest in deploy/ (*.yaml) against the Kubernetes API schema,
# offline and strict (unknown fields are errors), with kubernetes-validate (pinned, from
# install-build-tools.sh), for each version in $TOOLFORGE_NSS_K8S_VERSIONS. Then checks that
# the validation can fail: a copy of the DaemonSet with a misspelt field must be refused.
set -eu
cd "$(dirname "$0")/.."
versions=${TOOLFORGE_NSS_K8S_VERSIONS:-1.29.0 1.37.0}
bin=$(./scripts/install-build-tools.sh)
kv="$bin/kubernetes-validate"
fail=0 n=0
for f in deploy/*.yaml; do
    for v in $versions; do
        n=$((n + 1))
        if ! "$kv" --strict --quiet -k "$v" "$f"; then
            echo "invalid against Kubernetes $v: $f" >&2
            fail=$((fail + 1))
        fi
    done
done
bad=$(mktemp --suffix=.yaml)
trap 'rm -f "$bad"' EXIT
sed 's/periodSeconds:/periodSecond:/' deploy/daemonset.yaml > "$bad"
n=$((n + 1))
if "$kv" --strict --quiet "$bad" >/dev/null 2>&1; then
    echo "kubernetes-validate passed a DaemonSet with a misspelt field" >&2
    fail=$((fail + 1))
fi
echo "manifests: $((n - fail)) passed, $fail failed"
[ "$fail" -eq 0 ]
