//! Small checks on the syntax of single values (addresses, names, tokens, URLs).

use ipnet::IpNet;
use std::net::IpAddr;

/// A CIDR like `10.0.0.5/24` or `fd00::1/64`; the prefix length is required.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    if !s.contains('/') {
        return None;
    }
    s.parse().ok()
}

pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// One DNS label: 1-63 letters, digits and hyphens, not starting or ending with a hyphen.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes-style name: a DNS label in lowercase (cluster names).
pub fn is_lowercase_dns_label(s: &str) -> bool {
    is_dns_label(s) && !s.chars().any(|c| c.is_ascii_uppercase())
}

/// A DNS name (labels separated by dots, at most 253 characters, optional trailing dot).
pub fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A certificate subject alternative name: an IP address or a DNS name (`*.` wildcard allowed).
pub fn is_san(s: &str) -> bool {
    parse_ip(s).is_some() || is_dns_name(s.strip_prefix("*.").unwrap_or(s))
}

/// A host for a server list: IP address or DNS name.
pub fn is_host(s: &str) -> bool {
    parse_ip(s).is_some() || is_dns_name(s)
}

/// A server as `host`, `host:port`, an IP address or `[IPv6]:port`; the port is `default_port`
/// when omitted. Returns the host (IPv6 without brackets) and the port, or why it is not one.
pub fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    if parse_ip(s).is_some() {
        return Ok((s.to_string(), default_port));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?} has an unclosed '['"))?;
        if !matches!(parse_ip(v6), Some(IpAddr::V6(_))) {
            return Err(format!("{v6:?} in brackets is not an IPv6 address"));
        }
        match after.strip_prefix(':') {
            Some(port) => (v6, Some(port)),
            None if after.is_empty() => (v6, None),
            None => return Err(format!("{s:?}: expected [IPv6]:port")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if !s.starts_with('[') && !is_host(host) {
        return Err(format!(
            "{s:?} is neither an IP address, a DNS name, nor host:port"
        ));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{s:?} has an invalid port {p:?} (1-65535)")),
        },
    };
    Ok((host.to_string(), port))
}

/// Bootstrap/machine token format (as Talos and kubeadm): `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_token(s: &str) -> bool {
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    match s.split_once('.') {
        Some((a, b)) => ok(a, 6) && ok(b, 16),
        None => false,
    }
}

/// The parts of a control-plane endpoint URL that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host without brackets: an IP address or a DNS name.
    pub host: String,
    pub port: u16,
}

/// Parses `https://host[:port]` (port 443 when omitted); any path other than `/` is refused.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if url.scheme() != "https" {
        return Err(format!("{s:?} must use https:// (not {}://)", url.scheme()));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(format!("{s:?} has no host")),
    };
    if url.path() != "/" && !url.path().is_empty() {
        return Err(format!("{s:?} must not have a path"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!("{s:?} must be just https://host:port"));
    }
    Ok(Endpoint {
        host,
        port: url.port_or_known_default().unwrap_or(443),
    })
}

/// A URL with one of `schemes` and a host (mirrors, log destinations).
pub fn check_url(s: &str, schemes: &[&str], need_port: bool) -> Result<(), String> {
    let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !schemes.contains(&url.scheme()) {
        let list: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        return Err(format!("{s:?} must use {}", list.join(" or ")));
    }
    if url.host().is_none() {
        return Err(format!("{s:?} has no host"));
    }
    if need_port && url.port().is_none() {
        return Err(format!("{s:?} has no port"));
    }
    Ok(())
}

/// Kubernetes label name part: 1-63 alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Kubernetes label/taint key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_name(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// Kubernetes label value: empty or a label name.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// A kernel parameter name: dotted or slashed lowercase words (`net.ipv4.ip_forward`).
pub fn is_sysctl_key(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-'))
        && !s.split(['.', '/']).any(|p| p.is_empty() || p == "..")
}

/// A kernel module name as the config names it: `[a-z0-9_-]+`.
pub fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 56
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// A module parameter: `key=value` or a bare `flag`, where the key is a parameter name and
/// nothing is blank or whitespace (the kernel splits parameters on spaces).
pub fn is_module_parameter(s: &str) -> bool {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
}

/// An environment variable name.
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A MAC address pattern: six hex pairs separated by `:`; `*` matches any rest of a pair list.
pub fn is_hwaddr_pattern(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.is_empty() || parts.len() > 6 {
        return false;
    }
    let last = parts.len() - 1;
    for (i, p) in parts.iter().enumerate() {
        let ok = *p == "*"
            || (p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
            || (p.len() == 2 && p.ends_with('*') && p.as_bytes()[0].is_ascii_hexdigit());
        if !ok || (parts.len() < 6 && i == last && !p.contains('*')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_needs_valid_octets_and_prefix() {
        assert!(parse_cidr("10.0.0.5/24").is_some());
        assert!(parse_cidr("fd00::5/64").is_some());
        assert!(parse_cidr("10.0.0.300/24").is_none());
        assert!(parse_cidr("10.0.0.5").is_none());
        assert!(parse_cidr("10.0.0.5/33").is_none());
    }

    #[test]
    fn host_ports() {
        let ok = |s: &str| parse_host_port(s, 123).unwrap();
        assert_eq!(ok("pool.ntp.org"), ("pool.ntp.org".into(), 123));
        assert_eq!(ok("10.0.2.2:40123"), ("10.0.2.2".into(), 40123));
        assert_eq!(
            ok("time.example.com:1230"),
            ("time.example.com".into(), 1230)
        );
        assert_eq!(ok("fd00::1"), ("fd00::1".into(), 123));
        assert_eq!(ok("[fd00::1]:999"), ("fd00::1".into(), 999));
        assert_eq!(ok("[fd00::1]"), ("fd00::1".into(), 123));
        for bad in [
            "",
            "a b",
            "host:0",
            "host:70000",
            "host:",
            "[10.0.0.1]:5",
            "[fd00::1",
            ":123",
            "bad_host",
        ] {
            assert!(parse_host_port(bad, 123).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn tokens() {
        assert!(is_token("abcdef.0123456789abcdef"));
        assert!(!is_token("abcdef.0123456789abcde"));
        assert!(!is_token("ABCDEF.0123456789abcdef"));
        assert!(!is_token("abcdef0123456789abcdef"));
    }

    #[test]
    fn endpoints() {
        let e = parse_endpoint("https://10.5.0.2:6443").unwrap();
        assert_eq!(
            e,
            Endpoint {
                host: "10.5.0.2".into(),
                port: 6443
            }
        );
        let e = parse_endpoint("https://[fd00::2]:6443").unwrap();
        assert_eq!(e.host, "fd00::2");
        assert_eq!(parse_endpoint("https://cp.example.com").unwrap().port, 443);
        assert!(parse_endpoint("http://10.5.0.2:6443").is_err());
        assert!(parse_endpoint("10.5.0.2:6443").is_err());
        assert!(parse_endpoint("https://10.5.0.2:6443/api").is_err());
    }

    #[test]
    fn names_and_labels() {
        assert!(is_dns_name("node-1.example.com"));
        assert!(!is_dns_name("-bad.example"));
        assert!(is_san("*.example.com") && is_san("10.0.0.1") && !is_san("a b"));
        assert!(is_label_key("node.kubernetes.io/role") && !is_label_key("/x"));
        assert!(is_label_value("") && !is_label_value("-x"));
        assert!(is_sysctl_key("net.ipv4.ip_forward") && !is_sysctl_key("net..x"));
        assert!(is_env_name("HTTP_PROXY") && !is_env_name("1X"));
        assert!(is_hwaddr_pattern("52:54:00:12:34:56") && is_hwaddr_pattern("52:54:00:*"));
        assert!(!is_hwaddr_pattern("52:54:00") && !is_hwaddr_pattern("zz:54:00:12:34:56"));
    }
}
