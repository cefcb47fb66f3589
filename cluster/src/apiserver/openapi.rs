//! /openapi/v2: the document kubectl downloads before `apply`/`create` to validate manifests.
//! kubectl asks for the protobuf form (a gnostic `openapi_v2.Document`) and cannot use JSON, so
//! the few messages needed are declared here with prost. The document carries no schemas:
//! kubectl then skips client-side schema checks (it does the same for unknown kinds), and
//! the server validates every object itself.

use serde_json::{Value, json};

/// What Kubernetes answers (the request says `...spec.v2@v1.0+protobuf`, which Go cannot parse back).
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// gnostic openapi_v2.Document (fields 1, 2, 8 of OpenAPIv2.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
}

/// gnostic openapi_v2.Info (title = 1, version = 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// gnostic openapi_v2.Paths with no paths.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Paths {}

fn document() -> Document {
    Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: "Kubernetes".into(),
            version: super::discovery::version()["gitVersion"]
                .as_str()
                .unwrap_or("")
                .into(),
        }),
        paths: Some(Paths {}),
    }
}

pub fn v2_protobuf() -> Vec<u8> {
    prost::Message::encode_to_vec(&document())
}

pub fn v2_json() -> Value {
    let d = document();
    json!({ "swagger": d.swagger, "info": { "title": d.info.as_ref().map(|i| i.title.clone()), "version": d.info.map(|i| i.version) }, "paths": {} })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_round_trips_and_starts_with_swagger_field() {
        let bytes = v2_protobuf();
        // field 1, wire type 2 (length-delimited), length 3, "2.0"
        assert_eq!(&bytes[..5], &[0x0a, 3, b'2', b'.', b'0']);
        let d: Document = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(d.info.unwrap().title, "Kubernetes");
    }
}
