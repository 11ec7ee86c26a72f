#!/usr/bin/env bash
# bench.sh: runs the Go benchmarks COUNT times (default 5) and writes
# BENCHMARKS.md with the median of each and its ratio to its anchor. A
# benchmark named BenchmarkXAnchorY is the anchor of BenchmarkX: the limit
# measured in the same run on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${COUNT:-5}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
go test -run '^$' -bench . -benchmem -count "$count" ./... | tee "$raw" | grep -E '^(Benchmark|ok|FAIL)' >&2
cpu=$(grep -m1 '^cpu:' "$raw" | cut -d' ' -f2- || true)
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` ($(date -u +%Y-%m-%d), $count runs each, median shown). Do not edit by hand."
  echo
  echo "Machine: ${cpu:-unknown CPU}, $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go version | cut -d' ' -f3)."
  echo
  echo "| benchmark | median ns/op | MB/s | allocs/op | anchor | anchor ns/op | ratio |"
  echo "| --- | ---: | ---: | ---: | --- | ---: | ---: |"
  awk '
    /^Benchmark/ {
      name=$1; sub(/-[0-9]+$/, "", name)
      for (i=3; i<=NF; i++) {
        if ($(i+1)=="ns/op") ns[name]=ns[name] " " $i
        if ($(i+1)=="MB/s") mbs[name]=mbs[name] " " $i
        if ($(i+1)=="allocs/op") al[name]=$i
      }
      if (!(name in seen)) { seen[name]=1; order[++n]=name }
    }
    function median(s,   a, k, i, j, t) {
      k=split(s, a, " "); if (k==0) return ""
      for (i=1;i<=k;i++) for (j=i+1;j<=k;j++) if (a[j]+0<a[i]+0) {t=a[i];a[i]=a[j];a[j]=t}
      return (k%2) ? a[(k+1)/2] : (a[k/2]+a[k/2+1])/2
    }
    END {
      for (i=1;i<=n;i++) {
        name=order[i]; if (name ~ /Anchor/) continue
        anchor=""; for (j=1;j<=n;j++) if (index(order[j], name "Anchor")==1) anchor=order[j]
        m=median(ns[name]); mb=median(mbs[name])
        if (anchor!="") { am=median(ns[anchor]); printf "| %s | %.0f | %s | %s | %s | %.0f | %.2fx |\n", name, m, mb, al[name], anchor, am, m/am }
        else printf "| %s | %.0f | %s | %s | | | |\n", name, m, mb, al[name]
      }
    }' "$raw"
  echo
  echo "Ratio is tideline's time over the anchor's: 1.00x would be as fast as the limit."
} > BENCHMARKS.md
cat BENCHMARKS.md
