//! The kernel command line: what init reads (`ros.platform=`, `ros.config=`, `ros.debug`,
//! `console=`) and what it keeps for machined (everything else, verbatim).

pub const DEFAULT_PLATFORM: &str = "metal";
const KNOWN_ROS_KEYS: &str = "ros.platform, ros.config, ros.debug";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    pub platform: String,
    /// Where machined gets its config: an http(s) URL, an absolute path or a source name.
    pub config: Option<String>,
    pub debug: bool,
    /// Every `console=` value, in order (the last is the kernel's /dev/console).
    pub consoles: Vec<String>,
    /// Parameters init does not consume, as written (quotes kept).
    pub rest: Vec<String>,
    /// One human-readable line per problem; parsing never fails.
    pub warnings: Vec<String>,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            platform: DEFAULT_PLATFORM.to_string(),
            config: None,
            debug: false,
            consoles: Vec::new(),
            rest: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl Cmdline {
    /// The ROS_* variables machined is started with.
    pub fn machined_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("ROS_PLATFORM".to_string(), self.platform.clone())];
        if let Some(config) = &self.config {
            env.push(("ROS_CONFIG".to_string(), config.clone()));
        }
        if self.debug {
            env.push(("ROS_DEBUG".to_string(), "1".to_string()));
        }
        if let Some(console) = self.consoles.last() {
            env.push(("ROS_CONSOLE".to_string(), console.clone()));
        }
        env
    }
}

/// Splits like the kernel does: whitespace separates, double quotes group.
pub fn split(raw: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in raw.chars() {
        if c == '"' {
            quoted = !quoted;
            word.push(c);
        } else if c.is_whitespace() && !quoted {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

pub fn parse(raw: &str) -> Cmdline {
    let mut out = Cmdline::default();
    let mut platform_seen = false;
    let mut words = split(raw).into_iter();
    while let Some(word) = words.next() {
        if word == "--" {
            // Arguments for init itself; keep them all for machined.
            out.rest.push(word);
            out.rest.extend(words.by_ref());
            break;
        }
        let unquoted = word.replace('"', "");
        let (key, value) = match unquoted.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (unquoted.clone(), None),
        };
        match key.as_str() {
            "ros.platform" => {
                if platform_seen {
                    out.warnings
                        .push("ros.platform is given more than once; the last one counts".into());
                }
                platform_seen = true;
                out.platform = match value.as_deref() {
                    Some(v) if valid_platform(v) => v.to_string(),
                    other => {
                        out.warnings.push(format!(
                            "ros.platform={} is malformed (expected a lower-case name such as qemu or metal); using {DEFAULT_PLATFORM}",
                            shown(other)
                        ));
                        DEFAULT_PLATFORM.to_string()
                    }
                };
            }
            "ros.config" => {
                out.config = match value.as_deref() {
                    Some(v) if valid_config_source(v) => Some(v.to_string()),
                    other => {
                        out.warnings.push(format!(
                            "ros.config={} is malformed (expected an http(s) URL, an absolute path or a source name); ignoring it",
                            shown(other)
                        ));
                        None
                    }
                };
            }
            "ros.debug" => {
                out.debug = match value.as_deref() {
                    None | Some("") | Some("1" | "true" | "yes" | "on") => true,
                    Some("0" | "false" | "no" | "off") => false,
                    Some(other) => {
                        out.warnings.push(format!(
                            "ros.debug={other:?} is malformed (expected no value, 1/0, true/false, yes/no or on/off); debug stays off"
                        ));
                        false
                    }
                };
            }
            "console" => {
                match value.as_deref() {
                    Some(v) if !v.is_empty() => out.consoles.push(v.to_string()),
                    other => out.warnings.push(format!(
                        "console={} is malformed (expected a device such as ttyS0,115200); ignoring it",
                        shown(other)
                    )),
                }
                out.rest.push(word);
            }
            k if k.starts_with("ros.") => {
                out.warnings.push(format!(
                    "unknown kernel parameter {k} ignored (init knows {KNOWN_ROS_KEYS})"
                ));
                out.rest.push(word);
            }
            _ => out.rest.push(word),
        }
    }
    out
}

fn shown(value: Option<&str>) -> String {
    match value {
        None => "(no value)".to_string(),
        Some(v) => format!("{v:?}"),
    }
}

fn valid_platform(value: &str) -> bool {
    let mut chars = value.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && value.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_config_source(value: &str) -> bool {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    if let Some((scheme, rest)) = value.split_once("://") {
        return matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.starts_with('/');
    }
    if value.starts_with('/') {
        return true;
    }
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_qemu_command_line() {
        let c = parse(
            "BOOT_IMAGE=/vmlinuz console=tty0 console=ttyS0,115200 ros.platform=qemu ros.debug ros.config=http://10.0.2.2:8080/cp.yaml quiet\n",
        );
        assert_eq!(c.platform, "qemu");
        assert_eq!(c.config.as_deref(), Some("http://10.0.2.2:8080/cp.yaml"));
        assert!(c.debug);
        assert_eq!(c.consoles, vec!["tty0", "ttyS0,115200"]);
        assert_eq!(
            c.rest,
            vec![
                "BOOT_IMAGE=/vmlinuz",
                "console=tty0",
                "console=ttyS0,115200",
                "quiet"
            ]
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn defaults_when_nothing_is_given() {
        let c = parse("");
        assert_eq!(c, Cmdline::default());
        assert_eq!(c.platform, "metal");
        assert_eq!(
            c.machined_env(),
            vec![("ROS_PLATFORM".into(), "metal".into())]
        );
    }

    #[test]
    fn unknown_ros_keys_warn_and_are_kept() {
        let c = parse("ros.plaftorm=qemu ros.frobnicate");
        assert_eq!(c.platform, DEFAULT_PLATFORM);
        assert_eq!(c.warnings.len(), 2);
        assert!(c.warnings[0].contains("unknown kernel parameter ros.plaftorm"));
        assert!(c.warnings[1].contains("ros.frobnicate"));
        assert_eq!(c.rest, vec!["ros.plaftorm=qemu", "ros.frobnicate"]);
    }

    #[test]
    fn malformed_values_get_a_message_and_a_safe_default() {
        let c = parse("ros.platform=QEMU! ros.config=ftp://x/y ros.debug=maybe console=");
        assert_eq!(c.platform, DEFAULT_PLATFORM);
        assert_eq!(c.config, None);
        assert!(!c.debug);
        assert!(c.consoles.is_empty());
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("ros.platform=\"QEMU!\" is malformed"));
        assert!(c.warnings[0].contains("using metal"));
        assert!(c.warnings[1].contains("ros.config=\"ftp://x/y\" is malformed"));
        assert!(c.warnings[2].contains("ros.debug=\"maybe\" is malformed"));
        assert!(c.warnings[3].contains("console="));
    }

    #[test]
    fn missing_values_are_malformed() {
        let c = parse("ros.platform ros.config ros.config=");
        assert_eq!(c.platform, DEFAULT_PLATFORM);
        assert_eq!(c.config, None);
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("ros.platform=(no value)"));
    }

    #[test]
    fn config_sources() {
        for ok in [
            "https://h/c.yaml",
            "/etc/ros/config.yaml",
            "metal-iso",
            "cidata",
        ] {
            assert_eq!(
                parse(&format!("ros.config={ok}")).config.as_deref(),
                Some(ok)
            );
        }
        for bad in ["http://", "https:///x", "gopher://h/x", "rel/path", "a\tb"] {
            let c = parse(&format!("ros.config=\"{bad}\""));
            assert_eq!(c.config, None, "{bad}");
            assert_eq!(c.warnings.len(), 1, "{bad}");
        }
    }

    #[test]
    fn debug_values() {
        assert!(parse("ros.debug=1").debug);
        assert!(parse("ros.debug=on").debug);
        assert!(!parse("ros.debug=0").debug);
        assert!(!parse("ros.debug ros.debug=off").debug);
    }

    #[test]
    fn last_platform_wins_with_a_warning() {
        let c = parse("ros.platform=qemu ros.platform=aws");
        assert_eq!(c.platform, "aws");
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn quotes_group_words_like_the_kernel() {
        assert_eq!(
            split(r#"a="b c" d "e f=g" "#),
            vec![r#"a="b c""#, "d", r#""e f=g""#]
        );
        let c = parse(r#"ros.config="/x y" other="1 2""#);
        // A path with a space is rejected, but the word stays intact.
        assert_eq!(c.config, None);
        assert_eq!(c.rest, vec![r#"other="1 2""#]);
    }

    #[test]
    fn init_arguments_after_double_dash_are_kept() {
        let c = parse("ros.platform=qemu -- ros.debug single");
        assert!(!c.debug);
        assert_eq!(c.rest, vec!["--", "ros.debug", "single"]);
    }

    #[test]
    fn env_for_machined() {
        let c = parse("ros.platform=qemu ros.config=/c.yaml ros.debug console=ttyS0");
        assert_eq!(
            c.machined_env(),
            vec![
                ("ROS_PLATFORM".into(), "qemu".into()),
                ("ROS_CONFIG".into(), "/c.yaml".into()),
                ("ROS_DEBUG".into(), "1".into()),
                ("ROS_CONSOLE".into(), "ttyS0".into()),
            ]
        );
    }
}
