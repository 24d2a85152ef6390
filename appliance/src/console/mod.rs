//! `shardgate console`: a terminal UI attached to a running appliance's admin API.
//!
//! Owns: the terminal session (ratatui on crossterm: alternate screen, raw mode, restored on
//! exit and on panic), the refresh loop (stats, certificates and recent warnings about once a
//! second) and the keys (`q`/Esc/Ctrl-C quit, `r` refreshes now). Built for a serial console:
//! keyboard only, no mouse capture, the basic colours, laid out for 80x24.
//! [`client`] talks to the API; [`view`] holds the model and draws it.

pub mod client;
pub mod view;

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

/// How the console was started.
pub struct ConsoleOptions {
    /// The admin API base URL.
    pub api: String,
    /// Login name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Accept any certificate (self-signed admin HTTPS).
    pub insecure: bool,
}

/// How often the screen is refreshed.
const REFRESH: Duration = Duration::from_secs(1);

/// Runs the console until the user quits.
pub fn run(options: ConsoleOptions) -> Result<(), String> {
    let mut client = client::AdminClient::new(&options.api, &options.user, &options.password, options.insecure);
    // Fail before taking over the terminal when the API is unreachable or the login wrong.
    client.login().map_err(|e| format!("cannot log in to the admin API: {e}"))?;
    let mut model = view::Model::new(client.base());
    let mut terminal = ratatui::init();
    let outcome = (|| -> Result<(), String> {
        loop {
            refresh(&mut client, &mut model);
            terminal.draw(|frame| view::draw(frame, &model)).map_err(|e| format!("cannot draw: {e}"))?;
            let deadline = Instant::now() + REFRESH;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !event::poll(left).map_err(|e| e.to_string())? {
                    break;
                }
                if let Event::Key(key) = event::read().map_err(|e| e.to_string())? {
                    if key.kind != KeyEventKind::Press {
                        continue;
                    }
                    match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                        KeyCode::Char('r') => break,
                        _ => {}
                    }
                }
            }
        }
    })();
    ratatui::restore();
    outcome
}

fn refresh(client: &mut client::AdminClient, model: &mut view::Model) {
    let result = client.get("/api/stats").map(|stats| model.push_stats(Instant::now(), stats)).and_then(|()| {
        model.certs = client.get("/api/certs")?;
        let logs = client.get("/api/logs?level=warn&limit=50")?;
        model.push_logs(&logs);
        Ok(())
    });
    model.status = result.err().map(|e| e.to_string());
}
