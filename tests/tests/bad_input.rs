//! Bad input on the wire is counted and refused, and the loop goes on: a
//! malformed metrics payload, an unknown schema version, a garbage sensor
//! reading, a command naming an action outside the catalog, a replayed and
//! an expired command; afterwards a crash is still detected and healed.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use vigil::demo::FaultKind;
use vigil::stack::{BrokerChoice, Stack};
use vigil_core::clock::now_ms;
use vigil_core::message::{Command, CommandResult, Outcome};
use vigil_core::signing::SecretKey;
use vigil_core::{decode, encode, topic};
use vigil_tests::{metric, wait_for, wait_healed, wait_until_warm, with_demo_stack};

struct Raw {
    client: AsyncClient,
    results: mpsc::Receiver<CommandResult>,
}

impl Raw {
    async fn send(
        &self,
        topic: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let (topic, bytes) = (topic.into(), bytes.into());
        self.client
            .publish(topic, QoS::AtLeastOnce, false, bytes)
            .await?;
        Ok(())
    }
}

/// A plain MQTT client that can publish anything and hears agent results.
async fn raw_client(stack: &Stack) -> anyhow::Result<Raw> {
    let mut opts = MqttOptions::new(
        "bad-actor",
        stack.broker.ip().to_string(),
        stack.broker.port(),
    );
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut ev) = AsyncClient::new(opts, 64);
    client
        .subscribe(topic::results("demo", "demo-host"), QoS::AtLeastOnce)
        .await?;
    let (tx, results) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(e) = ev.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = e {
                if let Ok(r) = decode::<CommandResult>(&p.payload, 1 << 20) {
                    let _ = tx.send(r).await;
                }
            }
        }
    });
    Ok(Raw { client, results })
}

/// A command as the stack's edge would send it: signed with its key.
fn command(stack: &Stack, id: &str, action: &str, expires_ms: i64) -> Command {
    let mut c = unsigned(stack, id, action, expires_ms);
    if let Ok(key) = edge_key(stack) {
        c.sign(&key);
    }
    c
}

fn edge_key(stack: &Stack) -> anyhow::Result<SecretKey> {
    SecretKey::read(&stack.data_dir.join("edge/command.key")).map_err(anyhow::Error::msg)
}

fn unsigned(stack: &Stack, id: &str, action: &str, expires_ms: i64) -> Command {
    Command {
        id: id.into(),
        action: action.into(),
        target: stack.target.clone(),
        params: BTreeMap::new(),
        issued_ms: now_ms(),
        expires_ms,
        policy: "test".into(),
        anomaly_id: None,
        holder: "demo/edge-1".into(),
        lease_token: None,
        lease_ms: 0,
        to: "demo-host".into(),
        signature: None,
    }
}

async fn next_result(raw: &mut Raw, id: &str) -> anyhow::Result<CommandResult> {
    let fut = async {
        while let Some(r) = raw.results.recv().await {
            if r.command_id == id {
                return Some(r);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no result for {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_messages_are_counted_and_refused_and_the_loop_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = env!("CARGO_BIN_EXE_vigil-demo-service");
    with_demo_stack(BrokerChoice::Embedded(0), dir.path(), bin, |s| async move {
        scenario(&s).await
    })
    .await
}

async fn scenario(stack: &Stack) -> anyhow::Result<()> {
    let first_pid = wait_until_warm(stack).await?;
    let mut raw = raw_client(stack).await?;
    malformed_at_the_edge(stack, &mut raw).await?;
    refused_by_the_agent(stack, &mut raw).await?;
    runs_once(stack, &mut raw, first_pid).await?;
    // The loop goes on: samples still flow and a crash is still healed.
    let edge = stack.edge_url.as_str();
    let samples = metric(edge, "vigil_edge_samples_total").await?;
    wait_for(
        "samples to keep flowing",
        Duration::from_secs(10),
        || async { (metric(edge, "vigil_edge_samples_total").await.ok()? > samples).then_some(()) },
    )
    .await?;
    let index = stack.tracker.lock().map(|t| t.report().len()).unwrap_or(0);
    stack.inject(FaultKind::Crash).await?;
    wait_healed(stack, index, "crash").await?;
    Ok(())
}

/// Malformed and unknown-version batches and a garbage sensor reading are
/// counted by the edge.
async fn malformed_at_the_edge(stack: &Stack, raw: &mut Raw) -> anyhow::Result<()> {
    let edge = stack.edge_url.as_str();
    // Malformed and unknown-version metric batches, and a garbage sensor reading.
    let metrics_topic = topic::metrics("demo", "demo-host");
    raw.send(&metrics_topic, b"{not json".to_vec()).await?;
    raw.send(
        &metrics_topic,
        br#"{"v":9,"kind":"metrics","body":{}}"#.to_vec(),
    )
    .await?;
    raw.send(topic::sensor("demo", "temp-1"), b"hot".to_vec())
        .await?;
    wait_for(
        "the edge to count the malformed messages",
        Duration::from_secs(10),
        || async {
            let malformed = metric(edge, "vigil_messages_malformed_total{reason=\"malformed\"}")
                .await
                .ok()?;
            let version = metric(
                edge,
                "vigil_messages_malformed_total{reason=\"unknown_version\"}",
            )
            .await
            .ok()?;
            (malformed >= 2.0 && version >= 1.0).then_some(())
        },
    )
    .await?;

    Ok(())
}

/// An action outside the catalog and garbage on the command topic are
/// refused and counted by the agent.
async fn refused_by_the_agent(stack: &Stack, raw: &mut Raw) -> anyhow::Result<()> {
    let agent = stack.agent_url.as_str();
    // An action outside the catalog is rejected, and nothing is restarted.
    let unknown = command(stack, "c-unknown", "rm-rf", now_ms() + 30_000);
    raw.send(topic::commands("demo", "demo-host"), encode(&unknown))
        .await?;
    let r = next_result(raw, "c-unknown").await?;
    assert_eq!(r.outcome, Outcome::Rejected);
    assert!(r.detail.contains("unknown action"), "{}", r.detail);
    assert_eq!(
        metric(agent, "vigil_agent_actions_total{outcome=\"rejected\"}").await?,
        1.0
    );
    // Garbage on the command topic is counted by the agent.
    raw.send(topic::commands("demo", "demo-host"), b"\xff\xfe".to_vec())
        .await?;
    wait_for(
        "the agent to count the malformed command",
        Duration::from_secs(10),
        || async {
            (metric(
                agent,
                "vigil_messages_malformed_total{reason=\"malformed\"}",
            )
            .await
            .ok()?
                >= 1.0)
                .then_some(())
        },
    )
    .await?;

    Ok(())
}

/// A valid command runs once; its replay (same id) and an expired one do
/// nothing.
async fn runs_once(stack: &Stack, raw: &mut Raw, first_pid: u64) -> anyhow::Result<()> {
    let agent = stack.agent_url.as_str();
    // A valid command runs once; its replay (same id) and an expired one do nothing.
    let restart = command(stack, "c-once", "restart-demo-web", now_ms() + 30_000);
    raw.send(topic::commands("demo", "demo-host"), encode(&restart))
        .await?;
    assert_eq!(
        next_result(raw, "c-once").await?.outcome,
        Outcome::Succeeded
    );
    raw.send(topic::commands("demo", "demo-host"), encode(&restart))
        .await?;
    assert_eq!(
        next_result(raw, "c-once").await?.outcome,
        Outcome::Duplicate
    );
    let stale = command(stack, "c-stale", "restart-demo-web", now_ms() - 1);
    raw.send(topic::commands("demo", "demo-host"), encode(&stale))
        .await?;
    assert_eq!(next_result(raw, "c-stale").await?.outcome, Outcome::Expired);
    assert_eq!(
        metric(agent, "vigil_agent_actions_total{outcome=\"succeeded\"}").await?,
        1.0,
        "the replay must not run twice"
    );
    let pid = vigil_tests::service_pid(agent).await;
    assert!(
        pid.is_some() && pid != Some(first_pid),
        "the one restart gave a new PID"
    );

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_commands_a_trusted_edge_signed_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = env!("CARGO_BIN_EXE_vigil-demo-service");
    with_demo_stack(BrokerChoice::Embedded(0), dir.path(), bin, |s| async move {
        forgeries(&s).await
    })
    .await
}

/// What anyone on the broker could try: a command without a signature, one
/// signed by an untrusted key, one signed by the edge and rewritten, one
/// signed for another agent, and one naming a target with shell
/// metacharacters.
fn forged_commands(stack: &Stack, later: i64) -> anyhow::Result<[Command; 5]> {
    // The edge's holder name and no signature: what anyone on the broker could send.
    let plain = unsigned(stack, "f-unsigned", "restart-demo-web", later);
    // Signed, but by a key no agent trusts.
    let mut forged = unsigned(stack, "f-forged", "restart-demo-web", later);
    forged.sign(&SecretKey::generate()?);
    // Signed by the edge for a harmless action, then rewritten.
    let mut tampered = command(stack, "f-tampered", "page-ops", later);
    tampered.action = "restart-demo-web".into();
    // Signed by the edge for another agent.
    let mut elsewhere = unsigned(stack, "f-elsewhere", "restart-demo-web", later);
    elsewhere.to = "other-host".into();
    elsewhere.sign(&edge_key(stack)?);
    // Signed, naming a target with shell metacharacters.
    let mut shell = unsigned(stack, "f-shell", "page-ops", later);
    shell.target = vigil_core::EntityId("host/demo-host; rm -rf /tmp/x".into());
    shell.sign(&edge_key(stack)?);
    Ok([plain, forged, tampered, elsewhere, shell])
}

/// The edge audits every result it did not send.
async fn every_result_audited_as_unexpected(edge: &str) -> anyhow::Result<()> {
    let ids = [
        "f-unsigned",
        "f-forged",
        "f-tampered",
        "f-elsewhere",
        "f-shell",
        "f-once",
    ];
    wait_for(
        "the edge to audit the results it never sent",
        Duration::from_secs(10),
        || async {
            let audit = vigil_tests::get_json(&format!("{edge}/api/v1/audit"))
                .await
                .ok()?;
            let seen: Vec<String> = audit
                .as_array()?
                .iter()
                .filter(|a| a["kind"] == "unexpected_result")
                .filter_map(|a| a["command_id"].as_str().map(str::to_string))
                .collect();
            ids.iter()
                .all(|id| seen.iter().any(|s| s == id))
                .then_some(())
        },
    )
    .await?;
    Ok(())
}

async fn forgeries(stack: &Stack) -> anyhow::Result<()> {
    let first_pid = wait_until_warm(stack).await?;
    let mut raw = raw_client(stack).await?;
    let (edge, agent) = (stack.edge_url.as_str(), stack.agent_url.as_str());
    let commands = topic::commands("demo", "demo-host");
    let later = now_ms() + 30_000;
    let refused =
        |reason: &str| format!("vigil_agent_commands_refused_total{{reason=\"{reason}\"}}");

    let [plain, forged, tampered, elsewhere, shell] = forged_commands(stack, later)?;
    for (cmd, reason, says) in [
        (&plain, "unsigned", "unsigned"),
        (&forged, "unknown_key", "does not trust"),
        (&tampered, "bad_signature", "does not verify"),
        (&elsewhere, "wrong_agent", "other-host"),
        (&shell, "bad_target", "not host/"),
    ] {
        raw.send(&commands, encode(cmd)).await?;
        let r = next_result(&mut raw, &cmd.id).await?;
        assert_eq!(r.outcome, Outcome::Rejected, "{}: {}", cmd.id, r.detail);
        assert!(r.detail.contains(says), "{}: {}", cmd.id, r.detail);
        assert_eq!(metric(agent, &refused(reason)).await?, 1.0, "{reason}");
    }
    // Nothing ran and nothing was leased: no restart, no new PID, and the
    // shell target never reached the ledger.
    assert_eq!(
        metric(agent, "vigil_agent_actions_total{outcome=\"succeeded\"}").await?,
        0.0
    );
    assert_eq!(vigil_tests::service_pid(agent).await, Some(first_pid));
    let ledger =
        std::fs::read_to_string(stack.data_dir.join("agent/ledger.json")).unwrap_or_default();
    assert!(!ledger.contains("rm -rf"), "{ledger}");

    // A signed command runs once; its replay runs nothing.
    let once = command(stack, "f-once", "page-ops", later);
    raw.send(&commands, encode(&once)).await?;
    assert_eq!(
        next_result(&mut raw, "f-once").await?.outcome,
        Outcome::Succeeded
    );
    raw.send(&commands, encode(&once)).await?;
    assert_eq!(
        next_result(&mut raw, "f-once").await?.outcome,
        Outcome::Duplicate
    );

    every_result_audited_as_unexpected(edge).await?;
    assert!(metric(edge, "vigil_edge_unexpected_results_total").await? >= 7.0);
    Ok(())
}
