//! `rosctl bootstrap` and `rosctl kubeconfig`: start the cluster on the first control plane,
//! and fetch an admin kubeconfig (written to a file, or merged into the user's kubeconfig
//! without clobbering other contexts).

use super::{Targets, fanout};
use clap::Args;
use ros_api::machine::{BootstrapRequest, KubeconfigRequest};
use serde_yaml_ng::{Mapping, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct KubeconfigArgs {
    /// Where to write it (`-` for stdout) [default: ./kubeconfig, or with --merge
    /// ~/.kube/config or the first file of $KUBECONFIG].
    pub path: Option<PathBuf>,
    /// Merge into an existing kubeconfig, keeping its other clusters, users and contexts
    /// (a clashing name gets a suffix, e.g. `admin@demo-1`).
    #[arg(long)]
    pub merge: bool,
    /// Overwrite an existing file; with --merge, replace entries of the same name instead of
    /// renaming the new ones.
    #[arg(long)]
    pub force: bool,
    /// Use this API server URL instead of the cluster endpoint in the config.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

/// Readable text of a refused bootstrap: the node's message, without the gRPC code for the
/// refusals a user causes.
fn bootstrap_error(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition => {
            anyhow::anyhow!("{}", s.message())
        }
        _ => fanout::status_error(s),
    }
}

pub async fn bootstrap(t: &Targets) -> anyhow::Result<bool> {
    if t.nodes.len() != 1 {
        anyhow::bail!(
            "bootstrap runs on exactly one control-plane node: pass one node with -n (got {})",
            t.nodes.len()
        );
    }
    let node = t.nodes[0].clone();
    let mut client = t.creds.connect(&node).await?;
    match client.bootstrap(BootstrapRequest {}).await {
        Ok(r) => {
            let r = r.into_inner();
            println!("{}: {}", r.node, r.message);
            Ok(false)
        }
        Err(s) => {
            eprintln!("node {node}: {}", bootstrap_error(s));
            Ok(true)
        }
    }
}

/// `$KUBECONFIG`'s first file, else `~/.kube/config`.
pub fn default_merge_target() -> anyhow::Result<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow::anyhow!("--merge: neither $KUBECONFIG nor $HOME is set"))?;
    Ok(PathBuf::from(home).join(".kube/config"))
}

pub async fn kubeconfig(t: &Targets, a: &KubeconfigArgs) -> anyhow::Result<bool> {
    let node = t
        .nodes
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no node to ask: pass -n"))?;
    let reply = fetch(t, &node).await?;
    let mut text = String::from_utf8(reply.kubeconfig)
        .map_err(|_| anyhow::anyhow!("node {node}: the kubeconfig is not UTF-8"))?;
    if let Some(server) = &a.server {
        text = with_server(&text, server)?;
    }
    if a.path.as_deref() == Some(Path::new("-")) {
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(false);
    }
    if a.merge {
        let target = match &a.path {
            Some(p) => p.clone(),
            None => default_merge_target()?,
        };
        let existing = match std::fs::read_to_string(&target) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => anyhow::bail!("{}: {e}", target.display()),
        };
        let (merged, context) = match existing {
            Some(old) => merge(&old, &text, a.force)
                .map_err(|e| anyhow::anyhow!("{}: {e}", target.display()))?,
            None => {
                let ctx = current_context(&text).unwrap_or_default();
                (text, ctx)
            }
        };
        write(&target, &merged)?;
        eprintln!(
            "kubeconfig from {} merged into {} (context {context}, now current)",
            reply.node,
            target.display()
        );
        return Ok(false);
    }
    let target = a
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from("kubeconfig"));
    if target.exists() && !a.force {
        anyhow::bail!(
            "{} exists: pass --force to overwrite it or --merge to merge into it",
            target.display()
        );
    }
    write(&target, &text)?;
    eprintln!(
        "kubeconfig from {} written to {}",
        reply.node,
        target.display()
    );
    Ok(false)
}

/// Fetches the admin kubeconfig through the Kubeconfig call (also used by `rosctl health`).
pub async fn fetch(t: &Targets, node: &str) -> anyhow::Result<ros_api::machine::KubeconfigReply> {
    let mut client = t.creds.connect(node).await?;
    client
        .kubeconfig(KubeconfigRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| anyhow::anyhow!("node {node}: {}", fanout::status_error(s)))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    }
    ros_config::atomic_write_private(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn parse(text: &str, what: &str) -> anyhow::Result<Mapping> {
    match serde_yaml_ng::from_str::<Value>(text)? {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        _ => anyhow::bail!("{what} is not a kubeconfig (not a YAML mapping)"),
    }
}

fn current_context(text: &str) -> Option<String> {
    parse(text, "kubeconfig")
        .ok()?
        .get("current-context")?
        .as_str()
        .map(str::to_string)
}

/// Replaces every cluster's server URL.
pub fn with_server(text: &str, server: &str) -> anyhow::Result<String> {
    let mut doc = parse(text, "the node's kubeconfig")?;
    if let Some(Value::Sequence(clusters)) = doc.get_mut("clusters") {
        for c in clusters {
            if let Some(Value::Mapping(inner)) = c.get_mut("cluster") {
                inner.insert("server".into(), server.into());
            }
        }
    }
    Ok(serde_yaml_ng::to_string(&doc)?)
}

fn named(list: &[Value]) -> Vec<String> {
    list.iter()
        .filter_map(|v| v.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// A name not in `taken`: `name`, else `name-1`, `name-2`, ...
fn free_name(name: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == name) {
        return name.to_string();
    }
    (1..)
        .map(|i| format!("{name}-{i}"))
        .find(|n| !taken.contains(n))
        .expect("some suffix is free")
}

/// Merges the kubeconfig `new` into `old`: the new clusters, users and contexts are added
/// (renamed on a name clash, or replacing the old entry with `force`) and the new context
/// becomes current. Returns the merged text and the new context's name.
pub fn merge(old: &str, new: &str, force: bool) -> anyhow::Result<(String, String)> {
    let mut doc = parse(old, "the existing file")?;
    let incoming = parse(new, "the node's kubeconfig")?;
    let list = |m: &Mapping, key: &str| -> Vec<Value> {
        match m.get(key) {
            Some(Value::Sequence(s)) => s.clone(),
            _ => vec![],
        }
    };
    let mut out: std::collections::BTreeMap<&str, Vec<Value>> = ["clusters", "users", "contexts"]
        .into_iter()
        .map(|k| (k, list(&doc, k)))
        .collect();
    // Old name -> new name, per kind, for the references inside contexts.
    let mut renamed: std::collections::BTreeMap<(&str, String), String> = Default::default();
    for kind in ["clusters", "users", "contexts"] {
        for mut entry in list(&incoming, kind) {
            let Some(name) = entry
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                continue;
            };
            let existing = out.get_mut(kind).expect("listed kind");
            let final_name = if force {
                existing.retain(|e| e.get("name").and_then(Value::as_str) != Some(&name));
                name.clone()
            } else {
                free_name(&name, &named(existing))
            };
            if let Value::Mapping(m) = &mut entry {
                m.insert("name".into(), final_name.clone().into());
                if kind == "contexts"
                    && let Some(Value::Mapping(ctx)) = m.get_mut("context")
                {
                    for (field, of) in [("cluster", "clusters"), ("user", "users")] {
                        let target = ctx.get(field).and_then(Value::as_str).map(str::to_string);
                        if let Some(t) = target
                            && let Some(n) = renamed.get(&(of, t))
                        {
                            ctx.insert(field.into(), n.clone().into());
                        }
                    }
                }
            }
            renamed.insert((kind, name), final_name);
            existing.push(entry);
        }
    }
    for (kind, entries) in out {
        doc.insert(kind.into(), Value::Sequence(entries));
    }
    let new_current = incoming
        .get("current-context")
        .and_then(Value::as_str)
        .map(|c| {
            renamed
                .get(&("contexts", c.to_string()))
                .cloned()
                .unwrap_or_else(|| c.to_string())
        })
        .unwrap_or_default();
    doc.insert("current-context".into(), new_current.clone().into());
    doc.entry("apiVersion".into()).or_insert("v1".into());
    doc.entry("kind".into()).or_insert("Config".into());
    Ok((serde_yaml_ng::to_string(&doc)?, new_current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cluster: &str, ctx: &str, server: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\nusers:\n- name: {ctx}\n  user:\n    token: t\ncontexts:\n- name: {ctx}\n  context:\n    cluster: {cluster}\n    user: {ctx}\ncurrent-context: {ctx}\n"
        )
    }

    fn names(text: &str, kind: &str) -> Vec<String> {
        let v: Value = serde_yaml_ng::from_str(text).unwrap();
        named(v[kind].as_sequence().unwrap())
    }

    #[test]
    fn merging_keeps_other_contexts_and_renames_clashes() {
        let old = config("other", "me@other", "https://o:6443");
        let (merged, ctx) =
            merge(&old, &config("demo", "admin@demo", "https://a:6443"), false).unwrap();
        assert_eq!(ctx, "admin@demo");
        assert_eq!(names(&merged, "contexts"), ["me@other", "admin@demo"]);
        // The same cluster again: every new name gets a suffix and the context follows.
        let (twice, ctx) = merge(
            &merged,
            &config("demo", "admin@demo", "https://b:6443"),
            false,
        )
        .unwrap();
        assert_eq!(ctx, "admin@demo-1");
        assert_eq!(names(&twice, "clusters"), ["other", "demo", "demo-1"]);
        let v: Value = serde_yaml_ng::from_str(&twice).unwrap();
        let last = &v["contexts"][2]["context"];
        assert_eq!(last["cluster"], "demo-1");
        assert_eq!(last["user"], "admin@demo-1");
        assert_eq!(v["current-context"], "admin@demo-1");
    }

    #[test]
    fn force_replaces_same_names() {
        let old = config("demo", "admin@demo", "https://a:6443");
        let (merged, ctx) =
            merge(&old, &config("demo", "admin@demo", "https://b:6443"), true).unwrap();
        assert_eq!(ctx, "admin@demo");
        assert_eq!(names(&merged, "clusters"), ["demo"]);
        let v: Value = serde_yaml_ng::from_str(&merged).unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://b:6443");
    }

    #[test]
    fn server_override() {
        let text = with_server(&config("demo", "a", "https://a:6443"), "https://x:1").unwrap();
        let v: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://x:1");
    }
}
