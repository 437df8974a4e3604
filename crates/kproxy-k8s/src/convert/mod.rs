//! Kubernetes API objects (k8s-openapi types) → kproxy's model, exactly as kube-proxy
//! reads them.
//!
//! Each function returns the model value and the [`Warning`]s about what it skipped or
//! corrected. Nothing here fails or panics: a bad field costs at most that field (or the
//! port, endpoint or address it belongs to), never the other objects.
//!
//! - [`service`]: a `v1` Service → [`kproxy_model::Service`]
//! - [`endpoint_slice`]: a `discovery.k8s.io/v1` EndpointSlice →
//!   [`kproxy_model::EndpointSlice`]
//! - [`node`]: a `v1` Node → [`kproxy_model::Node`]
//! - [`is_proxied`] / [`PROXIED_LABEL_SELECTOR`]: which Services and EndpointSlices
//!   kube-proxy watches at all.
//!
//! A missing `metadata.namespace` is read as `default`, as `kubectl apply` would.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_model::ip::{parse_cidr_sloppy, parse_ip_sloppy};

use crate::warning::{ObjectRef, Warning, quote};

mod endpoint_slice;
mod node;
mod service;

pub use endpoint_slice::endpoint_slice;
pub use node::node;
pub use service::service;

/// The label that hands a Service (and its EndpointSlices) to another proxy.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// The label the EndpointSlice controller puts on the slices of headless Services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The label naming an EndpointSlice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The label selector kube-proxy's Service and EndpointSlice informers use: objects
/// carrying either label are never seen. [`is_proxied`] evaluates the same rule.
pub const PROXIED_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// Whether kube-proxy sees a Service or EndpointSlice with these labels at all (see
/// [`PROXIED_LABEL_SELECTOR`]): neither `service.kubernetes.io/service-proxy-name` nor
/// `service.kubernetes.io/headless` is set, whatever its value.
///
/// ```
/// use std::collections::BTreeMap;
/// use kproxy_k8s::convert::is_proxied;
///
/// let mut labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
/// assert!(is_proxied(&labels));
/// labels.insert("service.kubernetes.io/headless".into(), String::new());
/// assert!(!is_proxied(&labels));
/// ```
pub fn is_proxied(labels: &BTreeMap<String, String>) -> bool {
    !labels.contains_key(LABEL_SERVICE_PROXY_NAME) && !labels.contains_key(LABEL_HEADLESS)
}

/// The namespace of a namespaced object, `default` when unset.
pub(crate) fn namespace_or_default(namespace: Option<&str>) -> &str {
    match namespace {
        Some(ns) if !ns.is_empty() => ns,
        _ => "default",
    }
}

/// Collects the warnings about one object.
pub(crate) struct Ctx {
    object: ObjectRef,
    pub(crate) warnings: Vec<Warning>,
}

impl Ctx {
    pub(crate) fn new(kind: &str, namespace: Option<&str>, name: &str) -> Ctx {
        Ctx {
            object: ObjectRef::new(kind, namespace, name),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning::new(
            Some(self.object.clone()),
            Some(field.into()),
            message,
        ));
    }

    /// Parses an IP address as Kubernetes does. An invalid one is warned about, with
    /// `consequence` (`"ignored"`, `"endpoint ignored"`) saying what is dropped; an IPv4
    /// literal with leading zeros is used, with a warning.
    pub(crate) fn ip(&mut self, field: &str, s: &str, consequence: &str) -> Option<IpAddr> {
        let Some(ip) = parse_ip_sloppy(s) else {
            self.warn(
                field,
                format!("invalid IP address {}; {consequence}", quote(s)),
            );
            return None;
        };
        if has_leading_zeros(s) {
            self.warn(
                field,
                format!("IPv4 address {} has leading zeros; read as {ip}", quote(s)),
            );
        }
        Some(ip)
    }

    /// Parses a CIDR as Kubernetes does (host bits cleared). An invalid one is warned
    /// about and ignored; one with leading zeros is used, with a warning.
    pub(crate) fn cidr(&mut self, field: &str, s: &str) -> Option<IpNet> {
        let Some(net) = parse_cidr_sloppy(s) else {
            self.warn(field, format!("invalid CIDR {}; ignored", quote(s)));
            return None;
        };
        if has_leading_zeros(s) {
            self.warn(
                field,
                format!("CIDR {} has leading zeros; read as {net}", quote(s)),
            );
        }
        Some(net)
    }
}

/// Whether the dotted-quad part of an address or CIDR has an octet with a leading zero
/// (`010.0.0.1`, `::ffff:1.2.3.04`): such literals are read as decimal, which some other
/// parsers read as octal.
fn has_leading_zeros(s: &str) -> bool {
    let addr = s.split('/').next().unwrap_or(s);
    let quad = addr.rsplit(':').next().unwrap_or(addr);
    quad.contains('.')
        && quad
            .split('.')
            .any(|octet| octet.len() > 1 && octet.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zeros() {
        assert!(has_leading_zeros("172.30.0.041"));
        assert!(has_leading_zeros("010.0.0.0/8"));
        assert!(has_leading_zeros("::ffff:1.2.3.04"));
        assert!(!has_leading_zeros("10.0.0.0/08"));
        assert!(!has_leading_zeros("10.0.0.0"));
        assert!(!has_leading_zeros("0.0.0.0"));
        assert!(!has_leading_zeros("2001:0db8::1"));
    }
}
