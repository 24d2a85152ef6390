//! `shardgate queue`, `shardgate suppression` and `shardgate send`: the mail commands, which
//! talk to the running appliance through its admin socket (`<data_dir>/control.sock`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use shardgate_core::runtime::admin::{request, AdminRequest, AdminResponse};

#[derive(Subcommand)]
pub enum QueueAction {
    /// Queued messages, oldest first: id, age, size, status, sender, recipients.
    List {
        /// At most this many (0: all).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// One queued message in full (JSON): recipients with route, action, state, attempts, last error.
    Show {
        /// Queue id.
        id: String,
    },
    /// What became of a message: queued, deferred (last error), delivered (the next hop's
    /// reply), bounced.
    Status {
        /// Queue id.
        id: String,
    },
    /// Attempt every pending recipient now (of every queued message with --all).
    Retry {
        /// Queue id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Flush: every queued message.
        #[arg(long)]
        all: bool,
    },
    /// Remove a message without delivering it.
    Delete {
        /// Queue id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum SuppressionAction {
    /// Addresses that hard-bounced: mail to them fails at once.
    List,
    /// Take an address off the list.
    Remove {
        /// The address.
        address: String,
    },
}

/// `shardgate send` arguments.
#[derive(clap::Args)]
pub struct SendArgs {
    /// Envelope sender (and From: of a template message); "" for the null sender.
    #[arg(long)]
    pub from: String,
    /// Recipient (repeat for several).
    #[arg(long, required = true)]
    pub to: Vec<String>,
    /// Compose from this `[[email.templates]]` entry instead of a message file.
    #[arg(long, conflicts_with = "file")]
    pub template: Option<String>,
    /// Template variable `name=value` (repeat).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// The message (headers and body) to send; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
}

fn ask(data_dir: &Path, what: &str, req: &AdminRequest) -> Result<serde_json::Value, ExitCode> {
    match request(data_dir, req) {
        Ok(AdminResponse { ok: true, mail, .. }) => Ok(mail.unwrap_or(serde_json::Value::Null)),
        Ok(response) => {
            eprintln!("{what}: refused: {}", response.error.as_deref().unwrap_or("no reason given"));
            Err(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("{what}: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn text(value: &serde_json::Value, key: &str) -> String {
    match &value[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `shardgate queue ...`.
pub fn queue(data_dir: &Path, action: QueueAction) -> ExitCode {
    let (req, what) = match &action {
        QueueAction::List { limit } => (AdminRequest::QueueList { limit: (*limit > 0).then_some(*limit) }, "queue list"),
        QueueAction::Show { id } => (AdminRequest::QueueShow { id: id.clone() }, "queue show"),
        QueueAction::Status { id } => (AdminRequest::QueueStatus { id: id.clone() }, "queue status"),
        QueueAction::Retry { id, .. } => (AdminRequest::QueueRetry { id: id.clone() }, "queue retry"),
        QueueAction::Delete { id } => (AdminRequest::QueueDelete { id: id.clone() }, "queue delete"),
    };
    let answer = match ask(data_dir, what, &req) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    match action {
        QueueAction::List { .. } => {
            let messages = answer["messages"].as_array().cloned().unwrap_or_default();
            let total = answer["total"].as_u64().unwrap_or(messages.len() as u64) as usize;
            for m in &messages {
                let recipients: Vec<String> =
                    m["recipients"].as_array().map(|r| r.iter().filter_map(|a| a.as_str().map(String::from)).collect()).unwrap_or_default();
                println!(
                    "{}\t{}s\t{} bytes\t{}\t<{}>\t{}",
                    text(m, "id"),
                    text(m, "age_secs"),
                    text(m, "size"),
                    text(m, "status"),
                    text(m, "sender"),
                    recipients.join(", ")
                );
            }
            if total > messages.len() {
                println!("{} of {total} messages shown (--limit)", messages.len());
            } else {
                println!("{total} message{} queued", if total == 1 { "" } else { "s" });
            }
        }
        QueueAction::Show { .. } => println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default()),
        QueueAction::Status { .. } => {
            println!("{}: {}", text(&answer, "id"), text(&answer, "status"));
            for r in answer["recipients"].as_array().cloned().unwrap_or_default() {
                let mut line = format!("  {}: {}", text(&r, "address"), text(&r, "status"));
                if !text(&r, "detail").is_empty() {
                    line.push_str(&format!(" — {}", text(&r, "detail")));
                }
                if !text(&r, "next_attempt_in").is_empty() {
                    line.push_str(&format!(" (next attempt in {}s)", text(&r, "next_attempt_in")));
                }
                println!("{line}");
            }
        }
        QueueAction::Retry { .. } => {
            let ids = answer["retrying"].as_array().map(Vec::len).unwrap_or(0);
            println!("retrying {ids} message{} now", if ids == 1 { "" } else { "s" });
        }
        QueueAction::Delete { id } => println!("{id}: deleted"),
    }
    ExitCode::SUCCESS
}

/// `shardgate suppression ...`.
pub fn suppression(data_dir: &Path, action: SuppressionAction) -> ExitCode {
    let req = match &action {
        SuppressionAction::List => AdminRequest::SuppressionList,
        SuppressionAction::Remove { address } => AdminRequest::SuppressionRemove { address: address.clone() },
    };
    let answer = match ask(data_dir, "suppression", &req) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    match action {
        SuppressionAction::List => {
            let list = answer["suppressed"].as_array().cloned().unwrap_or_default();
            for entry in &list {
                let added = entry["added"].as_u64().unwrap_or(0);
                let when = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(added));
                println!("{}\t{when}\t{}", text(entry, "address"), text(entry, "reason"));
            }
            println!("{} suppressed address{}", list.len(), if list.len() == 1 { "" } else { "es" });
        }
        SuppressionAction::Remove { address } => println!("{address}: removed from the suppression list"),
    }
    ExitCode::SUCCESS
}

/// Removes the temporary copy of standard input when `send` ends.
struct Spooled(Option<PathBuf>);

impl Drop for Spooled {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `shardgate send ...`: prints the queue id.
pub fn send(data_dir: &Path, args: SendArgs) -> ExitCode {
    let mut vars = BTreeMap::new();
    for pair in &args.vars {
        match pair.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                vars.insert(name.trim().to_string(), value.to_string());
            }
            _ => {
                eprintln!("send: --var `{pair}` is not NAME=VALUE");
                return ExitCode::from(2);
            }
        }
    }
    let mut spooled = Spooled(None);
    let file = if args.template.is_some() {
        None
    } else {
        match args.file.as_deref() {
            Some(path) if path != Path::new("-") => match std::fs::canonicalize(path) {
                Ok(absolute) => Some(absolute),
                Err(e) => {
                    eprintln!("send: {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            },
            // Standard input: copied into the data folder, where the appliance can read it,
            // in small steps (a large message is never held in memory).
            _ => {
                let dir = data_dir.join("mail").join("submit");
                let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
                let path = dir.join(format!("{}-{nanos}.eml", std::process::id()));
                let created = std::fs::create_dir_all(&dir).and_then(|()| std::fs::File::create(&path));
                let mut copy = match created {
                    Ok(copy) => copy,
                    Err(e) => {
                        eprintln!("send: cannot write {}: {e}", path.display());
                        return ExitCode::from(1);
                    }
                };
                spooled.0 = Some(path.clone());
                let limit = shardgate_core::mail::delivery::service::MAX_SEND_BYTES;
                match std::io::copy(&mut std::io::stdin().lock().take(limit + 1), &mut copy) {
                    Ok(copied) if copied > limit => {
                        eprintln!("send: standard input is larger than {limit} bytes");
                        return ExitCode::from(1);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("send: reading standard input into {}: {e}", path.display());
                        return ExitCode::from(1);
                    }
                }
                drop(copy);
                let absolute = std::fs::canonicalize(&path).unwrap_or(path);
                spooled.0 = Some(absolute.clone());
                Some(absolute)
            }
        }
    };
    let req = AdminRequest::Send { from: args.from, to: args.to, template: args.template, vars, file };
    match ask(data_dir, "send", &req) {
        Ok(answer) => {
            println!("{}", text(&answer, "queued"));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
