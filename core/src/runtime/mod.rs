//! The runtime: shards, the control core, and the messages between them.
//!
//! [`run`] starts everything for a checked [`Config`] and blocks until a graceful stop:
//! 1. the data folder is created and every listening address, TCP and UDP, is bound (one
//!    `SO_REUSEPORT` socket per shard; a port that cannot be bound fails the start with its
//!    address), the `[radius]` policy is compiled, and the `[dns]` zones get their persisted
//!    dynamic records;
//! 2. one glommio executor per shard CPU ([`shard`]), each sent generation 1 of the config
//!    with its own listening sockets;
//! 3. the control core thread ([`control`]), pinned to its CPU or floating, the admin
//!    socket ([`admin`], `<data_dir>/control.sock`) that feeds it requests from the CLI, and
//!    the admin API (`crate::admin_api`, `[admin]`) on the control core's tokio runtime;
//! 4. this thread waits for signals: SIGHUP → reload, SIGTERM/SIGINT → graceful stop
//!    (a second one stops at once).
//!
//! The shard ⇄ control-core protocol is [`messages`]; the wake-up mechanism that lets a
//! glommio shard wait on a crossbeam channel is [`doorbell`].

pub mod admin;
pub mod control;
pub mod control_async;
pub mod cpu;
pub mod doorbell;
pub mod messages;
pub mod shard;

use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::route::RouteTable;
use control::{
    compile_radius_policy, dns_tcp_listen_addresses, listen_addresses, open_groups, open_udp_groups, udp_listen_addresses,
    ConfigSource, ControlCore,
};
use messages::{ShardSnapshot, ToControl, ToShard};

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data folder could not be created.
    #[error("cannot create the data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A UDP address (RADIUS) could not be bound.
    #[error("cannot listen on UDP {addr}: {source}")]
    ListenUdp {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The storage backend could not be opened (`<data_dir>/storage`).
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The `[radius]` section could not be compiled into a policy.
    #[error("{0}")]
    RadiusPolicy(#[from] shardgate_radius::RadiusError),
    /// A thread, executor or signal handler could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// What failed to start.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs the appliance until a graceful stop.
pub fn run(config: Config, source: ConfigSource) -> Result<(), StartError> {
    // Signals first: a SIGHUP that arrives while starting must queue, not kill the process.
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(|source| StartError::Spawn { what: "the signal handler".into(), source })?;
    raise_open_file_limit();
    let data_dir = config.runtime.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|source| StartError::DataDir { path: data_dir.display().to_string(), source })?;
    let layout = config.runtime.layout.clone();
    let shard_count = layout.shard_cpus.len();
    let listening = listen_addresses(&config);
    apply_tuning(&config);
    let mut sockets = open_groups(&listening, &layout.shard_cpus, config.tuning.steer_connections)
        .map_err(|(addr, source)| StartError::Listen { addr, source })?;
    let udp_listening = udp_listen_addresses(&config);
    let mut udp_sockets =
        open_udp_groups(&udp_listening, shard_count).map_err(|(addr, source)| StartError::ListenUdp { addr, source })?;
    let radius = compile_radius_policy(&config)?;
    let dns_tcp_listening = dns_tcp_listen_addresses(&config);
    let mut dns_tcp_sockets = open_groups(&dns_tcp_listening, &layout.shard_cpus, config.tuning.steer_connections)
        .map_err(|(addr, source)| StartError::Listen { addr, source })?;
    // The storage layer: ACME state, dynamic DNS records, RADIUS sessions.
    let storage = crate::storage::open(config.storage, &data_dir)?;
    // The configured zones with the persisted dynamic records re-applied.
    let dns_zones =
        config.dns_catalog.clone().map(|base| crate::dns::dynamic::DnsZones::open(storage.clone(), &data_dir, base));
    let dns_catalog = dns_zones.as_ref().map(crate::dns::dynamic::DnsZones::current);

    let tickets = crate::tls::tickets::TicketKeyRotation::start(std::time::Instant::now())
        .map_err(|e| StartError::Spawn { what: "TLS session tickets".into(), source: std::io::Error::other(e) })?;
    let tls = Arc::new(crate::tls::TlsShared::new(tickets.keys()));
    tracing::info!("{}", tls.ktls);
    let (to_control, control_inbox) = crossbeam_channel::unbounded::<ToControl>();
    // ACME certificates kept in storage are served from generation 1 on.
    let mut config = config;
    let acme = crate::acme::manager::AcmeManager::new(&config, storage.clone(), to_control.clone());
    config.certificates = acme.store();
    let config = Arc::new(config);
    let routes = Arc::new(RouteTable::new(&config));
    let mut mailboxes = Vec::with_capacity(shard_count);
    let mut handles = Vec::with_capacity(shard_count);
    for (index, &cpu) in layout.shard_cpus.iter().enumerate() {
        let (mailbox, inbox) = doorbell::mailbox::<ToShard>()
            .map_err(|source| StartError::Spawn { what: "a shard mailbox".into(), source })?;
        let spec = shard::ShardSpec {
            index,
            count: shard_count,
            cpu,
            spin_before_park: config.runtime.spin_before_park,
            inbox,
            to_control: to_control.clone(),
            tls: tls.clone(),
        };
        handles.push(shard::spawn_shard(spec).map_err(|source| StartError::Spawn { what: format!("shard {index}"), source })?);
        let snapshot = ShardSnapshot {
            generation: 1,
            config: config.clone(),
            routes: routes.clone(),
            open: std::mem::take(&mut sockets[index]),
            close: Vec::new(),
            udp_open: std::mem::take(&mut udp_sockets[index]),
            udp_close: Vec::new(),
            radius: radius.clone(),
            dns_catalog: dns_catalog.clone(),
            dns_tcp_open: std::mem::take(&mut dns_tcp_sockets[index]),
            dns_tcp_close: Vec::new(),
        };
        let _ = mailbox.send(ToShard::Apply(snapshot));
        mailboxes.push(mailbox);
    }

    let control_async = control_async::ControlAsync::start(layout.control_cpu)
        .map_err(|source| StartError::Spawn { what: "the control core's async runtime".into(), source })?;
    crate::latency::set_recording(config.admin.as_ref().is_none_or(|a| a.latency_histograms));
    let config_text = source.text();
    let (admin_feed, admin_view) = crate::admin_api::feed::AdminFeed::new(crate::admin_api::feed::RunningConfig {
        generation: 1,
        config: config.clone(),
        text: config_text.clone(),
        path: source.path().map(std::path::Path::to_path_buf),
    });
    // The admin API (`[admin]`); without it the appliance still serves traffic.
    if let Err(e) = crate::admin_api::start(&control_async, &config, admin_view, to_control.clone()) {
        tracing::error!(error = %e, "admin API not available");
    }
    let control =
        ControlCore::new(source, config.clone(), mailboxes, control_inbox, listening.clone(), udp_listening.clone(), control_async, storage)
            .with_dns(dns_zones, dns_tcp_listening.clone())
            .with_acme(acme)
            .with_tickets(tickets)
            .with_admin_feed(admin_feed, config_text);
    // The admin socket (`shardgate dns add|remove`); without it the appliance still serves.
    let admin_socket = match admin::serve(&data_dir, to_control.clone()) {
        Ok(path) => Some(path),
        Err(e) => {
            tracing::warn!(error = %e, "admin socket not available: `shardgate dns` cannot reach this appliance");
            None
        }
    };
    let control_cpu = layout.control_cpu;
    let control_thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            if let Some(cpu) = control_cpu {
                cpu::pin_current_thread(cpu);
            }
            control.run();
        })
        .map_err(|source| StartError::Spawn { what: "the control core".into(), source })?;

    let signal_handle = signals.handle();
    let signal_thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let message = if signal == SIGHUP {
                    tracing::info!("SIGHUP: reloading the config");
                    ToControl::Reload
                } else {
                    ToControl::Stop
                };
                if to_control.send(message).is_err() {
                    break;
                }
            }
        })
        .map_err(|source| StartError::Spawn { what: "the signal thread".into(), source })?;

    tracing::info!(
        shards = shard_count,
        shard_cpus = ?layout.shard_cpus,
        control_cpu = ?layout.control_cpu,
        listening = ?listening,
        udp = ?udp_listening.keys().collect::<Vec<_>>(),
        dns_tcp = ?dns_tcp_listening,
        source = %config.source,
        "shardgate started"
    );

    let _ = control_thread.join();
    for handle in handles {
        let _ = handle.join();
    }
    signal_handle.close();
    let _ = signal_thread.join();
    if let Some(path) = admin_socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("shardgate stopped");
    Ok(())
}

/// `[tuning] apply = true`: tune the host for the shard CPUs before listening. A failure is
/// logged and the appliance serves untuned (tuning is an optimisation, never a dependency).
fn apply_tuning(config: &Config) {
    let root = std::path::Path::new("/");
    match config.tuning.apply_at_startup(root, &config.runtime.layout.shard_cpus, &config.runtime.data_dir) {
        Ok(None) => {}
        Ok(Some((plan, applied))) => tracing::info!("host tuning applied:\n{plan}\n{applied}"),
        Err(e) => tracing::error!("host tuning failed, serving untuned: {e}"),
    }
}

/// Raises the soft open-file limit to the hard limit: every relayed connection holds two
/// sockets and a pipe pair, so the usual soft limit of 1024 would cap an edge box at a few
/// hundred connections.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::warn!("cannot raise the open-file limit above {}", limit.rlim_cur);
            }
        }
    }
}
