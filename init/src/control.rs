//! The control protocol on `/run/ros/init.sock` (a Unix stream socket, root only): the client
//! sends one line, `poweroff`, `reboot` or `halt`; init answers `ok` and shuts down, or
//! `error: <why>` and does nothing. One request per connection.

use crate::power::PowerAction;

pub const SOCKET_PATH: &str = "/run/ros/init.sock";
/// Longest request read; anything longer is rejected.
pub const MAX_REQUEST: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Sent back, newline included.
    pub reply: String,
    pub action: Option<PowerAction>,
}

/// Answers the bytes a client sent (up to and including its first newline, or all of them).
pub fn answer(request: &[u8]) -> Answer {
    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let reject = |why: String| Answer {
        reply: format!("error: {why} (expected poweroff, reboot or halt)\n"),
        action: None,
    };
    if request.len() > MAX_REQUEST && !request[..MAX_REQUEST].contains(&b'\n') {
        return reject(format!("request longer than {MAX_REQUEST} bytes"));
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return reject("request is not UTF-8".to_string());
    };
    let word = text.trim();
    if word.is_empty() {
        return reject("empty request".to_string());
    }
    match PowerAction::from_word(word) {
        Some(action) => Answer {
            reply: "ok\n".to_string(),
            action: Some(action),
        },
        None => reject(format!("unknown request {word:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_requests() {
        for (line, action) in [
            ("poweroff\n", PowerAction::Poweroff),
            ("reboot\n", PowerAction::Reboot),
            ("halt\n", PowerAction::Halt),
            ("reboot", PowerAction::Reboot),
            ("reboot\r\n", PowerAction::Reboot),
            ("  halt \n", PowerAction::Halt),
        ] {
            let a = answer(line.as_bytes());
            assert_eq!(a.reply, "ok\n", "{line:?}");
            assert_eq!(a.action, Some(action), "{line:?}");
        }
    }

    #[test]
    fn only_the_first_line_counts() {
        assert_eq!(
            answer(b"poweroff\nreboot\n").action,
            Some(PowerAction::Poweroff)
        );
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        for (request, why) in [
            (&b"shutdown\n"[..], "unknown request \"shutdown\""),
            (b"POWEROFF\n", "unknown request \"POWEROFF\""),
            (b"\n", "empty request"),
            (b"", "empty request"),
            (b"\xff\xfe\n", "not UTF-8"),
        ] {
            let a = answer(request);
            assert_eq!(a.action, None, "{request:?}");
            assert!(a.reply.starts_with("error: "), "{}", a.reply);
            assert!(a.reply.contains(why), "{}", a.reply);
            assert!(a.reply.ends_with("(expected poweroff, reboot or halt)\n"));
        }
        let long = vec![b'a'; MAX_REQUEST + 1];
        assert!(answer(&long).reply.contains("longer than"));
    }
}
