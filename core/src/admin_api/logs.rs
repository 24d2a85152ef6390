//! Recent log lines for `/api/logs`: a tracing layer that keeps the last [`LOG_RING_LINES`]
//! events in memory.
//!
//! Owns: [`LogRing`] (a bounded, mutex-guarded ring of [`LogLine`]s, one per process via
//! [`LogRing::global`]) and [`RingLayer`], the `tracing_subscriber` layer the binary installs
//! next to its stderr formatter. Events are formatted once, when logged (level, target,
//! message, fields, the span context such as a connection's correlation id — kept apart too, from
//! the outermost `conn{id=…}` span, so [`LogRing::recent`] can pick one connection's or one
//! message's lines); the lock is held only to push. Does not own: which events are emitted or
//! filtered (the subscriber's filter applies before this layer sees an event).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How many lines the ring keeps.
pub const LOG_RING_LINES: usize = 1000;

/// One logged event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// Seconds since the epoch (with milliseconds).
    pub time: f64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The event's target (`shardgate::security` for security events).
    pub target: String,
    /// The message and its fields, `key=value` after the message; span fields (such as the
    /// connection id `conn`) first, in brackets.
    pub message: String,
    /// The correlation id of the connection or message it is about (`crate::correlation`):
    /// the `id` of its outermost `conn` span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
}

/// The last [`LOG_RING_LINES`] events.
#[derive(Debug, Default)]
pub struct LogRing {
    lines: Mutex<VecDeque<LogLine>>,
}

impl LogRing {
    /// The process's ring (what the binary's [`RingLayer`] fills).
    pub fn global() -> &'static LogRing {
        static RING: OnceLock<LogRing> = OnceLock::new();
        RING.get_or_init(LogRing::default)
    }

    /// Adds a line, dropping the oldest when full.
    pub fn push(&self, line: LogLine) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() >= LOG_RING_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    /// The newest `limit` lines at `min_level` or more severe, oldest first.
    pub fn recent(&self, min_level: tracing::Level, limit: usize) -> Vec<LogLine> {
        self.recent_about(min_level, limit, None)
    }

    /// The newest `limit` lines at `min_level` or more severe, oldest first; with `about`,
    /// only the lines of that correlation id, or mentioning it (a queue id, an address).
    pub fn recent_about(&self, min_level: tracing::Level, limit: usize, about: Option<&str>) -> Vec<LogLine> {
        let Ok(lines) = self.lines.lock() else { return Vec::new() };
        let about = about.filter(|a| !a.is_empty());
        let mut picked: Vec<LogLine> = lines
            .iter()
            .rev()
            .filter(|l| l.level.parse::<tracing::Level>().is_ok_and(|level| level <= min_level))
            .filter(|l| about.is_none_or(|id| l.correlation.as_deref() == Some(id) || l.message.contains(id)))
            .take(limit)
            .cloned()
            .collect();
        picked.reverse();
        picked
    }
}

/// The tracing layer that feeds [`LogRing::global`].
#[derive(Debug, Default, Clone, Copy)]
pub struct RingLayer;

/// Collects an event's or span's fields as text.
#[derive(Default)]
struct FieldText {
    message: String,
    fields: String,
    /// The `id` field's value, kept apart (a `conn` span's correlation id).
    id: Option<String>,
}

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            if field.name() == "id" {
                self.id = Some(value.to_string());
            }
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let start = self.fields.len();
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
            if field.name() == "id" {
                self.id = Some(self.fields[start + " id=".len()..].to_string());
            }
        }
    }
}

/// A span's fields as text, stored in the span's extensions when it is created, and the
/// correlation id of a `conn` span.
struct SpanFields {
    text: String,
    correlation: Option<String>,
}

impl<S> Layer<S> for RingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut text = FieldText::default();
        attrs.record(&mut text);
        let correlation = if span.name() == "conn" { text.id } else { None };
        span.extensions_mut().insert(SpanFields { text: format!("{}{}", span.name(), text.fields), correlation });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut text = FieldText::default();
        event.record(&mut text);
        let mut message = String::new();
        let mut correlation = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    let _ = write!(message, "[{}] ", fields.text);
                    if correlation.is_none() {
                        correlation = fields.correlation.clone();
                    }
                }
            }
        }
        message.push_str(&text.message);
        message.push_str(&text.fields);
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as f64 / 1000.0).unwrap_or(0.0);
        LogRing::global().push(LogLine {
            time,
            level: event.metadata().level().to_string(),
            target: event.metadata().target().to_string(),
            message,
            correlation,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_land_in_the_ring_with_their_span_and_fields() {
        let subscriber = tracing_subscriber::registry().with(RingLayer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("conn", id = 42u64);
            let _entered = span.enter();
            tracing::warn!(target: "shardgate::security", peer = "192.0.2.1", "refused by ip_block");
            tracing::info!("routine");
        });
        let warnings = LogRing::global().recent(tracing::Level::WARN, 10);
        let line = warnings.iter().find(|l| l.message.contains("refused by ip_block")).expect("security line kept");
        assert_eq!(line.target, "shardgate::security");
        assert_eq!(line.level, "WARN");
        assert!(line.message.starts_with("[conn id=42] refused by ip_block"), "{}", line.message);
        assert!(line.message.contains("peer=192.0.2.1"), "{}", line.message);
        assert!(warnings.iter().all(|l| l.level != "INFO"));
        assert!(LogRing::global().recent(tracing::Level::INFO, 1000).iter().any(|l| l.message.contains("routine")));
    }

    #[test]
    fn lines_of_one_correlation_id_are_picked_out() {
        let subscriber = tracing_subscriber::registry().with(RingLayer);
        tracing::subscriber::with_default(subscriber, || {
            // The SMTP session on a shard, then the delivery on the control core.
            tracing::info_span!("conn", id = %"01000000000000c1").in_scope(|| tracing::info!(queue_id = "Q1", "message queued"));
            tracing::info_span!("conn", id = %"01000000000000c2").in_scope(|| tracing::info!(queue_id = "Q2", "message queued"));
            let conn = tracing::info_span!("conn", id = %"01000000000000c1");
            tracing::info_span!(parent: &conn, "mail", queue_id = "Q1").in_scope(|| tracing::info!(to = "a@example.net", "delivered"));
        });
        let lines = LogRing::global().recent_about(tracing::Level::INFO, 1000, Some("01000000000000c1"));
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(lines.len(), 2, "{messages:?}");
        assert!(lines.iter().all(|l| l.correlation.as_deref() == Some("01000000000000c1")), "{lines:?}");
        assert!(messages[0].starts_with("[conn id=01000000000000c1] message queued queue_id=Q1"), "{messages:?}");
        assert!(messages[1].starts_with("[conn id=01000000000000c1] [mail queue_id=Q1] delivered"), "{messages:?}");
        // A queue id finds the lines that mention it.
        assert_eq!(LogRing::global().recent_about(tracing::Level::INFO, 1000, Some("Q2")).len(), 1);
    }
}
