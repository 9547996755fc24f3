//! Retained presence with a last will, on the real embedded broker: a link
//! that dies without a clean disconnect leaves `offline` retained (the
//! broker's last will); a clean stop publishes `offline` itself; a client
//! that subscribes later still reads the retained state.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_core::clock::now_ms;
use vigil_core::message::{Presence, PresenceState};
use vigil_core::mqtt::{self, LinkMetrics, LinkSpec, MqttSettings, PresenceSpec};
use vigil_core::{decode, encode};

fn spec(port: u16, topic: &str, id: &str) -> LinkSpec {
    let p = |state| {
        encode(&Presence {
            node: "h1".into(),
            role: "agent".into(),
            state,
            ts_ms: now_ms(),
            actions: vec![],
        })
    };
    LinkSpec {
        settings: MqttSettings {
            port,
            ..MqttSettings::default()
        },
        default_client_id: id.into(),
        subscriptions: vec![],
        presence: Some(PresenceSpec {
            topic: topic.into(),
            online: p(PresenceState::Online),
            offline: p(PresenceState::Offline),
        }),
    }
}

/// Subscribes afresh and returns the first presence state received (the retained one).
async fn retained_state(port: u16, topic: &str, id: &str) -> anyhow::Result<PresenceState> {
    let (client, mut ev) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 16);
    client.subscribe(topic, QoS::AtLeastOnce).await?;
    let state = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = ev.poll().await? {
                return anyhow::Ok(decode::<Presence>(&p.payload, 4096)?.state);
            }
        }
    })
    .await??;
    Ok(state)
}

async fn wait_state(port: u16, topic: &str, want: PresenceState) -> anyhow::Result<()> {
    for i in 0..50 {
        if retained_state(port, topic, &format!("watcher-{i}"))
            .await
            .ok()
            == Some(want)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("presence never became {want:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_and_farewell_leave_offline_retained() -> anyhow::Result<()> {
    let port = vigil::broker::start(0, 1 << 20)?.port();
    let topic = "vigil/v1/s/h1/presence";

    // Abrupt death: the task is aborted, its socket drops without DISCONNECT.
    let (tx, _rx) = mqtt::inbox(8, 1 << 20);
    let (_pub, link) = mqtt::open(
        spec(port, topic, "dies"),
        tx,
        LinkMetrics::new(&prometheus::Registry::new())?,
    )?;
    let task = tokio::spawn(link.run(CancellationToken::new()));
    wait_state(port, topic, PresenceState::Online).await?;
    task.abort();
    let _ = task.await;
    wait_state(port, topic, PresenceState::Offline).await?;

    // Clean stop: online again, then the farewell says offline.
    let (tx, _rx) = mqtt::inbox(8, 1 << 20);
    let (_pub, link) = mqtt::open(
        spec(port, topic, "clean"),
        tx,
        LinkMetrics::new(&prometheus::Registry::new())?,
    )?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(link.run(stop.clone()));
    wait_state(port, topic, PresenceState::Online).await?;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task).await??;
    wait_state(port, topic, PresenceState::Offline).await?;
    Ok(())
}
