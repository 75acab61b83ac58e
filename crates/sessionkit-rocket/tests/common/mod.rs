//! Serving a test app: a quiet Rocket on a free port of 127.0.0.1.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rocket::config::{LogLevel, Shutdown};
use rocket::fairing::AdHoc;
use rocket::{Build, Config, Rocket};

/// No log output, a free port of 127.0.0.1, no signal handlers (the test process owns them).
pub fn config() -> Config {
    Config {
        address: Ipv4Addr::LOCALHOST.into(),
        port: 0,
        log_level: LogLevel::Off,
        cli_colors: false,
        shutdown: Shutdown {
            ctrlc: false,
            signals: HashSet::new(),
            ..Shutdown::default()
        },
        ..Config::debug_default()
    }
}

/// Launches `rocket` in the background and returns its port once it listens. The server
/// lives until the test's runtime ends.
pub async fn launch(rocket: Rocket<Build>) -> u16 {
    let (bound, port) = tokio::sync::oneshot::channel();
    let rocket = rocket.attach(AdHoc::on_liftoff("test port", move |rocket| {
        Box::pin(async move {
            let _ = bound.send(rocket.config().port);
        })
    }));
    tokio::spawn(rocket.launch());
    port.await.expect("Rocket launched")
}
