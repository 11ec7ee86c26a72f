#!/usr/bin/env bash
# install-tool.sh NAME MODULE_PATH VERSION
# Builds MODULE_PATH@VERSION into bin/NAME with `go install`, unless bin/NAME
# already is that exact module version (read back with `go version -m`).
set -euo pipefail
name=$1 pkg=$2 version=$3
bin=$(cd "$(dirname "$0")/.." && pwd)/bin
mkdir -p "$bin"
if [ -x "$bin/$name" ]; then
  have=$(go version -m "$bin/$name" 2>/dev/null | awk '$1=="mod"{print $3; exit}')
  if [ "$have" = "$version" ]; then
    echo "tools: bin/$name is $version, skipping"
    exit 0
  fi
  echo "tools: bin/$name is ${have:-unknown}, want $version: rebuilding"
fi
echo "tools: building $pkg@$version into bin/$name (the first build takes several minutes)"
start=$(date +%s)
GOBIN="$bin" go install "$pkg@$version"
built=$(basename "$pkg")
# go install names a module path ending in a major version (.../v2) by the
# element before it.
case $built in v[0-9]*) built=$(basename "$(dirname "$pkg")") ;; esac
if [ "$built" != "$name" ]; then mv -f "$bin/$built" "$bin/$name"; fi
echo "tools: built bin/$name in $(( $(date +%s) - start ))s"
