//! The serial console log a VM writes to a file: reading it, waiting for lines, its tail.

use std::path::Path;

/// The console as text (invalid UTF-8 and terminal escapes survive as replacement chars).
pub fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Signs that the guest kernel died, which make any wait fail at once.
pub const FATAL_MARKERS: &[&str] = &["Kernel panic - not syncing", "end Kernel panic"];

pub fn fatal_marker(text: &str) -> Option<&'static str> {
    FATAL_MARKERS.iter().copied().find(|m| text.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_takes_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(
            fatal_marker("x\nKernel panic - not syncing: boom"),
            Some("Kernel panic - not syncing")
        );
        assert_eq!(fatal_marker("fine"), None);
    }
}
