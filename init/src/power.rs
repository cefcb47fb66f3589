//! The three ways PID 1 can end the system.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Poweroff,
    Reboot,
    Halt,
}

impl PowerAction {
    /// The control-protocol word for this action.
    pub fn word(self) -> &'static str {
        match self {
            PowerAction::Poweroff => "poweroff",
            PowerAction::Reboot => "reboot",
            PowerAction::Halt => "halt",
        }
    }

    /// Parses a control-protocol word (exact, lower case).
    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "poweroff" => Some(PowerAction::Poweroff),
            "reboot" => Some(PowerAction::Reboot),
            "halt" => Some(PowerAction::Halt),
            _ => None,
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for action in [
            PowerAction::Poweroff,
            PowerAction::Reboot,
            PowerAction::Halt,
        ] {
            assert_eq!(PowerAction::from_word(action.word()), Some(action));
            assert_eq!(action.to_string(), action.word());
        }
        assert_eq!(PowerAction::from_word("shutdown"), None);
        assert_eq!(PowerAction::from_word("Reboot"), None);
    }
}
