//! `kubectl exec` end to end: the real kubectl 1.32 -> `cluster server` (pods/exec over
//! WebSocket) -> `cluster agent` -> a real containerd (task Exec) and back. Plus a TTY session
//! with a resize, driven over the WebSocket directly (kubectl -t needs a terminal). Needs root
//! and the Debian packages containerd, runc, busybox-static and kubectl.

#[path = "agent_support/harness.rs"]
mod agent_harness;
mod agent_support;
#[path = "kubectl_support/mod.rs"]
mod kubectl_support;

use std::sync::Arc;

use agent_harness::{Harness, NODE};
use agent_support::{IMAGE, wait_for};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PODS: &str = "apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/testbox:1
    command: [/bin/sleep, '1000']
    workingDir: /tmp
    env:
    - {name: WHO, value: main}
  - name: side
    image: docker.io/library/testbox:1
    command: [/bin/sleep, '1000']
    env:
    - {name: WHO, value: side}
---
apiVersion: v1
kind: Pod
metadata:
  name: stuck
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/not-in-containerd:1
    imagePullPolicy: Never
";

#[test]
fn kubectl_exec_runs_commands_in_containers() {
    assert_eq!(
        IMAGE, "docker.io/library/testbox:1",
        "PODS names the test image"
    );
    let h = Harness::start();
    h.server.ok_stdin(&["apply", "-f", "-"], PODS);
    wait_for(
        "pod shell running with both containers",
        || {
            format!(
                "pod: {:#}\n{}",
                h.pod("shell").unwrap_or_default(),
                h.context()
            )
        },
        || {
            let p = h.pod("shell")?;
            let all = p["status"]["containerStatuses"].as_array()?;
            (all.len() == 2 && all.iter().all(|c| c["state"]["running"].is_object())).then_some(())
        },
    );

    // Output, the container's context (working dir, env), and the default container.
    assert_eq!(
        h.ok(&["exec", "shell", "-c", "main", "--", "echo", "hi"], ""),
        "hi\n"
    );
    assert_eq!(
        h.ok(
            &[
                "exec",
                "shell",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "pwd; echo $WHO"
            ],
            ""
        ),
        "/tmp\nmain\n"
    );
    assert_eq!(
        h.ok(&["exec", "shell", "--", "sh", "-c", "echo $WHO"], ""),
        "main\n"
    );
    // -c picks the container.
    assert_eq!(
        h.ok(
            &["exec", "shell", "-c", "side", "--", "sh", "-c", "echo $WHO"],
            ""
        ),
        "side\n"
    );

    // stdout and stderr stay apart; the exit code reaches kubectl's own.
    let (code, out, err) = h.kubectl(
        &[
            "exec",
            "shell",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        "",
    );
    assert_eq!((code, out.as_str()), (3, "out\n"), "stderr: {err}");
    assert!(err.contains("err"), "{err}");
    assert_eq!(
        h.kubectl(&["exec", "shell", "-c", "main", "--", "false"], "")
            .0,
        1
    );

    // stdin, to EOF (v5's close message).
    let data = "line one\nline two\n".repeat(2000);
    assert_eq!(
        h.ok(&["exec", "-i", "shell", "-c", "main", "--", "cat"], &data),
        data
    );
    assert_eq!(
        h.ok(
            &[
                "exec",
                "-i",
                "shell",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "cat | busybox wc -l"
            ],
            "a\nb\nc\n"
        )
        .trim(),
        "3"
    );

    // A command that does not exist: kubectl reports the runtime's error.
    let (_, err) = h.fail(&["exec", "shell", "-c", "main", "--", "/no/such/command"]);
    assert!(err.contains("/no/such/command"), "{err}");

    // Errors: missing pod, missing container, a container that is not running.
    let (_, err) = h.fail(&["exec", "missing", "--", "true"]);
    assert!(
        err.contains("pods \"missing\" not found") && err.contains("NotFound"),
        "{err}"
    );
    let (_, err) = h.fail(&["exec", "shell", "-c", "nope", "--", "true"]);
    assert!(
        err.contains("container nope is not valid for pod shell"),
        "{err}"
    );
    wait_for(
        "pod stuck waiting",
        || format!("pod: {:#}", h.pod("stuck").unwrap_or_default()),
        || {
            h.pod("stuck")?["status"]["containerStatuses"][0]["state"]["waiting"]
                .is_object()
                .then_some(())
        },
    );
    let (_, err) = h.fail(&["exec", "stuck", "--", "true"]);
    assert!(err.contains("container not running"), "{err}");

    // A node may not exec into pods, not even its own.
    // (KUBECONFIG is a colon-separated list: the file name must have none.)
    let node = h.root.path().join("node.kubeconfig");
    std::fs::rename(
        h.server.kubeconfig_for("system:node:n1", &["system:nodes"]),
        &node,
    )
    .unwrap();
    let err = h
        .server
        .fail_with_kubeconfig(&node, &["exec", "shell", "-c", "main", "--", "true"]);
    assert!(
        err.contains("forbidden") || err.contains("Forbidden"),
        "{err}"
    );

    // A terminal: resize, then the size and a pty inside, and the exit status.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stdout, status) = rt.block_on(tty_session(&h.server.kubeconfig));
    assert!(
        stdout.contains("45 123"),
        "stty size under the terminal: {stdout:?}"
    );
    assert!(stdout.contains("/dev/pts/"), "tty: {stdout:?}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "5", "{status}");

    // The older protocols: v4 (the same Status), channel.k8s.io (plain text errors).
    let v4 = rt.block_on(ws_exec(
        &h.server.kubeconfig,
        "command=sh&command=-c&command=echo+v4%3B+exit+2&container=main&stdout=true",
        "v4.channel.k8s.io",
        &[],
    ));
    assert_eq!(
        (v4.protocol.as_str(), v4.stdout.as_str()),
        ("v4.channel.k8s.io", "v4\n"),
        "{}",
        String::from_utf8_lossy(&v4.error)
    );
    let status: Value = serde_json::from_slice(&v4.error).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "2", "{status}");
    let v1 = rt.block_on(ws_exec(
        &h.server.kubeconfig,
        "command=sh&command=-c&command=exit+2&container=main&stdout=true",
        "channel.k8s.io",
        &[],
    ));
    assert_eq!(v1.protocol, "channel.k8s.io");
    assert_eq!(
        String::from_utf8_lossy(&v1.error),
        "command terminated with exit code 2"
    );

    // SPDY clients are told to use WebSocket.
    let (line, body) = rt.block_on(spdy_exec(&h.server.kubeconfig));
    assert!(line.contains(" 400 "), "{line}\n{body}");
    assert!(
        body.contains("WebSocket") && body.contains("SPDY"),
        "{body}"
    );

    // kubectl's own terminal mode, under a pseudo-terminal from script(1).
    let out = std::process::Command::new("/usr/bin/script")
        .args(["-q", "-e", "-c"])
        .arg(format!(
            "{} exec -ti shell -c main -- sh -c 'busybox tty; exit 4'",
            kubectl_support::KUBECTL
        ))
        .arg("/dev/null")
        .env("KUBECONFIG", &h.server.kubeconfig)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) from util-linux (Debian package bsdutils)");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("/dev/pts/"), "{shown}");
    assert_eq!(out.status.code(), Some(4), "{shown}");

    // The node's exec endpoint itself only lets the API server in.
    let port: u16 = h
        .server
        .ok(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
        ])
        .trim()
        .parse()
        .unwrap();
    let refused = rt.block_on(exec_on_node_without_certificate(port));
    assert_eq!(refused.0, 403, "{}", refused.1);
    assert!(
        refused.1.contains("only to the API server"),
        "{}",
        refused.1
    );

    // A client that goes away mid-command: the process is killed and removed.
    let exec_dir = h.root.path().join("agent/exec");
    let entries = || std::fs::read_dir(&exec_dir).map(|d| d.count()).unwrap_or(0);
    let sleeper = h
        .server
        .spawn(&["exec", "shell", "-c", "main", "--", "sleep", "1000"]);
    wait_for(
        "the exec of sleep",
        || h.context(),
        || (entries() == 1).then_some(()),
    );
    let sleeping = || {
        h.containerd
            .lines(&["tasks", "ps", &h.container_id("shell", "main")])
            .len()
    };
    assert_eq!(
        sleeping(),
        3,
        "the task lists its process and the exec (and a header)"
    );
    drop(sleeper);
    wait_for(
        "the exec killed",
        || h.context(),
        || (sleeping() == 2).then_some(()),
    );

    // Every exec's process and FIFOs are gone.
    wait_for(
        "exec directories removed",
        || {
            format!(
                "left: {:?}",
                std::fs::read_dir(&exec_dir).map(|d| d.count())
            )
        },
        || {
            std::fs::read_dir(&exec_dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(true)
                .then_some(())
        },
    );
    let tasks = h.containerd.lines(&["tasks", "ls"]);
    assert!(!tasks.is_empty(), "containerd lists the pods' tasks");
}

/// The admin's TLS settings from the kubeconfig: server URL and a rustls client config.
fn admin_tls(kubeconfig: &std::path::Path) -> (String, Arc<rustls::ClientConfig>) {
    use base64::Engine;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let k: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    let b64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let cluster = &k["clusters"][0]["cluster"];
    let user = &k["users"][0]["user"];
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&b64(&cluster["certificate-authority-data"])) {
        roots.add(c.unwrap()).unwrap();
    }
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&b64(&user["client-certificate-data"]))
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_slice(&b64(&user["client-key-data"])).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    (
        cluster["server"].as_str().unwrap().to_string(),
        Arc::new(config),
    )
}

/// A TLS connection to the API server as the admin; and the server's host:port.
async fn api_connection(
    kubeconfig: &std::path::Path,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    String,
) {
    let (server, tls) = admin_tls(kubeconfig);
    let authority = server.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let host = authority.rsplit_once(':').unwrap().0.to_string();
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    (stream, authority)
}

/// What a WebSocket exec session gave back.
struct Session {
    protocol: String,
    stdout: String,
    /// The error stream's bytes (a Status JSON from v4 on, text before).
    error: Vec<u8>,
}

/// Runs pods/exec of pod shell over a WebSocket offering `protocols`, sends `send` (channel,
/// bytes) messages first, and reads until the server closes.
async fn ws_exec(
    kubeconfig: &std::path::Path,
    query: &str,
    protocols: &str,
    send: &[(u8, &[u8])],
) -> Session {
    let (stream, authority) = api_connection(kubeconfig).await;
    let url = format!("wss://{authority}/api/v1/namespaces/default/pods/shell/exec?{query}");
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let protocol = response.headers()["sec-websocket-protocol"]
        .to_str()
        .unwrap()
        .to_string();
    for (channel, data) in send {
        let mut m = vec![*channel];
        m.extend_from_slice(data);
        ws.send(Message::Binary(m.into())).await.unwrap();
    }
    let mut stdout = Vec::new();
    let mut error = Vec::new();
    let read = async {
        while let Some(m) = ws.next().await {
            let Ok(Message::Binary(b)) = m else {
                continue;
            };
            match b.split_first() {
                Some((1, data)) => stdout.extend_from_slice(data),
                Some((3, data)) => error.extend_from_slice(data),
                _ => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the exec session ends");
    Session {
        protocol,
        stdout: String::from_utf8_lossy(&stdout).to_string(),
        error,
    }
}

/// An exec with a terminal over `v5.channel.k8s.io`: sets the size, lets the shell go on, and
/// returns what the terminal showed and the final status.
async fn tty_session(kubeconfig: &std::path::Path) -> (String, Value) {
    let query = "command=sh&command=-c&command=read+go%3B+busybox+stty+size%3B+busybox+tty%3B+exit+5\
                 &container=main&stdin=true&stdout=true&tty=true";
    let s = ws_exec(
        kubeconfig,
        query,
        "v5.channel.k8s.io, v4.channel.k8s.io",
        &[(4, br#"{"Width":123,"Height":45}"#), (0, b"go\n")],
    )
    .await;
    assert_eq!(s.protocol, "v5.channel.k8s.io");
    (s.stdout, serde_json::from_slice(&s.error).unwrap())
}

/// An upgrade to SPDY (what kubectl before 1.30 asks for): the status code and body.
async fn spdy_exec(kubeconfig: &std::path::Path) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut stream, authority) = api_connection(kubeconfig).await;
    let request = format!(
        "POST /api/v1/namespaces/default/pods/shell/exec?command=true&container=main&stdout=true HTTP/1.1\r\n\
         Host: {authority}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the status line, headers and the (small) JSON body.
    while !String::from_utf8_lossy(&response).contains("}\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("an answer to the SPDY upgrade")
            .unwrap();
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.lines().next().unwrap_or("").to_string();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Trusts any server certificate (the agent's is self-signed), for the refusal check only.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A WebSocket exec request straight to the agent's kubelet port with no client certificate;
/// the HTTP status and body of the refusal.
async fn exec_on_node_without_certificate(port: u16) -> (u16, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let url =
        format!("wss://127.0.0.1:{port}/exec/default/shell/any/main?command=true&stdout=true");
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    match tokio_tungstenite::client_async(request, stream).await {
        Ok(_) => (
            101,
            "the node accepted an exec without a certificate".into(),
        ),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => (
            r.status().as_u16(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string(),
        ),
        Err(e) => (0, e.to_string()),
    }
}
