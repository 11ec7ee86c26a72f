#!/usr/bin/env bash
# bench.sh: runs the Go benchmarks COUNT times (default 3) and writes
# BENCHMARKS.md with the median of each and its ratio to its anchor. A
# benchmark named BenchmarkXAnchorY is the anchor of BenchmarkX: the limit
# measured in the same run on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${COUNT:-3}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
# One package at a time: two packages' benchmarks running at once on a small
# machine would measure each other. The memory peak runs the whole stack and
# reports a peak, not a time: once is enough. A failing benchmark's lines
# (--- FAIL, its file:line messages, a panic) are shown too.
shown='^(Benchmark|ok|FAIL|--- FAIL|panic:|\s+\S+_test\.go:[0-9]+:)'
# BENCH_RAW=FILE writes BENCHMARKS.md from a run's saved output instead of
# running again (the script failed after the benchmarks, say).
if [ -n "${BENCH_RAW:-}" ]; then
  cp "$BENCH_RAW" "$raw"
else
  go test -p 1 -run '^$' -bench . -skip BenchmarkMemoryPeak -benchmem -count "$count" ./... | tee "$raw" | grep -E "$shown" >&2
  go test -run '^$' -bench BenchmarkMemoryPeak -count 1 ./test | tee -a "$raw" | grep -E "$shown" >&2
fi
cpu=$(grep -m1 '^cpu:' "$raw" | cut -d' ' -f2- || true)
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d): \`go test -p 1 -run '^\$' -bench . -skip BenchmarkMemoryPeak -benchmem -count $count ./...\`, median of the $count runs, then \`go test -run '^\$' -bench BenchmarkMemoryPeak -count 1 ./test\` once. Do not edit by hand."
  echo
  echo "Machine: ${cpu:-unknown CPU}, $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go version | cut -d' ' -f3)."
  echo
  echo "| benchmark | median | other medians | anchor | anchor median | ratio |"
  echo "| --- | ---: | --- | --- | ---: | ---: |"
  awk '
    /^Benchmark/ && $2 ~ /^[0-9]+$/ {
      name=$1; sub(/-[0-9]+$/, "", name)
      if (!(name in seen)) { seen[name]=1; order[++n]=name }
      for (i=3; i<NF; i+=2) {
        unit=$(i+1)
        if (unit=="B/op") continue
        if (!((name, unit) in vals)) units[name]=units[name] " " unit
        vals[name, unit]=vals[name, unit] " " $i
      }
    }
    function median(s,   a, k, i, j, t) {
      k=split(s, a, " "); if (k==0) return ""
      for (i=1;i<=k;i++) for (j=i+1;j<=k;j++) if (a[j]+0<a[i]+0) {t=a[i];a[i]=a[j];a[j]=t}
      return (k%2) ? a[(k+1)/2] : (a[k/2]+a[k/2+1])/2
    }
    function human(ns) {
      if (ns >= 1e9) return sprintf("%.2f s", ns/1e9)
      if (ns >= 1e6) return sprintf("%.1f ms", ns/1e6)
      if (ns >= 1e3) return sprintf("%.1f µs", ns/1e3)
      return sprintf("%.0f ns", ns)
    }
    function num(x) { return (x >= 100) ? sprintf("%.0f", x) : sprintf("%.3g", x) }
    function others(name,   u, k, i, out) {
      k=split(units[name], u, " "); out=""
      for (i=1;i<=k;i++) if (u[i]!="ns/op") out=out (out==""?"":", ") num(median(vals[name, u[i]])) " " u[i]
      return out
    }
    END {
      for (i=1;i<=n;i++) {
        name=order[i]; if (name ~ /Anchor/) continue
        m=median(vals[name, "ns/op"]); rows=0
        base=name; sub(/\/.*/, "", base) # a sub-benchmark shares the anchors of its parent
        for (j=1;j<=n;j++) if (index(order[j], base "Anchor")==1) {
          anchor=order[j]; am=median(vals[anchor, "ns/op"]); rows++
          printf "| %s | %s/op | %s | %s (%s) | %s/op | %.2fx |\n", name, human(m), others(name), anchor, others(anchor), human(am), m/am
        }
        if (rows==0) printf "| %s | %s/op | %s | | | |\n", name, human(m), others(name)
      }
    }' "$raw"
  echo
  echo "Ratio is tideline's time over the anchor's, both measured in this run: 1.00x would be as fast as the limit."
  echo
  echo "## What each measures"
  echo
  # The first line of each benchmark's doc comment.
  grep -rh --include='*_test.go' -A1 '^// Benchmark' . | awk '/^\/\/ Benchmark/ {sub(/^\/\/ /, ""); n=$1; $1=""; line=$0; getline nxt; if (nxt ~ /^\/\//) {sub(/^\/\/ /, "", nxt); line=line " " nxt}; printf "- **%s**%s\n", n, line}' 
} > BENCHMARKS.md
cat BENCHMARKS.md
