//! A Service health-check node port, as a cloud load balancer sees it:
//! `cargo run -p kproxy-examples --example health_check`.

use std::collections::BTreeMap;
use std::time::Duration;

use kproxy_healthcheck::{ListenAddresses, ProxyHealthServer, ServiceHealthServer};
use kproxy_model::{IpFamily, ServiceName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let proxy = ProxyHealthServer::new(Duration::from_secs(60));
    proxy.queued_update(IpFamily::V4);
    proxy.updated(IpFamily::V4);
    let services = ServiceHealthServer::new(
        ListenAddresses::Ips(vec!["127.0.0.1".parse()?]),
        proxy.clone(),
    )?;
    let web = ServiceName::new("shop", "ingress");
    // Port 0: any free port (a real Service has its healthCheckNodePort).
    let errors = services.sync_services(&BTreeMap::from([(web.clone(), 0)]));
    anyhow::ensure!(errors.is_empty(), "{errors:?}");
    let addr = services.local_addrs(&web)[0];
    for local in [0, 2] {
        services.sync_endpoints(&BTreeMap::from([(web.clone(), local)]));
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        conn.read_to_string(&mut response).await?;
        println!("--- {local} local endpoints ---\n{response}\n");
    }
    Ok(())
}
