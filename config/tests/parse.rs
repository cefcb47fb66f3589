//! Strict parsing: every unknown field and bad value is reported at once, with its path.

fn errors(yaml: &str) -> Vec<String> {
    match ros_config::parse(yaml) {
        Ok(_) => vec![],
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

const HEAD: &str =
    "version: v1alpha1\nmachine:\n  type: worker\n  token: abcdef.0123456789abcdef\n";
const TAIL: &str = "cluster:\n  name: demo\n  token: abcdef.0123456789abcdef\n  controlPlane:\n    endpoint: https://10.5.0.2:6443\n";

#[test]
fn bad_list_elements_keep_their_original_indices() {
    let yaml = format!(
        "{HEAD}  network:\n    interfaces:\n    - eth0\n    - interface: eth1\n      foo: 1\n    - 7\n    - interface: eth3\n      addresses: [bad]\n      bar: 2\n{TAIL}"
    );
    let e = errors(&yaml);
    assert_eq!(
        e,
        [
            "machine.network.interfaces[0]: invalid type: string \"eth0\", expected struct Interface",
            "machine.network.interfaces[1].foo: unknown field, expected one of `interface`, `deviceSelector`, `dhcp`, `addresses`, `routes`, `mtu`",
            "machine.network.interfaces[2]: invalid type: integer `7`, expected struct Interface",
            "machine.network.interfaces[3].bar: unknown field, expected one of `interface`, `deviceSelector`, `dhcp`, `addresses`, `routes`, `mtu`",
        ]
    );
}

#[test]
fn decode_and_value_errors_come_together() {
    let yaml = format!(
        "{HEAD}  extra: true\n  network:\n    hostname: -bad-\n{TAIL}  network:\n    podSubnets: [10.0.0.0/8]\n    serviceSubnets: [10.96.0.0/12]\n"
    );
    let e = errors(&yaml);
    assert_eq!(
        e,
        [
            "machine.extra: unknown field, expected one of `type`, `token`, `ca`, `certSANs`, `install`, `network`, `time`, `sysctls`, `kernel`, `files`, `env`, `nodeLabels`, `nodeTaints`, `registries`, `logging`, `features`",
            "machine.ca.crt: is empty",
            "machine.network.hostname: \"-bad-\" is not a valid hostname",
            "cluster.network.serviceSubnets[0]: 10.96.0.0/12 overlaps cluster.network.podSubnets[0] (10.0.0.0/8)",
            "cluster.ca.crt: is empty",
        ]
    );
}

#[test]
fn required_sections_and_empty_documents() {
    assert_eq!(
        errors(""),
        ["<document>: is empty; a machine config is a map with version, machine and cluster"]
    );
    assert_eq!(errors("version: v1alpha1\n"), ["machine: is required"]);
    assert_eq!(
        errors("version: v1alpha1\nmachine: {}\ncluster: {}\n"),
        ["machine.type: is required"]
    );
    assert_eq!(
        errors("- a\n"),
        ["<document>: is a list; a machine config is a map with version, machine and cluster"]
    );
}

#[test]
fn scalar_maps_take_numbers_and_octal_permissions() {
    let yaml = format!(
        "{HEAD}  sysctls:\n    net.ipv4.ip_forward: 1\n  files:\n  - path: /var/x\n    permissions: 0o600\n  nodeLabels:\n    ok: true\n{TAIL}"
    );
    let checked = ros_config::check_yaml(&yaml).unwrap();
    let errs: Vec<String> = checked
        .report
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect();
    // Only the (absent) CA certificates are wrong here.
    assert_eq!(
        errs,
        ["machine.ca.crt: is empty", "cluster.ca.crt: is empty"]
    );
}

#[test]
fn list_values_in_scalar_maps_are_named() {
    let yaml = format!("{HEAD}  env:\n    A: [1]\n{TAIL}");
    assert_eq!(
        errors(&yaml)[0],
        "machine.env: value of \"A\" must be a string, number or boolean, not a list"
    );
}

#[test]
fn missing_required_fields_do_not_stop_the_search() {
    let yaml = format!(
        "{HEAD}  network:\n    interfaces:\n    - interface: eth0\n      addresses: [10.0.0.5/24]\n      routes:\n      - gateway: 10.0.0.1\n      - network: 5\n  files:\n  - content: x\n  logging:\n    destinations:\n    - format: json_lines\n      extra: 1\n{TAIL}"
    );
    assert_eq!(
        errors(&yaml),
        // Decode problems come in key order (the document tree keeps keys sorted).
        [
            "machine.files[0].path: is required",
            "machine.logging.destinations[0].extra: unknown field, expected `endpoint` or `format`",
            "machine.logging.destinations[0].endpoint: is required",
            "machine.network.interfaces[0].routes[0].network: is required",
            "machine.network.interfaces[0].routes[1].network: invalid type: integer `5`, expected a string",
        ]
    );
}

#[test]
fn kernel_modules_are_checked_by_field() {
    let yaml = format!(
        "{HEAD}  kernel:\n    modules:\n    - name: br_netfilter\n    - name: loop\n      parameters: [max_loop=64, debug]\n    - name: Bad/Name\n    - name: dummy\n      parameters: ['numdummies=1 2', '=x']\n{TAIL}"
    );
    let e = errors(&yaml);
    let kernel: Vec<&String> = e.iter().filter(|s| s.contains("kernel")).collect();
    assert_eq!(
        kernel,
        [
            "machine.kernel.modules[2].name: \"Bad/Name\" is not a kernel module name (letters a-z, digits, _ and -)",
            "machine.kernel.modules[3].parameters[0]: \"numdummies=1 2\" is not a module parameter (key=value or flag, no spaces)",
            "machine.kernel.modules[3].parameters[1]: \"=x\" is not a module parameter (key=value or flag, no spaces)",
        ]
    );
    // Valid entries decode as written.
    let good = format!(
        "{HEAD}  kernel:\n    modules:\n    - name: br_netfilter\n    - name: loop\n      parameters: [max_loop=64, debug]\n{TAIL}"
    );
    let value = ros_config::parse_yaml_value(&good).unwrap();
    let cfg: ros_config::MachineConfig = serde_json::from_value(value).unwrap();
    let modules = &cfg.machine.kernel.modules;
    assert_eq!(modules[1].name, "loop");
    assert_eq!(modules[1].parameters, ["max_loop=64", "debug"]);
}

#[test]
fn deeply_nested_documents_are_refused_before_parsing() {
    // 200 KB of nested flow sequences: libyaml alone spends ~20 s on this.
    let deep = "[".repeat(200_000);
    let err = ros_config::parse(&deep).unwrap_err().to_string();
    assert!(
        err.contains("nests deeper than 128 levels (line 1, column 129)"),
        "{err}"
    );
    let deep = format!("machine:\n  type: {}", "- ".repeat(100_000));
    let err = ros_config::check_yaml(&deep).unwrap_err().to_string();
    assert!(err.contains("nests deeper than 128 levels"), "{err}");
}

#[test]
fn duplicate_keys_are_refused_with_their_path() {
    for (yaml, path) in [
        ("cluster:\n  name: a\n  name: b\n", "cluster.name"),
        (
            "machine:\n  token: a\n  type: worker\n  token: b\n",
            "machine.token",
        ),
        (
            "machine:\n  type: worker\nmachine:\n  type: controlplane\n",
            "machine",
        ),
        (
            "machine:\n  network:\n    interfaces:\n    - mtu: 1\n      mtu: 2\n",
            "machine.network.interfaces[0].mtu",
        ),
    ] {
        let err = ros_config::check_yaml(yaml).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{path}: duplicate key")),
            "{yaml}: {err}"
        );
    }
}
