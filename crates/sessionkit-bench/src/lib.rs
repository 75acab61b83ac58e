//! Benchmarks of sessionkit stores against their raw drivers. Nothing to use here: run
//! `cargo bench -p sessionkit-bench` (results and commands: `docs/BENCHMARKS.md`).
