//! `shardgate console`: a terminal UI attached to a running appliance's admin API.
//!
//! Owns: the terminal session (ratatui on crossterm: alternate screen, raw mode, restored on
//! exit and on panic), the refresh loop (stats, certificates, recent warnings and the mail
//! queue about once a second) and the keys (`q`/Esc/Ctrl-C quit, `r` refreshes now, `m`
//! switches to the mail queue page and back; there `j`/`k` or the arrows select, `R` retries
//! the selected message now, `D` deletes it after a `y`, `F` retries every message — each
//! through the admin API, which audits it under the logged-in user). Built for a serial
//! console: keyboard only, no mouse capture, the basic colours, laid out for 80x24.
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
                    // A delete waits for its confirmation: `y` deletes, any other key keeps it.
                    if let Some(id) = model.confirm_delete.take() {
                        if key.code == KeyCode::Char('y') {
                            act(&mut client, &mut model, QueueAction::Delete(id));
                        } else {
                            model.notice = Some(format!("{id} kept"));
                        }
                        break;
                    }
                    let on_queue = model.page == view::Page::Queue;
                    match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                        KeyCode::Char('r') => break,
                        KeyCode::Char('m') | KeyCode::Tab => {
                            model.page = if on_queue { view::Page::Overview } else { view::Page::Queue };
                            break;
                        }
                        KeyCode::Char('j') | KeyCode::Down if on_queue => {
                            model.select(1);
                            redraw(&mut terminal, &model)?;
                        }
                        KeyCode::Char('k') | KeyCode::Up if on_queue => {
                            model.select(-1);
                            redraw(&mut terminal, &model)?;
                        }
                        KeyCode::Char('R') if on_queue => {
                            if let Some(id) = model.selected.clone() {
                                act(&mut client, &mut model, QueueAction::Retry(id));
                                break;
                            }
                        }
                        KeyCode::Char('D') if on_queue => {
                            if let Some(id) = model.selected.clone() {
                                model.confirm_delete = Some(id);
                                redraw(&mut terminal, &model)?;
                            }
                        }
                        KeyCode::Char('F') if on_queue => {
                            act(&mut client, &mut model, QueueAction::RetryAll);
                            break;
                        }
                        _ => {}
                    }
                }
            }
        }
    })();
    ratatui::restore();
    outcome
}

fn redraw(terminal: &mut ratatui::DefaultTerminal, model: &view::Model) -> Result<(), String> {
    terminal.draw(|frame| view::draw(frame, model)).map(|_| ()).map_err(|e| format!("cannot draw: {e}"))
}

/// A queue action the keys ask for.
enum QueueAction {
    Retry(String),
    RetryAll,
    Delete(String),
}

/// Carries out a queue action through the API; its outcome becomes the page's notice.
fn act(client: &mut client::AdminClient, model: &mut view::Model, action: QueueAction) {
    let outcome = match &action {
        QueueAction::Retry(id) => client.post(&format!("/api/queue/{id}/retry")).map(|_| format!("retrying {id} now")),
        QueueAction::RetryAll => client.post("/api/queue/retry").map(|answer| {
            let count = answer["retrying"].as_array().map_or(0, Vec::len);
            format!("retrying {count} message{} now", if count == 1 { "" } else { "s" })
        }),
        QueueAction::Delete(id) => client.delete(&format!("/api/queue/{id}")).map(|_| format!("{id} deleted")),
    };
    model.notice = Some(match outcome {
        Ok(done) => done,
        Err(e) => format!("refused: {e}"),
    });
}

fn refresh(client: &mut client::AdminClient, model: &mut view::Model) {
    let result = client.get("/api/stats").map(|stats| model.push_stats(Instant::now(), stats)).and_then(|()| {
        model.certs = client.get("/api/certs")?;
        let logs = client.get("/api/logs?level=warn&limit=50")?;
        model.push_logs(&logs);
        // 404 without [email]: no queue to show.
        match client.get("/api/queue?limit=200") {
            Ok(queue) => model.push_queue(&queue, view::now_ms()),
            Err(_) => model.push_queue(&serde_json::Value::Null, view::now_ms()),
        }
        Ok(())
    });
    model.status = result.err().map(|e| e.to_string());
}
