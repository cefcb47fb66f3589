//! A rolling update respects maxSurge and maxUnavailable at every step: the pods' state is
//! rebuilt from one watch stream (events arrive in revision order), and after each event the
//! number of pods and of ready pods is checked.

mod controllers_support;
mod kubectl_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use controllers_support::{Kubelet, add_node, client, wait_for};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use kubectl_support::Server;

#[derive(Default, Debug)]
struct Seen {
    max_pods: usize,
    min_ready: usize,
    steps: usize,
}

async fn rolling_update(surge: &str, unavailable: &str) -> Seen {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "n1", &[]).await;
    add_node(&c, "n2", &[]).await;
    let _kubelet = Kubelet::start(&c);
    let manifest = |image: &str| {
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata:
  name: roll
spec:
  replicas: 4
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: {surge}
      maxUnavailable: {unavailable}
  selector:
    matchLabels:
      app: roll
  template:
    metadata:
      labels:
        app: roll
    spec:
      containers:
      - name: app
        image: {image}
"
        )
    };
    s.ok_stdin(&["apply", "-f", "-"], &manifest("nginx:1"));
    s.ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);

    // From here on, every state the pods pass through is checked.
    let seen = Arc::new(Mutex::new(Seen {
        max_pods: 0,
        min_ready: usize::MAX,
        steps: 0,
    }));
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let seen2 = seen.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let mut ready_tx = Some(ready_tx);
    let watch = tokio::spawn(async move {
        let mut state: HashMap<String, (bool, bool)> = HashMap::new();
        let mut stream = watcher(pods, watcher::Config::default().labels("app=roll")).boxed();
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            let mut update = |p: &Pod, gone: bool| {
                let name = p.metadata.name.clone().unwrap_or_default();
                if gone || p.metadata.deletion_timestamp.is_some() {
                    state.remove(&name);
                } else {
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    state.insert(name, (true, ready));
                }
            };
            let settled = match &ev {
                watcher::Event::Apply(p) => {
                    update(p, false);
                    true
                }
                watcher::Event::Delete(p) => {
                    update(p, true);
                    true
                }
                watcher::Event::Init => {
                    state.clear();
                    false
                }
                watcher::Event::InitApply(p) => {
                    update(p, false);
                    false
                }
                watcher::Event::InitDone => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                    true
                }
            };
            if settled {
                let ready = state.values().filter(|(_, r)| *r).count();
                let mut s = seen2.lock().unwrap();
                s.max_pods = s.max_pods.max(state.len());
                s.min_ready = s.min_ready.min(ready);
                s.steps += 1;
            }
        }
    });
    ready_rx.await.unwrap();
    s.ok_stdin(&["apply", "-f", "-"], &manifest("nginx:2"));
    s.ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    wait_for("old pods gone", || async {
        let pods = controllers_support::active_pods(&c, "default", "app=roll").await;
        (pods.len() == 4
            && pods.iter().all(|p| {
                p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:2")
            }))
        .then_some(())
    })
    .await;
    watch.abort();
    std::mem::take(&mut *seen.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surge_one_unavailable_zero() {
    let seen = rolling_update("1", "0").await;
    assert!(seen.steps > 8, "{seen:?}");
    assert!(
        seen.max_pods <= 5,
        "never more than replicas + maxSurge: {seen:?}"
    );
    assert!(
        seen.min_ready >= 4,
        "never fewer ready than replicas - maxUnavailable: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surge_zero_unavailable_two() {
    let seen = rolling_update("0", "2").await;
    assert!(seen.steps > 8, "{seen:?}");
    assert!(seen.max_pods <= 4, "{seen:?}");
    assert!(seen.min_ready >= 2, "{seen:?}");
    assert!(
        seen.min_ready < 4,
        "with no surge it must go below 4 ready: {seen:?}"
    );
}
