//! Resources (read and watch) and the services supervisor through the API.

mod common;

use common::*;
use ros_api::machine::*;

#[tokio::test]
async fn resources_are_listed_and_watched() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    configure(&node, &pki, &pki.with_hostname("cp-1")).await;
    let mut admin = node.as_role(&pki, "os:admin").await;

    let mut watch = admin
        .watch_resources(WatchResourcesRequest {
            r#type: "Hostname".into(),
            id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.event, WatchEventType::Existing as i32);
    assert!(first.resource.unwrap().spec_json.contains("cp-1"));
    assert_eq!(
        watch.message().await.unwrap().unwrap().event,
        WatchEventType::Bookmark as i32
    );

    let next = pki.config_with(|d| {
        d["machine"]["network"] = serde_json::json!({
            "hostname": "cp-2",
            "nameservers": ["10.0.0.53"],
            "interfaces": [{"interface": "eth0", "addresses": ["10.5.0.2/24"], "mtu": 1400,
                            "routes": [{"network": "0.0.0.0/0", "gateway": "10.5.0.1"}]}]
        });
    });
    let reply = admin
        .apply_configuration(ApplyConfigurationRequest {
            data: next.into_bytes(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.accepted, "{:?}", reply.validation_errors);
    let changed = watch.message().await.unwrap().unwrap();
    assert_eq!(changed.event, WatchEventType::Updated as i32);
    let r = changed.resource.unwrap();
    assert!(r.spec_json.contains("cp-2"));
    assert_eq!(r.version, 2);
    assert_eq!(changed.node, "cp-2");

    let addrs = admin
        .list_resources(ListResourcesRequest {
            r#type: "addressspec".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = addrs.resources.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, vec!["eth0/10.5.0.2/24"]);
    // The status: what the (fake) system has on its links once the controller applied it.
    let on_links = eventually("the static address on eth0 in the Addresses status", || {
        let mut c = admin.clone();
        async move {
            let list = c
                .list_resources(ListResourcesRequest {
                    r#type: "addresses".into(),
                })
                .await
                .ok()?
                .into_inner();
            (!list.resources.is_empty()).then_some(list.resources)
        }
    })
    .await;
    assert_eq!(on_links.len(), 1, "{on_links:?}");
    assert_eq!(on_links[0].r#type, "Addresses");
    assert_eq!(on_links[0].id, "eth0/10.5.0.2/24");
    assert!(
        on_links[0].spec_json.contains(r#""source":"static""#),
        "{}",
        on_links[0].spec_json
    );
    let routes = admin
        .list_resources(ListResourcesRequest {
            r#type: "routes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(routes.resources[0].spec_json.contains("10.5.0.1"));

    // The dev system recorded the effects (visible in dmesg).
    eventually("recorded network effects", || {
        let mut c = admin.clone();
        async move {
            let mut s = c
                .dmesg(DmesgRequest {
                    follow: false,
                    tail: 0,
                })
                .await
                .ok()?
                .into_inner();
            let mut text = String::new();
            while let Ok(Some(chunk)) = s.message().await {
                text.push_str(&String::from_utf8_lossy(&chunk.data));
            }
            (text.contains("dev: addresses eth0 [10.5.0.2/24]")
                && text.contains("dev: link eth0 up mtu 1400"))
            .then_some(())
        }
    })
    .await;

    let unknown = admin
        .list_resources(ListResourcesRequest {
            r#type: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

const SERVICES: &str = r#"
- id: sleeper
  command: /bin/sleep
  args: ["1000"]
- id: talker
  command: /bin/sh
  args: ["-c", "echo hello from talker; echo second line; exec /bin/sleep 1000"]
  dependsOn: [sleeper]
"#;

#[tokio::test]
async fn services_restart_after_crash_and_logs_are_served() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let services = write(dir.path(), "services.yaml", SERVICES);
    let platform = write(dir.path(), "platform.yaml", &pki.with_hostname("cp-1"));
    let node = Node::start_in(
        dir,
        &[
            "--services",
            services.to_str().unwrap(),
            "--config",
            platform.to_str().unwrap(),
        ],
    );
    let mut admin = node.as_role(&pki, "os:admin").await;

    let watcher = admin.clone();
    let running = |id: &'static str| {
        let c = watcher.clone();
        move || {
            let mut c = c.clone();
            async move {
                let list = c
                    .service_list(ServiceListRequest {})
                    .await
                    .ok()?
                    .into_inner();
                list.services
                    .into_iter()
                    .find(|s| s.id == id && s.state == "running" && s.pid > 0)
            }
        }
    };
    let first = eventually("sleeper running", running("sleeper")).await;
    eventually("talker running after its dependency", running("talker")).await;

    // Kill the service's process; the supervisor must start a new one.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let again = eventually("sleeper restarted", || {
        let mut c = admin.clone();
        async move {
            let list = c
                .service_list(ServiceListRequest {})
                .await
                .ok()?
                .into_inner();
            list.services.into_iter().find(|s| {
                s.id == "sleeper" && s.state == "running" && s.pid != first.pid && s.pid > 0
            })
        }
    })
    .await;
    assert_eq!(again.restarts, 1);

    // Logs: tail and the file under EPHEMERAL.
    let mut logs = admin
        .logs(LogsRequest {
            id: "talker".into(),
            follow: false,
            tail: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = logs.message().await.unwrap() {
        assert_eq!(chunk.node, "cp-1");
        text.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    assert!(text.contains("hello from talker\nsecond line\n"), "{text}");
    let file = std::fs::read_to_string(node.path("node/ephemeral/log/talker.log")).unwrap();
    assert!(file.contains("hello from talker"));

    // Stop, then start again through the API.
    admin
        .service_stop(ServiceActionRequest {
            id: "sleeper".into(),
        })
        .await
        .unwrap();
    eventually("sleeper stopped", || {
        let mut c = admin.clone();
        async move {
            let list = c
                .service_list(ServiceListRequest {})
                .await
                .ok()?
                .into_inner();
            list.services
                .into_iter()
                .find(|s| s.id == "sleeper" && s.state == "stopped")
        }
    })
    .await;
    admin
        .service_start(ServiceActionRequest {
            id: "sleeper".into(),
        })
        .await
        .unwrap();
    eventually("sleeper running again", running("sleeper")).await;

    // Follow: a restart request is logged by the supervisor while we follow.
    let mut follow = admin
        .logs(LogsRequest {
            id: "talker".into(),
            follow: true,
            tail: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let _ = follow.message().await.unwrap().unwrap();
    admin
        .service_restart(ServiceActionRequest {
            id: "talker".into(),
        })
        .await
        .unwrap();
    let mut followed = String::new();
    while !followed.contains("hello from talker") {
        let chunk = follow.message().await.unwrap().unwrap();
        followed.push_str(&String::from_utf8_lossy(&chunk.data));
    }
}
