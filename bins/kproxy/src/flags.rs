//! kube-proxy compatible command-line flags (placeholder).
