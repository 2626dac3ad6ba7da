//! Static discovery: the endpoint list written in the config file. It never changes
//! on its own; a reload that edits it starts a new source.

use http::uri::Authority;
use tokio::sync::watch;

use super::EndpointSet;

/// Publishes a fixed list. The sender is dropped at once: the set can never change.
pub(super) fn spawn(list: &[Authority]) -> watch::Receiver<EndpointSet> {
    let (_tx, rx) = watch::channel(EndpointSet::from(list.to_vec()));
    rx
}
