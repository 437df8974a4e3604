//! KubeProxyConfiguration (placeholder).
