//! DaemonSet history end to end: ControllerRevisions per template with revision numbers and
//! the `controller-revision-hash` label on pods, the real kubectl's `rollout history`,
//! `rollout undo [--to-revision]` and `rollout restart`, `revisionHistoryLimit`, and the
//! revisions going with their DaemonSet. `cluster server` on SQLite with simulated nodes.

mod controllers_support;
mod kubectl_support;

use std::collections::BTreeMap;

use controllers_support::{Kubelet, active_pods, add_node, client, wait_for};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use kube::Client;
use kube::api::{Api, ListParams};
use kubectl_support::Server;

const HASH: &str = "controller-revision-hash";

fn daemonset(image: &str, cause: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  annotations:
    kubernetes.io/change-cause: {cause}
spec:
  revisionHistoryLimit: 2
  selector:
    matchLabels:
      app: agent
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 2
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: c
        image: {image}
"
    )
}

/// revision -> (hash label, image restored by its data), of the revisions of ds/agent.
async fn revisions(c: &Client) -> BTreeMap<i64, (String, String)> {
    let api: Api<ControllerRevision> = Api::namespaced(c.clone(), "default");
    api.list(&ListParams::default().labels("app=agent"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|cr| cr.metadata.deletion_timestamp.is_none())
        .map(|cr| {
            let hash = cr.metadata.labels.as_ref().unwrap()[HASH].clone();
            let data = &cr.data.as_ref().unwrap().0;
            let image = data["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (cr.revision, (hash, image))
        })
        .collect()
}

/// Waits until every node runs exactly one daemon pod, all with `image`; their hash.
async fn pods_settle(c: &Client, image: &str) -> String {
    wait_for(&format!("one {image} pod per node"), || async {
        let pods = active_pods(c, "default", "app=agent").await;
        let hashes: std::collections::BTreeSet<String> = pods
            .iter()
            .map(|p| p.metadata.labels.as_ref().unwrap()[HASH].clone())
            .collect();
        let images_ok = pods
            .iter()
            .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image));
        (pods.len() == 2 && images_ok && hashes.len() == 1)
            .then(|| hashes.into_iter().next().unwrap())
    })
    .await
}

/// `kubectl rollout history` rows: (revision, change-cause).
fn history(s: &Server) -> Vec<(i64, String)> {
    s.ok(&["rollout", "history", "ds/agent"])
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (rev, cause) = l.trim().split_once(char::is_whitespace).unwrap();
            (rev.parse().unwrap(), cause.trim().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_history_undo_restart_and_limit() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "node-a", &[]).await;
    add_node(&c, "node-b", &[]).await;
    let _kubelet = Kubelet::start(&c);
    let rollout = || s.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);

    // Revision 1: one ControllerRevision, controlled by the DaemonSet, its hash on the pods.
    s.ok_stdin(&["apply", "-f", "-"], &daemonset("busybox:1", "v1"));
    rollout();
    let h1 = pods_settle(&c, "busybox:1").await;
    let revs = revisions(&c).await;
    assert_eq!(revs, [(1, (h1.clone(), "busybox:1".into()))].into());
    let ds: DaemonSet = Api::namespaced(c.clone(), "default")
        .get("agent")
        .await
        .unwrap();
    let cr: ControllerRevision = Api::namespaced(c.clone(), "default")
        .get(&format!("agent-{h1}"))
        .await
        .unwrap();
    let owner = &cr.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("DaemonSet", ds.metadata.uid.as_deref().unwrap(), Some(true))
    );
    let table = s.ok(&["get", "controllerrevisions"]);
    assert!(
        table.contains(&format!("agent-{h1}")) && table.contains("daemonset.apps/agent"),
        "{table}"
    );

    // Revision 2: a new template.
    s.ok_stdin(&["apply", "-f", "-"], &daemonset("busybox:2", "v2"));
    rollout();
    let h2 = pods_settle(&c, "busybox:2").await;
    assert_ne!(h1, h2);
    assert_eq!(history(&s), [(1, "v1".into()), (2, "v2".into())]);
    let one = s.ok(&["rollout", "history", "ds/agent", "--revision=1"]);
    assert!(
        one.contains("busybox:1") && !one.contains("busybox:2"),
        "{one}"
    );

    // Undo to revision 1: its template comes back under its old hash, renumbered 3.
    let out = s.ok(&["rollout", "undo", "ds/agent", "--to-revision=1"]);
    assert!(out.contains("rolled back"), "{out}");
    rollout();
    assert_eq!(pods_settle(&c, "busybox:1").await, h1);
    let revs = wait_for("revision 1 renumbered to 3", || async {
        let r = revisions(&c).await;
        r.contains_key(&3).then_some(r)
    })
    .await;
    assert_eq!(
        revs,
        [
            (2, (h2.clone(), "busybox:2".into())),
            (3, (h1.clone(), "busybox:1".into())),
        ]
        .into()
    );
    // Undo to the template that already runs changes nothing.
    let out = s.ok(&["rollout", "undo", "ds/agent", "--to-revision=3"]);
    assert!(out.contains("skipped"), "{out}");
    s.fail(&["rollout", "undo", "ds/agent", "--to-revision=1"]);

    // Restart: a new template annotation, so a new revision and new pods.
    s.ok(&["rollout", "restart", "ds/agent"]);
    rollout();
    let h4 = wait_for("restarted pods", || async {
        let h = pods_settle(&c, "busybox:1").await;
        (h != h1).then_some(h)
    })
    .await;
    let revs = revisions(&c).await;
    assert_eq!(revs.keys().copied().collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(revs[&4].0, h4);

    // revisionHistoryLimit 2: a fifth template drops the oldest (revision 2).
    s.ok(&["set", "image", "ds/agent", "c=busybox:5"]);
    rollout();
    pods_settle(&c, "busybox:5").await;
    let revs = wait_for("revision 2 removed", || async {
        let r = revisions(&c).await;
        (r.len() == 3).then_some(r)
    })
    .await;
    assert_eq!(revs.keys().copied().collect::<Vec<_>>(), [3, 4, 5]);

    // A plain undo goes to the previous revision.
    s.ok(&["rollout", "undo", "ds/agent"]);
    rollout();
    assert_eq!(pods_settle(&c, "busybox:1").await, h4);

    // The revisions go with their DaemonSet.
    s.ok(&["delete", "ds", "agent"]);
    wait_for("revisions collected", || async {
        revisions(&c).await.is_empty().then_some(())
    })
    .await;
}
