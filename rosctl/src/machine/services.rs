//! `rosctl services`, `service <id> [start|stop|restart]`, `restart <id>`, `logs`, `dmesg`.

use super::output::{print, table};
use super::{Targets, fanout};
use clap::{Args, ValueEnum};
use ros_api::client;
use ros_api::machine::{
    DmesgRequest, LogChunk, LogsRequest, ServiceActionRequest, ServiceListRequest,
};
use std::io::Write;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

#[derive(Args, Debug)]
pub struct ServiceArgs {
    /// Service id.
    pub id: String,
    /// What to do (show the service when omitted).
    #[arg(value_enum)]
    pub action: Option<Action>,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// Service id.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Service id, or `machined`.
    pub id: String,
    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub tail: u32,
}

#[derive(Args, Debug)]
pub struct DmesgArgs {
    #[arg(short, long)]
    pub follow: bool,
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub tail: u32,
}

pub async fn list(t: &Targets) -> anyhow::Result<bool> {
    show(t, None).await
}

async fn show(t: &Targets, only: Option<String>) -> anyhow::Result<bool> {
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        c.service_list(ServiceListRequest {})
            .await
            .map(|r| r.into_inner())
    })
    .await;
    let (ok, mut failed) = fanout::split(results);
    let mut tb = table(&[
        "NODE", "SERVICE", "STATE", "HEALTHY", "PID", "RESTARTS", "SINCE", "MESSAGE",
    ]);
    let mut found = false;
    for (_, r) in ok {
        for s in r
            .services
            .into_iter()
            .filter(|s| only.as_ref().is_none_or(|id| &s.id == id))
        {
            found = true;
            let pid = if s.pid > 0 {
                s.pid.to_string()
            } else {
                "-".into()
            };
            tb.add_row(vec![
                r.node.clone(),
                s.id,
                s.state,
                if s.healthy { "yes".into() } else { "no".into() },
                pid,
                s.restarts.to_string(),
                s.since,
                s.message,
            ]);
        }
    }
    if let Some(id) = only
        && !found
    {
        eprintln!("service {id:?} not found");
        failed = true;
    }
    print(tb);
    Ok(failed)
}

pub async fn service(t: &Targets, a: &ServiceArgs) -> anyhow::Result<bool> {
    let Some(action) = a.action else {
        return show(t, Some(a.id.clone())).await;
    };
    let id = a.id.clone();
    let results = fanout::each(&t.nodes, &t.creds, move |mut c| {
        let req = ServiceActionRequest { id: id.clone() };
        async move {
            let reply = match action {
                Action::Start => c.service_start(req).await,
                Action::Stop => c.service_stop(req).await,
                Action::Restart => c.service_restart(req).await,
            };
            reply.map(|r| r.into_inner())
        }
    })
    .await;
    let (ok, failed) = fanout::split(results);
    for (_, r) in ok {
        println!("{}: {}", r.node, r.message);
    }
    Ok(failed)
}

pub async fn restart(t: &Targets, a: &RestartArgs) -> anyhow::Result<bool> {
    service(
        t,
        &ServiceArgs {
            id: a.id.clone(),
            action: Some(Action::Restart),
        },
    )
    .await
}

pub async fn logs(t: &Targets, a: &LogsArgs) -> anyhow::Result<bool> {
    let req = LogsRequest {
        id: a.id.clone(),
        follow: a.follow,
        tail: a.tail,
    };
    stream(t, move |mut c| {
        let req = req.clone();
        async move { c.logs(req).await.map(|r| r.into_inner()) }
    })
    .await
}

pub async fn dmesg(t: &Targets, a: &DmesgArgs) -> anyhow::Result<bool> {
    let req = DmesgRequest {
        follow: a.follow,
        tail: a.tail,
    };
    stream(t, move |mut c| async move {
        c.dmesg(req).await.map(|r| r.into_inner())
    })
    .await
}

/// Prints log chunks from every node as they arrive; lines are prefixed with the node name
/// when more than one node is asked.
async fn stream<F, Fut>(t: &Targets, open: F) -> anyhow::Result<bool>
where
    F: Fn(client::Client) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<tonic::Streaming<LogChunk>, tonic::Status>> + Send,
{
    let prefix = t.nodes.len() > 1;
    let mut set = tokio::task::JoinSet::new();
    for target in t.nodes.clone() {
        let (creds, open) = (t.creds.clone(), open.clone());
        set.spawn(async move {
            let c = creds
                .connect(&target)
                .await
                .map_err(|e| (target.clone(), e))?;
            let mut s = open(c)
                .await
                .map_err(|e| (target.clone(), fanout::status_error(e)))?;
            loop {
                match s.message().await {
                    Ok(Some(chunk)) => {
                        let text = String::from_utf8_lossy(&chunk.data);
                        let mut out = std::io::stdout().lock();
                        for line in text.lines() {
                            let _ = if prefix {
                                writeln!(out, "{}: {line}", chunk.node)
                            } else {
                                writeln!(out, "{line}")
                            };
                        }
                        let _ = out.flush();
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => return Err((target.clone(), fanout::status_error(e))),
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
