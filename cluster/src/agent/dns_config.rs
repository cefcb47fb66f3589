//! Each pod's `/etc/resolv.conf` and `/etc/hosts`, as the kubelet writes them: the DNS
//! policy (`ClusterFirst`, `ClusterFirstWithHostNet`, `Default`, `None`) picks the cluster DNS
//! server or the node's resolv.conf, then the pod's `dnsConfig` is merged in; the hosts file
//! names the pod (hostname, and its FQDN under a subdomain) and its hostAliases.
//!
//! The files live in the pod's directory under the agent root (removed with the pod) and
//! are bind-mounted read-only into every container of the pod.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// The kubelet's limits on what a resolv.conf may carry.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

/// The agent's DNS settings (`--cluster-dns`, `--cluster-domain`, `--resolv-conf`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The node's resolv.conf (for `Default` and host-network pods, and ClusterFirst search
    /// domains).
    pub host_resolv_conf: PathBuf,
    /// The node's hosts file (host-network pods see it).
    pub host_hosts: PathBuf,
    /// The agent's root directory; pods' files go under `pods/<ns>_<name>_<uid>/`.
    pub root_dir: PathBuf,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets the agent's DNS settings (once, at start).
pub fn init(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

/// The parts of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text (`nameserver`, `search`/`domain`, `options`; the last
    /// `search` line wins, as in glibc).
    pub fn parse(text: &str) -> ResolvConf {
        let mut out = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => out.nameservers.extend(words.next().map(String::from)),
                Some("search" | "domain") => {
                    out.searches = words.map(|w| w.trim_end_matches('.').to_string()).collect()
                }
                Some("options") => out.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        out
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for n in &self.nameservers {
            s.push_str(&format!("nameserver {n}\n"));
        }
        if !self.searches.is_empty() {
            s.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            s.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        s
    }
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Options by name, later ones overriding (the pod's over the base), first position kept.
fn merge_options(base: &[String], pod: &[(String, Option<String>)]) -> Vec<String> {
    let mut merged: Vec<(String, Option<String>)> = Vec::new();
    let mut set =
        |name: String, value: Option<String>| match merged.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => merged.push((name, value)),
        };
    for o in base {
        match o.split_once(':') {
            Some((n, v)) => set(n.to_string(), Some(v.to_string())),
            None => set(o.clone(), None),
        }
    }
    for (n, v) in pod {
        set(n.clone(), v.clone());
    }
    merged
        .into_iter()
        .map(|(n, v)| match v.filter(|v| !v.is_empty()) {
            Some(v) => format!("{n}:{v}"),
            None => n,
        })
        .collect()
}

/// The resolv.conf of `pod`, given the cluster DNS servers and domain and the node's file.
pub fn resolv_conf_for(
    pod: &Pod,
    cluster_dns: &[IpAddr],
    cluster_domain: &str,
    host: &ResolvConf,
) -> ResolvConf {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "ClusterFirst" if !host_network => Some(true),
        _ => Some(false), // Default, and ClusterFirst on the host network
    };
    let domain = cluster_domain.trim_end_matches('.');
    let mut conf = match cluster {
        None => ResolvConf::default(),
        // Without a cluster DNS server the kubelet falls back to the node's settings.
        Some(true) if !cluster_dns.is_empty() => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let mut searches = if domain.is_empty() {
                Vec::new()
            } else {
                vec![
                    format!("{ns}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.to_string(),
                ]
            };
            searches.extend(host.searches.iter().cloned());
            ResolvConf {
                nameservers: cluster_dns.iter().map(IpAddr::to_string).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        Some(_) => host.clone(),
    };
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        conf.nameservers
            .extend(extra.nameservers.iter().flatten().cloned());
        conf.searches
            .extend(extra.searches.iter().flatten().cloned());
        let pod_options: Vec<(String, Option<String>)> = extra
            .options
            .iter()
            .flatten()
            .filter_map(|o| Some((o.name.clone()?, o.value.clone())))
            .collect();
        conf.options = merge_options(&conf.options, &pod_options);
    }
    conf.nameservers = dedup(conf.nameservers);
    conf.nameservers.truncate(MAX_NAMESERVERS);
    let mut searches = Vec::new();
    let mut chars = 0;
    for s in dedup(conf.searches) {
        chars += s.len() + 1;
        if searches.len() == MAX_SEARCHES || chars > MAX_SEARCH_CHARS {
            break;
        }
        searches.push(s);
    }
    conf.searches = searches;
    conf
}

/// The pod's hostname as the kubelet gives it: `spec.hostname`, else the pod's name cut to
/// 63 characters (without a trailing `-` or `.`).
pub fn pod_hostname(pod: &Pod) -> String {
    if let Some(h) = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
    {
        return h;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

/// The kubelet-managed hosts file of a pod with address `pod_ip`.
pub fn hosts_file(pod: &Pod, pod_ip: &str, cluster_domain: &str) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let hostname = pod_hostname(pod);
    let subdomain = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.clone())
        .filter(|s| !s.is_empty());
    if !pod_ip.is_empty() {
        match subdomain {
            Some(sub) => {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                let domain = cluster_domain.trim_end_matches('.');
                s.push_str(&format!(
                    "{pod_ip}\t{hostname}.{sub}.{ns}.svc.{domain}\t{hostname}\n"
                ));
            }
            None => s.push_str(&format!("{pod_ip}\t{hostname}\n")),
        }
    }
    s.push_str(&host_aliases(pod));
    s
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_ref())
        .filter(|a| !a.is_empty());
    let Some(aliases) = aliases else {
        return String::new();
    };
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.clone().unwrap_or_default();
        if !names.is_empty() {
            s.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
        }
    }
    s
}

/// The pod's directory under the agent root (the one the pod worker removes with the pod).
fn pod_dir(root: &Path, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    root.join("pods").join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    ))
}

fn write(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("a file path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    ros_config::atomic_write(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn bind_ro(destination: &str, source: &Path) -> Value {
    json!({"destination": destination, "type": "bind", "source": source,
           "options": ["rbind", "rprivate", "ro"]})
}

/// Writes the pod's resolv.conf and hosts files and appends their mounts to `mounts`,
/// unless a volume is already mounted there. Does nothing before [`init`] (unit tests).
pub fn add_mounts(mounts: &mut Vec<Value>, pod: &Pod, pod_ip: &str) {
    let Some(settings) = SETTINGS.get() else {
        return;
    };
    if let Err(e) = add_mounts_with(settings, mounts, pod, pod_ip) {
        // The container still starts, with its image's own files.
        tracing::warn!(
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            error = format!("{e:#}"),
            "pod DNS files"
        );
    }
}

fn add_mounts_with(
    settings: &Settings,
    mounts: &mut Vec<Value>,
    pod: &Pod,
    pod_ip: &str,
) -> Result<()> {
    let taken = |dest: &str| mounts.iter().any(|m| m["destination"] == dest);
    let (resolv_taken, hosts_taken) = (taken("/etc/resolv.conf"), taken("/etc/hosts"));
    let dir = pod_dir(&settings.root_dir, pod);
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if !resolv_taken {
        let host_text = std::fs::read_to_string(&settings.host_resolv_conf).unwrap_or_default();
        let conf = resolv_conf_for(
            pod,
            &settings.cluster_dns,
            &settings.cluster_domain,
            &ResolvConf::parse(&host_text),
        );
        let path = dir.join("resolv.conf");
        write(&path, &conf.render())?;
        mounts.push(bind_ro("/etc/resolv.conf", &path));
    }
    if !hosts_taken {
        let text = if host_network {
            let node = std::fs::read_to_string(&settings.host_hosts).unwrap_or_default();
            format!("{node}{}", host_aliases(pod))
        } else {
            hosts_file(pod, pod_ip, &settings.cluster_domain)
        };
        let path = dir.join("hosts");
        write(&path, &text)?;
        mounts.push(bind_ro("/etc/hosts", &path));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn host() -> ResolvConf {
        ResolvConf::parse(
            "# host\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\noptions edns0 ndots:1\n",
        )
    }

    const DNS: &[IpAddr] = &[IpAddr::V4(std::net::Ipv4Addr::new(10, 43, 0, 10))];

    #[test]
    fn cluster_first_points_at_the_cluster_dns_with_the_kubernetes_search_path() {
        let conf = resolv_conf_for(
            &pod(json!({"containers": []})),
            DNS,
            "cluster.local",
            &host(),
        );
        assert_eq!(
            conf.render(),
            "nameserver 10.43.0.10\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn host_network_and_default_use_the_node_file_unless_cluster_first_with_host_net() {
        let h = host();
        let hostnet = resolv_conf_for(
            &pod(json!({"containers": [], "hostNetwork": true})),
            DNS,
            "cluster.local",
            &h,
        );
        assert_eq!(hostnet, h);
        let default = resolv_conf_for(
            &pod(json!({"containers": [], "dnsPolicy": "Default"})),
            DNS,
            "cluster.local",
            &h,
        );
        assert_eq!(default, h);
        let with_host_net = resolv_conf_for(
            &pod(
                json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
            ),
            DNS,
            "cluster.local",
            &h,
        );
        assert_eq!(with_host_net.nameservers, ["10.43.0.10"]);
        // No cluster DNS configured: ClusterFirst falls back to the node's settings.
        let none = resolv_conf_for(&pod(json!({"containers": []})), &[], "cluster.local", &h);
        assert_eq!(none, h);
    }

    #[test]
    fn none_takes_only_dns_config_and_options_merge_by_name() {
        let p = pod(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1", "1.1.1.1", "8.8.8.8"],
            "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
        }}));
        let conf = resolv_conf_for(&p, DNS, "cluster.local", &host());
        assert_eq!(
            conf.render(),
            "nameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch a.example\noptions ndots:2 edns0\n"
        );
        let merged = resolv_conf_for(
            &pod(json!({"containers": [], "dnsConfig": {
                "nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"],
                "searches": ["svc.cluster.local", "x.example"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "timeout", "value": "3"}],
            }})),
            DNS,
            "cluster.local",
            &ResolvConf::default(),
        );
        assert_eq!(
            merged.nameservers,
            ["10.43.0.10", "1.1.1.1", "2.2.2.2"],
            "at most 3"
        );
        assert_eq!(
            merged.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "x.example"
            ]
        );
        assert_eq!(merged.options, ["ndots:1", "timeout:3"]);
    }

    #[test]
    fn hosts_file_names_the_pod_and_its_aliases() {
        let p = pod(
            json!({"containers": [], "hostname": "db", "subdomain": "pg",
            "hostAliases": [{"ip": "192.0.2.9", "hostnames": ["foo.local", "bar.local"]}]}),
        );
        let text = hosts_file(&p, "10.42.0.7", "cluster.local");
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            text.contains("\n10.42.0.7\tdb.pg.shop.svc.cluster.local\tdb\n"),
            "{text}"
        );
        assert!(
            text.ends_with("# Entries added by HostAliases.\n192.0.2.9\tfoo.local\tbar.local\n"),
            "{text}"
        );
        let plain = hosts_file(
            &pod(json!({"containers": []})),
            "10.42.0.8",
            "cluster.local",
        );
        assert!(plain.ends_with("\n10.42.0.8\tweb-0\n"), "{plain}");
    }

    #[test]
    fn mounts_are_written_in_the_pod_directory_and_skip_volumes_there() {
        let root = tempfile::tempdir().unwrap();
        let host_resolv = root.path().join("resolv.conf");
        std::fs::write(&host_resolv, "nameserver 192.0.2.53\n").unwrap();
        let settings = Settings {
            cluster_dns: DNS.to_vec(),
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: host_resolv,
            host_hosts: root.path().join("hosts"),
            root_dir: root.path().to_path_buf(),
        };
        let p = pod(json!({"containers": []}));
        let mut mounts = vec![json!({"destination": "/etc/hosts", "type": "bind", "source": "/x"})];
        add_mounts_with(&settings, &mut mounts, &p, "10.42.0.7").unwrap();
        assert_eq!(mounts.len(), 2, "{mounts:?}");
        assert_eq!(mounts[1]["destination"], "/etc/resolv.conf");
        let written = root.path().join("pods/shop_web-0_u1/resolv.conf");
        assert_eq!(mounts[1]["source"], json!(written));
        assert!(
            std::fs::read_to_string(&written)
                .unwrap()
                .starts_with("nameserver 10.43.0.10\n")
        );
    }
}
