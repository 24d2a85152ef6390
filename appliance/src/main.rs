//! The `shardgate` binary: command-line parsing and logging set-up; everything else is in
//! `shardgate-core` (and, per protocol, the crates under `protocols/`).
//!
//! Commands:
//! - `shardgate run [--config FILE]` — run the appliance (embedded default without a file);
//! - `shardgate check-config FILE` — check a config, list every problem, exit 0 or 1;
//! - `shardgate stats [--config FILE | --data-dir DIR]` — print the running appliance's
//!   merged counters (JSON);
//! - `shardgate radius sessions [--config FILE | --data-dir DIR]` — print the RADIUS accounting
//!   session table the running (or last) appliance persisted;
//! - `shardgate dns add|remove NAME TYPE [VALUE] [--ttl N] [--config FILE | --data-dir DIR]` —
//!   add or remove a dynamic DNS record on the running appliance (through its admin socket,
//!   `<data_dir>/control.sock`); the change is persisted and the zone's SOA serial bumped;
//! - `shardgate certs [renew [NAME]] [--config FILE | --data-dir DIR]` — the ACME auto
//!   certificates of the running appliance (names, state, expiry, last error), or force a
//!   renewal now (through the admin socket);
//! - `shardgate storage export|import DIR [--config FILE | --data-dir DIR]` — copy every
//!   stored entry (ACME account, certificates, ...) to or from a folder;
//! - `shardgate console [--admin URL] [--user U] [--password P] [--config FILE]` — the live
//!   terminal UI (per-shard load, protocol rates and latency, certificates, recent warnings)
//!   attached to the admin API (see the `console` module);
//! - `shardgate queue list|show ID|status ID|retry ID|delete ID`, `shardgate suppression
//!   list|remove ADDR`, `shardgate send --from A --to B [--template NAME --var k=v | FILE]`
//!   — the mail queue, the suppression list and submitting mail (see `mail_cli`);
//! - `shardgate tune plan|apply|verify|revert` — host tuning for the shard CPUs (see the
//!   `shardgate-tuning` crate): plan prints what would change and why, apply writes it and
//!   records old values in the data folder, verify reports drift, revert restores.

mod console;
mod dns_query;
mod mail_auth_cli;
mod mail_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use shardgate_core::config::Config;
use shardgate_core::runtime::control::ConfigSource;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "shardgate", version, about = "A thread-per-core datacenter edge appliance")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance (on the embedded default config when no --config is given).
    Run {
        /// The config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file: exit 0 if valid, else list every problem and exit 1.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Tune the host for the shards: NIC IRQ affinity, XPS/RPS, sysctls (with --sysctl).
    Tune {
        #[command(subcommand)]
        action: TuneAction,
        /// The config whose shard CPUs and data folder to use (default: embedded default).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Interfaces to tune (repeatable); default: every device-backed interface.
        #[arg(long = "interface", short = 'i', global = true)]
        interfaces: Vec<String>,
        /// The filesystem root holding /sys and /proc (for testing against a copy).
        #[arg(long, global = true, default_value = "/")]
        root: PathBuf,
        /// Consent to writing the edge sysctl profile too (apply only).
        #[arg(long, global = true)]
        sysctl: bool,
    },
    /// RADIUS: inspect the accounting sessions.
    Radius {
        #[command(subcommand)]
        action: RadiusAction,
    },
    /// DNS: add or remove dynamic records on the running appliance.
    Dns {
        #[command(subcommand)]
        action: DnsAction,
        /// The config whose data folder (admin socket) to use (default: the embedded default's).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Use this data folder's admin socket directly.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// ACME: the auto certificates of the running appliance, or force a renewal.
    Certs {
        #[command(subcommand)]
        action: Option<CertsAction>,
        /// The config whose data folder (admin socket) to use (default: the embedded default's).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Use this data folder's admin socket directly.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Storage: copy every stored entry to (export) or from (import) a folder.
    Storage {
        #[command(subcommand)]
        action: StorageAction,
        /// The config whose storage to use (default: the embedded default's).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Use the file storage of this data folder.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Live terminal UI of a running appliance (admin API): shards, rates, latency,
    /// certificates, recent warnings. Keys: q quits, r refreshes.
    Console {
        /// The admin API, e.g. http://127.0.0.1:9090 (default: `[admin] listen` of the config).
        #[arg(long)]
        admin: Option<String>,
        /// Login name.
        #[arg(long, default_value = "admin")]
        user: String,
        /// Password (default: the SHARDGATE_ADMIN_PASSWORD environment variable).
        #[arg(long)]
        password: Option<String>,
        /// The config whose `[admin]` listener to attach to (default: the embedded default's).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Accept any certificate (a self-signed admin certificate).
        #[arg(long)]
        insecure: bool,
    },
    /// The mail queue of the running appliance: list, show, status, retry, delete.
    Queue {
        #[command(subcommand)]
        action: mail_cli::QueueAction,
        /// The config whose data folder to use (default: the embedded default's).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Use this data folder directly.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// The suppression list (addresses that hard-bounced): list, remove.
    Suppression {
        #[command(subcommand)]
        action: mail_cli::SuppressionAction,
        /// The config whose data folder to use (default: the embedded default's).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Use this data folder directly.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Queue a message (from a file, standard input or a config template); prints its queue id.
    Send {
        #[command(flatten)]
        args: mail_cli::SendArgs,
        /// The config whose data folder to use (default: the embedded default's).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Use this data folder directly.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the DNS records a sending domain ([[email.domains]]) needs: DKIM, MX, SPF, DMARC.
    DnsRecords {
        /// The domain.
        domain: String,
        /// Ask DNS and report each record OK / MISSING / DIFFERS (exit 1 unless all are OK).
        #[arg(long)]
        check: bool,
        /// The resolver to ask with --check (ip:port; default: [email.auth] resolver, then
        /// [email.delivery] resolver, then the first nameserver of /etc/resolv.conf).
        #[arg(long, requires = "check")]
        resolver: Option<std::net::SocketAddr>,
        /// The config (default: the embedded default).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the running appliance's merged counters as JSON.
    Stats {
        /// The config whose data folder to read (default: the embedded default's).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Read this data folder directly.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertsAction {
    /// Order new certificates now, whatever their expiry (all, or the one named).
    Renew {
        /// The auto certificate (its route's name).
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum StorageAction {
    /// Copy every entry into DIR (a file storage folder; created if missing).
    Export {
        /// Target folder.
        dir: PathBuf,
    },
    /// Copy every entry of DIR (written by export) into this appliance's storage; run it while
    /// the appliance is stopped (stored state is read at start).
    Import {
        /// Source folder.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum RadiusAction {
    /// Print the accounting session table (from the storage layer, `radius/sessions.json`).
    Sessions {
        /// The config whose data folder to read (default: the embedded default's).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Read this data folder directly.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DnsAction {
    /// Add a record, e.g. `dns add _acme-challenge.example.net TXT "token" --ttl 60`.
    Add {
        /// Owner name (absolute).
        name: String,
        /// Record type (A, AAAA, TXT, MX, ...).
        rtype: String,
        /// The value in zone-file form (`"10 mail.example.net."` for MX).
        value: String,
        /// TTL in seconds (default 60).
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Remove a record, or the whole RRset of that type when no value is given.
    Remove {
        /// Owner name (absolute).
        name: String,
        /// Record type.
        rtype: String,
        /// The value of the one record to remove.
        value: Option<String>,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum TuneAction {
    /// Print what would change on this host and why.
    Plan,
    /// Apply the plan (root), recording old values for revert.
    Apply,
    /// Check that what apply wrote still holds.
    Verify,
    /// Put back the values apply replaced.
    Revert,
}

fn tune(action: TuneAction, config: &Config, interfaces: &[String], root: &std::path::Path, sysctl: bool) -> ExitCode {
    use shardgate_tuning::{plan, revert, verify, Consent, SysctlProfile};
    let shard_cpus = &config.runtime.layout.shard_cpus;
    let state_dir = &config.runtime.data_dir;
    let result = match action {
        TuneAction::Plan => plan(root, interfaces, shard_cpus, &SysctlProfile::edge()).map(|p| p.to_string()),
        TuneAction::Apply => std::fs::create_dir_all(state_dir)
            .map_err(|e| shardgate_tuning::TuningError::InvalidConfig(format!("data folder {}: {e}", state_dir.display())))
            .and_then(|_| plan(root, interfaces, shard_cpus, &SysctlProfile::edge()))
            .and_then(|p| p.apply(root, state_dir, Consent::from_sysctl_flag(sysctl)).map(|a| format!("{p}\n{a}"))),
        TuneAction::Verify => verify(root, state_dir).and_then(|report| {
            if report.holds() {
                Ok(report.to_string())
            } else {
                Err(shardgate_tuning::TuningError::InvalidConfig(format!("tuning drifted:\n{report}")))
            }
        }),
        TuneAction::Revert => revert(root, state_dir).map(|r| r.to_string()),
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tune: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr (text or JSON lines) and into the admin API's ring of recent lines
/// (`/api/logs`), both behind the same filter.
fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = matches!(format, LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi));
    let json = matches!(format, LogFormat::Json).then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(shardgate_core::admin_api::logs::RingLayer)
        .init();
}

/// The admin API URL of a config's `[admin]` (an unspecified listen address → loopback).
fn admin_url(config: &Config) -> Option<String> {
    let admin = config.admin.as_ref()?;
    let mut addr = admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let scheme = if admin.tls.is_some() { "https" } else { "http" };
    Some(format!("{scheme}://{addr}"))
}

fn load(source: &ConfigSource) -> Result<Config, ExitCode> {
    source.load().map_err(|errors| {
        eprint!("{errors}");
        ExitCode::from(1)
    })
}

/// `--data-dir` if given, else the data folder of `--config` (or of the embedded default).
fn data_folder(data_dir: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    match (data_dir, config) {
        (Some(dir), _) => Ok(dir),
        (None, Some(path)) => load(&ConfigSource::File(path)).map(|c| c.runtime.data_dir),
        (None, None) => load(&ConfigSource::Embedded).map(|c| c.runtime.data_dir),
    }
}

fn radius_sessions(data_dir: &std::path::Path) -> ExitCode {
    use shardgate_core::radius::session_store::{read_snapshot, render_sessions, LEGACY_SESSIONS_FILE, SESSIONS_KEY};
    use shardgate_core::storage::files::FileStorage;
    let root = data_dir.join(shardgate_core::storage::STORAGE_FOLDER);
    if !root.exists() {
        println!("no RADIUS sessions recorded ({} does not exist yet)", root.display());
        return ExitCode::SUCCESS;
    }
    let storage = match FileStorage::open(&root) {
        Ok(storage) => storage,
        Err(e) => {
            eprintln!("cannot open the storage in {}: {e}", root.display());
            return ExitCode::from(1);
        }
    };
    match read_snapshot(&storage) {
        Ok(Some(snapshot)) => {
            print!("{}", render_sessions(&snapshot.sessions));
            println!(
                "{} session{} (snapshot written {}s ago)",
                snapshot.sessions.len(),
                if snapshot.sessions.len() == 1 { "" } else { "s" },
                snapshot.age.as_secs()
            );
            ExitCode::SUCCESS
        }
        Ok(None) if data_dir.join(LEGACY_SESSIONS_FILE).exists() => {
            println!("the sessions are still in {} (an older release's file); start the appliance once to move them into storage", data_dir.join(LEGACY_SESSIONS_FILE).display());
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("no RADIUS sessions recorded ({SESSIONS_KEY} is not in storage yet)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot read the RADIUS sessions in {}: {e}", root.display());
            ExitCode::from(1)
        }
    }
}

fn dns_change(data_dir: &std::path::Path, action: DnsAction) -> ExitCode {
    use shardgate_core::dns::dynamic::{ChangeKind, DnsChange};
    use shardgate_core::runtime::admin::{request, AdminRequest};
    let change = match action {
        DnsAction::Add { name, rtype, value, ttl } => DnsChange { kind: ChangeKind::Add, name, rtype, value: Some(value), ttl },
        DnsAction::Remove { name, rtype, value } => DnsChange { kind: ChangeKind::Remove, name, rtype, value, ttl: None },
    };
    match request(data_dir, &AdminRequest::DnsChange { change }) {
        Ok(response) if response.ok => {
            println!(
                "ok: zone {} serial {}",
                response.zone.as_deref().unwrap_or("?"),
                response.serial.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
            );
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("dns: refused: {}", response.error.as_deref().unwrap_or("no reason given"));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("dns: {e}");
            ExitCode::from(1)
        }
    }
}

fn certs(data_dir: &std::path::Path, action: Option<CertsAction>) -> ExitCode {
    use shardgate_core::runtime::admin::{request, AdminRequest};
    let req = match &action {
        None => AdminRequest::Certs,
        Some(CertsAction::Renew { name }) => AdminRequest::CertsRenew { certificate: name.clone() },
    };
    match request(data_dir, &req) {
        Ok(response) if response.ok => {
            if let Some(renewing) = response.renewing {
                println!("renewing: {}", renewing.join(", "));
            }
            if let Some(certificates) = response.certificates {
                if certificates.is_empty() {
                    println!("no auto certificates (no route has certificate = \"auto\")");
                }
                for c in certificates {
                    let expiry = match (c.not_after, c.expires_in_days) {
                        (Some(t), Some(days)) => format!("expires {} ({days} days)", humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0).unsigned_abs()),
                        )),
                        _ => "no certificate yet".to_string(),
                    };
                    println!("{}\t{}\t{}\t{expiry}\tissued {}\tfailures {}", c.name, c.domains.join(","), c.state, c.issued, c.failures);
                    if let Some(error) = c.last_error {
                        println!("  last error: {error}");
                    }
                    if let Some(secs) = c.next_attempt_in_secs {
                        println!("  next attempt in {secs}s");
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("certs: refused: {}", response.error.as_deref().unwrap_or("no reason given"));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("certs: {e}");
            ExitCode::from(1)
        }
    }
}

fn storage(backend: shardgate_core::storage::StorageBackend, data_dir: &std::path::Path, action: StorageAction) -> ExitCode {
    use shardgate_core::storage::{copy_all, files::FileStorage, StorageBackend};
    if backend == StorageBackend::Memory {
        eprintln!("storage: this config keeps its storage in memory ([storage] backend = \"memory\"); there is nothing to export or import");
        return ExitCode::from(1);
    }
    let ours = data_dir.join(shardgate_core::storage::STORAGE_FOLDER);
    let (from, to, verb) = match &action {
        StorageAction::Export { dir } => (ours.clone(), dir.clone(), "exported"),
        StorageAction::Import { dir } => (dir.clone(), ours.clone(), "imported"),
    };
    if matches!(action, StorageAction::Import { .. }) && !from.is_dir() {
        eprintln!("storage: {} is not a folder", from.display());
        return ExitCode::from(1);
    }
    let copied = FileStorage::open(&from).and_then(|from| Ok((from, FileStorage::open(&to)?))).and_then(|(from, to)| copy_all(&from, &to));
    match copied {
        Ok(n) => {
            println!("{verb} {n} entr{} from {} to {}", if n == 1 { "y" } else { "ies" }, from.display(), to.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storage: {e}");
            ExitCode::from(1)
        }
    }
}

/// CLI subcommands print to standard output like any Unix tool: a reader that goes away
/// (`shardgate stats | head`) ends the process quietly instead of a panic in `println!`.
/// Rust ignores SIGPIPE by default, which `run` keeps (its sockets report EPIPE as errors).
fn default_sigpipe() {
    // SAFETY: restoring the default disposition of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        default_sigpipe();
    }
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Run { config } => {
            let source = match config {
                Some(path) => ConfigSource::File(path),
                None => ConfigSource::Embedded,
            };
            let config = match load(&source) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if source == ConfigSource::Embedded {
                tracing::info!("no --config given: running the embedded default config");
            }
            match shardgate_core::runtime::run(config, source) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                println!(
                    "{}: valid ({} route{}, ports {:?})",
                    file.display(),
                    config.routes.len(),
                    if config.routes.len() == 1 { "" } else { "s" },
                    config.route_ports()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::from(1)
            }
        },
        Command::Tune { action, config, interfaces, root, sysctl } => {
            let source = config.map(ConfigSource::File).unwrap_or(ConfigSource::Embedded);
            match load(&source) {
                Ok(config) => tune(action, &config, &interfaces, &root, sysctl),
                Err(code) => code,
            }
        }
        Command::Radius { action: RadiusAction::Sessions { config, data_dir } } => {
            let dir = match data_folder(data_dir, config) {
                Ok(dir) => dir,
                Err(code) => return code,
            };
            radius_sessions(&dir)
        }
        Command::Dns { action, config, data_dir } => {
            let dir = match data_folder(data_dir, config) {
                Ok(dir) => dir,
                Err(code) => return code,
            };
            dns_change(&dir, action)
        }
        Command::Certs { action, config, data_dir } => {
            let dir = match data_folder(data_dir, config) {
                Ok(dir) => dir,
                Err(code) => return code,
            };
            certs(&dir, action)
        }
        Command::Storage { action, config, data_dir } => {
            let (backend, dir) = match (data_dir, config) {
                (Some(dir), _) => (shardgate_core::storage::StorageBackend::Files, dir),
                (None, config) => match load(&config.map(ConfigSource::File).unwrap_or(ConfigSource::Embedded)) {
                    Ok(c) => (c.storage, c.runtime.data_dir),
                    Err(code) => return code,
                },
            };
            storage(backend, &dir, action)
        }
        Command::Console { admin, user, password, config, insecure } => {
            let api = match admin {
                Some(url) => url,
                None => match load(&config.map(ConfigSource::File).unwrap_or(ConfigSource::Embedded)) {
                    Ok(c) => match admin_url(&c) {
                        Some(url) => url,
                        None => {
                            eprintln!("console: the config has no [admin] section; give --admin URL");
                            return ExitCode::from(1);
                        }
                    },
                    Err(code) => return code,
                },
            };
            let Some(password) = password.or_else(|| std::env::var("SHARDGATE_ADMIN_PASSWORD").ok()) else {
                eprintln!("console: give --password or set SHARDGATE_ADMIN_PASSWORD");
                return ExitCode::from(1);
            };
            match console::run(console::ConsoleOptions { api, user, password, insecure }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("console: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Queue { action, config, data_dir } => match data_folder(data_dir, config) {
            Ok(dir) => mail_cli::queue(&dir, action),
            Err(code) => code,
        },
        Command::Suppression { action, config, data_dir } => match data_folder(data_dir, config) {
            Ok(dir) => mail_cli::suppression(&dir, action),
            Err(code) => code,
        },
        Command::Send { args, config, data_dir } => match data_folder(data_dir, config) {
            Ok(dir) => mail_cli::send(&dir, args),
            Err(code) => code,
        },
        Command::DnsRecords { domain, config, check, resolver } => match load(&config.map(ConfigSource::File).unwrap_or(ConfigSource::Embedded)) {
            Ok(config) if check => mail_auth_cli::check_dns_records(&config, &domain, resolver),
            Ok(config) => mail_auth_cli::dns_records(&config, &domain),
            Err(code) => code,
        },
        Command::Stats { config, data_dir } => {
            let dir = match data_folder(data_dir, config) {
                Ok(dir) => dir,
                Err(code) => return code,
            };
            let path = dir.join("stats.json");
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot read {}: {e} (is shardgate running with this data folder?)", path.display());
                    ExitCode::from(1)
                }
            }
        }
    }
}
