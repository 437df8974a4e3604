//! kproxy, the node binary.

mod config;
mod flags;

fn main() {}
