//! Machine events (config applied, service state changes, power actions) for `rosctl events`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

const KEEP: usize = 1000;

#[derive(Debug, Clone)]
pub struct Event {
    pub id: u64,
    pub time: String,
    pub kind: String,
    pub message: String,
}

#[derive(Clone)]
pub struct EventBus {
    recent: Arc<Mutex<(u64, VecDeque<Event>)>>,
    live: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            recent: Arc::new(Mutex::new((0, VecDeque::new()))),
            live,
        }
    }

    pub fn publish(&self, kind: &str, message: impl Into<String>) {
        let mut recent = self.recent.lock().expect("events lock");
        recent.0 += 1;
        let event = Event {
            id: recent.0,
            time: crate::clock::now_rfc3339(),
            kind: kind.to_string(),
            message: message.into(),
        };
        tracing::info!(kind, "{}", event.message);
        if recent.1.len() == KEEP {
            recent.1.pop_front();
        }
        recent.1.push_back(event.clone());
        let _ = self.live.send(event);
    }

    /// The last `tail` events and a receiver for later ones, taken atomically.
    pub fn subscribe(&self, tail: usize) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let recent = self.recent.lock().expect("events lock");
        let rx = self.live.subscribe();
        let skip = recent.1.len().saturating_sub(tail);
        (recent.1.iter().skip(skip).cloned().collect(), rx)
    }
}
