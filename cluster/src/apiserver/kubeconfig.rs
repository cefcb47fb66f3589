//! The admin kubeconfig the server writes next to its data (as k3s writes k3s.yaml).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A kubeconfig for `server` (an https URL) with the CA and a client certificate embedded.
pub fn render(server: &str, ca_cert: &str, client_cert: &str, client_key: &str) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "ros",
            "cluster": {
                "server": server,
                "certificate-authority-data": STANDARD.encode(ca_cert),
            }
        }],
        "users": [{
            "name": "ros-admin",
            "user": {
                "client-certificate-data": STANDARD.encode(client_cert),
                "client-key-data": STANDARD.encode(client_key),
            }
        }],
        "contexts": [{
            "name": "ros",
            "context": { "cluster": "ros", "user": "ros-admin", "namespace": "default" }
        }],
        "current-context": "ros",
        "preferences": {},
    });
    serde_yaml_ng::to_string(&doc).expect("a JSON value always serializes to YAML")
}

#[cfg(test)]
mod tests {
    #[test]
    fn embeds_server_and_credentials() {
        let y = super::render("https://127.0.0.1:6443", "CA", "CRT", "KEY");
        let v: serde_json::Value = serde_yaml_ng::from_str(&y).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(v["current-context"], "ros");
    }
}
