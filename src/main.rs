//! The `crossfade` command line.
fn main() {}
