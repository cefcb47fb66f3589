//! get and list.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Response;
use serde_json::{Value, json};

use super::{Call, ok};
use crate::apiserver::http::Body;
use crate::apiserver::selectors::{FieldSelector, LabelSelector};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::{storage, table};
use ros_store::StoreError;

pub async fn get(call: &Call) -> ApiResult<Response<Body>> {
    let (obj, _) = call.current().await?;
    if call.wants_metadata() {
        return ok(200, &super::partial(&obj));
    }
    if call.wants_table() {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        return ok(200, &table::table(call.def, &[obj], &call.query, &rv, None));
    }
    ok(200, &obj)
}

/// The selectors of a list or watch.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn from_call(call: &Call) -> ApiResult<Self> {
        let fields = FieldSelector::parse(call.query.get("fieldSelector").unwrap_or(""))?;
        fields.check_supported(call.def.kind)?;
        Ok(Filter {
            labels: LabelSelector::parse(call.query.get("labelSelector").unwrap_or(""))?,
            fields,
        })
    }
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

fn encode_continue(rv: i64, start: &str) -> String {
    URL_SAFE_NO_PAD.encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion")
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((
        v["rv"].as_i64().ok_or_else(bad)?,
        v["start"].as_str().ok_or_else(bad)?.to_string(),
    ))
}

/// The revision a list should be served at, from resourceVersion/resourceVersionMatch.
async fn list_revision(call: &Call) -> ApiResult<Option<i64>> {
    let Some(rv) = call.query.get("resourceVersion") else {
        return Ok(None);
    };
    let rev = storage::parse_rv(rv)?;
    if rev == 0 {
        return Ok(None);
    }
    match call.query.get("resourceVersionMatch") {
        Some("Exact") => Ok(Some(rev)),
        _ => {
            wait_for_revision(&call.api, rev).await?;
            Ok(None)
        }
    }
}

/// Like upstream's watch cache: a resourceVersion newer than the store's gets up to 3 s to
/// arrive, then the answer is 504 with cause ResourceVersionTooLarge.
pub async fn wait_for_revision(api: &crate::apiserver::ApiServer, rev: i64) -> ApiResult<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let current = api.store.current_revision().await?;
        if rev <= current {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::too_large_resource_version(rev, current));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Lists the matching objects: (items, revision served at, continue token).
pub async fn list_objects(
    call: &Call,
    filter: &Filter,
) -> ApiResult<(Vec<Value>, i64, Option<String>)> {
    let prefix = storage::prefix(call.def, call.ns());
    let limit = call.query.int("limit")?.unwrap_or(0).max(0) as usize;
    let (mut at, mut start_after) = match call.query.get("continue") {
        Some(token) => {
            let (rv, start) = decode_continue(token)?;
            (Some(rv), Some(start))
        }
        None => (list_revision(call).await?, None),
    };
    // Reading one name is a get, not a scan.
    if let Some(name) = filter.fields.exact_name()
        && (call.ns().is_some() || !call.def.namespaced)
    {
        let key = storage::key(call.def, call.ns(), name);
        let rev = match at {
            Some(r) => r,
            None => call.api.store.current_revision().await?,
        };
        let kv = call.api.store.get(&key, Some(rev)).await?;
        let mut items = Vec::new();
        if let Some(kv) = kv {
            let obj = storage::decode(&kv)?;
            if filter.matches(&obj) {
                items.push(obj);
            }
        }
        return Ok((items, rev, None));
    }
    let mut items = Vec::new();
    loop {
        let page = call.api.store.range(&prefix, start_after.as_deref(), limit, at).await.map_err(|e| match e {
            StoreError::Compacted { .. } if call.query.get("continue").is_some() => ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ),
            other => other.into(),
        })?;
        at = Some(page.revision);
        let n = page.kvs.len();
        for (i, kv) in page.kvs.iter().enumerate() {
            let obj = storage::decode(kv)?;
            if !filter.matches(&obj) {
                continue;
            }
            items.push(obj);
            if limit > 0 && items.len() == limit {
                let more = i + 1 < n || page.more;
                let token = more.then(|| encode_continue(page.revision, &kv.key));
                return Ok((items, page.revision, token));
            }
        }
        if !page.more || n == 0 {
            return Ok((items, page.revision, None));
        }
        start_after = page.kvs.last().map(|kv| kv.key.clone());
    }
}

pub async fn list(call: &Call) -> ApiResult<Response<Body>> {
    let filter = Filter::from_call(call)?;
    let (items, rev, token) = list_objects(call, &filter).await?;
    if call.wants_table() {
        return ok(
            200,
            &table::table(
                call.def,
                &items,
                &call.query,
                &rev.to_string(),
                token.as_deref(),
            ),
        );
    }
    let mut metadata = json!({ "resourceVersion": rev.to_string() });
    if let Some(t) = token {
        metadata["continue"] = json!(t);
    }
    if call.wants_metadata() {
        let items: Vec<Value> = items.iter().map(super::partial).collect();
        return ok(
            200,
            &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "items": items}),
        );
    }
    ok(
        200,
        &json!({
            "kind": format!("{}List", call.def.kind),
            "apiVersion": call.def.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "/registry/pods/a/b");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "/registry/pods/a/b".to_string())
        );
        assert_eq!(decode_continue("!!").unwrap_err().code, 400);
    }
}
