//! The kube crate (kube-rs 5) against `cluster server`: typed CRUD, server-side apply, scale
//! and a watcher.

mod kubectl_support;

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config};
use kubectl_support::Server;
use serde_json::json;

async fn client(s: &Server) -> Client {
    let kc = Kubeconfig::read_from(&s.kubeconfig).expect("reading the kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    Client::try_from(config).expect("kube client")
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "kube-test"}},
        "data": {"key": value},
    }))
    .unwrap()
}

#[tokio::test]
async fn typed_crud() {
    let s = Server::start();
    let c = client(&s).await;
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"kube-system".to_string()), "{names:?}");

    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &configmap("one", "1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    let got = cms.get("one").await.unwrap();
    assert_eq!(got.data.unwrap()["key"], "1");

    // Replace with the current resourceVersion works; with a stale one it is a Conflict.
    let mut newer = cms.get("one").await.unwrap();
    let stale = newer.clone();
    newer.data = Some([("key".to_string(), "2".to_string())].into());
    cms.replace("one", &PostParams::default(), &newer)
        .await
        .unwrap();
    match cms.replace("one", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("expected a conflict, got {other:?}"),
    }

    cms.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"extra": "x"}})),
    )
    .await
    .unwrap();
    let listed = cms
        .list(&ListParams::default().labels("app=kube-test"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].data.as_ref().unwrap()["extra"], "x");

    cms.delete("one", &DeleteParams::default()).await.unwrap();
    match cms.get("one").await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (404, "NotFound")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn server_side_apply_and_scale() {
    let s = Server::start();
    let c = client(&s).await;
    let deploys: Api<Deployment> = Api::namespaced(c, "default");
    let manifest = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "ssa"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "ssa"}},
            "template": {"metadata": {"labels": {"app": "ssa"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}},
        },
    });
    let pp = PatchParams::apply("kube-test").force();
    let d = deploys
        .patch("ssa", &pp, &Patch::Apply(&manifest))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let mut changed = manifest.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    let d = deploys
        .patch("ssa", &pp, &Patch::Apply(&changed))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("nginx:2")
    );

    let scale = deploys.get_scale("ssa").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    deploys
        .patch_scale(
            "ssa",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(
        deploys.get("ssa").await.unwrap().spec.unwrap().replicas,
        Some(4)
    );
}

#[tokio::test]
async fn watcher_sees_changes() {
    let s = Server::start();
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    cms.create(&PostParams::default(), &configmap("before", "0"))
        .await
        .unwrap();
    let stream = watcher::watcher(
        cms.clone(),
        watcher::Config::default().labels("app=kube-test"),
    );
    let mut stream = Box::pin(stream);
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a watch event within 30 s")
            .expect("the stream goes on")
            .expect("no watch error")
    };
    // The initial list.
    let mut initial = Vec::new();
    loop {
        match next().await {
            Event::Init => {}
            Event::InitApply(cm) => initial.push(cm.metadata.name.unwrap()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, ["before"]);
    cms.create(&PostParams::default(), &configmap("after", "1"))
        .await
        .unwrap();
    match next().await {
        Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("after")),
        other => panic!("expected Apply, got {other:?}"),
    }
    cms.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    match next().await {
        Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("before")),
        other => panic!("expected Delete, got {other:?}"),
    }
}

#[tokio::test]
async fn metadata_only_get_list_and_watch() {
    let s = Server::start();
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    cms.create(&PostParams::default(), &configmap("meta", "1"))
        .await
        .unwrap();
    let m = cms.get_metadata("meta").await.unwrap();
    assert_eq!(m.metadata.labels.unwrap()["app"], "kube-test");
    let list = cms
        .list_metadata(&ListParams::default().labels("app=kube-test"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("meta"));
    let metadata_only: Api<PartialObjectMeta<ConfigMap>> =
        Api::namespaced(cms.clone().into_client(), "default");
    let stream = watcher::watcher(
        metadata_only,
        watcher::Config::default().labels("app=kube-test"),
    );
    let mut stream = Box::pin(stream);
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Event::InitApply(m) = ev {
            assert_eq!(m.metadata.name.as_deref(), Some("meta"));
            break;
        }
    }
}
