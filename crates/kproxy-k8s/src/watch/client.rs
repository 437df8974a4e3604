//! The API client: in-cluster, `--kubeconfig` or `--master`, as kube-proxy builds it.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::{info, warn};

use super::Error;

/// The JSON content type, the only one kube-rs speaks.
const JSON: &str = "application/json";
/// The protobuf content type client-go can use.
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// How to reach the API server: kube-proxy's `--kubeconfig`, `--master` and
/// `clientConnection` settings.
///
/// Which configuration is used follows kube-proxy (`createClient`):
/// - neither `kubeconfig` nor `master`: the in-cluster configuration (the
///   `KUBERNETES_SERVICE_HOST`/`_PORT` environment and the service account's token and CA
///   under `/var/run/secrets/kubernetes.io/serviceaccount/`);
/// - `kubeconfig`: that file (its current context), with `master`, if given, replacing
///   the server URL;
/// - only `master`: that URL, without credentials (as client-go's empty kubeconfig with a
///   server override). A URL without a scheme gets `https://`.
///
/// `KUBECONFIG` and `~/.kube/config` are not read, as in kube-proxy.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ClientSettings {
    /// `clientConnection.kubeconfig` / `--kubeconfig` (`None` or empty: not given).
    pub kubeconfig: Option<PathBuf>,
    /// `--master`: the API server URL, overriding the kubeconfig's.
    pub master: Option<String>,
    /// `clientConnection.contentType`. kube-rs speaks JSON only: empty and
    /// `application/json` are used as they are; protobuf (client-go's choice for
    /// kube-proxy) and anything else are accepted with a warning, and JSON is used.
    pub content_type: String,
    /// `clientConnection.qps`. kube-rs has no client-side rate limiter (client-go's token
    /// bucket): this is accepted and not enforced. The watch source makes one list and one
    /// long-running watch per kind, and retries with exponential backoff (0.8 s doubling
    /// to 30 s, with jitter), so it stays far below kube-proxy's defaults (5 QPS, burst 10).
    pub qps: f32,
    /// `clientConnection.burst`: see [`qps`](ClientSettings::qps).
    pub burst: i32,
}

impl ClientSettings {
    /// Settings with everything unset: the in-cluster configuration.
    pub fn new() -> ClientSettings {
        ClientSettings::default()
    }

    /// Sets `--kubeconfig` (an empty path counts as not given).
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> ClientSettings {
        let path = path.into();
        self.kubeconfig = (!path.as_os_str().is_empty()).then_some(path);
        self
    }

    /// Sets `--master` (an empty URL counts as not given).
    pub fn master(mut self, url: impl Into<String>) -> ClientSettings {
        let url = url.into();
        self.master = (!url.trim().is_empty()).then(|| url.trim().to_owned());
        self
    }

    /// Sets `clientConnection.contentType`.
    pub fn content_type(mut self, content_type: impl Into<String>) -> ClientSettings {
        self.content_type = content_type.into();
        self
    }

    /// Sets `clientConnection.qps` and `clientConnection.burst` (not enforced: see
    /// [`qps`](ClientSettings::qps)).
    pub fn rate_limit(mut self, qps: f32, burst: i32) -> ClientSettings {
        self.qps = qps;
        self.burst = burst;
        self
    }
}

/// Parses `--master`: an `http://` or `https://` URL with a host, `https://` assumed
/// without a scheme. Generic so that the URI type is the one `kube::Config` uses.
fn master_uri<U>(url: &str) -> Result<U, Error>
where
    U: std::str::FromStr,
    U::Err: std::fmt::Display,
{
    let full = if url.contains("://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    };
    let invalid = |reason: String| Error::InvalidMaster {
        url: url.to_owned(),
        reason,
    };
    let rest = full
        .strip_prefix("http://")
        .or_else(|| full.strip_prefix("https://"))
        .ok_or_else(|| invalid("expected an http:// or https:// URL".into()))?;
    if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    full.parse().map_err(|e: U::Err| invalid(e.to_string()))
}

/// The kube-rs configuration `settings` describe (see [`ClientSettings`]); warns about
/// the settings kube-rs cannot honour.
pub async fn client_config(settings: &ClientSettings) -> Result<kube::Config, Error> {
    let content_type = settings.content_type.trim();
    if !content_type.is_empty() && content_type != JSON {
        if content_type == PROTOBUF {
            warn!(
                content_type,
                "clientConnection.contentType: kproxy's API client speaks JSON only; using JSON"
            );
        } else {
            warn!(
                content_type,
                "clientConnection.contentType: unknown content type; using JSON"
            );
        }
    }
    let kubeconfig = settings
        .kubeconfig
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty());
    let master = settings
        .master
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let mut config = match (kubeconfig, master) {
        (None, None) => {
            info!(
                "neither a kubeconfig file nor a master URL was given: using the in-cluster configuration"
            );
            kube::Config::incluster().map_err(Error::InCluster)?
        }
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.clone(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        (None, Some(url)) => kube::Config::new(master_uri(url)?),
    };
    if let Some(url) = master {
        config.cluster_url = master_uri(url)?;
    }
    Ok(config)
}

/// A client for the API server `settings` describe (see [`ClientSettings`]).
///
/// Must be called inside a Tokio runtime.
pub async fn client(settings: &ClientSettings) -> Result<kube::Client, Error> {
    let config = client_config(settings).await?;
    info!(server = %config.cluster_url, "API server");
    kube::Client::try_from(config).map_err(Error::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_urls() {
        let cfg = |s: &str| master_uri(s).map(|u| kube::Config::new(u).cluster_url.to_string());
        assert_eq!(
            cfg("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(cfg("10.0.0.1:6443").unwrap(), "https://10.0.0.1:6443/");
        assert!(cfg("ftp://x").is_err());
        assert!(cfg("http://").is_err());
        assert!(cfg("http://a b").is_err());
    }

    #[tokio::test]
    async fn master_overrides_the_kubeconfig_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{name: k, cluster: {server: 'https://10.1.1.1:6443'}}]\n\
             users: [{name: u, user: {token: abc}}]\n\
             contexts: [{name: c, context: {cluster: k, user: u}}]\n",
        )
        .unwrap();
        let settings = ClientSettings::new().kubeconfig(&path);
        let config = client_config(&settings).await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://10.1.1.1:6443/");
        let config = client_config(&settings.clone().master("http://127.0.0.1:1"))
            .await
            .unwrap();
        assert_eq!(config.cluster_url.to_string(), "http://127.0.0.1:1/");
        let err = client_config(&ClientSettings::new().kubeconfig(dir.path().join("missing")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
