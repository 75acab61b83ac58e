#!/usr/bin/env bash
# CPU time per request of the bench app and of the Redis server under wrk load: a steadier
# measure than req/s on a shared 2-core machine, where the clock moves between runs but the
# CPU a request costs moves much less. Binaries are run in turn, round after round, so a slow
# minute of the machine hits every binary alike.
#
# usage: bench/cpu-per-request.sh ROUTE SECONDS ROUNDS BINARY...
#   LIB=sessionkit|tower-sessions|raw (default sessionkit; for tower-sessions, BINARY is
#   bench/tower-sessions/target/release/tower-sessions-app), STORE=redis|memory|… (default redis)
# e.g. (two builds of the bench binary, side by side):
#   LIB=sessionkit bench/cpu-per-request.sh incr 5 3 /tmp/before bench/target/release/sessionkit-bench
# Prints per run: req/s, the app's CPU µs per request (user + system, from /proc), the Redis
# server's (127.0.0.1:6379), everything else's (wrk, and the kernel's network work in
# softirqs), wrk's p99, and the share of the machine's CPU time that was idle or stolen by the
# hypervisor during the run (if large, req/s was not bound by this machine's CPU).
# CONNECTIONS=N changes wrk's 64 connections.
# Needs wrk and curl.
set -euo pipefail
route=$1 seconds=$2 rounds=$3
shift 3
lib=${LIB:-sessionkit} store=${STORE:-redis} port=38200
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
redis_pid=$(redis-cli -h 127.0.0.1 -p 6379 info server | tr -d '\r' | sed -n 's/^process_id://p')
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# The machine's idle and stolen ticks (all CPUs): if they are large, req/s is not CPU-bound.
# Also the busy ticks, so what neither the app nor Redis used (wrk, and the kernel's network
# work done in softirqs) can be counted per request too.
idle_steal() { awk '$1 == "cpu" { print $5 + $6, $9, $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
for _ in $(seq 1 "$rounds"); do
  for binary in "$@"; do
    "$binary" serve --lib "$lib" --store "$store" --port "$port" > /dev/null 2>&1 &
    app=$!
    for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/none" && break; sleep 0.1; done
    : > "$work/cookies"
    for _ in $(seq 1 1000); do
      curl -s -D - -o /dev/null "http://127.0.0.1:$port/incr" \
        | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p' >> "$work/cookies"
    done
    app0=$(cpu_ticks "$app") redis0=$(cpu_ticks "$redis_pid")
    read -r idle0 steal0 busy0 < <(idle_steal)
    out=$(COOKIES_FILE="$work/cookies" wrk -t2 -c"${CONNECTIONS:-64}" -d"${seconds}s" --latency -s "$(dirname "$0")/rotate.lua" \
      "http://127.0.0.1:$port/$route")
    app1=$(cpu_ticks "$app") redis1=$(cpu_ticks "$redis_pid")
    read -r idle1 steal1 busy1 < <(idle_steal)
    kill "$app"; wait "$app" 2> /dev/null || true
    requests=$(awk '/requests in/ { print $1 }' <<< "$out")
    rate=$(awk '/Requests\/sec/ { print $2 }' <<< "$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<< "$out")
    awk -v b="$(basename "$binary")" -v r="$route" -v rate="$rate" -v p99="$p99" -v n="$requests" \
      -v a=$((app1 - app0)) -v s=$((redis1 - redis0)) -v t="$ticks" \
      -v idle=$((idle1 - idle0)) -v steal=$((steal1 - steal0)) -v secs="$seconds" -v cpus="$(nproc)" \
      -v other=$((busy1 - busy0 - (app1 - app0) - (redis1 - redis0))) \
      'BEGIN { printf "%-24s /%-6s %9.0f req/s  app %6.1f µs/req  redis %6.1f µs/req  other %6.1f µs/req  p99 %-8s idle %3.0f%%  stolen %3.0f%%\n",
               b, r, rate, a * 1e6 / t / n, s * 1e6 / t / n, other * 1e6 / t / n, p99,
               idle * 100 / t / secs / cpus, steal * 100 / t / secs / cpus }'
  done
done
