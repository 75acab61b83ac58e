#!/usr/bin/env bash
# Builds the benchmark (sessionkit-bench and the tower-sessions app, two workspaces with their
# own lockfiles) in release mode and runs `sessionkit-bench "$@"`, e.g.
#   bench/bench.sh run --stores memory,sqlite --seconds 10 --runs 3
#   bench/bench.sh correctness --trials 10
# Criterion micro-benchmarks: cargo bench --manifest-path bench/Cargo.toml --bench stores
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cargo build --release -q --manifest-path "$here/tower-sessions/Cargo.toml"
cargo build --release -q --manifest-path "$here/Cargo.toml" --bin sessionkit-bench
exec "$here/target/release/sessionkit-bench" "$@"
