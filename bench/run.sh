#!/usr/bin/env bash
# Runs the audit log benchmarks (bench/audit_test.go) with fixed settings,
# prints the figures as a table and checks them against the targets:
#   SQLite appends: >= 20,000 events/s with 1 KiB events, p99 ack <= 50 ms
#                   (every load shape; the paced ones must keep up with 20,000/s)
#   inclusion proof at 1M entries (SQLite): < 1 ms
# PostgreSQL figures are reported without a target. Exits 1 if a target is
# missed. Needs the test PostgreSQL (make test-deps; `make bench` starts it).
#
# Settings (environment): BENCH_COUNT runs of each append benchmark, the
# median is reported (default 3); BENCH_EVENTS events per append run
# (default 60000); BENCH_PROOFS proofs per proof run (default 2000);
# BENCH_OUT directory for the raw output (default a new temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."

count=${BENCH_COUNT:-3}
events=${BENCH_EVENTS:-60000}
proofs=${BENCH_PROOFS:-2000}
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"

go test -c -o "$out/bench.test" ./bench

{
  echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(go version | cut -d' ' -f3-)"
  echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt"

echo "running append benchmarks: ${events} events a run, ${count} runs each (raw output: $out/append.txt)"
"$out/bench.test" -test.run '^$' -test.bench '^BenchmarkAppend(SQLite|Postgres)$' \
  -test.benchtime "${events}x" -test.count "$count" >"$out/append.txt" 2>&1 || {
  cat "$out/append.txt"; echo "append benchmarks failed" >&2; exit 1; }

echo "running proof benchmarks: ${proofs} proofs a run (raw output: $out/proof.txt)"
"$out/bench.test" -test.run '^$' -test.bench '^BenchmarkInclusionProof1M$' \
  -test.benchtime "${proofs}x" -test.count 1 >"$out/proof.txt" 2>&1 || {
  cat "$out/proof.txt"; echo "proof benchmarks failed" >&2; exit 1; }

echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# The benchmark lines are "Name-PROCS  N  value unit  value unit ...". For
# each benchmark, report the median over its runs of each metric.
cat "$out/append.txt" "$out/proof.txt" | awk '
function median(key,    n, i, j, v, t) {
  n = cnt[key]
  for (i = 1; i <= n; i++) v[i] = val[key, i]
  for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) { t = v[j]; v[j] = v[j-1]; v[j-1] = t }
  return n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2
}
function m(name, unit) { return ((name SUBSEP unit) in cnt) ? median(name SUBSEP unit) : -1 }
/^Benchmark/ {
  name = $1; sub(/-[0-9]+$/, "", name)
  if (!(name in seen)) { seen[name] = 1; order[++names] = name }
  for (i = 3; i < NF; i += 2) { k = name SUBSEP $(i+1); val[k, ++cnt[k]] = $i }
}
END {
  fails = 0
  printf "%-44s %10s %8s %8s %8s %13s  %s\n", "append benchmark (1 KiB events)", "events/s", "p50 ms", "p99 ms", "max ms", "events/commit", "target"
  for (o = 1; o <= names; o++) {
    name = order[o]
    if (name !~ /^BenchmarkAppend/) continue
    eps = m(name, "events/s"); p99 = m(name, "p99-ms")
    verdict = "none (PostgreSQL)"
    if (name ~ /SQLite/) {
      need = 20000
      if (name ~ /rate=/) { split(name, a, "rate="); split(a[2], b, "/"); need = 0.99 * b[1] }
      ok = eps >= need && p99 <= 50
      verdict = sprintf("%s (>= %d/s, p99 <= 50 ms)", ok ? "PASS" : "FAIL", need)
      if (!ok) fails++
    }
    short = name; sub(/^BenchmarkAppend/, "", short)
    printf "%-44s %10.0f %8.2f %8.2f %8.2f %13.1f  %s\n", short, eps, m(name, "p50-ms"), p99, m(name, "max-ms"), m(name, "events/commit"), verdict
  }
  printf "\n%-44s %10s %10s  %s\n", "inclusion proof, 1,000,000 entries", "proof µs", "build s", "target"
  for (o = 1; o <= names; o++) {
    name = order[o]
    if (name !~ /^BenchmarkInclusionProof/) continue
    us = m(name, "proof-µs"); build = m(name, "build-s")
    if (name ~ /sqlite/) {
      ok = us >= 0 && us < 1000
      verdict = sprintf("%s (< 1000 µs)", ok ? "PASS" : "FAIL")
      if (!ok) fails++
    } else {
      verdict = "none (PostgreSQL)"
    }
    short = name; sub(/^BenchmarkInclusionProof1M\//, "", short)
    printf "%-44s %10.1f %10s  %s\n", short, us, build >= 0 ? sprintf("%.1f", build) : "", verdict
  }
  if (fails) { printf "\n%d target(s) missed\n", fails; exit 1 }
  printf "\nall targets met\n"
}'
