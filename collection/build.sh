#!/usr/bin/env bash
# Build the mage.lxd collection tarball and the mage-lxd wheel its plugins import, into dist/ (or
# the directory given). ./run collection calls this.
#   collection/build.sh [OUTPUT_DIR]
# The collection tree (collection/ansible_collections/mage/lxd) links to the repository's own
# plugin folders, roles, playbooks and templates; they are resolved into a staging copy here, so
# the tarball holds exactly the files the checkout runs, with nothing kept in step by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-dist}")
bin=${MAGE_LXD_BUILD_BIN:-.venv/bin}
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

cp -rL collection/ansible_collections "$stage/"
find "$stage" \( -name __pycache__ -o -name '*.pyc' -o -name output \) -prune -exec rm -rf {} +
"$bin/ansible-galaxy" collection build "$stage/ansible_collections/mage/lxd" --output-path "$out" --force
"$bin/pip" wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$out" .
# setuptools leaves these next to pyproject.toml.
rm -rf build mage_lxd.egg-info
ls "$out"
