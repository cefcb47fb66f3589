//! Objects as JSON values: checking them against the typed Kubernetes structs (k8s-openapi),
//! which also drops unknown fields as the real API server does, and metadata helpers.

use k8s_openapi::api::{apps, batch, coordination, core, discovery, networking, rbac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::registry::ResourceDef;
use super::status::{ApiError, ApiResult};

fn roundtrip<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let typed: T = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Decodes `v` as the typed `kind` and encodes it back: a type error names the field, and
/// fields the kind does not have are dropped.
pub fn normalize(kind: &str, v: Value) -> Result<Value, String> {
    match kind {
        "Namespace" => roundtrip::<core::v1::Namespace>(v),
        "Node" => roundtrip::<core::v1::Node>(v),
        "Pod" => roundtrip::<core::v1::Pod>(v),
        "Service" => roundtrip::<core::v1::Service>(v),
        "Endpoints" => roundtrip::<core::v1::Endpoints>(v),
        "ConfigMap" => roundtrip::<core::v1::ConfigMap>(v),
        "Secret" => roundtrip::<core::v1::Secret>(v),
        "ServiceAccount" => roundtrip::<core::v1::ServiceAccount>(v),
        "Event" => roundtrip::<core::v1::Event>(v),
        "Binding" => roundtrip::<core::v1::Binding>(v),
        "Deployment" => roundtrip::<apps::v1::Deployment>(v),
        "ReplicaSet" => roundtrip::<apps::v1::ReplicaSet>(v),
        "DaemonSet" => roundtrip::<apps::v1::DaemonSet>(v),
        "ControllerRevision" => roundtrip::<apps::v1::ControllerRevision>(v),
        "Job" => roundtrip::<batch::v1::Job>(v),
        "Lease" => roundtrip::<coordination::v1::Lease>(v),
        "EndpointSlice" => roundtrip::<discovery::v1::EndpointSlice>(v),
        "Ingress" => roundtrip::<networking::v1::Ingress>(v),
        "Role" => roundtrip::<rbac::v1::Role>(v),
        "RoleBinding" => roundtrip::<rbac::v1::RoleBinding>(v),
        "ClusterRole" => roundtrip::<rbac::v1::ClusterRole>(v),
        "ClusterRoleBinding" => roundtrip::<rbac::v1::ClusterRoleBinding>(v),
        "Scale" => roundtrip::<k8s_openapi::api::autoscaling::v1::Scale>(v),
        _ => Ok(v),
    }
}

/// Parses a request body as JSON or YAML (by content type) into an object.
pub fn parse_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let v: Value = if ct.ends_with("yaml") {
        // Checked first: libyaml's time grows with the square of the nesting depth.
        ros_config::yaml_depth::check(body, ros_config::yaml_depth::MAX_DEPTH)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else if ct == "application/vnd.kubernetes.protobuf" {
        super::protobuf::decode_object(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf: {e}")))?
    } else if ct.is_empty() || ct.ends_with("json") {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding request body as JSON: {e}"))
        })?
    } else {
        return Err(ApiError::unsupported_media_type(content_type));
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    Ok(v)
}

/// Turns a YAML request body into JSON (`application/yaml` → `application/json`,
/// `application/apply-patch+yaml` → `application/apply-patch+json`) once, on a blocking
/// thread, so a slow document cannot stall the server's other requests and later steps
/// parse cheap JSON. Other bodies are returned unchanged.
pub async fn yaml_body_to_json(
    content_type: String,
    body: bytes::Bytes,
) -> ApiResult<(String, bytes::Bytes)> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let Some(prefix) = media.strip_suffix("yaml") else {
        return Ok((content_type, body));
    };
    let json_type = format!("{prefix}json");
    let ct = content_type.clone();
    let v = tokio::task::spawn_blocking(move || parse_body(&ct, &body))
        .await
        .map_err(|e| ApiError::internal(format!("decoding the YAML body: {e}")))??;
    let json = serde_json::to_vec(&v).expect("JSON values serialize");
    Ok((json_type, json.into()))
}

/// The fields of `input` that `normalized` (the typed round trip) dropped: fields the kind
/// does not have, as paths like `spec.containers[0].imagePullPolice`.
pub fn unknown_fields(input: &Value, normalized: &Value) -> Vec<String> {
    fn walk(i: &Value, n: &Value, path: &str, out: &mut Vec<String>) {
        match (i, n) {
            (Value::Object(im), Value::Object(nm)) => {
                for (k, iv) in im {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match nm.get(k) {
                        None if !iv.is_null() => out.push(p),
                        Some(nv) => walk(iv, nv, &p, out),
                        None => {}
                    }
                }
            }
            (Value::Array(ia), Value::Array(na)) => {
                for (idx, (iv, nv)) in ia.iter().zip(na).enumerate() {
                    walk(iv, nv, &format!("{path}[{idx}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(input, normalized, "", &mut out);
    out
}

/// Checks the body's apiVersion/kind against the endpoint (filling them when missing) and
/// decodes it as the typed kind. With `strict`, fields the kind does not have are an error
/// (fieldValidation=Strict); otherwise they are dropped.
pub fn check_and_normalize(def: &ResourceDef, mut v: Value, strict: bool) -> ApiResult<Value> {
    let want_av = def.api_version();
    let obj = v
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be an object"))?;
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), json!(def.kind));
        }
        Some(k) if k == def.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
    }
    let input = strict.then(|| v.clone());
    let out = normalize(def.kind, v)
        .map_err(|e| ApiError::bad_request(format!("error decoding {}: {e}", def.kind)))?;
    if let Some(input) = input {
        let unknown = unknown_fields(&input, &out);
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
    }
    Ok(out)
}

pub fn meta(v: &Value) -> &Value {
    &v["metadata"]
}

pub fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v["metadata"].is_object() {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

pub fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v["metadata"][field].as_str().filter(|s| !s.is_empty())
}

pub fn name(v: &Value) -> &str {
    meta_str(v, "name").unwrap_or("")
}

pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// A random RFC 4122 version 4 UUID.
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let mut b = b;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The random suffix generateName gets (Kubernetes' alphabet, without vowels and confusables).
pub fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_unknown_fields_and_names_bad_ones() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "bogus": 1,
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let out = normalize("Pod", pod).unwrap();
        assert!(out.get("bogus").is_none());
        assert_eq!(out["spec"]["containers"][0]["image"], "i");
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "eighty"}]}]}});
        let err = normalize("Pod", bad).unwrap_err();
        assert!(
            err.contains("spec.containers[0].ports[0].containerPort"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let input = json!({"metadata": {"name": "p", "bogus": 1, "labels": null},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolice": "x"}]}});
        let out = normalize("Pod", input.clone()).unwrap();
        assert_eq!(
            unknown_fields(&input, &out),
            ["metadata.bogus", "spec.containers[0].imagePullPolice"]
        );
    }

    #[test]
    fn uid_has_uuid_v4_shape() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uid(), u);
    }

    #[test]
    fn yaml_and_json_bodies() {
        assert_eq!(parse_body("application/yaml", b"a: 1").unwrap()["a"], 1);
        assert_eq!(
            parse_body("application/json", b"{\"a\":1}").unwrap()["a"],
            1
        );
        assert_eq!(parse_body("application/json", b"{").unwrap_err().code, 400);
        assert_eq!(parse_body("text/plain", b"{}").unwrap_err().code, 415);
    }
}
