//! Placeholder replaced by the protocol micro-benchmark.
fn main() {}
