#!/usr/bin/env python3
"""Generates schema.rs: the protobuf field numbers and JSON names of the served kinds.

Kubernetes clients (kubectl's typed clients) may send request bodies in Kubernetes' protobuf
encoding. The server turns them into JSON with a table of every message reachable from the
served kinds: field number -> (JSON name, type). The field numbers come from the k8s-pb crate
(prost code generated from Kubernetes' generated.proto files), the JSON names from the
k8s-openapi crate (serde field names), both as cargo downloaded them:

    python3 generate.py ~/.cargo/registry/src/*/k8s-pb-0.9.0 \
        ~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_33 | rustfmt --edition 2024 > schema.rs

The test in freshness.rs does exactly that with the versions Cargo.lock pins and fails when
schema.rs is stale; `ROS_UPDATE_PROTOBUF_SCHEMA=1 cargo test -p cluster --lib
apiserver::protobuf::freshness` rewrites it.
"""
import os
import re
import sys

PB, OPENAPI = sys.argv[1], sys.argv[2]
ROOTS = [
    ("api/core/v1", k) for k in
    ["Namespace", "Node", "Pod", "Service", "Endpoints", "ConfigMap", "Secret", "ServiceAccount", "Event", "Binding"]
] + [("api/apps/v1", k) for k in ["Deployment", "ReplicaSet", "DaemonSet"]] + [
    ("api/batch/v1", "Job"), ("api/coordination/v1", "Lease"), ("api/discovery/v1", "EndpointSlice"),
    ("api/networking/v1", "Ingress"), ("api/autoscaling/v1", "Scale"),
    ("apimachinery/pkg/apis/meta/v1", "DeleteOptions"), ("api/authentication/v1", "TokenRequest"),
    ("api/authorization/v1", "SelfSubjectAccessReview"), ("api/authorization/v1", "SelfSubjectRulesReview"), ("api/authentication/v1", "SelfSubjectReview"),
] + [("api/rbac/v1", k) for k in ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]]
SCALARS = {"string": "Str", "int32": "I32", "int64": "I64", "bool": "Bool", "bytes": "Bytes", "double": "F64"}


def norm(name):
    return name.replace("_", "").lower()


def parse_pb():
    """{(module, Struct): [(rust_field, kind, label, tag, type_text)]}"""
    out = {}
    for root, _, files in os.walk(os.path.join(PB, "src")):
        if "mod.rs" not in files:
            continue
        module = os.path.relpath(root, os.path.join(PB, "src"))
        text = open(os.path.join(root, "mod.rs")).read()
        for m in re.finditer(r"^pub struct (\w+) \{\n(.*?)^\}", text, re.S | re.M):
            fields = []
            body = re.sub(r"^\s*///.*\n", "", m.group(2), flags=re.M)
            for f in re.finditer(r"#\[prost\(([^\]]*)\)\]\s*pub (r#)?(\w+):\s*([^;]*?),\n(?=\s*(#|$))", body + "\n", re.S):
                attr, name, ty = f.group(1), f.group(3), " ".join(f.group(4).split())
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                mm = re.match(r'btree_map = "(\w+), (\w+)"', attr)
                if mm:
                    fields.append((name, "map", mm.group(2), tag, ty))
                    continue
                parts = [p.strip() for p in attr.split(",")]
                kind = "bytes" if parts[0].startswith("bytes") else parts[0]
                fields.append((name, kind, parts[1], tag, ty))
            out[(module, m.group(1))] = fields
    return out


def resolve(module, ty):
    """The (module, Struct) a Rust type path names, relative to `module`."""
    ty = re.sub(r",\s*>", ">", ty)
    inner = re.findall(r"((?:super::)*(?:\w+::)*\w+)\s*>+\s*$", ty)
    path = inner[0] if inner else ty
    if "BTreeMap" in ty:
        path = re.search(r",\s*((?:super::)*(?:\w+::)*\w+)\s*>\s*$", ty).group(1)
    segs = path.split("::")
    mod = module.split("/")
    while segs and segs[0] == "super":
        segs.pop(0)
        mod.pop()
    mod += segs[:-1]
    return ("/".join(mod), segs[-1])


def openapi_names():
    """{(module, normalized struct name): {rust_field: json_name}}"""
    out = {}
    for root, _, files in os.walk(OPENAPI):
        module = os.path.relpath(root, OPENAPI)
        for fn in files:
            if not fn.endswith(".rs") or fn == "mod.rs":
                continue
            text = open(os.path.join(root, fn)).read()
            s = re.search(r"^pub struct (\w+)", text, re.M)
            if not s:
                continue
            names = dict((k, j) for j, k in re.findall(r'"(\w+)" => Field::Key_(\w+),', text))
            out[(module, norm(s.group(1)))] = names
    return out


def camel(snake):
    p = snake.split("_")
    return p[0] + "".join(x[:1].upper() + x[1:] for x in p[1:])


def main():
    pb, names = parse_pb(), openapi_names()
    seen, order, queue = set(), [], [r for r in ROOTS]
    while queue:
        key = queue.pop(0)
        if key in seen:
            continue
        if key not in pb:
            sys.exit(f"missing message {key}")
        seen.add(key)
        order.append(key)
        for (_, kind, label, _, ty) in pb[key]:
            if kind == "message" or (kind == "map" and label == "message"):
                queue.append(resolve(key[0], ty))
    ids = {k: f"{k[0].replace('/', '.')}.{k[1]}" for k in order}
    print("// @generated by generate.py from the k8s-pb and k8s-openapi crates: field numbers and")
    print("// JSON names of the messages reachable from the served kinds. Do not edit by hand.")
    print("use super::decode::{Field, Msg, Ty};\n")
    print("pub static MESSAGES: &[Msg] = &[")
    for key in order:
        json_names = names.get((key[0], norm(key[1])), {})
        fields = []
        for (rust, kind, label, tag, ty) in pb[key]:
            json = json_names.get(rust)
            if kind == "message":
                target = ids[resolve(key[0], ty)]
                t = f'Ty::Msg("{target}")'
                # A message the JSON form inlines (IngressRule.ingressRuleValue, Volume.volumeSource):
                # the parent has no such JSON field, and the message's fields (if k8s-openapi
                # has it at all) appear among the parent's own.
                inner = set(names.get((resolve(key[0], ty)[0], norm(resolve(key[0], ty)[1])), {}).values())
                if json is None and json_names and inner <= set(json_names.values()):
                    t = f'Ty::Inline("{target}")'
                    json = ""
            elif kind == "map":
                v = f'Ty::Msg("{ids[resolve(key[0], ty)]}")' if label == "message" else f"Ty::{SCALARS[label]}"
                t = f"Ty::Map(&{v})"
            else:
                t = f"Ty::{SCALARS[kind]}"
            if json is None:
                # k8s-pb spells BoundObjectReference's uid `u_id`; the JSON name is `uid`.
                json = "uid" if rust == "u_id" else camel(rust)
            rep = "true" if label == "repeated" else "false"
            fields.append(f'Field {{ tag: {tag}, json: "{json}", ty: {t}, repeated: {rep} }}')
        print(f'    Msg {{ name: "{ids[key]}", fields: &[')
        for f in fields:
            print(f"        {f},")
        print("    ] },")
    print("];")


main()
