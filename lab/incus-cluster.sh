#!/usr/bin/env bash
# The Incus cluster lab: lab/cluster.sh with MAGE_CLUSTER_SERVER=incus (same commands: up, down, env, stop M).
set -euo pipefail
MAGE_CLUSTER_SERVER=incus exec "$(cd "$(dirname "$0")" && pwd)/cluster.sh" "$@"
