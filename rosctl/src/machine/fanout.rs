//! Running one call on several nodes at once. Each node's answer or error is kept, so one
//! failing node does not hide the others'.

use super::Dialer;
use ros_api::client::{self, Client};
use std::future::Future;

/// The outcome of a call on each target, in the order the targets were given.
pub async fn each<T, F, Fut>(
    targets: &[String],
    creds: &Dialer,
    call: F,
) -> Vec<(String, anyhow::Result<T>)>
where
    T: Send + 'static,
    F: Fn(Client) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, tonic::Status>> + Send,
{
    let mut set = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let (target, creds, call) = (target.clone(), creds.clone(), call.clone());
        set.spawn(async move {
            let result = match creds.connect(&target).await {
                Ok(c) => call(c).await.map_err(status_error),
                Err(e) => Err(e),
            };
            (i, target, result)
        });
    }
    let mut out: Vec<(usize, String, anyhow::Result<T>)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => out.push(r),
            Err(e) => out.push((
                usize::MAX,
                "?".into(),
                Err(anyhow::anyhow!("task failed: {e}")),
            )),
        }
    }
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, t, r)| (t, r)).collect()
}

/// A gRPC status as a readable error (code and message; transport details included).
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    let code = format!("{:?}", s.code());
    let mut msg = s.message().to_string();
    if let Some(source) = std::error::Error::source(&s) {
        msg = format!("{msg}: {}", client::error_chain(source));
    }
    anyhow::anyhow!("{code}: {msg}")
}

/// Prints each failure as `node TARGET: error` on stderr; returns the successes and whether
/// any target failed.
pub fn split<T>(results: Vec<(String, anyhow::Result<T>)>) -> (Vec<(String, T)>, bool) {
    let mut ok = Vec::new();
    let mut failed = false;
    for (target, r) in results {
        match r {
            Ok(v) => ok.push((target, v)),
            Err(e) => {
                failed = true;
                eprintln!("node {target}: {e:#}");
            }
        }
    }
    (ok, failed)
}
