//! Watch and list edge cases against an in-process API server on the SQLite store: history
//! that was compacted away is 410 Gone (an ERROR event for a watch), as clients expect.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, VersionMatch, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use ros_store::Store;
use ros_store::sqlite::SqliteStore;

async fn start() -> (
    tempfile::TempDir,
    Arc<dyn Store>,
    Client,
    cluster::apiserver::Running,
) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("state.db"))
            .await
            .unwrap(),
    );
    let opts = cluster::apiserver::Options {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        tls_sans: vec![],
        connections: Default::default(),
    };
    let running = cluster::apiserver::start(opts, store.clone())
        .await
        .unwrap();
    let kc = Kubeconfig::read_from(&running.kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    (dir, store, Client::try_from(config).unwrap(), running)
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"test": "paging"}}, "data": {"a": "b"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn compacted_history_is_gone() {
    let (_dir, store, client, _running) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let old_rv = first.metadata.resource_version.unwrap();
    for n in ["b", "c"] {
        cms.create(&PostParams::default(), &cm(n)).await.unwrap();
    }
    let now = store.current_revision().await.unwrap();
    store.compact(now).await.unwrap();

    let mut events = cms
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}"),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    let lp = ListParams::default()
        .at(&old_rv)
        .matching(VersionMatch::Exact);
    match cms.list(&lp).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 410, "{e:?}"),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // From the current revision all is well, and a new change arrives.
    let mut events = cms
        .watch(&WatchParams::default(), &now.to_string())
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("d")).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("d")),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let (_dir, _store, client, _running) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..7 {
        cms.create(&PostParams::default(), &cm(&format!("cm-{i}")))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().labels("test=paging").limit(3);
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.into_iter().filter_map(|c| c.metadata.name));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => {
                lp = ListParams::default()
                    .labels("test=paging")
                    .limit(3)
                    .continue_token(&token)
            }
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..7).map(|i| format!("cm-{i}")).collect();
    assert_eq!(names, want);
    // A field selector on the name reads just that object.
    let one = cms
        .list(&ListParams::default().fields("metadata.name=cm-4"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
}
