//! Progress display for long steps; hidden automatically when stderr is not a terminal.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

#[derive(Clone, Default)]
pub struct Progress {
    multi: MultiProgress,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
        }
    }

    /// A spinner for a step of unknown length.
    pub fn step(&self, message: impl Into<String>) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// Ends a step; the message stays on screen (or goes to stderr when there is no screen).
    pub fn done(&self, bar: &ProgressBar, message: impl Into<String>) {
        let message = message.into();
        if self.multi.is_hidden() {
            eprintln!("==> {message}");
        }
        bar.finish_with_message(message);
    }

    /// A bar counting `total` items.
    pub fn items(&self, message: impl Into<String>, total: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(message.into());
        bar
    }

    /// A line that stays on screen above the bars.
    pub fn note(&self, line: impl AsRef<str>) {
        if self.multi.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.multi.println(line.as_ref()).ok();
        }
    }
}
