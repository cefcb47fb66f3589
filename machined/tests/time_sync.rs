//! SNTP time sync in dev mode against tiny SNTP servers this test runs on 127.0.0.1: the
//! simulated clock is stepped by the server's offset (the host clock is never touched), a
//! silent server is skipped for the next one, and a round where every server fails is
//! reported in TimeStatus.

mod common;

use common::*;
use ros_api::machine::*;
use serde_json::Value;
use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The servers' clocks run this far ahead of the host's.
const OFFSET_SECS: i64 = 1800;

fn host_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// An NTP timestamp (era 0: seconds since 1900 and a 32-bit fraction), written out here
/// independently of machined's encoder.
fn ntp_timestamp(unix_nanos: i128) -> [u8; 8] {
    let secs = (unix_nanos / 1_000_000_000 + 2_208_988_800) as u64;
    let frac = (((unix_nanos % 1_000_000_000) << 32) / 1_000_000_000) as u64;
    ((secs << 32) | frac).to_be_bytes()
}

/// An SNTP server on 127.0.0.1 whose clock is `offset_secs` ahead of the host's. It answers
/// until the test ends (the thread stops when its socket read times out after the test).
fn sntp_server(offset_secs: i64) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    sock.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 48 || buf[0] & 7 != 3 {
                continue;
            }
            let received = host_nanos() + offset_secs as i128 * 1_000_000_000;
            let mut reply = [0u8; 48];
            reply[0] = (4 << 3) | 4; // version 4, server
            reply[1] = 2; // stratum
            reply[12..16].copy_from_slice(&[127, 0, 0, 1]);
            reply[24..32].copy_from_slice(&buf[40..48]); // originate = the client's transmit
            reply[32..40].copy_from_slice(&ntp_timestamp(received));
            let sent = host_nanos() + offset_secs as i128 * 1_000_000_000;
            reply[40..48].copy_from_slice(&ntp_timestamp(sent));
            let _ = sock.send_to(&reply, from);
        }
    });
    addr
}

/// A UDP port that swallows requests and never answers (held open by the returned socket).
fn silent_server() -> (UdpSocket, String) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    (sock, addr)
}

async fn time_status(c: &mut ros_api::client::Client) -> Option<Value> {
    let r = c
        .get_resource(GetResourceRequest {
            r#type: "timestatus".into(),
            id: "node".into(),
        })
        .await
        .ok()?
        .into_inner()
        .resource?;
    serde_json::from_str(&r.spec_json).ok()
}

async fn dmesg(c: &mut ros_api::client::Client) -> String {
    let mut s = c
        .dmesg(DmesgRequest {
            follow: false,
            tail: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    while let Ok(Some(chunk)) = s.message().await {
        text.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    text
}

#[tokio::test]
async fn clock_follows_the_first_server_that_answers_and_failures_are_reported() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    let (_silent, dead) = silent_server();
    let live = sntp_server(OFFSET_SECS);
    let servers = vec![dead.clone(), live.clone()];
    let yaml = pki.config_with(|d| {
        d["machine"]["network"] = serde_json::json!({"hostname": "clock"});
        d["machine"]["time"] = serde_json::json!({"servers": servers});
    });
    configure(&node, &pki, &yaml).await;
    let mut admin = node.as_role(&pki, "os:admin").await;

    // The silent server costs one query timeout, then the live one answers.
    let status = eventually("TimeStatus synced", || {
        let mut c = admin.clone();
        async move { time_status(&mut c).await.filter(|s| s["synced"] == true) }
    })
    .await;
    assert_eq!(status["server"], live.as_str(), "{status}");
    assert_eq!(status["adjustment"], "step", "{status}");
    let offset = status["offsetSeconds"].as_f64().unwrap();
    assert!(
        (offset - OFFSET_SECS as f64).abs() < 2.0,
        "measured offset {offset}: {status}"
    );
    let skipped = status["serverErrors"].to_string();
    assert!(
        skipped.contains(&dead) && skipped.contains("no reply"),
        "{status}"
    );
    assert!(status["lastSync"].is_string(), "{status}");

    // The fake clock recorded the step (and only the simulated clock moved).
    let kernel_log = dmesg(&mut admin).await;
    let step = kernel_log
        .lines()
        .find_map(|l| l.strip_prefix("dev: clock step +"))
        .unwrap_or_else(|| panic!("no clock step recorded:\n{kernel_log}"));
    let stepped: f64 = step.trim_end_matches('s').parse().unwrap();
    assert!((stepped - OFFSET_SECS as f64).abs() < 2.0, "{step}");

    // The Time call reports the synchronised (simulated) clock, about the offset ahead.
    let time = admin.time(TimeRequest {}).await.unwrap().into_inner();
    assert!(time.synced);
    assert_eq!(time.servers, vec![dead.clone(), live.clone()]);
    // The reply carries the sync's details, the same as the TimeStatus resource.
    assert_eq!(time.server, live, "{time:?}");
    assert_eq!(
        Some(time.offset.as_str()),
        status["offset"].as_str(),
        "{time:?}"
    );
    assert_eq!(
        Some(time.last_sync.as_str()),
        status["lastSync"].as_str(),
        "{time:?}"
    );
    assert_eq!(time.error, "", "{time:?}");
    let node_time = time::OffsetDateTime::parse(
        &time.local_time,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ahead = node_time.unix_timestamp() - (host_nanos() / 1_000_000_000) as i64;
    assert!(
        (ahead - OFFSET_SECS).abs() <= 2,
        "node clock {} is {ahead}s ahead",
        time.local_time
    );

    // Only a silent server left: the round fails and says why.
    let yaml = pki.config_with(|d| {
        d["machine"]["network"] = serde_json::json!({"hostname": "clock"});
        d["machine"]["time"] = serde_json::json!({"servers": [dead]});
    });
    let reply = admin
        .apply_configuration(ApplyConfigurationRequest {
            data: yaml.into_bytes(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.accepted, "{:?}", reply.validation_errors);
    let failed = eventually("TimeStatus error", || {
        let mut c = admin.clone();
        async move { time_status(&mut c).await.filter(|s| s["error"].is_string()) }
    })
    .await;
    assert_eq!(failed["synced"], false, "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains(&dead) && error.contains("no reply within"),
        "{error}"
    );
    let time = admin.time(TimeRequest {}).await.unwrap().into_inner();
    assert!(!time.synced, "{time:?}");
    assert_eq!(time.error, error, "{time:?}");
}

#[tokio::test]
async fn time_servers_are_validated_by_field() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    let yaml = pki.config_with(|d| {
        d["machine"]["time"] =
            serde_json::json!({"servers": ["ok.example.com:123", "bad host", "10.0.0.1:0"]});
    });
    let reply = node
        .insecure()
        .await
        .apply_configuration(ApplyConfigurationRequest {
            data: yaml.into_bytes(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.accepted);
    let errors = reply.validation_errors.join("\n");
    assert!(errors.contains("machine.time.servers[1]"), "{errors}");
    assert!(errors.contains("machine.time.servers[2]"), "{errors}");
    assert!(!errors.contains("machine.time.servers[0]"), "{errors}");
}
