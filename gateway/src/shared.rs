//! State shared by the proxy, the admin API and the control loop.

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use arc_swap::ArcSwap;

use crate::control::ReloadStatus;
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::headers::RequestIds;
use crate::snapshot::Snapshot;

/// One per running gateway.
pub(crate) struct Shared {
    /// The current snapshot; requests load it once each.
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) metrics: Metrics,
    pub(crate) ids: RequestIds,
    /// Metric handles for requests that matched no route.
    pub(crate) unrouted: RouteMetrics,
    /// Config loaded and listeners serving; false again while draining.
    pub(crate) ready: AtomicBool,
    /// Outcome of the last reload, for `/admin/config`. Written by the control loop only.
    pub(crate) reload_status: Mutex<ReloadStatus>,
}

impl Shared {
    pub(crate) fn new(snapshot: Snapshot, metrics: Metrics) -> Self {
        let unrouted = metrics.route("");
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            ids: RequestIds::new(),
            unrouted,
            ready: AtomicBool::new(false),
            reload_status: Mutex::new(ReloadStatus::started()),
        }
    }
}
