//! kproxy, the node binary.

mod config;

fn main() {}
