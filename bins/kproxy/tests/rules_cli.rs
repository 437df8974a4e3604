//! `kproxy rules`, the dry run, as a user runs it (no root needed).

use std::path::Path;
use std::process::Command;

fn kproxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kproxy"))
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

fn example_args() -> Vec<String> {
    vec![
        "rules".into(),
        "--source".into(),
        repo("examples/cluster"),
        "--config".into(),
        repo("examples/cluster/kube-proxy-config.yaml"),
    ]
}

#[test]
fn example_cluster_prints_both_families() {
    let out = kproxy().args(example_args()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v4 = text
        .find("# iptables-restore input (IPv4)\n")
        .expect("IPv4 header");
    let v6 = text
        .find("# ip6tables-restore input (IPv6)\n")
        .expect("IPv6 header");
    assert!(v4 < v6);
    let (v4_text, v6_text) = text.split_at(v6);
    // Both parse, and carry what a first sync on a fresh node creates besides the chains:
    // the canaries and the jumps from the built-in chains.
    for (part, family_ip) in [(v4_text, "10.96.12.80"), (v6_text, "fd00:10:96::c80")] {
        let rs = kproxy_iptables::save::parse(part).expect("restore input parses");
        let nat = rs.table("nat").unwrap();
        assert!(nat.chain_names().any(|c| c == "KUBE-PROXY-CANARY"));
        assert!(rs.table("mangle").is_some());
        assert!(part.contains(&format!("-d {family_ip} --dport 9090")));
        assert!(part.contains(
            "-I PREROUTING 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
        ));
    }
    // The headless Service is not proxied; the one without endpoints is rejected.
    assert!(!text.contains("shop/db"));
    assert!(text.contains("-A KUBE-SERVICES -m comment --comment \"shop/legacy:http has no endpoints\" -m tcp -p tcp -d 10.96.12.70 --dport 8000 -j REJECT\n"));
    // The production mark, as kube-proxy formats it.
    assert!(text.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000\n"));
}

/// The IPv4 restore input upstream kube-proxy would feed to iptables-restore for the
/// example cluster (reviewed against the spec; a regression guard for the whole pipeline
/// from manifests to text).
#[test]
fn example_cluster_upstream_restore_input_is_stable() {
    let mut args = example_args();
    args.push("--upstream-restore-input".into());
    let out = kproxy().args(&args).output().unwrap();
    assert!(out.status.success());
    let expected = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/example-cluster.upstream.rules"),
    )
    .unwrap();
    let got = String::from_utf8(out.stdout).unwrap();
    // --random-fully depends on the host's iptables version.
    let normalise = |s: &str| s.replace(" --random-fully", "");
    assert_eq!(normalise(&got), normalise(&expected));
}

#[test]
fn ip_family_selects_one_ruleset_without_header() {
    let mut args = example_args();
    args.extend(["--ip-family".into(), "ipv6".into()]);
    let out = kproxy().args(&args).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("*mangle\n"), "{text}");
    assert!(!text.contains("# ip"));
    assert!(!text.contains("10.96."));
    assert!(text.contains("fd00:10:96::c80"));
}

#[test]
fn bad_objects_are_reported_one_line_each_and_the_rest_is_compiled() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {namespace: a, name: good}\n\
         spec: {clusterIP: 10.96.0.5, ports: [{name: p, port: 80}]}\n\
         ---\n\
         apiVersion: v1\nkind: Service\nmetadata: {namespace: a, name: bad}\n\
         spec: {clusterIP: 10.96.0.6, ports: [{name: p, port: 80, protocol: ICMP}]}\n\
         ---\n\
         apiVersion: v1\nkind: Service\nmetadata: {namespace: a, name: worse}\n\
         spec: {clusterIP: 10.96.0.7, ports: [{name: p, port: eighty}]}\n",
    )
    .unwrap();
    let out = kproxy()
        .args(["rules", "--source"])
        .arg(dir.path())
        .args(["--hostname-override=n1", "--ip-family=ipv4"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Service a/"))
        .collect();
    assert_eq!(problems.len(), 2, "{stderr}");
    assert!(
        problems.iter().any(|l| l.contains("cluster.yaml")
            && l.contains("Service a/bad")
            && l.contains("spec.ports[0].protocol")
            && l.contains("ICMP")),
        "{stderr}"
    );
    assert!(
        problems
            .iter()
            .any(|l| l.contains("Service a/worse") && l.contains("spec.ports[0].port")),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("a/good:p has no endpoints"));
    assert!(!stdout.contains("a/worse"));
}

#[test]
fn unreadable_input_fails() {
    let out = kproxy()
        .args(["rules", "--source", "/nonexistent/kproxy/manifests"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kproxy/manifests"));
}

#[test]
fn invalid_configuration_names_the_field_and_fails() {
    let mut args = example_args();
    args.push("--iptables-masquerade-bit=40".into());
    let out = kproxy().args(&args).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("masqueradeBit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn repeated_flags_behave_as_in_kube_proxy() {
    // pflag: a scalar flag given twice takes the last value; a list flag accumulates.
    let mut args = example_args();
    args.extend(
        [
            "--iptables-masquerade-bit=40",
            "--iptables-masquerade-bit=15",
            "--nodeport-addresses=127.0.0.0/8",
            "--nodeport-addresses=192.168.49.0/24",
            "--node-addresses=127.0.0.1/8,192.168.49.2/24,10.9.9.9/32",
            "--ip-family=ipv4",
        ]
        .map(String::from),
    );
    let out = kproxy().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x00008000\n"));
    let last = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
    assert!(
        text.contains(&format!("{last} -d 127.0.0.1 -j KUBE-NODEPORTS\n")),
        "{text}"
    );
    assert!(text.contains(&format!("{last} -d 192.168.49.2 -j KUBE-NODEPORTS\n")));
    assert!(!text.contains(&format!("{last} -d 10.9.9.9")));
}
