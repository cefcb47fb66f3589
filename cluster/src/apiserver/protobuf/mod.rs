//! Kubernetes' protobuf encoding of request bodies (what kubectl's typed clients send, e.g.
//! `kubectl create namespace|configmap|deployment`), turned into the JSON form.

mod decode;
#[cfg(test)]
mod freshness;
mod schema;

pub use decode::decode_object;
