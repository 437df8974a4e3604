//! ClusterIP load balancing on a real kernel: three endpoints, 600 connections, each gets
//! its third (±25%), over both iptables backends and both families; a pod, the node itself
//! and a hairpinning endpoint as clients.

mod common;

use common::*;

fn three_endpoint_spread(backend_kind: &'static str) {
    let mut c = Cluster::start(Options {
        backend: backend_kind,
        lab: LabConfig {
            local_pods: 3,
            remote_pods: 1,
            ..LabConfig::default()
        },
        ..Options::default()
    });
    // Two endpoints on this node, one on node2.
    let pods = [
        &c.lab.local_pods[0],
        &c.lab.local_pods[1],
        &c.lab.remote_pods[0],
    ];
    let backends: Vec<Backend> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| backend(p, &format!("b{i}"), 8080))
        .collect();
    let eps: Vec<EndpointDef> = pods
        .iter()
        .flat_map(|p| {
            let node = if p.host == PodHost::Node {
                "node"
            } else {
                "node2"
            };
            [
                EndpointDef::ready(p.v4, node),
                EndpointDef::ready(p.v6, node),
            ]
        })
        .collect();
    c.manifests
        .service(ServiceDef::cluster_ip(
            "web",
            &[svc_v4(10), svc_v6(10)],
            80,
            8080,
        ))
        .set_endpoints("web", eps);
    c.apply();

    let client = &c.lab.local_pods[2];
    for vip in [svc_v4(10), svc_v6(10)] {
        let hist = probe_many(client, &Probe::tcp(sock(vip, 80)), 600);
        assert_eq!(hist.values().sum::<usize>(), 600);
        for b in &backends {
            let n = hist.get(b.name()).copied().unwrap_or(0);
            assert!(
                (150..=250).contains(&n),
                "{backend_kind} {vip}: {} got {n} of 600 (want 200 ± 25%): {hist:?}",
                b.name()
            );
        }
    }
    // The node itself reaches the service too (OUTPUT chain).
    let from_node = Probe::tcp(sock(svc_v4(10), 80)).run(&c.lab.node);
    assert!(from_node.is_answered(), "{from_node:?}");
    drop(backends);
}

#[test]
fn clusterip_spreads_over_three_endpoints_nft() {
    three_endpoint_spread("nft");
}

#[test]
fn clusterip_spreads_over_three_endpoints_legacy() {
    three_endpoint_spread("legacy");
}
