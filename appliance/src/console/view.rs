//! What the console shows: a model built from successive API answers, and its drawing.
//!
//! Owns: [`Model`] (the latest and previous stats snapshots, so counters become per-second
//! rates; certificates; recent warnings and errors; the status line) and [`draw`], which lays
//! it out for an 80x24 terminal with plain colours and no mouse: a title line, a shard table
//! (load: open connections, accepts/s, requests/s, bytes/s), a protocol table (rates, results
//! and latency percentiles for TCP, HTTP, TLS, DNS, RADIUS; SMTP messages/s and delivery
//! outcomes), and certificates beside recent
//! errors; the mail queue's size in the title when `[email]` is served. Larger terminals get more rows.
//! The mail queue page ([`Page::Queue`]) lists the queued messages (id, age, state, attempts,
//! sender, recipients) with a selection, the selected message's correlation id, next attempt
//! and last error, and the queue actions' keys and outcome. Does not own: fetching (`client`),
//! the keys (`super`) or the terminal.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::Frame;
use serde_json::Value;

/// Which screen is shown.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// Shards, protocols, certificates, warnings.
    #[default]
    Overview,
    /// The mail queue, with actions.
    Queue,
}

/// Everything on screen.
#[derive(Debug, Default)]
pub struct Model {
    /// The API being watched.
    pub api: String,
    latest: Option<(Instant, Value)>,
    previous: Option<(Instant, Value)>,
    /// `/api/certs`.
    pub certs: Value,
    /// Recent warnings and errors, newest last.
    pub errors: Vec<String>,
    /// The last failure talking to the API, if the last refresh failed.
    pub status: Option<String>,
    /// Messages in the mail queue (`None` without `[email]`).
    pub mail_queue: Option<u64>,
    /// The screen shown.
    pub page: Page,
    /// The oldest queued messages (`/api/queue` → `list`).
    pub queue: Vec<Value>,
    /// When `queue` was fetched (ms since the epoch), for ages and next attempts.
    pub queue_fetched_ms: u64,
    /// The selected message's queue id (kept across refreshes).
    pub selected: Option<String>,
    /// A delete waiting for `y` (the message's queue id).
    pub confirm_delete: Option<String>,
    /// The outcome of the last queue action.
    pub notice: Option<String>,
}

impl Model {
    /// A model for the API at `api`.
    pub fn new(api: &str) -> Model {
        Model { api: api.to_string(), ..Default::default() }
    }

    /// Takes a fresh `/api/stats` answer.
    pub fn push_stats(&mut self, at: Instant, stats: Value) {
        // Only a newer merge moves the rate window (the API may answer the same one twice).
        if self.latest.as_ref().is_some_and(|(_, s)| s["unix_time"] == stats["unix_time"] && s == &stats) {
            return;
        }
        self.previous = self.latest.take();
        self.latest = Some((at, stats));
    }

    /// Takes the `/api/logs?level=warn` answer.
    pub fn push_logs(&mut self, logs: &Value) {
        self.errors = logs["lines"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| format!("{} {}", l["level"].as_str().unwrap_or("?"), l["message"].as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
    }

    /// Takes a `/api/queue` answer (the count and the oldest messages).
    pub fn push_queue(&mut self, queue: &Value, now_ms: u64) {
        self.mail_queue = queue["messages"].as_u64();
        self.queue = queue["list"].as_array().cloned().unwrap_or_default();
        self.queue_fetched_ms = now_ms;
        let still_there = self.selected.as_ref().is_some_and(|id| self.queue.iter().any(|m| m["id"].as_str() == Some(id)));
        if !still_there {
            self.selected = self.queue.first().and_then(|m| m["id"].as_str()).map(str::to_string);
        }
    }

    /// Moves the selection by `step` rows (clamped).
    pub fn select(&mut self, step: isize) {
        let current = self.selected_index().unwrap_or(0) as isize;
        let last = self.queue.len().saturating_sub(1) as isize;
        let index = (current + step).clamp(0, last.max(0)) as usize;
        self.selected = self.queue.get(index).and_then(|m| m["id"].as_str()).map(str::to_string);
    }

    fn selected_index(&self) -> Option<usize> {
        let id = self.selected.as_deref()?;
        self.queue.iter().position(|m| m["id"].as_str() == Some(id))
    }

    fn stats(&self) -> Option<&Value> {
        self.latest.as_ref().map(|(_, s)| s)
    }

    /// Per-second rate of the counter at `pointer` (a JSON pointer) between the last two snapshots.
    fn rate(&self, pointer: &str) -> Option<f64> {
        let ((t1, now), (t0, before)) = (self.latest.as_ref()?, self.previous.as_ref()?);
        let seconds = t1.duration_since(*t0).as_secs_f64();
        let (a, b) = (now.pointer(pointer)?.as_u64()?, before.pointer(pointer)?.as_u64()?);
        (seconds > 0.0).then(|| a.saturating_sub(b) as f64 / seconds)
    }
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// A rate for a table cell: `-` until two snapshots exist.
fn rate_text(rate: Option<f64>) -> String {
    match rate {
        None => "-".into(),
        Some(r) if r >= 10_000.0 => format!("{:.0}k", r / 1000.0),
        Some(r) if r >= 100.0 => format!("{r:.0}"),
        Some(r) => format!("{r:.1}"),
    }
}

fn bytes_text(rate: Option<f64>) -> String {
    match rate {
        None => "-".into(),
        Some(r) if r >= 1e9 => format!("{:.1}G", r / 1e9),
        Some(r) if r >= 1e6 => format!("{:.1}M", r / 1e6),
        Some(r) if r >= 1e3 => format!("{:.1}k", r / 1e3),
        Some(r) => format!("{r:.0}"),
    }
}

/// Microseconds as a short duration.
fn micros_text(value: &Value) -> String {
    let Some(us) = value.as_u64() else { return "-".into() };
    if us >= 1_000_000 {
        format!("{:.1}s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{us}us")
    }
}

fn header(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.to_vec()).style(Style::default().add_modifier(Modifier::BOLD))
}

fn boxed(title: &str) -> Block<'_> {
    Block::default().borders(Borders::ALL).title(Span::styled(format!(" {title} "), Style::default().add_modifier(Modifier::BOLD)))
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Draws the model.
pub fn draw(frame: &mut Frame<'_>, model: &Model) {
    if model.page == Page::Queue {
        draw_queue_page(frame, model);
        return;
    }
    let area = frame.area();
    let shard_count = model.stats().and_then(|s| s["shards"].as_array()).map_or(1, Vec::len) as u16;
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length((shard_count + 3).min(8)),
            Constraint::Length(9),
            Constraint::Min(4),
            Constraint::Length(1),
        ])
        .split(area);
    draw_title(frame, rows[0], model);
    draw_shards(frame, rows[1], model);
    draw_protocols(frame, rows[2], model);
    let bottom = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(40), Constraint::Percentage(60)])
        .split(rows[3]);
    draw_certs(frame, bottom[0], model);
    draw_errors(frame, bottom[1], model);
    let footer = match &model.status {
        Some(problem) => Line::from(Span::styled(format!("! {problem}"), Style::default().fg(Color::Red))),
        None => Line::from("q quit   r refresh now   m mail queue   (updates every second)"),
    };
    frame.render_widget(Paragraph::new(footer), rows[4]);
}

fn draw_title(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let generation = model.stats().map(|s| number(&s["config_generation"])).unwrap_or(0);
    let queue = model.mail_queue.map(|n| format!("  mail queue {n}")).unwrap_or_default();
    let text = format!("shardgate console  {}  config gen {generation}{queue}", model.api);
    frame.render_widget(Paragraph::new(Line::from(Span::styled(text, Style::default().add_modifier(Modifier::REVERSED)))), area);
}

fn draw_shards(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let mut rows = Vec::new();
    if let Some(shards) = model.stats().and_then(|s| s["shards"].as_array()) {
        for (i, shard) in shards.iter().enumerate() {
            let sum = |field: &str, s: &Value| -> u64 { s["routes"].as_object().map_or(0, |r| r.values().map(|c| number(&c[field])).sum()) };
            let at = |s: &Value| s["shards"][i].clone();
            let rate_of = |field: &'static str| {
                let ((t1, now), (t0, before)) = (model.latest.as_ref()?, model.previous.as_ref()?);
                let seconds = t1.duration_since(*t0).as_secs_f64();
                (seconds > 0.0).then(|| sum(field, &at(now)).saturating_sub(sum(field, &at(before))) as f64 / seconds)
            };
            rows.push(Row::new(vec![
                number(&shard["shard"]).to_string(),
                number(&shard["cpu"]).to_string(),
                sum("active", shard).to_string(),
                rate_text(rate_of("accepted")),
                rate_text(rate_of("http_requests")),
                bytes_text(rate_of("bytes_upstream")),
                bytes_text(rate_of("bytes_downstream")),
                number(&shard["dns"]["udp_queries"]).saturating_add(number(&shard["dns"]["tcp_queries"])).to_string(),
                number(&shard["radius"]["received"]).to_string(),
            ]));
        }
    }
    let widths = [
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(8),
    ];
    let table = Table::new(rows, widths)
        .header(header(&["shard", "cpu", "open", "conn/s", "req/s", "in B/s", "out B/s", "dns tot", "rad tot"]))
        .block(boxed("shards"));
    frame.render_widget(table, area);
}

fn draw_protocols(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let empty = Value::Null;
    let stats = model.stats().unwrap_or(&empty);
    let latency = |op: &str| {
        // The last few seconds when there were any, else since start.
        let recent = &stats["latency_recent"][op];
        let summary = if recent.is_object() { recent } else { &stats["latency"][op] };
        [micros_text(&summary["p50_us"]), micros_text(&summary["p90_us"]), micros_text(&summary["p99_us"]), micros_text(&summary["max_us"])]
    };
    let row = |name: &str, rate: Option<f64>, detail: String, op: &str| {
        let [p50, p90, p99, max] = latency(op);
        Row::new(vec![name.to_string(), rate_text(rate), detail, p50, p90, p99, max])
    };
    let t = &stats["total"];
    let dns = &stats["dns"];
    let radius = &stats["radius"];
    let rows = vec![
        row("tcp", model.rate("/total/accepted"), format!("open {} fail {}", number(&t["active"]), number(&t["connect_failed"])), "tcp_connect"),
        row(
            "http",
            model.rate("/total/http_requests"),
            format!("4xx {} 5xx {}", number(&t["http_4xx"]), number(&t["http_5xx"])),
            "http_request",
        ),
        row("tls", model.rate("/total/tls_handshakes"), format!("fail {} ktls {}", number(&t["tls_failures"]), number(&t["ktls_sessions"])), "tls_handshake"),
        row(
            "dns",
            model.rate("/dns/answers").zip(model.rate("/dns/nxdomain")).map(|(a, n)| a + n),
            format!("nx {} rrl drop {}", number(&dns["nxdomain"]), number(&dns["rrl"]["dropped"])),
            "dns_query",
        ),
        row(
            "radius",
            model.rate("/radius/received"),
            format!("ok {} rej {}", number(&radius["access_accepts"]), number(&radius["access_rejects"])),
            "radius_request",
        ),
        // Messages accepted per second; delivery outcomes from the control core.
        row(
            "smtp",
            model.rate("/smtp/messages_accepted"),
            format!("dlv {} dfr {} bnc {}", number(&stats["mail_delivery"]["delivered"]), number(&stats["mail_delivery"]["deferred"]), number(&stats["mail_delivery"]["bounced"])),
            "smtp_message",
        ),
    ];
    let widths = [
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(21),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    let table = Table::new(rows, widths).header(header(&["proto", "/s", "totals", "p50", "p90", "p99", "max"])).block(boxed("protocols"));
    frame.render_widget(table, area);
}

fn draw_certs(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let mut lines: Vec<Line<'_>> = Vec::new();
    for cert in model.certs["certificates"].as_array().into_iter().flatten() {
        let days = cert["expires_in_days"].as_i64().unwrap_or(0);
        let style = if days < 14 { Style::default().fg(Color::Red) } else { Style::default() };
        lines.push(Line::from(Span::styled(format!("{} {days}d", cert["name"].as_str().unwrap_or("?")), style)));
    }
    for acme in model.certs["acme"].as_array().into_iter().flatten() {
        lines.push(Line::from(format!("{} {} (acme)", acme["name"].as_str().unwrap_or("?"), acme["state"].as_str().unwrap_or("?"))));
    }
    if lines.is_empty() {
        lines.push(Line::from("none configured"));
    }
    frame.render_widget(Paragraph::new(lines).block(boxed("certificates")), area);
}

/// Seconds as a short age: `42s`, `7m`, `3h`, `2d`.
fn age_text(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A queued message's state in a word, its attempts, its next attempt (ms) and last error.
fn queue_state(message: &Value) -> (&'static str, u64, Option<u64>, Option<String>) {
    let recipients = message["recipients"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let pending: Vec<&Value> = recipients.iter().filter(|r| r["state"] == "pending").collect();
    let last_error = pending.iter().find_map(|r| r["last_error"].as_str()).map(str::to_string);
    let attempts = recipients.iter().map(|r| number(&r["attempts"])).max().unwrap_or(0);
    let next = pending.iter().filter_map(|r| r["next_attempt_ms"].as_u64()).min();
    let state = if pending.is_empty() {
        "final"
    } else if last_error.is_some() {
        "deferred"
    } else {
        "queued"
    };
    (state, attempts, next, last_error)
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
        clipped.push('~');
        clipped
    }
}

/// The mail queue page: the list with a selection, the selected message's details, the keys.
fn draw_queue_page(frame: &mut Frame<'_>, model: &Model) {
    let area = frame.area();
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(1), Constraint::Min(5), Constraint::Length(6), Constraint::Length(1)])
        .split(area);
    draw_title(frame, rows[0], model);
    let selected = model.selected_index();
    let table_rows: Vec<Row<'_>> = model
        .queue
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (state, attempts, _, _) = queue_state(m);
            let age = model.queue_fetched_ms.saturating_sub(number(&m["received_at_ms"])) / 1000;
            let recipients: Vec<&str> =
                m["recipients"].as_array().into_iter().flatten().filter_map(|r| r["address"].as_str()).collect();
            let to = match recipients.as_slice() {
                [] => String::new(),
                [one] => one.to_string(),
                [first, rest @ ..] => format!("{first} +{}", rest.len()),
            };
            let sender = m["sender"].as_str().filter(|s| !s.is_empty()).unwrap_or("<>");
            let marker = if Some(i) == selected { ">" } else { " " };
            let row = Row::new(vec![
                format!("{marker}{}", m["id"].as_str().unwrap_or("?")),
                age_text(age),
                state.to_string(),
                attempts.to_string(),
                clip(sender, 18),
                clip(&to, 22),
            ]);
            if Some(i) == selected {
                row.style(Style::default().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    // Keep the selection in view: skip rows above it when the list is taller than the box.
    let room = rows[1].height.saturating_sub(3) as usize;
    let skip = selected.map_or(0, |i| (i + 1).saturating_sub(room));
    let shown: Vec<Row<'_>> = table_rows.into_iter().skip(skip).collect();
    let empty = shown.is_empty();
    let widths = [
        Constraint::Length(17),
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Length(3),
        Constraint::Length(18),
        Constraint::Min(10),
    ];
    let title = format!("mail queue: {} message{}", model.mail_queue.unwrap_or(0), if model.mail_queue == Some(1) { "" } else { "s" });
    let table = Table::new(shown, widths).header(header(&[" id", "age", "state", "try", "from", "to"])).block(boxed(&title));
    frame.render_widget(table, rows[1]);
    if empty {
        let inner = Rect { x: rows[1].x + 2, y: rows[1].y + 2, width: rows[1].width.saturating_sub(4), height: 1 };
        let text = if model.mail_queue.is_none() { "no mail queue (no [email] on this appliance)" } else { "the queue is empty" };
        frame.render_widget(Paragraph::new(text), inner);
    }
    let width = rows[2].width.saturating_sub(2) as usize;
    let mut details: Vec<Line<'_>> = Vec::new();
    if let Some(message) = selected.and_then(|i| model.queue.get(i)) {
        let (_, _, next, last_error) = queue_state(message);
        let next = match next {
            Some(at) if at > model.queue_fetched_ms => format!("next attempt in {}", age_text((at - model.queue_fetched_ms) / 1000)),
            Some(_) => "next attempt now".into(),
            None => "no attempt pending".into(),
        };
        let correlation = message["correlation_id"].as_str().unwrap_or("-");
        details.push(Line::from(clip(&format!("{}  conn {correlation}  {next}", message["id"].as_str().unwrap_or("?")), width)));
        details.push(Line::from(clip(&format!("last error: {}", last_error.as_deref().unwrap_or("none")), width)));
        let recipients: Vec<&str> = message["recipients"].as_array().into_iter().flatten().filter_map(|r| r["address"].as_str()).collect();
        details.push(Line::from(clip(&format!("to: {}", recipients.join(", ")), width)));
    }
    if let Some(notice) = &model.notice {
        details.push(Line::from(Span::styled(clip(notice, width), Style::default().add_modifier(Modifier::BOLD))));
    }
    frame.render_widget(Paragraph::new(details).block(boxed("selected")), rows[2]);
    let footer = match (&model.confirm_delete, &model.status) {
        (Some(id), _) => Line::from(Span::styled(format!("delete {id}? y deletes, any other key keeps it"), Style::default().fg(Color::Red))),
        (None, Some(problem)) => Line::from(Span::styled(format!("! {problem}"), Style::default().fg(Color::Red))),
        (None, None) => Line::from("q quit  m back  j/k select  R retry  D delete  F retry all"),
    };
    frame.render_widget(Paragraph::new(footer), rows[3]);
}

fn draw_errors(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let room = area.height.saturating_sub(2) as usize;
    let width = area.width.saturating_sub(2) as usize;
    let start = model.errors.len().saturating_sub(room);
    let lines: Vec<Line<'_>> = if model.errors.is_empty() {
        vec![Line::from("no warnings")]
    } else {
        model.errors[start..].iter().map(|e| Line::from(e.chars().take(width).collect::<String>())).collect()
    };
    frame.render_widget(Paragraph::new(lines).block(boxed("recent warnings")), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn stats(accepted: u64, time: u64) -> Value {
        serde_json::json!({
            "config_generation": 3,
            "unix_time": time,
            "total": {"accepted": accepted, "active": 2, "http_requests": accepted * 2},
            "dns": {"answers": 10, "nxdomain": 1, "rrl": {"dropped": 0}},
            "radius": {"received": 4, "access_accepts": 3, "access_rejects": 1},
            "smtp": {"messages_accepted": accepted / 10},
            "mail_delivery": {"delivered": 7, "deferred": 2, "bounced": 1},
            "latency_recent": {"http_request": {"count": 5, "p50_us": 1500, "p90_us": 2000, "p99_us": 2500, "max_us": 3000}},
            "shards": [{"shard": 0, "cpu": 1, "routes": {"web": {"active": 2, "accepted": accepted}}, "dns": {}, "radius": {}}],
        })
    }

    #[test]
    fn draws_rates_and_latency_on_80_by_24() {
        let mut model = Model::new("http://127.0.0.1:9090");
        let t0 = Instant::now();
        model.push_stats(t0, stats(100, 1));
        model.push_stats(t0 + std::time::Duration::from_secs(2), stats(120, 3));
        model.certs = serde_json::json!({"certificates": [{"name": "site", "expires_in_days": 80}], "acme": []});
        model.push_logs(&serde_json::json!({"lines": [{"level": "WARN", "message": "target connect failed"}]}));
        model.mail_queue = Some(4);
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
        terminal.draw(|frame| draw(frame, &model)).expect("draw");
        let screen: String = terminal.backend().buffer().content().iter().map(|c| c.symbol()).collect();
        assert!(screen.contains("config gen 3") && screen.contains("mail queue 4"), "{screen}");
        // 20 accepts in 2 s.
        assert!(screen.contains("10.0"), "{screen}");
        assert!(screen.contains("1.5ms") && screen.contains("2.5ms"), "{screen}");
        assert!(screen.contains("site 80d"), "{screen}");
        assert!(screen.contains("WARN target connect failed"), "{screen}");
        // 2 messages in 2 s; delivery outcomes.
        let smtp = screen.chars().collect::<Vec<_>>().chunks(80).map(|l| l.iter().collect::<String>()).find(|l| l.contains("│smtp"));
        assert!(smtp.as_deref().is_some_and(|l| l.contains(" 1.0 ") && l.contains("dlv 7 dfr 2 bnc 1")), "{smtp:?}\n{screen}");
        assert!(screen.contains("q quit"), "{screen}");
    }

    fn queued(id: &str, correlation: &str, received_at_ms: u64, last_error: Option<&str>) -> Value {
        serde_json::json!({
            "id": id,
            "received_at_ms": received_at_ms,
            "sender": "sender@example.org",
            "correlation_id": correlation,
            "recipients": [
                {"address": "rcpt@example.test", "state": "pending", "attempts": u32::from(last_error.is_some()),
                 "next_attempt_ms": received_at_ms + 300_000, "last_error": last_error},
                {"address": "other@example.test", "state": {"delivered": {"reply": "250 ok"}}, "attempts": 1, "next_attempt_ms": 0},
            ],
        })
    }

    #[test]
    fn the_queue_page_lists_messages_with_a_selection_on_80_by_24() {
        let mut model = Model::new("http://127.0.0.1:9090");
        model.page = Page::Queue;
        let answer = serde_json::json!({"messages": 2, "list": [
            queued("0001F2A3B4C5D600", "0100000000000003", 1_000_000, Some("127.0.0.1 said: 451 4.3.0 try later")),
            queued("0001F2A3B4C5D701", "0100000000000009", 1_030_000, None),
        ]});
        model.push_queue(&answer, 1_090_000);
        assert_eq!(model.selected.as_deref(), Some("0001F2A3B4C5D600"), "the first message is selected");
        model.select(1);
        model.select(5);
        assert_eq!(model.selected.as_deref(), Some("0001F2A3B4C5D701"), "clamped at the last row");
        model.select(-1);
        model.notice = Some("retrying 0001F2A3B4C5D600".into());
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
        terminal.draw(|frame| draw(frame, &model)).expect("draw");
        let screen: String = terminal.backend().buffer().content().iter().map(|c| c.symbol()).collect();
        let lines: Vec<String> = screen.chars().collect::<Vec<_>>().chunks(80).map(|l| l.iter().collect()).collect();
        let text = lines.join("\n");
        assert!(text.contains("mail queue: 2 messages"), "{text}");
        let first = lines.iter().find(|l| l.contains(">0001F2A3B4C5D600")).unwrap_or_else(|| panic!("no selected row:\n{text}"));
        assert!(first.contains("1m") && first.contains("deferred") && first.contains("rcpt@example.test +1"), "{first}");
        let second = lines.iter().find(|l| l.contains("0001F2A3B4C5D701")).unwrap_or_else(|| panic!("{text}"));
        assert!(second.contains("queued") && second.contains("1m"), "{second}");
        assert!(text.contains("conn 0100000000000003") && text.contains("next attempt in 3m"), "{text}");
        assert!(text.contains("last error: 127.0.0.1 said: 451 4.3.0 try later"), "{text}");
        assert!(text.contains("retrying 0001F2A3B4C5D600"), "{text}");
        assert!(text.contains("R retry") && text.contains("D delete"), "{text}");
        // A delete asks first.
        model.confirm_delete = Some("0001F2A3B4C5D600".into());
        terminal.draw(|frame| draw(frame, &model)).expect("draw");
        let screen: String = terminal.backend().buffer().content().iter().map(|c| c.symbol()).collect();
        assert!(screen.contains("delete 0001F2A3B4C5D600? y deletes"), "{screen}");
        // A message that left the queue moves the selection to the first one.
        model.push_queue(&serde_json::json!({"messages": 1, "list": [queued("0001F2A3B4C5D701", "01", 1_030_000, None)]}), 1_090_000);
        assert_eq!(model.selected.as_deref(), Some("0001F2A3B4C5D701"));
    }
}
