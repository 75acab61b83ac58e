//! Benchmarks of sessionkit against tower-sessions and the raw drivers. Nothing to use here:
//! run `bench/bench.sh --help` or `cargo bench --manifest-path bench/Cargo.toml --bench stores`
//! (results and commands: `docs/BENCHMARKS.md`).
