//! `rosctl get <type> [id] [-w] [-o table|json|yaml]`.

use super::output::{ellipsize, print, table};
use super::{Targets, fanout};
use clap::{Args, ValueEnum};
use ros_api::machine::{
    GetResourceRequest, ListResourcesRequest, Resource, ResourceTypesRequest, WatchEventType,
    WatchResourcesRequest,
};
use serde_json::json;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Resource type or alias (`rd` lists the types).
    pub r#type: String,
    /// Resource id (all of the type when omitted).
    pub id: Option<String>,
    /// Keep printing changes.
    #[arg(short, long)]
    pub watch: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
    /// Connect without a client certificate (maintenance mode).
    #[arg(short, long)]
    pub insecure: bool,
}

pub async fn run(t: &Targets, a: &GetArgs) -> anyhow::Result<bool> {
    if matches!(a.r#type.as_str(), "rd" | "resourcedefinitions" | "types") {
        return types(t).await;
    }
    if a.watch {
        return watch(t, a).await;
    }
    let (kind, id) = (a.r#type.clone(), a.id.clone());
    let results = fanout::each(&t.nodes, &t.creds, move |mut c| {
        let (kind, id) = (kind.clone(), id.clone());
        async move {
            match id {
                Some(id) => c
                    .get_resource(GetResourceRequest { r#type: kind, id })
                    .await
                    .map(|r| r.into_inner())
                    .map(|r| (r.node, r.resource.into_iter().collect::<Vec<_>>())),
                None => c
                    .list_resources(ListResourcesRequest { r#type: kind })
                    .await
                    .map(|r| r.into_inner())
                    .map(|r| (r.node, r.resources)),
            }
        }
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let rows: Vec<(String, Resource)> = ok
        .into_iter()
        .flat_map(|(_, (node, list))| list.into_iter().map(move |r| (node.clone(), r)))
        .collect();
    match a.output {
        Format::Table => {
            let mut tb = table(&["NODE", "TYPE", "ID", "VERSION", "SPEC"]);
            for (node, r) in &rows {
                tb.add_row(vec![
                    node.clone(),
                    r.r#type.clone(),
                    r.id.clone(),
                    r.version.to_string(),
                    ellipsize(&r.spec_json, 80),
                ]);
            }
            print(tb);
        }
        Format::Json => {
            for (node, r) in &rows {
                println!("{}", serde_json::to_string_pretty(&as_json(node, r))?);
            }
        }
        Format::Yaml => {
            for (node, r) in &rows {
                print!("---\n{}", serde_yaml_ng::to_string(&as_json(node, r))?);
            }
        }
    }
    Ok(failed)
}

fn as_json(node: &str, r: &Resource) -> serde_json::Value {
    let spec: serde_json::Value =
        serde_json::from_str(&r.spec_json).unwrap_or(serde_json::Value::Null);
    json!({"node": node, "type": r.r#type, "id": r.id, "version": r.version, "updated": r.updated, "spec": spec})
}

async fn types(t: &Targets) -> anyhow::Result<bool> {
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        c.resource_types(ResourceTypesRequest {})
            .await
            .map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let mut tb = table(&["NODE", "TYPE", "ALIASES", "DESCRIPTION"]);
    for (_, r) in ok {
        for ty in r.types {
            tb.add_row(vec![
                r.node.clone(),
                ty.name,
                ty.aliases.join(","),
                ty.description,
            ]);
        }
    }
    print(tb);
    Ok(failed)
}

/// Streams events from every node; ends when all streams end (or on Ctrl-C).
async fn watch(t: &Targets, a: &GetArgs) -> anyhow::Result<bool> {
    let mut set = tokio::task::JoinSet::new();
    if a.output == Format::Table {
        println!(
            "{:<10} {:<16} {:<16} {:<24} {:<8} SPEC",
            "EVENT", "NODE", "TYPE", "ID", "VERSION"
        );
    }
    for target in t.nodes.clone() {
        let (creds, kind, id, format) = (
            t.creds.clone(),
            a.r#type.clone(),
            a.id.clone().unwrap_or_default(),
            a.output,
        );
        set.spawn(async move {
            let mut c = creds
                .connect(&target)
                .await
                .map_err(|e| (target.clone(), e))?;
            let mut stream = c
                .watch_resources(WatchResourcesRequest { r#type: kind, id })
                .await
                .map_err(|s| (target.clone(), fanout::status_error(s)))?
                .into_inner();
            loop {
                let item = match stream.message().await {
                    Ok(Some(item)) => item,
                    Ok(None) => return Ok(()),
                    Err(s) => return Err((target.clone(), fanout::status_error(s))),
                };
                let event =
                    WatchEventType::try_from(item.event).unwrap_or(WatchEventType::Existing);
                let Some(r) = item.resource else { continue };
                let name = match event {
                    WatchEventType::Existing => "",
                    WatchEventType::Created => "created",
                    WatchEventType::Updated => "updated",
                    WatchEventType::Deleted => "deleted",
                    WatchEventType::Bookmark => continue,
                };
                match format {
                    Format::Table => println!(
                        "{:<10} {:<16} {:<16} {:<24} {:<8} {}",
                        name,
                        item.node,
                        r.r#type,
                        r.id,
                        r.version,
                        ellipsize(&r.spec_json, 80)
                    ),
                    Format::Json => {
                        let mut v = as_json(&item.node, &r);
                        v["event"] = json!(name);
                        println!("{}", serde_json::to_string(&v).unwrap_or_default());
                    }
                    Format::Yaml => {
                        let mut v = as_json(&item.node, &r);
                        v["event"] = json!(name);
                        print!("---\n{}", serde_yaml_ng::to_string(&v).unwrap_or_default());
                    }
                }
            }
        });
    }
    let mut failed = false;
    while let Some(done) = set.join_next().await {
        if let Ok(Err((target, e))) = done {
            failed = true;
            eprintln!("node {target}: {e:#}");
        }
    }
    Ok(failed)
}
