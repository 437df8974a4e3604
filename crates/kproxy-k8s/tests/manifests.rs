//! Golden tests for `kproxy_k8s::manifests`: formats, lists, broken input, directories.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use kproxy_k8s::Error;
use kproxy_k8s::manifests::{Manifests, load_path, load_str};
use kproxy_model::{Endpoint, IpFamily, IpMode, LoadBalancerIngress, ServiceType, TrafficPolicy};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn warnings(m: &Manifests) -> Vec<String> {
    m.warnings.iter().map(ToString::to_string).collect()
}

fn names<T>(items: &[T], f: impl Fn(&T) -> String) -> Vec<String> {
    items.iter().map(f).collect()
}

fn service_names(m: &Manifests) -> Vec<String> {
    names(&m.services, |s| format!("{}/{}", s.namespace, s.name))
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn kubectl_get_yaml_list() {
    let m = load_path(fixture("kubectl-get-svc-eps.yaml")).unwrap();
    assert_eq!(warnings(&m), Vec::<String>::new());
    assert_eq!(service_names(&m), ["default/kubernetes", "default/web"]);
    let web = &m.services[1];
    assert_eq!(web.service_type, ServiceType::LoadBalancer);
    assert_eq!(web.cluster_ips, vec![ip("10.96.120.15")]);
    assert_eq!(web.ports[0].node_port, 30080);
    assert_eq!(web.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(web.health_check_node_port, 31874);
    assert_eq!(
        web.load_balancer_ingress,
        vec![LoadBalancerIngress {
            ip: ip("203.0.113.7"),
            ip_mode: IpMode::Vip
        }]
    );
    assert_eq!(
        names(&m.endpoint_slices, |s| format!(
            "{}/{}",
            s.name, s.service_name
        )),
        ["kubernetes/kubernetes", "web-x7k2p/web"]
    );
    let web_eps = &m.endpoint_slices[1];
    assert_eq!(web_eps.endpoints.len(), 2);
    assert!(web_eps.endpoints[1].terminating && !web_eps.endpoints[1].ready);
    assert!(web_eps.trigger_time.is_some());
}

#[test]
fn kubectl_get_json_node() {
    let m = load_path(fixture("kubectl-get-node.json")).unwrap();
    assert_eq!(warnings(&m), Vec::<String>::new());
    assert_eq!(m.nodes.len(), 1);
    let node = &m.nodes[0];
    assert_eq!(node.name, "kind-worker");
    assert_eq!(node.primary_ip(IpFamily::V4), Some(ip("172.18.0.3")));
    assert_eq!(node.zone.as_deref(), Some("zone-a"));
    assert_eq!(node.pod_cidrs, vec!["10.244.1.0/24".parse().unwrap()]);
}

const SVC_A: &str = "apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
";

#[test]
fn multi_document_stream() {
    let text = format!(
        "# a comment
---
{SVC_A}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{a: b}}
---
---
apiVersion: v1
kind: Node
metadata: {{name: n1}}
...
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: a-1
  namespace: ns
  labels: {{kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{{name: '', port: 8080}}]
endpoints: [{{addresses: [10.0.0.1]}}]
"
    );
    let m = load_str(&text, "all.yaml");
    assert_eq!(warnings(&m), Vec::<String>::new());
    assert_eq!(service_names(&m), ["ns/a"]);
    assert_eq!(m.nodes[0].name, "n1");
    assert_eq!(
        m.endpoint_slices[0].endpoints,
        vec![Endpoint::ready(ip("10.0.0.1"))]
    );
}

#[test]
fn typed_lists_and_nested_lists() {
    // The API server's own list output omits each item's kind and apiVersion.
    let text = r#"
apiVersion: v1
kind: ServiceList
metadata: {resourceVersion: "1"}
items:
- metadata: {name: b, namespace: ns}
  spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
- apiVersion: v1
  kind: List
  items:
  - {apiVersion: v1, kind: Service, metadata: {name: c, namespace: ns}, spec: {clusterIP: 10.96.0.3}}
  - {apiVersion: v1, kind: Pod, metadata: {name: p}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSliceList
items:
- metadata: {name: b-1, namespace: ns, labels: {kubernetes.io/service-name: b}}
  addressType: IPv6
  endpoints: [{addresses: ["fd00::1"]}]
---
apiVersion: v1
kind: NodeList
items: [{metadata: {name: n2}}]
---
apiVersion: v1
kind: List
items: []
---
apiVersion: v1
kind: PodList
items: [{metadata: {name: p}, spec: {containers: []}}]
"#;
    let m = load_str(text, "lists.yaml");
    assert_eq!(warnings(&m), Vec::<String>::new());
    assert_eq!(service_names(&m), ["ns/b", "ns/c"]);
    assert_eq!(m.endpoint_slices[0].address_family, IpFamily::V6);
    assert_eq!(m.nodes[0].name, "n2");
}

#[test]
fn json_object_list_and_concatenation() {
    let one = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"j","namespace":"ns"},"spec":{"clusterIP":"10.96.0.9","ports":[{"port":53,"protocol":"UDP"}]}}"#;
    let m = load_str(one, "svc.json");
    assert_eq!(service_names(&m), ["ns/j"]);
    assert!(m.warnings.is_empty());

    let list = format!(r#"{{"apiVersion":"v1","kind":"List","items":[{one}],"metadata":{{}}}}"#);
    assert_eq!(service_names(&load_str(&list, "list.json")), ["ns/j"]);

    let two = format!("{one}\n{}", one.replace("\"j\"", "\"k\""));
    assert_eq!(service_names(&load_str(&two, "two.json")), ["ns/j", "ns/k"]);

    // Broken JSON after a good value: the good one stays.
    let m = load_str(&format!("{one}\n{{\"kind\": "), "broken.json");
    assert_eq!(service_names(&m), ["ns/j"]);
    assert_eq!(
        warnings(&m),
        [
            "broken.json: document 2: invalid JSON: EOF while parsing a value at line 2 column 9; the rest of the input is ignored"
        ]
    );

    // A YAML flow mapping is not JSON, but still a manifest.
    let m = load_str(
        "{apiVersion: v1, kind: Service, metadata: {name: f}, spec: {clusterIP: 10.96.0.4}}",
        "flow.yaml",
    );
    assert_eq!(service_names(&m), ["default/f"]);
}

#[test]
fn broken_documents_do_not_stop_the_others() {
    let text = format!(
        r#"- just
- a list
---
metadata: {{name: nokind}}
---
apiVersion: v1
kind: Service
metadata: {{name: bad, namespace: ns}}
spec:
  ports:
  - port: "eighty"
---
{SVC_A}---
kind: 7
---
apiVersion: v1
kind: Service
metadata: {{name: dup, namespace: ns}}
metadata: {{name: dup2, namespace: ns}}
---
kind: Service
metadata: {{name: noversion}}
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata: {{name: old, namespace: ns}}
---
apiVersion: v1
kind: List
items: [1, {{apiVersion: v1, kind: Node}}]
---
apiVersion: v1
kind: Service
metadata: {{name: late, namespace: ns}}
spec: {{clusterIP: 10.96.0.77, externalIPs: [1.2.3]}}
"#
    );
    let m = load_str(&text, "broken.yaml");
    assert_eq!(service_names(&m), ["ns/a", "ns/late"]);
    assert_eq!(
        warnings(&m),
        [
            "broken.yaml: document 1: not a mapping but a sequence; ignored",
            "broken.yaml: document 2: no kind; ignored",
            "broken.yaml: Service ns/bad: spec.ports[0].port: invalid type: string \"eighty\", expected i32; Service ignored",
            "broken.yaml: document 5: kind is a number, not a string; ignored",
            "broken.yaml: document 6: invalid YAML: duplicate mapping key: metadata, set DuplicateKeyPolicy in Options if acceptable at line 23, column 1; document ignored",
            "broken.yaml: Service default/noversion: apiVersion: missing; ignored",
            "broken.yaml: EndpointSlice ns/old: apiVersion: discovery.k8s.io/v1beta1 is not supported (use discovery.k8s.io/v1); ignored",
            "broken.yaml: document 9, items[0]: not a mapping but a number; ignored",
            "broken.yaml: Node <unnamed>: metadata.name: missing",
            "broken.yaml: Service ns/late: spec.externalIPs[0]: invalid IP address \"1.2.3\"; ignored",
        ]
    );
}

#[test]
fn yaml_syntax_error_keeps_what_came_before() {
    let text = format!("{SVC_A}---\napiVersion: v1\nkind: [Service\n---\n{SVC_A}");
    let m = load_str(&text, "syntax.yaml");
    assert_eq!(service_names(&m), ["ns/a"]);
    let w = warnings(&m);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("syntax.yaml: document 2: invalid YAML: ")
            && w[0].ends_with("; the rest of the input is ignored"),
        "{w:?}"
    );
}

#[test]
fn single_document_problems_have_no_document_number() {
    assert_eq!(
        warnings(&load_str("just a string", "s.yaml")),
        ["s.yaml: not a mapping but a string; ignored"]
    );
    assert_eq!(warnings(&load_str("", "")), Vec::<String>::new());
    assert_eq!(
        warnings(&load_str("\u{feff}# only a comment\n", "c.yaml")),
        Vec::<String>::new()
    );
    assert_eq!(
        warnings(&load_str("kind: List\nitems: {a: 1}\n", "l.yaml")),
        ["l.yaml: items: List items are a mapping, not a sequence; ignored"]
    );
}

#[test]
fn duplicates_last_one_wins() {
    let second = SVC_A.replace("10.96.0.1", "10.96.0.2");
    let m = load_str(&format!("{SVC_A}---\n{second}"), "dup.yaml");
    assert_eq!(m.services.len(), 1);
    assert_eq!(m.services[0].cluster_ips, vec![ip("10.96.0.2")]);
    assert_eq!(
        warnings(&m),
        ["dup.yaml: Service ns/a: defined again; this definition replaces the one in dup.yaml"]
    );
    // A later definition that kube-proxy does not see removes the earlier one.
    let hidden = SVC_A.replace(
        "namespace: ns}",
        "namespace: ns, labels: {service.kubernetes.io/service-proxy-name: other}}",
    );
    let m = load_str(&format!("{SVC_A}---\n{hidden}"), "");
    assert!(m.services.is_empty());
    assert_eq!(
        warnings(&m),
        ["Service ns/a: defined again; this definition replaces the earlier one"]
    );
    // Different kinds or namespaces are different objects.
    let other_ns = SVC_A.replace("namespace: ns", "namespace: other");
    let m = load_str(&format!("{SVC_A}---\n{other_ns}"), "");
    assert_eq!(service_names(&m), ["ns/a", "other/a"]);
    assert!(m.warnings.is_empty());
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn directory_with_a_broken_file_beside_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "b-services.yaml", SVC_A);
    write(
        d,
        "a/node.json",
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n"}}"#,
    );
    write(
        d,
        "c/broken.yml",
        "apiVersion: v1\nkind: Service\n  bad: [indent\n",
    );
    write(d, "c/svc.YAML", &SVC_A.replace("name: a", "name: z"));
    write(d, "notes.txt", "not: a manifest");
    write(d, ".hidden.yaml", "not even: [yaml");
    write(
        d,
        "..data/svc.yaml",
        &SVC_A.replace("name: a", "name: hidden"),
    );
    let m = load_path(d).unwrap();
    assert_eq!(service_names(&m), ["ns/a", "ns/z"]);
    assert_eq!(m.nodes.len(), 1);
    let w = warnings(&m);
    assert_eq!(w.len(), 1, "{w:?}");
    let broken = d.join("c/broken.yml").display().to_string();
    assert!(
        w[0].starts_with(&format!("{broken}: invalid YAML: ")),
        "{w:?}"
    );
}

#[test]
fn unreadable_input_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let err = load_path(&missing).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {}: ", missing.display())),
        "{err}"
    );

    let binary = dir.path().join("x.yaml");
    fs::write(&binary, b"kind: \xff\xfe").unwrap();
    let err = load_path(&binary).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not valid UTF-8 (first invalid byte at offset 6)",
            binary.display()
        )
    );
    // The same file inside a directory fails the directory too.
    assert!(matches!(load_path(dir.path()), Err(Error::NotUtf8 { .. })));
}

#[cfg(unix)]
#[test]
fn symlinks_to_files_are_followed_but_not_to_directories() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "real/svc.yaml", SVC_A);
    std::os::unix::fs::symlink(d.join("real/svc.yaml"), d.join("link.yaml")).unwrap();
    std::os::unix::fs::symlink(d, d.join("real/loop")).unwrap();
    let m = load_path(d).unwrap();
    // Loaded twice (the file and the link): the second is a duplicate.
    assert_eq!(service_names(&m), ["ns/a"]);
    assert_eq!(m.warnings.len(), 1);
}

#[test]
fn hostile_input_is_bounded() {
    let start = Instant::now();

    // Deep nesting, in YAML and JSON.
    let deep_yaml = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let w = warnings(&load_str(&deep_yaml, "deep.yaml"));
    assert_eq!(w.len(), 1, "{w:?}");
    let deep_json = format!(
        "{{\"kind\": {}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let w = warnings(&load_str(&deep_json, "deep.json"));
    assert_eq!(w.len(), 1, "{w:?}");
    let deep_block: String = (0..500).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
    assert_eq!(warnings(&load_str(&deep_block, "block.yaml")).len(), 1);

    // A billion laughs.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, next) in ('a'..='h').zip('b'..='i') {
        let refs = vec![format!("*{prev}"); 9].join(",");
        bomb.push_str(&format!("{next}: &{next} [{refs}]\n"));
    }
    let w = warnings(&load_str(&bomb, "bomb.yaml"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("bomb.yaml: invalid YAML: "), "{w:?}");

    // Giant numbers and odd names.
    let text = "apiVersion: v1
kind: Service
metadata: {name: \"we\\u0000ird\\nname\\u001b[31m\", namespace: ns}
spec: {clusterIP: 10.96.0.1, ports: [{port: 99999999999999999999999999999}]}
";
    assert_eq!(
        warnings(&load_str(text, "big.yaml")),
        [
            "big.yaml: Service ns/we\\u{0}ird\\nname\\u{1b}[31m: spec.ports[0].port: invalid type: floating point `1e+29`, expected i32; Service ignored"
        ]
    );
    let text = "apiVersion: v1
kind: Service
metadata: {name: x, namespace: ns}
spec: {clusterIP: 10.96.0.1, ports: [{port: 2147483648}]}
";
    assert_eq!(
        warnings(&load_str(text, "big.yaml")),
        [
            "big.yaml: Service ns/x: spec.ports[0].port: invalid value: integer `2147483648`, expected i32; Service ignored"
        ]
    );

    // A huge name is shortened in warnings.
    let long = "n".repeat(100_000);
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {long}}}\nspec: {{clusterIP: 1.2.3}}\n"
    );
    let m = load_str(&text, "long.yaml");
    assert_eq!(m.services.len(), 1);
    let w = warnings(&m);
    assert!(w[0].len() < 400, "{}", w[0].len());

    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}

#[test]
fn warnings_are_capped() {
    let items = vec!["1"; 12_000].join(",");
    let m = load_str(
        &format!("{{\"kind\": \"List\", \"items\": [{items}]}}"),
        "many.json",
    );
    assert_eq!(m.warnings.len(), 10_001);
    assert_eq!(
        m.warnings[9_999].to_string(),
        "many.json: items[9999]: not a mapping but a number; ignored"
    );
    assert_eq!(
        m.warnings[10_000].to_string(),
        "2000 more warnings not shown (at most 10000 are kept)"
    );
}
