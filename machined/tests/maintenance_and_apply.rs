//! Maintenance mode, config intake through the API, apply modes and rejection.

mod common;

use common::*;
use ros_api::machine::*;
use tonic::Code;

#[tokio::test]
async fn maintenance_mode_allows_only_version_apply_and_discovery() {
    let node = Node::start(&[]);
    let mut c = node.insecure().await;
    let v = c.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, "maintenance");
    assert_eq!(v.node, "test-node");
    assert!(c.disks(DisksRequest {}).await.is_ok());
    assert!(
        c.network_device_stats(NetworkDeviceStatsRequest {})
            .await
            .is_ok()
    );
    assert!(
        c.list_resources(ListResourcesRequest {
            r#type: "addresses".into()
        })
        .await
        .is_ok()
    );

    let denied = [
        c.reboot(RebootRequest {}).await.map(|_| ()),
        c.shutdown(ShutdownRequest {}).await.map(|_| ()),
        c.reset(ResetRequest::default()).await.map(|_| ()),
        c.service_list(ServiceListRequest {}).await.map(|_| ()),
        c.get_machine_config(GetMachineConfigRequest {})
            .await
            .map(|_| ()),
        c.memory(MemoryRequest {}).await.map(|_| ()),
        c.list_resources(ListResourcesRequest {
            r#type: "MachineStatus".into(),
        })
        .await
        .map(|_| ()),
        c.watch_resources(WatchResourcesRequest {
            r#type: "addresses".into(),
            id: String::new(),
        })
        .await
        .map(|_| ()),
    ];
    for (i, r) in denied.into_iter().enumerate() {
        let s = r.expect_err(&format!("call {i} must be refused in maintenance mode"));
        assert_eq!(s.code(), Code::PermissionDenied, "call {i}: {s:?}");
        assert!(
            s.message().contains("node is in maintenance mode"),
            "call {i}: {}",
            s.message()
        );
    }
}

#[tokio::test]
async fn accepted_config_is_stored_and_node_switches_to_mutual_tls() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    let yaml = pki.with_hostname("cp-1");
    let reply = node
        .insecure()
        .await
        .apply_configuration(ApplyConfigurationRequest {
            data: yaml.clone().into_bytes(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.accepted, "{:?}", reply.validation_errors);
    assert!(!reply.reboot_required);
    assert!(
        reply
            .changes
            .iter()
            .any(|c| c == "+ machine.network.hostname: \"cp-1\""),
        "{:?}",
        reply.changes
    );
    assert!(
        reply.changes.iter().all(|c| !c.contains(&pki.ca_key)),
        "secrets must not be echoed"
    );
    assert_eq!(node.state_config().as_deref(), Some(yaml.as_str()));
    // No temp file is left behind by the atomic write (STATE holds the config and the
    // machine id).
    let mut leftovers: Vec<String> = std::fs::read_dir(node.path("node/state"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    leftovers.sort();
    assert_eq!(leftovers, ["config.yaml", "machine-id"]);

    // Without a client certificate the configured node refuses (at the handshake or first call).
    let insecure =
        ros_api::client::connect(&node.addr, &ros_api::client::Credentials::Insecure).await;
    let refused = match insecure {
        Err(_) => true,
        Ok(mut c) => c.version(VersionRequest {}).await.is_err(),
    };
    assert!(
        refused,
        "a configured node must require a client certificate"
    );

    let mut admin = node.as_role(&pki, "os:admin").await;
    let v = admin.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, "configured");
    assert_eq!(v.node, "cp-1", "replies carry the configured node name");
    let hostname = admin.get_resource(GetResourceRequest {
        r#type: "hostname".into(),
        id: "hostname".into(),
    });
    let r = hostname.await.unwrap().into_inner().resource.unwrap();
    assert!(r.spec_json.contains("cp-1"));
}

#[tokio::test]
async fn rejected_config_lists_every_error_and_changes_nothing() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    let good = pki.with_hostname("cp-1");
    configure(&node, &pki, &good).await;
    let mut admin = node.as_role(&pki, "os:admin").await;

    let bad = pki.config_with(|d| {
        d["machine"]["type"] = "bogus".into();
        d["machine"]["network"] =
            serde_json::json!({"hostname": "cp-2", "nameservers": ["not-an-ip"]});
        d["machine"]["unknownField"] = true.into();
    });
    let reply = admin
        .apply_configuration(ApplyConfigurationRequest {
            data: bad.into_bytes(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.accepted);
    let errors = reply.validation_errors.join("\n");
    assert!(errors.contains("machine.type"), "{errors}");
    assert!(errors.contains("unknownField"), "{errors}");
    assert!(reply.validation_errors.len() >= 2, "{errors}");

    assert_eq!(node.state_config().as_deref(), Some(good.as_str()));
    let running = admin
        .get_machine_config(GetMachineConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running.yaml, good);
    assert_eq!(running.node, "cp-1");
}

#[tokio::test]
async fn dry_run_reports_changes_without_applying() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    let good = pki.with_hostname("cp-1");
    configure(&node, &pki, &good).await;
    let mut admin = node.as_role(&pki, "os:admin").await;
    let next = pki.with_hostname("cp-9");
    let reply = admin
        .apply_configuration(ApplyConfigurationRequest {
            data: next.into_bytes(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.accepted && reply.dry_run);
    assert_eq!(
        reply.changes,
        vec!["~ machine.network.hostname: \"cp-1\" -> \"cp-9\""]
    );
    assert_eq!(node.state_config().as_deref(), Some(good.as_str()));
    assert_eq!(
        admin
            .hostname(HostnameRequest {})
            .await
            .unwrap()
            .into_inner()
            .hostname,
        "cp-1"
    );
}

#[tokio::test]
async fn staged_takes_effect_at_next_boot_and_no_reboot_refuses_reboot_changes() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    configure(&node, &pki, &pki.with_hostname("cp-1")).await;
    let mut admin = node.as_role(&pki, "os:admin").await;

    let staged = pki.with_hostname("cp-staged");
    let reply = admin
        .apply_configuration(ApplyConfigurationRequest {
            data: staged.clone().into_bytes(),
            mode: ApplyMode::Staged as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.accepted);
    assert_eq!(node.state_config().as_deref(), Some(staged.as_str()));
    let cfg = admin
        .get_machine_config(GetMachineConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(cfg.yaml.contains("cp-1") && cfg.staged_yaml.contains("cp-staged"));

    // A change outside the live-applicable sections needs a reboot.
    let needs_reboot = pki.config_with(|d| {
        d["machine"]["network"] = serde_json::json!({"hostname": "cp-staged"});
        d["cluster"]["network"]["dnsDomain"] = "other.local".into();
    });
    let err = admin
        .apply_configuration(ApplyConfigurationRequest {
            data: needs_reboot.into_bytes(),
            mode: ApplyMode::NoReboot as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("cluster.network.dnsDomain"),
        "{}",
        err.message()
    );
    assert_eq!(node.state_config().as_deref(), Some(staged.as_str()));

    // The dev-mode reboot boots from STATE: the staged config becomes the running one.
    admin.reboot(RebootRequest {}).await.unwrap();
    eventually("the staged hostname after reboot", || {
        let mut c = admin.clone();
        async move {
            let h = c.hostname(HostnameRequest {}).await.ok()?.into_inner();
            (h.hostname == "cp-staged").then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn try_mode_rolls_back_unless_confirmed() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    let original = pki.with_hostname("cp-1");
    configure(&node, &pki, &original).await;
    let mut admin = node.as_role(&pki, "os:admin").await;

    let tried = pki.with_hostname("cp-try");
    let reply = admin
        .apply_configuration(ApplyConfigurationRequest {
            data: tried.clone().into_bytes(),
            mode: ApplyMode::Try as i32,
            try_timeout_seconds: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.accepted, "{:?}", reply.validation_errors);
    assert_eq!(
        admin
            .hostname(HostnameRequest {})
            .await
            .unwrap()
            .into_inner()
            .hostname,
        "cp-try"
    );
    assert_eq!(
        node.state_config().as_deref(),
        Some(original.as_str()),
        "try must not store the config"
    );
    eventually("the rollback to cp-1", || {
        let mut c = admin.clone();
        async move {
            (c.hostname(HostnameRequest {})
                .await
                .ok()?
                .into_inner()
                .hostname
                == "cp-1")
                .then_some(())
        }
    })
    .await;

    // Confirmed: a second apply (no-reboot) before the timeout keeps it.
    admin
        .apply_configuration(ApplyConfigurationRequest {
            data: tried.clone().into_bytes(),
            mode: ApplyMode::Try as i32,
            try_timeout_seconds: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .apply_configuration(ApplyConfigurationRequest {
            data: tried.clone().into_bytes(),
            mode: ApplyMode::NoReboot as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(node.state_config().as_deref(), Some(tried.as_str()));
    // The confirming apply cancelled the pending rollback (recorded as an event).
    let mut events = admin
        .events(EventsRequest { tail: 100 })
        .await
        .unwrap()
        .into_inner();
    let mut confirmed = false;
    let deadline = std::time::Duration::from_secs(10);
    while let Ok(Ok(Some(e))) = tokio::time::timeout(deadline, events.message()).await {
        if e.message.contains("tried config confirmed") {
            confirmed = true;
            break;
        }
    }
    assert!(confirmed, "the confirming apply must cancel the rollback");
}

#[tokio::test]
async fn reset_wipes_state_and_returns_to_maintenance() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    configure(&node, &pki, &pki.with_hostname("cp-1")).await;
    let mut admin = node.as_role(&pki, "os:admin").await;
    admin.reset(ResetRequest { graceful: true }).await.unwrap();
    assert_eq!(node.state_config(), None);
    let v = node
        .insecure()
        .await
        .version(VersionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.mode, "maintenance");
}

#[tokio::test]
async fn platform_config_is_accepted_at_boot() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "platform.yaml",
        &pki.with_hostname("from-platform"),
    );
    let node = Node::start_in(dir, &["--config", path.to_str().unwrap()]);
    let mut admin = node.as_role(&pki, "os:admin").await;
    let v = admin.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (v.mode.as_str(), v.node.as_str()),
        ("configured", "from-platform")
    );
    assert!(node.state_config().unwrap().contains("from-platform"));
}

/// The probe that made machined unresponsive: deeply nested YAML sent as a config in
/// maintenance mode (no credentials needed), several at once, with other calls in between.
#[tokio::test]
async fn deeply_nested_configs_are_refused_while_the_api_keeps_answering() {
    let node = Node::start(&[]);
    let deep = "[".repeat(200_000).into_bytes();
    let mut applies = Vec::new();
    for _ in 0..3 {
        let mut c = node.insecure().await;
        let data = deep.clone();
        applies.push(tokio::spawn(async move {
            c.apply_configuration(ApplyConfigurationRequest {
                data,
                ..Default::default()
            })
            .await
        }));
    }
    // A generous bound: a stalled machined fails the test instead of hanging it.
    let mut c = node.insecure().await;
    let version = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        c.version(VersionRequest {}),
    )
    .await
    .expect("machined did not answer Version while parsing the configs")
    .unwrap()
    .into_inner();
    assert_eq!(version.mode, "maintenance");
    for a in applies {
        let reply = tokio::time::timeout(std::time::Duration::from_secs(20), a)
            .await
            .expect("the apply did not finish")
            .unwrap()
            .unwrap()
            .into_inner();
        assert!(!reply.accepted);
        assert!(
            reply
                .validation_errors
                .iter()
                .any(|e| e.contains("nests deeper than 128 levels")),
            "{:?}",
            reply.validation_errors
        );
    }
}
