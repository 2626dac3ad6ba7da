//! The control loop: the one place that rebuilds and swaps the snapshot.
//!
//! Triggers (file change, SIGHUP, `POST /admin/reload`) and discovery updates arrive
//! here and are handled one at a time. A reload reads and validates the whole file,
//! builds a complete snapshot, then swaps it in; on any error the old one keeps serving.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use crate::config::{self, Config, Problem};
use crate::discovery::Registry;
use crate::metrics::ReloadResult;
use crate::shared::Shared;
use crate::snapshot::Builder;

/// What asked for a reload.
#[derive(Debug)]
pub(crate) enum Trigger {
    FileChanged,
    Signal,
    Admin(oneshot::Sender<ReloadReport>),
}

impl Trigger {
    fn name(&self) -> &'static str {
        match self {
            Trigger::FileChanged => "file",
            Trigger::Signal => "signal",
            Trigger::Admin(_) => "admin",
        }
    }
}

/// The result of one reload, as `/admin/reload` and `/admin/config` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// The new config is in force (or was identical to the running one).
    pub ok: bool,
    /// What asked for it.
    pub trigger: &'static str,
    /// Snapshot generation now serving.
    pub generation: u64,
    /// Whether anything changed.
    pub changed: bool,
    /// Why the file was refused.
    pub problems: Vec<Problem>,
    /// Settings that changed in the file but only apply after a restart.
    pub restart_required: Vec<String>,
}

/// The last reload and the last success, for `/admin/config`.
#[derive(Debug, Clone)]
pub(crate) struct ReloadStatus {
    pub(crate) last: Option<ReloadReport>,
    pub(crate) last_attempt: Option<SystemTime>,
    pub(crate) last_success: SystemTime,
}

impl ReloadStatus {
    pub(crate) fn started() -> Self {
        Self {
            last: None,
            last_attempt: None,
            last_success: SystemTime::now(),
        }
    }
}

/// Runs until every trigger sender is gone. `head_buffer` is the largest request head
/// the running listener reads (`server::head_buffer`), fixed at startup.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut builder: Builder,
    mut registry: Registry,
    mut triggers: mpsc::Receiver<Trigger>,
    mut current: Arc<Config>,
    head_buffer: usize,
) {
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            trigger = triggers.recv() => {
                let Some(trigger) = trigger else { return };
                let name = trigger.name();
                let report = reload(&shared, &mut builder, &mut registry, &mut current, &mut last_error, name, head_buffer);
                if let Trigger::Admin(reply) = trigger {
                    let _ = reply.send(report);
                }
            }
            () = registry.changed() => {
                let snapshot = builder.build(current.clone(), &registry, &shared.metrics);
                tracing::info!(generation = snapshot.generation, "discovery update applied");
                shared.snapshot.store(Arc::new(snapshot));
            }
        }
    }
}

fn reload(
    shared: &Shared,
    builder: &mut Builder,
    registry: &mut Registry,
    current: &mut Arc<Config>,
    last_error: &mut Option<String>,
    trigger: &'static str,
    head_buffer: usize,
) -> ReloadReport {
    let now = SystemTime::now();
    let generation = shared.snapshot.load().generation;
    let report = match config::load(&current.source) {
        Err(e) => {
            let text = e.to_string();
            // Log a given error once, not on every save of the same broken file.
            if last_error.as_deref() != Some(text.as_str()) {
                tracing::error!(
                    trigger,
                    "config reload failed, keeping the running config: {text}"
                );
            }
            *last_error = Some(text);
            shared.metrics.reload(ReloadResult::Failure);
            ReloadReport {
                ok: false,
                trigger,
                generation,
                changed: false,
                problems: e.problems(),
                restart_required: Vec::new(),
            }
        }
        Ok(mut new) => {
            *last_error = None;
            let restart_required = keep_fixed_settings(current, &mut new, head_buffer);
            for what in &restart_required {
                tracing::warn!(trigger, "{what}: needs a restart; the running value stays");
            }
            let changed = new != **current;
            let mut generation = generation;
            if changed {
                let new = Arc::new(new);
                registry.sync(&new);
                let snapshot = builder.build(new.clone(), registry, &shared.metrics);
                generation = snapshot.generation;
                shared.snapshot.store(Arc::new(snapshot));
                *current = new;
                tracing::info!(trigger, generation, "config reloaded");
            } else {
                tracing::debug!(trigger, "config unchanged");
            }
            shared.metrics.reload(ReloadResult::Success);
            ReloadReport {
                ok: true,
                trigger,
                generation,
                changed,
                problems: Vec::new(),
                restart_required,
            }
        }
    };
    if let Ok(mut status) = shared.reload_status.lock() {
        status.last_attempt = Some(now);
        if report.ok {
            status.last_success = now;
        }
        status.last = Some(report.clone());
    }
    report
}

/// Gives `new` the running values of the settings fixed for the process's life, and
/// says which of them it had changed: those need a restart.
fn keep_fixed_settings(current: &Config, new: &mut Config, head_buffer: usize) -> Vec<String> {
    let mut out = Vec::new();
    if new.listen.proxy != current.listen.proxy {
        out.push(format!(
            "listen.proxy changed from {} to {}",
            current.listen.proxy, new.listen.proxy
        ));
    }
    if new.listen.admin != current.listen.admin {
        out.push(format!(
            "listen.admin changed from {} to {}",
            current.listen.admin, new.listen.admin
        ));
    }
    if new.server.io_uring != current.server.io_uring {
        out.push(format!(
            "server.io_uring changed from {} to {}",
            current.server.io_uring, new.server.io_uring
        ));
        new.server.io_uring = current.server.io_uring;
    }
    if new.log.format != current.log.format {
        out.push(format!(
            "log.format changed from {:?} to {:?}",
            current.log.format, new.log.format
        ));
    }
    // Up to the read buffer, a raised limit applies at once; past it, heads between
    // the two would get hyper's bare 431.
    if new.server.max_request_headers > head_buffer {
        out.push(format!(
            "server.max_request_headers raised to {} bytes, past the {} bytes the running \
             listener reads a request head into (sized at startup)",
            new.server.max_request_headers, head_buffer
        ));
        new.server.max_request_headers = current.server.max_request_headers;
    }
    new.listen = current.listen;
    new.log.format = current.log.format;
    out
}
