//! `gen config` logic: the same secrets give configs with the same secrets; generated configs
//! are valid and round-trip; workers get no private keys.

use ros_config::generate::{GenError, GenOptions, generate};
use ros_config::secrets::Secrets;

fn opts(secrets: Secrets) -> GenOptions {
    GenOptions {
        cluster_name: "demo".into(),
        endpoint: "https://10.5.0.2:6443".into(),
        secrets,
        patches: vec![],
        patches_control_plane: vec![],
        patches_worker: vec![],
    }
}

#[test]
fn same_secrets_bundle_gives_same_configs() {
    let secrets = Secrets::generate().unwrap();
    // Through the file format, as `--with-secrets` does.
    let reread = Secrets::from_yaml(&secrets.to_yaml(), "secrets.yaml").unwrap();
    assert_eq!(reread, secrets);
    let a = generate(&opts(secrets)).unwrap();
    let b = generate(&opts(reread)).unwrap();
    assert_eq!(a.control_plane.to_yaml(), b.control_plane.to_yaml());
    assert_eq!(a.worker.to_yaml(), b.worker.to_yaml());
    let (ca, cb) = (&a.rosconfig.contexts["demo"], &b.rosconfig.contexts["demo"]);
    assert_eq!(ca.ca, cb.ca);
    // The admin certificate is issued afresh each time (same CA).
    assert_ne!(ca.crt, cb.crt);

    let c = generate(&opts(Secrets::generate().unwrap())).unwrap();
    assert_ne!(a.control_plane.machine.ca, c.control_plane.machine.ca);
    assert_ne!(a.control_plane.cluster.token, c.control_plane.cluster.token);
}

#[test]
fn generated_configs_are_valid_and_round_trip() {
    let g = generate(&opts(Secrets::generate().unwrap())).unwrap();
    for cfg in [&g.control_plane, &g.worker] {
        let report = cfg.check();
        assert!(
            report.errors.is_empty() && report.warnings.is_empty(),
            "{report:?}"
        );
        assert_eq!(&ros_config::parse(&cfg.to_yaml()).unwrap(), cfg);
    }
    assert!(g.control_plane.is_control_plane());
    assert!(!g.worker.is_control_plane());
    let w = &g.worker;
    assert!(!w.machine.ca.has_key() && !w.cluster.ca.has_key());
    assert!(w.cluster.service_account.is_none() && w.cluster.store.etcd.is_none());
    assert_eq!(
        w.cluster.control_plane.as_ref().unwrap().endpoint,
        "https://10.5.0.2:6443"
    );
    assert_eq!(g.control_plane.machine.cert_sans, vec!["10.5.0.2"]);
    assert_eq!(
        g.control_plane.cluster.api_server.cert_sans,
        vec!["10.5.0.2"]
    );
    // Secrets in the configs are the bundle's.
    assert_eq!(g.worker.machine.token, g.control_plane.machine.token);
}

#[test]
fn bad_arguments_are_named() {
    let mut o = opts(Secrets::generate().unwrap());
    o.cluster_name = "Demo_1".into();
    let e = generate(&o).unwrap_err();
    assert!(matches!(e, GenError::ClusterName(_)), "{e}");
    o.cluster_name = "demo".into();
    o.endpoint = "10.5.0.2:6443".into();
    let e = generate(&o).unwrap_err().to_string();
    assert!(
        e.starts_with("endpoint: \"10.5.0.2:6443\" is not a URL"),
        "{e}"
    );
}

#[test]
fn secrets_bundle_errors_name_fields() {
    let mut s = Secrets::generate().unwrap();
    s.tokens.bootstrap = "nope".into();
    s.certs.etcd.key = "bm90IHBlbQ==".into(); // base64 of "not pem"
    let e = Secrets::from_yaml(&s.to_yaml(), "s.yaml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "s.yaml: invalid secrets bundle:\n\
         tokens.bootstrap: is not a token of the form [a-z0-9]{6}.[a-z0-9]{16}\n\
         certs.etcd.key: does not contain a PEM PRIVATE KEY block"
    );
    let e = Secrets::from_yaml("version: v1alpha1\nextra: 1\n", "s.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("extra: unknown field"), "{e}");
}

#[test]
fn secrets_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secrets.yaml");
    let s = Secrets::generate().unwrap();
    s.save(&p).unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(Secrets::load(&p).unwrap(), s);
}
