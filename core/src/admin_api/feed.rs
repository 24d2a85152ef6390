//! What the control core publishes for the admin API, and how the API asks it for changes.
//!
//! Owns: [`AdminFeed`] (held by the control core: the latest [`MergedStats`] after every
//! stats write, the [`RunningConfig`] after start and every accepted reload) and its read side
//! [`AdminView`] (tokio `watch` receivers: the API reads the latest value, the SSE stream
//! waits for the next one); [`ConfigChange`], the admin API's request to replace the config,
//! sent to the control core as `ToControl::ReplaceConfig` and answered with
//! [`ConfigChangeOutcome`]. Nothing here is touched by a shard.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::stats::MergedStats;

/// The config in force, as the admin API shows it.
#[derive(Debug)]
pub struct RunningConfig {
    /// Its generation (1 at start, +1 per accepted reload).
    pub generation: u64,
    /// The checked config.
    pub config: Arc<Config>,
    /// The text it was read from (not redacted: the API redacts before showing it).
    pub text: String,
    /// The file a replaced config is written to (`None` for the embedded default).
    pub path: Option<PathBuf>,
}

/// The control core's sending side.
#[derive(Debug)]
pub struct AdminFeed {
    stats: watch::Sender<Arc<MergedStats>>,
    config: watch::Sender<Arc<RunningConfig>>,
}

/// The admin API's reading side (cheap to clone).
#[derive(Debug, Clone)]
pub struct AdminView {
    /// The latest merged stats.
    pub stats: watch::Receiver<Arc<MergedStats>>,
    /// The config in force.
    pub config: watch::Receiver<Arc<RunningConfig>>,
}

impl AdminFeed {
    /// A feed starting with `running` and empty stats.
    pub fn new(running: RunningConfig) -> (AdminFeed, AdminView) {
        let (stats, stats_view) = watch::channel(Arc::new(MergedStats { config_generation: running.generation, ..Default::default() }));
        let (config, config_view) = watch::channel(Arc::new(running));
        (AdminFeed { stats, config }, AdminView { stats: stats_view, config: config_view })
    }

    /// Publishes freshly merged stats.
    pub fn publish_stats(&self, stats: MergedStats) {
        self.stats.send_replace(Arc::new(stats));
    }

    /// Publishes a newly applied config.
    pub fn publish_config(&self, running: RunningConfig) {
        self.config.send_replace(Arc::new(running));
    }
}

/// A request to replace the running config (whole text, already assembled by the API).
#[derive(Debug)]
pub struct ConfigChange {
    /// The complete new config text (TOML).
    pub text: String,
    /// Who asked (admin user name), for the log.
    pub user: String,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<ConfigChangeOutcome>,
}

/// How a config change ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ConfigChangeOutcome {
    /// Applied to every shard (like an accepted SIGHUP reload).
    Applied {
        /// The new generation.
        generation: u64,
        /// Whether it was written to the config file (not for the embedded default).
        persisted: bool,
        /// What went wrong writing it, if anything (the config runs regardless).
        #[serde(skip_serializing_if = "Option::is_none")]
        persist_error: Option<String>,
    },
    /// Refused: every problem, one per entry; the running config keeps serving.
    Refused {
        /// The problems.
        problems: Vec<String>,
    },
}
