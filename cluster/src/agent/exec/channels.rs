//! Kubernetes' remote command stream protocol over WebSocket (what `kubectl exec` speaks):
//! binary messages whose first byte names the stream. Stdin 0, stdout 1, stderr 2, error 3
//! (the final `metav1.Status`), resize 4 (`{"Width":w,"Height":h}`); `v5.channel.k8s.io` adds
//! 255 = "the sender closed stream N" (how a client says stdin reached EOF).

use serde_json::{Value, json};

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
/// The original binary protocol: the error stream carries plain text.
pub const V1: &str = "channel.k8s.io";
/// The subprotocols this node and the API server speak, in no particular order.
pub const SUPPORTED: [&str; 3] = [V5, V4, V1];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// The subprotocol to answer with: the first one the client offers that is supported (the
/// client lists its preference first, as Kubernetes' handshake honours). A client offering
/// none at all gets the original protocol (and no `Sec-WebSocket-Protocol` header).
pub fn negotiate(offered: &str) -> Result<Option<&'static str>, String> {
    let offered: Vec<&str> = offered
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(None);
    }
    offered
        .iter()
        .find_map(|o| SUPPORTED.iter().find(|s| *s == o).copied())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "none of the offered WebSocket subprotocols ({}) is supported; use one of {}",
                offered.join(", "),
                SUPPORTED.join(", ")
            )
        })
}

/// One message on stream `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    m
}

/// How the command ended, as reported on the error stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Exited(u32),
    /// The command could not run (not found, runtime failure) or the session broke.
    Failed(String),
}

/// The error stream's message for `outcome` under `protocol`, or None when nothing is sent
/// (success under the original protocol).
pub fn status_message(protocol: &str, command: &[String], outcome: &Outcome) -> Option<Vec<u8>> {
    if protocol == V4 || protocol == V5 {
        return Some(status(command, outcome).to_string().into_bytes());
    }
    match outcome {
        Outcome::Exited(0) => None,
        Outcome::Exited(code) => {
            Some(format!("command terminated with exit code {code}").into_bytes())
        }
        Outcome::Failed(msg) => Some(msg.clone().into_bytes()),
    }
}

/// The `metav1.Status` the v4+ protocols end with; client-go turns `NonZeroExitCode` with an
/// `ExitCode` cause into the process exit code kubectl exits with.
pub fn status(command: &[String], outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "code": 500,
        }),
    }
}

/// A terminal size from a resize message; None when it is not one.
pub fn parse_resize(data: &[u8]) -> Option<(u32, u32)> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let width = u32::try_from(v["Width"].as_u64()?).ok()?;
    let height = u32::try_from(v["Height"].as_u64()?).ok()?;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_honours_the_clients_order_and_rejects_the_unknown() {
        assert_eq!(
            negotiate("v5.channel.k8s.io, v4.channel.k8s.io"),
            Ok(Some(V5))
        );
        assert_eq!(
            negotiate("v3.channel.k8s.io,v4.channel.k8s.io"),
            Ok(Some(V4))
        );
        assert_eq!(negotiate("channel.k8s.io"), Ok(Some(V1)));
        assert_eq!(negotiate(""), Ok(None));
        let err = negotiate("base64.channel.k8s.io").unwrap_err();
        assert!(
            err.contains("base64.channel.k8s.io") && err.contains(V5),
            "{err}"
        );
    }

    #[test]
    fn exit_codes_become_statuses_client_go_understands() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(status(&cmd, &Outcome::Exited(0))["status"], "Success");
        let s = status(&cmd, &Outcome::Exited(3));
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let f = status(&cmd, &Outcome::Failed("no such file".into()));
        assert_eq!(f["status"], "Failure");
        assert_eq!(f["message"], "no such file");
        assert_eq!(status_message(V1, &cmd, &Outcome::Exited(0)), None);
        assert_eq!(
            status_message(V1, &cmd, &Outcome::Exited(2)),
            Some(b"command terminated with exit code 2".to_vec())
        );
        assert!(status_message(V5, &cmd, &Outcome::Exited(0)).is_some());
    }

    #[test]
    fn resize_messages_parse() {
        assert_eq!(parse_resize(br#"{"Width":80,"Height":24}"#), Some((80, 24)));
        assert_eq!(parse_resize(b"{}"), None);
        assert_eq!(parse_resize(b"junk"), None);
        assert_eq!(frame(STDOUT, b"hi"), vec![1, b'h', b'i']);
    }
}
