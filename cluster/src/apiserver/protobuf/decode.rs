//! Decoding Kubernetes protobuf (`k8s\0` + runtime.Unknown{typeMeta, raw}) into JSON, driven
//! by the generated message table in `schema.rs`.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::schema::MESSAGES;

pub enum Ty {
    Str,
    I32,
    I64,
    Bool,
    Bytes,
    Msg(&'static str),
    /// A message whose fields the JSON form puts in the parent object.
    Inline(&'static str),
    /// map<string, T>
    Map(&'static Ty),
}

pub struct Field {
    pub tag: u32,
    pub json: &'static str,
    pub ty: Ty,
    pub repeated: bool,
}

pub struct Msg {
    pub name: &'static str,
    pub fields: &'static [Field],
}

const MAGIC: &[u8] = b"k8s\0";

fn messages() -> &'static HashMap<&'static str, &'static Msg> {
    static INDEX: OnceLock<HashMap<&'static str, &'static Msg>> = OnceLock::new();
    INDEX.get_or_init(|| MESSAGES.iter().map(|m| (m.name, m)).collect())
}

/// One field occurrence on the wire.
enum Wire<'a> {
    Varint(u64),
    /// Skipped: no served field is a double or fixed64.
    Fixed64,
    Bytes(&'a [u8]),
    /// Skipped: no served field is a fixed32 or float.
    Fixed32,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let tag = (key >> 3) as u32;
        let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
            let s = buf.get(*pos..*pos + n).ok_or("truncated field")?;
            *pos += n;
            Ok(s)
        };
        let w = match key & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                take(&mut pos, 8)?;
                Wire::Fixed64
            }
            2 => {
                let n = varint(buf, &mut pos)? as usize;
                Wire::Bytes(take(&mut pos, n)?)
            }
            5 => {
                take(&mut pos, 4)?;
                Wire::Fixed32
            }
            t => return Err(format!("unsupported wire type {t} for field {tag}")),
        };
        out.push((tag, w));
    }
    Ok(out)
}

fn rfc3339(seconds: i64, nanos: i64, micro: bool) -> Value {
    // Go encodes a zero time (year 1) for unset non-pointer times: leave those out.
    if seconds <= -62135596800 || (seconds == 0 && nanos == 0) {
        return Value::Null;
    }
    match jiff::Timestamp::new(seconds, if micro { nanos as i32 } else { 0 }) {
        Ok(t) if micro => json!(t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        Ok(t) => json!(t.to_string()),
        Err(_) => Value::Null,
    }
}

/// Special JSON forms of a few apimachinery messages.
fn special(name: &str, obj: Map<String, Value>) -> Value {
    let int = |k: &str| obj.get(k).and_then(Value::as_i64).unwrap_or(0);
    match name {
        "apimachinery.pkg.apis.meta.v1.Time" => rfc3339(int("seconds"), int("nanos"), false),
        "apimachinery.pkg.apis.meta.v1.MicroTime" => rfc3339(int("seconds"), int("nanos"), true),
        "apimachinery.pkg.api.resource.Quantity" => {
            obj.get("string").cloned().unwrap_or(json!("0"))
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            if int("type") == 1 {
                obj.get("strVal").cloned().unwrap_or(json!(""))
            } else {
                json!(int("intVal"))
            }
        }
        "apimachinery.pkg.apis.meta.v1.FieldsV1" | "apimachinery.pkg.runtime.RawExtension" => obj
            .get("raw")
            .and_then(Value::as_str)
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or(json!({})),
        _ => Value::Object(obj),
    }
}

fn scalar(ty: &Ty, w: &Wire<'_>) -> Result<Value, String> {
    Ok(match (ty, w) {
        (Ty::Str, Wire::Bytes(b)) => {
            json!(std::str::from_utf8(b).map_err(|_| "a string field is not UTF-8")?)
        }
        (Ty::Bytes, Wire::Bytes(b)) => json!(STANDARD.encode(b)),
        (Ty::I32, Wire::Varint(v)) => json!(*v as i32),
        (Ty::I64, Wire::Varint(v)) => json!(*v as i64),
        (Ty::Bool, Wire::Varint(v)) => json!(*v != 0),
        (Ty::Msg(name), Wire::Bytes(b)) => message(name, b)?,
        _ => return Err("a field has an unexpected wire type".into()),
    })
}

/// Packed repeated scalars (several varints in one length-delimited field).
fn packed(ty: &Ty, b: &[u8]) -> Result<Vec<Value>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        out.push(scalar(ty, &Wire::Varint(varint(b, &mut pos)?))?);
    }
    Ok(out)
}

fn message(name: &str, buf: &[u8]) -> Result<Value, String> {
    let msg = messages()
        .get(name)
        .ok_or_else(|| format!("no protobuf schema for {name}"))?;
    let mut obj = Map::new();
    for (tag, w) in fields(buf)? {
        let Some(f) = msg.fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        match (&f.ty, &w) {
            (Ty::Inline(inner), Wire::Bytes(b)) => {
                if let Value::Object(m) = message(inner, b)? {
                    obj.extend(m);
                }
            }
            (Ty::Map(vt), Wire::Bytes(b)) => {
                let (mut k, mut v) = (String::new(), Value::Null);
                for (t, ew) in fields(b)? {
                    match t {
                        1 => k = scalar(&Ty::Str, &ew)?.as_str().unwrap_or("").to_string(),
                        2 => v = scalar(vt, &ew)?,
                        _ => {}
                    }
                }
                if v.is_null() {
                    v = match vt {
                        Ty::Str | Ty::Bytes => json!(""),
                        _ => json!({}),
                    };
                }
                let entry = obj.entry(f.json).or_insert_with(|| json!({}));
                if let Value::Object(m) = entry {
                    m.insert(k, v);
                }
            }
            (ty, Wire::Bytes(b)) if f.repeated && matches!(ty, Ty::I32 | Ty::I64 | Ty::Bool) => {
                let list = obj.entry(f.json).or_insert_with(|| json!([]));
                if let Value::Array(a) = list {
                    a.extend(packed(ty, b)?);
                }
            }
            (ty, w) => {
                let v = scalar(ty, w)?;
                // Go writes every non-pointer field, set or not; its JSON form leaves the empty
                // ones out (omitempty). Zero replicas is meaningful, so it stays.
                let empty =
                    v.is_null() || v == json!("") || (v == json!(0) && f.json != "replicas");
                if empty && !f.repeated {
                    continue;
                }
                if f.repeated {
                    if let Value::Array(a) = obj.entry(f.json).or_insert_with(|| json!([])) {
                        a.push(v);
                    }
                } else {
                    obj.insert(f.json.to_string(), v);
                }
            }
        }
    }
    Ok(special(name, obj))
}

/// The schema name of the message for apiVersion/kind.
fn root_message(api_version: &str, kind: &str) -> Option<String> {
    if kind == "DeleteOptions" {
        return Some("apimachinery.pkg.apis.meta.v1.DeleteOptions".into());
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let short = match group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    Some(format!("api.{short}.{version}.{kind}"))
}

/// Decodes a Kubernetes protobuf request body into its JSON form.
pub fn decode_object(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the Kubernetes protobuf prefix")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (tag, w) in fields(rest)? {
        match (tag, w) {
            (1, Wire::Bytes(tm)) => {
                for (t, v) in fields(tm)? {
                    if let Wire::Bytes(s) = v {
                        let s = String::from_utf8_lossy(s).to_string();
                        match t {
                            1 => api_version = s,
                            2 => kind = s,
                            _ => {}
                        }
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            (4, Wire::Bytes(ct))
                if !ct.is_empty() && ct != b"application/vnd.kubernetes.protobuf" =>
            {
                return Err(format!(
                    "unsupported embedded content type {:?}",
                    String::from_utf8_lossy(ct)
                ));
            }
            _ => {}
        }
    }
    let name = root_message(&api_version, &kind).ok_or("missing kind")?;
    let mut v = message(&name, raw).map_err(|e| format!("decoding {kind}: {e}"))?;
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(tag: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((tag << 3) | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    fn vi(tag: u32, v: u8) -> Vec<u8> {
        vec![(tag << 3) as u8, v]
    }

    #[test]
    fn decodes_a_deployment_like_kubectl_sends() {
        // metadata{name: "web", labels{app: web}}, spec{replicas: 2, template{spec{containers[{name, image, ports[{containerPort 80}]}]}}}
        let labels_entry = [ld(1, b"app"), ld(2, b"web")].concat();
        let meta = [ld(1, b"web"), ld(11, &labels_entry)].concat();
        let port = vi(3, 80);
        let container = [ld(1, b"nginx"), ld(2, b"nginx:1"), ld(6, &port)].concat();
        let pod_spec = ld(2, &container);
        let template = ld(2, &pod_spec);
        let spec = [vi(1, 2), ld(3, &template)].concat();
        let raw = [ld(1, &meta), ld(2, &spec)].concat();
        let type_meta = [ld(1, b"apps/v1"), ld(2, b"Deployment")].concat();
        let body = [MAGIC.to_vec(), ld(1, &type_meta), ld(2, &raw)].concat();
        let v = decode_object(&body).unwrap();
        assert_eq!(v["kind"], "Deployment");
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert_eq!(v["spec"]["replicas"], 2);
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            80
        );
    }

    #[test]
    fn special_forms() {
        let int_or_str = [vi(1, 1), ld(3, b"http")].concat();
        let port = [vi(3, 80), ld(4, &int_or_str)].concat();
        let v = message("api.core.v1.ServicePort", &port).unwrap();
        assert_eq!(v["targetPort"], "http");
        let secret = ld(2, &[ld(1, b"k"), ld(2, b"\x00\x01")].concat());
        assert_eq!(
            message("api.core.v1.Secret", &secret).unwrap()["data"]["k"],
            "AAE="
        );
        assert!(decode_object(b"nope").is_err());
    }
}
