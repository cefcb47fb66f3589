//! The parameters operations declare: path parameters (`name`, `namespace`) and, per kind of
//! operation, the query parameters the server reads, typed as upstream declares them.

use serde_json::{Value, json};

/// A required path parameter.
pub fn path(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

pub fn name(kind: &str) -> Value {
    path("name", &format!("name of the {kind}"))
}

pub fn namespace() -> Value {
    path(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    )
}

/// Query parameters and what they mean; the type is the JSON schema type.
const QUERY: &[(&str, &str, &str)] = &[
    (
        "pretty",
        "string",
        "If 'true', the output is pretty printed.",
    ),
    (
        "allowWatchBookmarks",
        "boolean",
        "Ask a watch for BOOKMARK events carrying the latest resourceVersion.",
    ),
    (
        "continue",
        "string",
        "The continue token of the previous page of a chunked list.",
    ),
    (
        "fieldSelector",
        "string",
        "Select objects by their fields (metadata.name=x, metadata.namespace!=y).",
    ),
    ("labelSelector", "string", "Select objects by their labels."),
    (
        "limit",
        "integer",
        "The most items to return; the response then carries a continue token.",
    ),
    (
        "resourceVersion",
        "string",
        "Which version of the data to serve, or where a watch starts.",
    ),
    (
        "resourceVersionMatch",
        "string",
        "How resourceVersion applies to a list: Exact or NotOlderThan.",
    ),
    (
        "sendInitialEvents",
        "boolean",
        "Start a watch with synthetic ADDED events for the current objects.",
    ),
    (
        "timeoutSeconds",
        "integer",
        "End a list or watch call after this many seconds.",
    ),
    (
        "watch",
        "boolean",
        "Watch for changes and stream them as watch events.",
    ),
    (
        "dryRun",
        "string",
        "When present (the only value: All), run every step but persist nothing.",
    ),
    (
        "fieldManager",
        "string",
        "The name of the actor making the change, recorded in managedFields; required for apply patches.",
    ),
    (
        "fieldValidation",
        "string",
        "How unknown or duplicate fields are handled: Ignore, Warn or Strict.",
    ),
    (
        "force",
        "boolean",
        "Take over fields other managers own (apply patches only).",
    ),
    (
        "gracePeriodSeconds",
        "integer",
        "Seconds before the object is deleted; 0 deletes at once.",
    ),
    (
        "orphanDependents",
        "boolean",
        "Deprecated, use propagationPolicy: whether dependents are orphaned.",
    ),
    (
        "propagationPolicy",
        "string",
        "How dependents are garbage collected: Orphan, Background or Foreground.",
    ),
    (
        "container",
        "string",
        "The container to use; may be omitted when the pod has only one.",
    ),
    ("follow", "boolean", "Keep streaming the log as it grows."),
    ("limitBytes", "integer", "The most bytes of log to return."),
    (
        "previous",
        "boolean",
        "The log of the previous, terminated instance of the container.",
    ),
    (
        "sinceSeconds",
        "integer",
        "Only the log of the last this many seconds.",
    ),
    (
        "tailLines",
        "integer",
        "Only the last this many lines of the log.",
    ),
    (
        "timestamps",
        "boolean",
        "Prefix every log line with its RFC3339 timestamp.",
    ),
    (
        "command",
        "string",
        "The command to run, one argument per parameter.",
    ),
    ("stdin", "boolean", "Pass the caller's stdin stream."),
    ("stdout", "boolean", "Stream the container's stdout."),
    ("stderr", "boolean", "Stream the container's stderr."),
    ("tty", "boolean", "Allocate a terminal."),
    ("ports", "integer", "The ports of the pod to forward to."),
];

/// The query parameter `name` (a name missing from the table is a programming error the
/// unit tests catch; it is declared as a plain string).
pub fn query(name: &str) -> Value {
    let (kind, description) = QUERY
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, d)| (*t, *d))
        .unwrap_or(("string", ""));
    json!({
        "name": name, "in": "query", "description": description,
        "schema": {"type": kind, "uniqueItems": true},
    })
}

pub fn queries(names: &[&str]) -> Vec<Value> {
    names.iter().map(|n| query(n)).collect()
}

/// What each kind of operation accepts in its query, as upstream declares it.
pub const LIST: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
pub const WRITE: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
pub const PATCH: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
pub const DELETE: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "orphanDependents",
    "propagationPolicy",
];
pub const DELETE_COLLECTION: &[&str] = &[
    "continue",
    "dryRun",
    "fieldSelector",
    "gracePeriodSeconds",
    "labelSelector",
    "limit",
    "orphanDependents",
    "propagationPolicy",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
];
pub const LOG: &[&str] = &[
    "container",
    "follow",
    "limitBytes",
    "previous",
    "sinceSeconds",
    "tailLines",
    "timestamps",
];
pub const EXEC: &[&str] = &["command", "container", "stderr", "stdin", "stdout", "tty"];
pub const ATTACH: &[&str] = &["container", "stderr", "stdin", "stdout", "tty"];
pub const PORT_FORWARD: &[&str] = &["ports"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_query_parameter_is_described() {
        for set in [
            LIST,
            WRITE,
            PATCH,
            DELETE,
            DELETE_COLLECTION,
            LOG,
            EXEC,
            ATTACH,
            PORT_FORWARD,
            &["pretty"],
        ] {
            for name in set {
                assert!(
                    QUERY.iter().any(|(n, _, _)| n == name),
                    "{name} is not in QUERY"
                );
            }
        }
    }
}
