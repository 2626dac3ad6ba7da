//! Tracing set-up for the service binaries: `RUST_LOG`-style filtering, human or JSON output.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests, the stack) are no-ops.
///
/// `LOG_FORMAT=json` switches to JSON lines; the filter comes from `RUST_LOG` (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // try_init fails only when a subscriber is already set, which is fine.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
