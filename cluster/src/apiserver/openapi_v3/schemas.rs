//! The `components.schemas` of one OpenAPI v3 document: the kinds its operations name (from
//! k8s-openapi's schemars support, with everything they reference), a `<Kind>List` for every
//! listed kind (k8s-openapi's `List<T>` has no schema), each tagged with its
//! x-kubernetes-group-version-kind, and the patch merge keys `kubectl apply` reads.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps, authentication, autoscaling, batch, coordination, core, discovery as disc, networking,
    rbac,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

const PREFIX: &str = "#/components/schemas/";

/// The schemas one document refers to, registered as its operations ask for them.
pub struct Schemas {
    generator: SchemaGenerator,
    /// Kind -> (definition name, group, version) for the kinds tagged with their GVK.
    kinds: BTreeMap<String, (String, String, String)>,
    /// List definition name -> (item definition name, group, version, item kind).
    lists: BTreeMap<String, (String, String, String, String)>,
}

impl Schemas {
    pub fn new() -> Schemas {
        Schemas {
            generator: SchemaSettings::openapi3().into_generator(),
            kinds: BTreeMap::new(),
            lists: BTreeMap::new(),
        }
    }

    /// `{"$ref": ...}` to the schema of `kind` (of `group`/`version`), registering it; `None`
    /// for a kind this server has no schema for.
    pub fn kind(&mut self, group: &str, version: &str, kind: &str) -> Option<Value> {
        let reference = self.register(kind)?;
        let name = definition_name(&reference);
        self.kinds.insert(
            kind.to_string(),
            (name.to_string(), group.to_string(), version.to_string()),
        );
        Some(reference)
    }

    /// `{"$ref": ...}` to a meta.k8s.io type (Status, DeleteOptions, Patch...), untagged.
    pub fn meta(&mut self, kind: &str) -> Option<Value> {
        self.register(kind)
    }

    /// `{"$ref": ...}` to `<Kind>List`, built when the document is finished.
    pub fn list(&mut self, group: &str, version: &str, kind: &str) -> Option<Value> {
        let item = self.kind(group, version, kind)?;
        let item_name = definition_name(&item).to_string();
        let name = format!("{item_name}List");
        self.lists.insert(
            name.clone(),
            (item_name, group.into(), version.into(), kind.into()),
        );
        Some(json!({"$ref": format!("{PREFIX}{name}")}))
    }

    fn register(&mut self, kind: &str) -> Option<Value> {
        let g = &mut self.generator;
        let s = match kind {
            "Namespace" => g.subschema_for::<core::v1::Namespace>(),
            "Node" => g.subschema_for::<core::v1::Node>(),
            "Pod" => g.subschema_for::<core::v1::Pod>(),
            "Binding" => g.subschema_for::<core::v1::Binding>(),
            "Service" => g.subschema_for::<core::v1::Service>(),
            "Endpoints" => g.subschema_for::<core::v1::Endpoints>(),
            "ConfigMap" => g.subschema_for::<core::v1::ConfigMap>(),
            "Secret" => g.subschema_for::<core::v1::Secret>(),
            "ServiceAccount" => g.subschema_for::<core::v1::ServiceAccount>(),
            "Event" => g.subschema_for::<core::v1::Event>(),
            "TokenRequest" => g.subschema_for::<authentication::v1::TokenRequest>(),
            "Scale" => g.subschema_for::<autoscaling::v1::Scale>(),
            "Deployment" => g.subschema_for::<apps::v1::Deployment>(),
            "ReplicaSet" => g.subschema_for::<apps::v1::ReplicaSet>(),
            "DaemonSet" => g.subschema_for::<apps::v1::DaemonSet>(),
            "ControllerRevision" => g.subschema_for::<apps::v1::ControllerRevision>(),
            "Job" => g.subschema_for::<batch::v1::Job>(),
            "Lease" => g.subschema_for::<coordination::v1::Lease>(),
            "EndpointSlice" => g.subschema_for::<disc::v1::EndpointSlice>(),
            "Ingress" => g.subschema_for::<networking::v1::Ingress>(),
            "Role" => g.subschema_for::<rbac::v1::Role>(),
            "RoleBinding" => g.subschema_for::<rbac::v1::RoleBinding>(),
            "ClusterRole" => g.subschema_for::<rbac::v1::ClusterRole>(),
            "ClusterRoleBinding" => g.subschema_for::<rbac::v1::ClusterRoleBinding>(),
            "APIResourceList" => g.subschema_for::<meta::APIResourceList>(),
            "DeleteOptions" => g.subschema_for::<meta::DeleteOptions>(),
            "ListMeta" => g.subschema_for::<meta::ListMeta>(),
            "Patch" => g.subschema_for::<meta::Patch>(),
            "Status" => g.subschema_for::<meta::Status>(),
            _ => return None,
        };
        Some(s.to_value())
    }

    /// The finished `components.schemas`.
    pub fn finish(mut self) -> Map<String, Value> {
        let list_meta = self.register("ListMeta").unwrap_or_else(|| json!({}));
        let mut defs = self.generator.take_definitions(true);
        for (kind, (name, group, version)) in &self.kinds {
            if let Some(s) = defs.get_mut(name) {
                s["x-kubernetes-group-version-kind"] =
                    json!([{"group": group, "kind": kind, "version": version}]);
            }
        }
        for (name, (item, group, version, kind)) in &self.lists {
            defs.insert(
                name.clone(),
                list_schema(item, &list_meta, group, version, kind),
            );
        }
        add_patch_extensions(&mut defs);
        defs
    }
}

fn definition_name(reference: &Value) -> &str {
    reference["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix(PREFIX))
        .unwrap_or("")
}

fn list_schema(item: &str, list_meta: &Value, group: &str, version: &str, kind: &str) -> Value {
    json!({
        "description": format!("A list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "The versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "The REST resource this object represents, in CamelCase."},
            "items": {"type": "array", "description": format!("The {kind} objects."), "items": {"$ref": format!("{PREFIX}{item}")}},
            "metadata": {"allOf": [list_meta], "description": "Standard list metadata."},
        },
        "x-kubernetes-group-version-kind": [{"group": group, "kind": format!("{kind}List"), "version": version}],
    })
}

/// The merge key `kubectl apply` should use for list `field` of definition `def` (the same
/// keys the server's strategic merge uses).
fn merge_key(def: &str, field: &str) -> Option<&'static str> {
    let container = def.ends_with(".Container") || def.ends_with(".EphemeralContainer");
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "env" if container => "name",
        "volumeMounts" if container => "mountPath",
        "volumeDevices" if container => "devicePath",
        "ports" if container => "containerPort",
        "ports" if def.ends_with(".ServiceSpec") => "port",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "conditions" => "type",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

fn add_patch_extensions(defs: &mut Map<String, Value>) {
    for (name, schema) in defs.iter_mut() {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, prop) in props.iter_mut() {
            if let Some(key) = merge_key(name, field) {
                prop["x-kubernetes-patch-merge-key"] = json!(key);
                prop["x-kubernetes-patch-strategy"] = json!("merge");
            } else if name.ends_with(".ObjectMeta") && field == "finalizers" {
                prop["x-kubernetes-patch-strategy"] = json!("merge");
            }
        }
    }
}
