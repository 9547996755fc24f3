//! The peer: a bare MQTT subscriber to every uplink, in the same run, that
//! counts what the broker delivers and decodes nothing. What the
//! aggregator stores is compared with what this one receives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_core::topic;

/// What the bare subscriber received.
#[derive(Debug, Default)]
pub struct Received {
    /// Messages.
    pub messages: AtomicU64,
    /// Payload bytes.
    pub bytes: AtomicU64,
}

/// Subscribes to every uplink on the broker at `port` until `stop`.
pub async fn subscribe(port: u16, received: Arc<Received>, stop: CancellationToken) {
    let mut opts = rumqttc::MqttOptions::new("vigil-fleet-bare", "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 64);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                let filter = topic::filter::all_uplinks();
                let _ = client.try_subscribe(filter, rumqttc::QoS::AtLeastOnce);
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                received.messages.fetch_add(1, Ordering::Relaxed);
                received
                    .bytes
                    .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let _ = client.try_disconnect();
}
