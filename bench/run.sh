#!/usr/bin/env bash
# Runs the benchmarks under bench/ with fixed settings, prints the figures
# as tables and checks them against the targets:
#   audit log (bench/audit_test.go):
#     SQLite appends: >= 20,000 events/s with 1 KiB events, p99 ack <= 50 ms
#                     (every load shape; the paced ones must keep up with 20,000/s)
#     inclusion proof at 1M entries (SQLite): < 1 ms
#   identity (bench/identity_test.go, bench/authn_test.go):
#     client-credentials tokens with private_key_jwt over HTTPS (SQLite): >= 5,000/s
#     sdk/authn verification of a cached valid token: >= 100,000/s
#   workload identity (bench/workload_test.go):
#     X.509-SVIDs issued over the agent-server channel (SQLite): >= 2,000/s
#     added cost of a pooled mTLS connection over plain TCP: < 10 µs/request
#   policy (bench/authz_test.go, bench/authzen_test.go):
#     embedded sdk/authz decision, reference bank policies, building the
#     request included: p50 < 3 µs, p99 < 15 µs
#     AuthZEN decisions over HTTPS with decision logging on: >= 20,000/s
#     (batch requests of 10 evaluations; one evaluation per request is
#     reported without a target, see bench/README.md)
#   data plane (bench/gateway, `go run ./bench/gateway`; HAProxy 2.6 and wrk):
#     the gateway (JWT, rate limits, Cedar, OpenAPI validation; token exchange
#     and mTLS to the agent): >= 1.5x the throughput of HAProxy 2.6 with jwt_verify,
#     50 connections, same upstream
#     one agent-to-agent mTLS hop adds < 300 µs at p50
# PostgreSQL figures are reported without a target. Exits 1 if a target is
# missed. Needs the test PostgreSQL (make test-deps; `make bench` starts it).
#
# Usage: run.sh [all|data-plane]. `data-plane` runs only the data-plane
# section, which needs neither PostgreSQL nor the bench binary, and installs
# haproxy and wrk from Debian's packages when they are missing.
#
# Settings (environment): BENCH_COUNT runs of each append benchmark, the
# median is reported (default 3); BENCH_EVENTS events per append run
# (default 60000); BENCH_PROOFS proofs per proof run (default 2000);
# BENCH_TOKENS token requests per identity run (default 30000);
# BENCH_OUT directory for the raw output (default a new temporary one);
# BENCH_DP_DURATION length of each measured data-plane run (default 10s);
# BENCH_DP_CONNECTIONS wrk connections of the edge runs (default 50).
set -euo pipefail
cd "$(dirname "$0")/.."

section=${1:-all}
case "$section" in
  all | data-plane) ;;
  *) echo "usage: $0 [all|data-plane]" >&2; exit 2 ;;
esac
status=0

count=${BENCH_COUNT:-3}
events=${BENCH_EVENTS:-60000}
proofs=${BENCH_PROOFS:-2000}
tokens=${BENCH_TOKENS:-30000}
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"

if [ "$section" = all ]; then
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

echo "running identity benchmarks: ${tokens} token requests a run, ${count} runs (raw output: $out/identity.txt)"
"$out/bench.test" -test.run '^$' -test.bench '^BenchmarkClientCredentialsPrivateKeyJWT$' \
  -test.benchtime "${tokens}x" -test.count "$count" >"$out/identity.txt" 2>&1 || {
  cat "$out/identity.txt"; echo "identity benchmarks failed" >&2; exit 1; }
"$out/bench.test" -test.run '^$' -test.bench '^BenchmarkVerify(Cached|Uncached)$' \
  -test.benchtime 2s -test.count "$count" >>"$out/identity.txt" 2>&1 || {
  cat "$out/identity.txt"; echo "identity benchmarks failed" >&2; exit 1; }

echo "running workload identity benchmarks (raw output: $out/workload.txt)"
"$out/bench.test" -test.run '^$' -test.bench '^BenchmarkSVIDIssuance$' \
  -test.benchtime 20000x -test.count "$count" >"$out/workload.txt" 2>&1 || {
  cat "$out/workload.txt"; echo "workload benchmarks failed" >&2; exit 1; }
"$out/bench.test" -test.run '^$' -test.bench '^BenchmarkMTLSHandshake$' \
  -test.benchtime 2s -test.count "$count" >>"$out/workload.txt" 2>&1 || {
  cat "$out/workload.txt"; echo "workload benchmarks failed" >&2; exit 1; }

echo "running policy benchmarks (raw output: $out/policy.txt)"
"$out/bench.test" -test.run '^$' -test.bench '^BenchmarkEmbeddedDecision$' \
  -test.benchtime 400000x -test.count "$count" >"$out/policy.txt" 2>&1 || {
  cat "$out/policy.txt"; echo "policy benchmarks failed" >&2; exit 1; }
"$out/bench.test" -test.run '^$' -test.bench '^BenchmarkAuthZENHTTP$' \
  -test.benchtime 5s -test.count "$count" >>"$out/policy.txt" 2>&1 || {
  cat "$out/policy.txt"; echo "policy benchmarks failed" >&2; exit 1; }

echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# The benchmark lines are "Name-PROCS  N  value unit  value unit ...". For
# each benchmark, report the median over its runs of each metric.
cat "$out/append.txt" "$out/proof.txt" "$out/identity.txt" "$out/workload.txt" "$out/policy.txt" | awk '
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
  printf "\n%-44s %12s %8s %8s  %s\n", "identity benchmark", "per second", "p50 ms", "p99 ms", "target"
  for (o = 1; o <= names; o++) {
    name = order[o]
    if (name == "BenchmarkClientCredentialsPrivateKeyJWT") {
      rate = m(name, "tokens/s"); ok = rate >= 5000
      if (!ok) fails++
      printf "%-44s %12.0f %8.2f %8.2f  %s\n", "client-credentials tokens (private_key_jwt)", rate, m(name, "p50-ms"), m(name, "p99-ms"), sprintf("%s (>= 5000/s)", ok ? "PASS" : "FAIL")
    } else if (name ~ /^BenchmarkVerify/) {
      rate = m(name, "verifications/s"); verdict = "none"
      if (name ~ /^BenchmarkVerifyCached/) {
        ok = rate >= 100000; verdict = sprintf("%s (>= 100000/s)", ok ? "PASS" : "FAIL")
        if (!ok) fails++
      }
      short = name; sub(/^Benchmark/, "", short)
      printf "%-44s %12.0f %8s %8s  %s\n", short, rate, "", "", verdict
    }
  }
  printf "\n%-44s %12s %10s  %s\n", "workload identity benchmark", "value", "unit", "target"
  for (o = 1; o <= names; o++) {
    name = order[o]
    if (name ~ /^BenchmarkSVIDIssuance/) {
      rate = m(name, "svids/s"); ok = rate >= 2000
      if (!ok) fails++
      short = name; sub(/^Benchmark/, "", short)
      printf "%-44s %12.0f %10s  %s\n", short, rate, "SVIDs/s", sprintf("%s (>= 2000/s)", ok ? "PASS" : "FAIL")
    }
  }
  for (o = 1; o <= names; o++) {
    name = order[o]
    if (name ~ /^BenchmarkMTLSHandshake/) {
      short = name; sub(/^Benchmark/, "", short)
      printf "%-44s %12.2f %10s\n", short, m(name, "µs/request"), "µs/req"
      if (name ~ /pooled/) pooled = m(name, "µs/request")
      if (name ~ /\/tcp$/) plain = m(name, "µs/request")
    }
  }
  if (pooled > 0 && plain > 0) {
    ok = pooled - plain < 10
    if (!ok) fails++
    printf "%-44s %12.2f %10s  %s\n", "pooled mTLS minus plain TCP", pooled - plain, "µs/req", sprintf("%s (< 10 µs)", ok ? "PASS" : "FAIL")
  }
  printf "\n%-44s %12s %10s  %s\n", "policy benchmark", "value", "unit", "target"
  for (o = 1; o <= names; o++) {
    name = order[o]
    if (name ~ /^BenchmarkEmbeddedDecision/) {
      p50 = m(name, "p50-ns"); p99 = m(name, "p99-ns")
      ok = p50 >= 0 && p50 < 3000; if (!ok) fails++
      printf "%-44s %12.0f %10s  %s\n", "embedded decision p50", p50, "ns", sprintf("%s (< 3000 ns)", ok ? "PASS" : "FAIL")
      ok = p99 >= 0 && p99 < 15000; if (!ok) fails++
      printf "%-44s %12.0f %10s  %s\n", "embedded decision p99", p99, "ns", sprintf("%s (< 15000 ns)", ok ? "PASS" : "FAIL")
    } else if (name ~ /^BenchmarkAuthZENHTTP\/batch/) {
      rate = m(name, "decisions/s"); ok = rate >= 20000
      if (!ok) fails++
      printf "%-44s %12.0f %10s  %s\n", "AuthZEN over HTTPS, 10 per request, log on", rate, "decisions/s", sprintf("%s (>= 20000/s)", ok ? "PASS" : "FAIL")
    } else if (name ~ /^BenchmarkAuthZENHTTP\/single/) {
      printf "%-44s %12.0f %10s  %s\n", "AuthZEN over HTTPS, 1 per request, log on", m(name, "decisions/s"), "decisions/s", "reported (see bench/README.md)"
    }
  }
  if (fails) { printf "\n%d target(s) missed\n", fails; exit 1 }
  printf "\nall targets met\n"
}' || status=1
fi

# Data plane: the gateway against HAProxy 2.6 with jwt_verify, and one
# agent-to-agent hop, under wrk (bench/gateway; see bench/README.md).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian's packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo
echo "running data-plane benchmarks: $(haproxy -v | head -n1 | cut -d' ' -f1-3), $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2) (raw output: $out/dataplane.txt)"
go run ./bench/gateway -duration "${BENCH_DP_DURATION:-10s}" -connections "${BENCH_DP_CONNECTIONS:-50}" \
  >"$out/dataplane.txt" 2>&1 || status=1
cat "$out/dataplane.txt"
exit "$status"
