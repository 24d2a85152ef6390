//! What the console shows: a model built from successive API answers, and its drawing.
//!
//! Owns: [`Model`] (the latest and previous stats snapshots, so counters become per-second
//! rates; certificates; recent warnings and errors; the status line) and [`draw`], which lays
//! it out for an 80x24 terminal with plain colours and no mouse: a title line, a shard table
//! (load: open connections, accepts/s, requests/s, bytes/s), a protocol table (rates, results
//! and latency percentiles for TCP, HTTP, TLS, DNS, RADIUS), and certificates beside recent
//! errors. Larger terminals get more rows. Does not own: fetching (`client`) or the terminal.

use std::time::Instant;

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::Frame;
use serde_json::Value;

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

/// Draws the model.
pub fn draw(frame: &mut Frame<'_>, model: &Model) {
    let area = frame.area();
    let shard_count = model.stats().and_then(|s| s["shards"].as_array()).map_or(1, Vec::len) as u16;
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length((shard_count + 3).min(8)),
            Constraint::Length(8),
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
        None => Line::from("q quit   r refresh now   (updates every second)"),
    };
    frame.render_widget(Paragraph::new(footer), rows[4]);
}

fn draw_title(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let generation = model.stats().map(|s| number(&s["config_generation"])).unwrap_or(0);
    let text = format!("shardgate console  {}  config gen {generation}", model.api);
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
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
        terminal.draw(|frame| draw(frame, &model)).expect("draw");
        let screen: String = terminal.backend().buffer().content().iter().map(|c| c.symbol()).collect();
        assert!(screen.contains("config gen 3"), "{screen}");
        // 20 accepts in 2 s.
        assert!(screen.contains("10.0"), "{screen}");
        assert!(screen.contains("1.5ms") && screen.contains("2.5ms"), "{screen}");
        assert!(screen.contains("site 80d"), "{screen}");
        assert!(screen.contains("WARN target connect failed"), "{screen}");
        assert!(screen.contains("q quit"), "{screen}");
    }
}
