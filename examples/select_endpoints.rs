//! Which endpoints may traffic to a Service use on this node? The model answers as
//! kube-proxy does: `cargo run -p kproxy-examples --example select_endpoints`.

use kproxy_model::*;

fn main() {
    let mut tracker = ChangeTracker::new(IpFamily::V4, "node-a");
    tracker.update_service(Service {
        namespace: "shop".into(),
        name: "ingress".into(),
        service_type: ServiceType::LoadBalancer,
        cluster_ips: vec!["10.96.12.40".parse().expect("ip")],
        ports: vec![ServicePort {
            name: "https".into(),
            protocol: Protocol::Tcp,
            port: 443,
            node_port: 30443,
        }],
        external_traffic_policy: TrafficPolicy::Local,
        health_check_node_port: 32100,
        ..Service::default()
    });
    let endpoint = |ip: &str, node: &str, ready: bool| Endpoint {
        ready,
        terminating: !ready,
        node_name: Some(node.into()),
        ..Endpoint::ready(ip.parse().expect("ip"))
    };
    tracker.update_endpoint_slice(EndpointSlice {
        namespace: "shop".into(),
        name: "ingress-2mz7c".into(),
        service_name: "ingress".into(),
        address_family: IpFamily::V4,
        ports: vec![EndpointPort {
            name: "https".into(),
            protocol: Protocol::Tcp,
            port: 8443,
        }],
        endpoints: vec![
            endpoint("10.244.0.41", "node-a", true),
            endpoint("10.244.1.42", "node-b", true),
            endpoint("10.244.1.43", "node-b", false),
        ],
        trigger_time: None,
    });
    let changes = tracker.commit();
    println!("changed: {:?}", changes.services);

    let node = NodeTopology::named("node-a");
    for (port, endpoints) in tracker.state().service_ports() {
        let sets = categorize_endpoints(endpoints, port, &node);
        let list = |it: &mut dyn Iterator<Item = &EndpointInfo>| {
            it.map(|e| e.endpoint_str().to_owned()).collect::<Vec<_>>()
        };
        println!("{}:", port.name);
        println!(
            "  pods and the node (Cluster policy): {:?}",
            list(&mut sets.cluster())
        );
        println!(
            "  external clients (Local policy):    {:?}",
            list(&mut sets.local())
        );
        println!("  usable endpoints anywhere:          {}", sets.has_any);
    }
    println!(
        "health check node ports: {:?}, local ready endpoints: {:?}",
        tracker.state().health_check_node_ports(),
        tracker.state().local_ready_endpoints()
    );
}
