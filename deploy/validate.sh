#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/ against the official schemas of one
# Kubernetes version, with unknown fields refused (--strict). Installs a pinned
# kubernetes-validate into a virtual environment under target/ on first use.
#
#   bash deploy/validate.sh            # validate every manifest
#   K8S_VERSION=1.31.0 bash deploy/validate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VALIDATOR_VERSION="1.37.0"
K8S_VERSION="${K8S_VERSION:-1.33.0}"
VENV="target/kubernetes-validate-${VALIDATOR_VERSION}"

if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==${VALIDATOR_VERSION}"
fi

"$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" deploy/*.yaml
