//! The one Kubernetes version ros claims: the API server's `/version` (and OpenAPI info), the
//! Node's `kubeletVersion`/`kubeProxyVersion` and the probes' User-Agent all come from here.
//!
//! The minor is the Kubernetes release whose API types are compiled in (the k8s-openapi
//! `v1_XX` feature): objects are checked against those types and the protobuf schema is
//! generated from them, so that is the API the server really serves. A k8s-openapi feature
//! without an arm below fails to compile here, on purpose: the protobuf schema
//! (`apiserver/protobuf/generate.py`) must be regenerated with it.

pub const KUBE_MAJOR: &str = "1";

k8s_openapi::k8s_if_1_33! { pub const KUBE_MINOR: &str = "33"; }
k8s_openapi::k8s_if_1_34! { pub const KUBE_MINOR: &str = "34"; }
k8s_openapi::k8s_if_1_35! { pub const KUBE_MINOR: &str = "35"; }

/// `v1.33.0-ros.<crate version>`: the release, then ros's own version as a pre-release tag
/// (as k3s's `v1.33.0+k3s1`, but semver-ordered below the upstream release).
pub fn git_version() -> String {
    format!(
        "v{KUBE_MAJOR}.{KUBE_MINOR}.0-ros.{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// `1.33`, as in the kubelet's probe User-Agent (`kube-probe/1.33`).
pub fn major_minor() -> String {
    format!("{KUBE_MAJOR}.{KUBE_MINOR}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_compiled_api_release() {
        // The Node types of the compiled release are the ones the server checks objects with.
        let minor: u32 = KUBE_MINOR.parse().unwrap();
        assert!(minor >= 33, "{minor}");
        assert!(
            git_version().starts_with(&format!("v1.{minor}.0-ros.")),
            "{}",
            git_version()
        );
        assert_eq!(major_minor(), format!("1.{minor}"));
    }
}
