//! Services, and the per-family view of their ports that proxies program.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::types::{
    IpFamily, IpMode, Protocol, ServiceName, ServicePortName, ServiceType, SessionAffinity,
    TrafficPolicy,
};

/// A Service as kproxy needs it: the fields of a Kubernetes `v1.Service` that influence
/// proxying, already validated and parsed (addresses are [`IpAddr`], ranges are [`IpNet`]).
///
/// This type covers both IP families; [`ServicePortInfo::from_service`] derives what one
/// family's proxier sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Service {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (at most one per family; empty for headless services).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// `spec.externalIPs`, in spec order.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress` entries that carry an IP, in status order.
    pub load_balancer_ingress: Vec<LoadBalancerIngress>,
    /// `spec.loadBalancerSourceRanges`, in spec order.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// `spec.healthCheckNodePort` (0 = none).
    pub health_check_node_port: u16,
    /// `spec.sessionAffinity` with its timeout.
    pub session_affinity: SessionAffinity,
    /// `spec.trafficDistribution` (informational: the EndpointSlice controller turns it
    /// into hints, which are what proxies use).
    pub traffic_distribution: Option<String>,
}

impl Service {
    /// The Service's namespaced name.
    pub fn service_name(&self) -> ServiceName {
        ServiceName::new(&self.namespace, &self.name)
    }

    /// Whether traffic from outside the cluster can reach the Service at all (upstream
    /// `ExternallyAccessible`): type LoadBalancer or NodePort, or ClusterIP with external IPs.
    pub fn externally_accessible(&self) -> bool {
        match self.service_type {
            ServiceType::LoadBalancer | ServiceType::NodePort => true,
            ServiceType::ClusterIp => !self.external_ips.is_empty(),
            ServiceType::ExternalName => false,
        }
    }

    /// The cluster IP of `family`, if the Service has one.
    pub fn cluster_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.cluster_ips
            .iter()
            .copied()
            .find(|ip| family.contains(ip))
    }
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// `name` (`""` when unnamed).
    pub name: String,
    /// `protocol`.
    pub protocol: Protocol,
    /// `port` (never 0).
    pub port: u16,
    /// `nodePort` (0 = none).
    pub node_port: u16,
}

/// One entry of `status.loadBalancer.ingress` that has an IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoadBalancerIngress {
    /// `ip`.
    pub ip: IpAddr,
    /// `ipMode`.
    pub ip_mode: IpMode,
}

/// One service port as one family's proxier sees it (upstream `BaseServicePortInfo`).
///
/// Built with [`ServicePortInfo::from_service`]; every address in it belongs to one family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortInfo {
    /// Which service port this is.
    pub name: ServicePortName,
    /// The cluster IP of this family.
    pub cluster_ip: IpAddr,
    /// The service port number.
    pub port: u16,
    /// The node port (0 = none).
    pub node_port: u16,
    /// External IPs of this family, in spec order.
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer VIPs of this family whose `ipMode` is `VIP`, in status order.
    pub load_balancer_vips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges` of this family, in spec order.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// ClientIP affinity timeout in seconds, if the Service has ClientIP affinity.
    pub session_affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local` on an externally accessible Service.
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    /// The health-check node port (only for type LoadBalancer with
    /// `externalTrafficPolicy: Local`; 0 = none).
    pub health_check_node_port: u16,
    /// `spec.trafficDistribution`.
    pub traffic_distribution: Option<String>,
}

impl ServicePortInfo {
    /// The service ports `family`'s proxier programs for `service`, in spec order. Empty
    /// for ExternalName and headless Services and for Services without a cluster IP of this
    /// family (upstream `ShouldSkipService` + `GetClusterIPByFamily`).
    pub fn from_service(service: &Service, family: IpFamily) -> Vec<ServicePortInfo> {
        if service.service_type == ServiceType::ExternalName {
            return Vec::new();
        }
        let Some(cluster_ip) = service.cluster_ip(family) else {
            return Vec::new();
        };
        let external_policy_local = service.externally_accessible()
            && service.external_traffic_policy == TrafficPolicy::Local;
        let health_check_node_port =
            if service.service_type == ServiceType::LoadBalancer && external_policy_local {
                service.health_check_node_port
            } else {
                0
            };
        let of_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
            ips.iter()
                .copied()
                .filter(|ip| family.contains(ip))
                .collect()
        };
        let external_ips = of_family(&service.external_ips);
        let load_balancer_vips: Vec<IpAddr> = service
            .load_balancer_ingress
            .iter()
            .filter(|ing| ing.ip_mode == IpMode::Vip && family.contains(&ing.ip))
            .map(|ing| ing.ip)
            .collect();
        let load_balancer_source_ranges: Vec<IpNet> = service
            .load_balancer_source_ranges
            .iter()
            .copied()
            .filter(|net| family.contains(&net.addr()))
            .collect();
        let session_affinity_timeout = match service.session_affinity {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
        };
        service
            .ports
            .iter()
            .map(|p| ServicePortInfo {
                name: ServicePortName::new(&service.namespace, &service.name, &p.name, p.protocol),
                cluster_ip,
                port: p.port,
                node_port: p.node_port,
                external_ips: external_ips.clone(),
                load_balancer_vips: load_balancer_vips.clone(),
                load_balancer_source_ranges: load_balancer_source_ranges.clone(),
                session_affinity_timeout,
                external_policy_local,
                internal_policy_local: service.internal_traffic_policy == TrafficPolicy::Local,
                health_check_node_port,
                traffic_distribution: service.traffic_distribution.clone(),
            })
            .collect()
    }

    /// The port's protocol.
    pub fn protocol(&self) -> Protocol {
        self.name.protocol
    }

    /// Whether this *port* is reachable from outside: it has a node port, a load-balancer
    /// VIP or an external IP (upstream `ServicePort.ExternallyAccessible`).
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0 || !self.load_balancer_vips.is_empty() || !self.external_ips.is_empty()
    }

    /// Whether traffic to this port can use endpoints anywhere in the cluster: the internal
    /// policy is Cluster, or it accepts external traffic (which short-circuits pod and node
    /// traffic to cluster endpoints even with `externalTrafficPolicy: Local`).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    /// Whether some traffic to this port uses only node-local endpoints.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn dual_stack_lb() -> Service {
        Service {
            namespace: "ns".into(),
            name: "svc".into(),
            service_type: ServiceType::LoadBalancer,
            cluster_ips: vec![ip("10.96.0.10"), ip("fd00:96::10")],
            ports: vec![
                ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: 30080,
                },
                ServicePort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53,
                    node_port: 30053,
                },
            ],
            external_ips: vec![ip("192.0.2.1"), ip("2001:db8::1")],
            load_balancer_ingress: vec![
                LoadBalancerIngress {
                    ip: ip("198.51.100.1"),
                    ip_mode: IpMode::Vip,
                },
                LoadBalancerIngress {
                    ip: ip("198.51.100.2"),
                    ip_mode: IpMode::Proxy,
                },
                LoadBalancerIngress {
                    ip: ip("2001:db8:1::1"),
                    ip_mode: IpMode::Vip,
                },
            ],
            load_balancer_source_ranges: vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8:2::/48".parse().unwrap(),
            ],
            external_traffic_policy: TrafficPolicy::Local,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: 32000,
            session_affinity: SessionAffinity::ClientIp {
                timeout_seconds: 60,
            },
            traffic_distribution: None,
        }
    }

    #[test]
    fn each_family_sees_only_its_addresses() {
        let svc = dual_stack_lb();
        let v4 = ServicePortInfo::from_service(&svc, IpFamily::V4);
        let v6 = ServicePortInfo::from_service(&svc, IpFamily::V6);
        assert_eq!(v4.len(), 2);
        assert_eq!(v6.len(), 2);
        assert_eq!(v4[0].cluster_ip, ip("10.96.0.10"));
        assert_eq!(v4[0].external_ips, vec![ip("192.0.2.1")]);
        assert_eq!(v4[0].load_balancer_vips, vec![ip("198.51.100.1")]);
        assert_eq!(
            v4[0].load_balancer_source_ranges,
            vec!["203.0.113.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(v6[1].cluster_ip, ip("fd00:96::10"));
        assert_eq!(v6[1].load_balancer_vips, vec![ip("2001:db8:1::1")]);
        assert_eq!(v6[1].name.to_string(), "ns/svc:dns");
        assert_eq!(v6[1].protocol(), Protocol::Udp);
        assert!(v4.iter().chain(&v6).all(|p| p.external_policy_local));
        assert!(
            v4.iter()
                .chain(&v6)
                .all(|p| p.health_check_node_port == 32000)
        );
        assert_eq!(v4[0].session_affinity_timeout, Some(60));
    }

    #[test]
    fn skipped_services() {
        let mut svc = dual_stack_lb();
        svc.cluster_ips = vec![ip("10.96.0.10")];
        assert!(ServicePortInfo::from_service(&svc, IpFamily::V6).is_empty());
        svc.cluster_ips.clear();
        assert!(ServicePortInfo::from_service(&svc, IpFamily::V4).is_empty());
        let mut svc = dual_stack_lb();
        svc.service_type = ServiceType::ExternalName;
        assert!(ServicePortInfo::from_service(&svc, IpFamily::V4).is_empty());
    }

    #[test]
    fn external_policy_needs_an_externally_accessible_service() {
        let mut svc = dual_stack_lb();
        svc.service_type = ServiceType::ClusterIp;
        svc.external_ips.clear();
        let ports = ServicePortInfo::from_service(&svc, IpFamily::V4);
        assert!(!ports[0].external_policy_local);
        assert_eq!(ports[0].health_check_node_port, 0);
        // NodePort with eTP Local: local policy, but no health check node port.
        svc.service_type = ServiceType::NodePort;
        let ports = ServicePortInfo::from_service(&svc, IpFamily::V4);
        assert!(ports[0].external_policy_local);
        assert_eq!(ports[0].health_check_node_port, 0);
        // eTP Cluster: the health check node port is ignored.
        let mut svc = dual_stack_lb();
        svc.external_traffic_policy = TrafficPolicy::Cluster;
        let ports = ServicePortInfo::from_service(&svc, IpFamily::V4);
        assert_eq!(ports[0].health_check_node_port, 0);
    }

    #[test]
    fn endpoint_usage_flags() {
        let svc = dual_stack_lb();
        let mut p = ServicePortInfo::from_service(&svc, IpFamily::V4).remove(0);
        assert!(p.uses_cluster_endpoints() && p.uses_local_endpoints());
        p.external_policy_local = false;
        assert!(p.uses_cluster_endpoints() && !p.uses_local_endpoints());
        p.internal_policy_local = true;
        // iTP Local but externally accessible: still uses cluster endpoints.
        assert!(p.uses_cluster_endpoints() && p.uses_local_endpoints());
        p.node_port = 0;
        p.external_ips.clear();
        p.load_balancer_vips.clear();
        assert!(!p.uses_cluster_endpoints() && p.uses_local_endpoints());
    }
}
