//! The kernel command line (`/proc/cmdline`): `key=value` and bare flags.

#[derive(Debug, Clone, Default)]
pub struct Cmdline {
    args: Vec<(String, Option<String>)>,
}

impl Cmdline {
    pub fn parse(text: &str) -> Self {
        let args = text
            .split_whitespace()
            .map(|word| match word.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (word.to_string(), None),
            })
            .collect();
        Self { args }
    }

    pub fn read() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
    }

    /// The last value given for `key` (later arguments override earlier ones).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn has(&self, key: &str) -> bool {
        self.args.iter().any(|(k, _)| k == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_value_wins_and_flags_are_seen() {
        let c = Cmdline::parse("console=ttyS0 ros.platform=qemu ros.debug ros.platform=metal\n");
        assert_eq!(c.get("ros.platform"), Some("metal"));
        assert!(c.has("ros.debug"));
        assert_eq!(c.get("ros.config"), None);
    }
}
