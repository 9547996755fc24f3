//! The embedded MQTT broker (rumqttd), configured in code: no config file.
//! It runs on its own OS thread for the life of the process.

use anyhow::Context;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

/// Finds a free TCP port on 127.0.0.1 (bind to port 0, read it, release it).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Starts rumqttd on `127.0.0.1:port` (0 picks a free port) accepting
/// packets up to `max_packet_bytes`; returns the address once it accepts
/// connections.
pub fn start(port: u16, max_packet_bytes: usize) -> anyhow::Result<SocketAddr> {
    // A free port can be taken by someone else before it is bound again:
    // when any port will do, try a few.
    let tries = if port == 0 { 5 } else { 1 };
    let mut found = None;
    for _ in 0..tries {
        let p = if port == 0 { free_port()? } else { port };
        let addr: SocketAddr = ([127, 0, 0, 1], p).into();
        // Fail with a clear message rather than inside the broker thread.
        match TcpListener::bind(addr) {
            Ok(l) => {
                drop(l);
                found = Some(addr);
                break;
            }
            Err(e) if port == 0 => {
                tracing::debug!(%addr, error = %e, "Port taken; trying another.")
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("MQTT port {addr} is in use (choose another with --mqtt-port)")
                })
            }
        }
    }
    let addr = found.context("no free port for the MQTT broker")?;
    let server = ServerSettings {
        name: "v4-1".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_packet_bytes,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4-1".to_string(), server)])),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("vigil-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "Embedded MQTT broker stopped.");
            }
        })
        .context("starting the broker thread")?;
    // No readiness probe: a bare TCP connect makes rumqttd log an error, and
    // every client reconnects with backoff until the listener is up.
    Ok(addr)
}
