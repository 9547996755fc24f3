//! MQTT security against a real Mosquitto: TLS with certificates the test
//! makes (a CA, the broker's certificate, a client certificate), user names
//! and passwords, and the ACL example shipped in `config/mosquitto/acl.conf`
//! (an agent publishes only its own metrics and reads only its own
//! commands). Every connection goes through Vigil's own MQTT link. Skipped
//! with a notice when mosquitto is absent; required with
//! VIGIL_REQUIRE_EXTERNAL=1.

#![cfg(test)]

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_core::mqtt::{self, LinkMetrics, LinkSpec, MqttSettings, TlsSettings};
use vigil_tests::{external_required, wait_for, Mosquitto};

struct Certs {
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn make_certs(dir: &Path) -> anyhow::Result<Certs> {
    let ca_key = KeyPair::generate()?;
    // Distinct subject names: OpenSSL (Mosquitto) takes a certificate whose
    // subject equals its issuer's for self-signed.
    let named = |cn: &str, names: Vec<String>| -> anyhow::Result<CertificateParams> {
        let mut p = CertificateParams::new(names)?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        Ok(p)
    };
    let mut ca_params = named("Vigil test CA", vec![])?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;
    let issue = |cn: &str, names: Vec<String>| -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let cert = named(cn, names)?.signed_by(&key, &ca, &ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server, server_key) = issue("broker", vec!["127.0.0.1".into(), "localhost".into()])?;
    let (client, client_key) = issue("web-01", vec!["web-01".into()])?;
    let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    Ok(Certs {
        ca: write("ca.pem", &ca.pem())?,
        server_cert: write("server.pem", &server)?,
        server_key: write("server.key", &server_key)?,
        client_cert: write("client.pem", &client)?,
        client_key: write("client.key", &client_key)?,
    })
}

/// A password file for `users`; `None` when mosquitto_passwd (which comes
/// with mosquitto) is not installed.
fn passwords(dir: &Path, users: &[(&str, &str)]) -> anyhow::Result<Option<PathBuf>> {
    let file = dir.join("passwd");
    for (i, (u, p)) in users.iter().enumerate() {
        let mut c = Command::new("mosquitto_passwd");
        if i == 0 {
            c.arg("-c");
        }
        let status = match c.args(["-b"]).arg(&file).args([u, p]).status() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            r => r?,
        };
        anyhow::ensure!(status.success(), "mosquitto_passwd failed for {u}");
    }
    Ok(Some(file))
}

/// A Vigil MQTT link as `user`; returns its metrics, its inbox and a stop.
fn link(
    port: u16,
    user: Option<(&str, &str)>,
    tls: Option<TlsSettings>,
    subscriptions: Vec<String>,
) -> anyhow::Result<(LinkMetrics, mqtt::Publisher, mqtt::Inbox, CancellationToken)> {
    let settings = MqttSettings {
        port,
        username: user.map(|u| u.0.to_string()),
        password: user.map(|u| u.1.to_string()),
        tls,
        reconnect_min_ms: 100,
        reconnect_max_ms: 300,
        ..Default::default()
    };
    let mut problems = Vec::new();
    settings.validate("mqtt", &mut problems);
    anyhow::ensure!(problems.is_empty(), "{problems:?}");
    let spec = LinkSpec {
        settings,
        default_client_id: format!("t-{}", uuid_like()),
        subscriptions,
        presence: None,
    };
    let metrics = LinkMetrics::new(&prometheus::Registry::new())?;
    let (tx, rx) = mqtt::inbox(64, 4 << 20);
    let (publisher, l) = mqtt::open(spec, tx, metrics.clone())?;
    let stop = CancellationToken::new();
    tokio::spawn(l.run(stop.clone()));
    Ok((metrics, publisher, rx, stop))
}

fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) + std::process::id() as u64 * 1000
}

async fn connects(m: &LinkMetrics) -> anyhow::Result<()> {
    wait_for("the connection", Duration::from_secs(15), || async {
        (m.connected.get() == 1).then_some(())
    })
    .await
}

/// Refused: several attempts fail and none connects.
async fn refused(m: &LinkMetrics) -> anyhow::Result<()> {
    wait_for(
        "three refused attempts",
        Duration::from_secs(15),
        || async { (m.reconnects.get() >= 3).then_some(()) },
    )
    .await?;
    anyhow::ensure!(
        m.connected.get() == 0,
        "connected although it should be refused"
    );
    Ok(())
}

/// Publishes probes on `topic` until one arrives in `inbox`.
async fn probe(from: &mqtt::Publisher, topic: &str, inbox: &mut mqtt::Inbox) -> anyhow::Result<()> {
    for _ in 0..50 {
        from.send_raw(topic, "probe", b"probe".to_vec(), false)
            .await;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), inbox.recv()).await {
            return Ok(());
        }
    }
    anyhow::bail!("no probe on {topic} got through")
}

/// The next message that is not a probe.
async fn next(inbox: &mut mqtt::Inbox) -> anyhow::Result<rumqttc::Publish> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("inbox closed"))?;
        if &m.payload[..] != b"probe" {
            return Ok(m);
        }
    }
}

fn skip() -> bool {
    assert!(
        !external_required(),
        "VIGIL_REQUIRE_EXTERNAL=1 but mosquitto is not installed"
    );
    eprintln!("SKIPPED: mosquitto is not on PATH; install it (apt-get install mosquitto) to run this test.");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_and_passwords() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = make_certs(dir.path())?;
    let Some(pw) = passwords(dir.path(), &[("web-01", "right-password")])? else {
        skip();
        return Ok(());
    };
    let conf = format!(
        "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        pw.display(),
        certs.ca.display(),
        certs.server_cert.display(),
        certs.server_key.display()
    );
    let Some(broker) = Mosquitto::start_with(&conf)? else {
        skip();
        return Ok(());
    };
    let port = broker.addr.port();
    let tls = |client: bool| TlsSettings {
        ca_file: certs.ca.clone(),
        cert_file: client.then(|| certs.client_cert.clone()),
        key_file: client.then(|| certs.client_key.clone()),
    };
    // Certificate and password: in.
    let (ok, publisher, _, stop) = link(
        port,
        Some(("web-01", "right-password")),
        Some(tls(true)),
        vec![],
    )?;
    connects(&ok).await?;
    assert!(put(&publisher, "vigil/v1/s1/web-01/metrics", b"{}").await);
    stop.cancel();
    // Wrong password, no client certificate, or no TLS at all: refused.
    let (m, _, _, s1) = link(port, Some(("web-01", "wrong")), Some(tls(true)), vec![])?;
    let (n, _, _, s2) = link(
        port,
        Some(("web-01", "right-password")),
        Some(tls(false)),
        vec![],
    )?;
    let (p, _, _, s3) = link(port, Some(("web-01", "right-password")), None, vec![])?;
    refused(&m).await?;
    refused(&n).await?;
    refused(&p).await?;
    for s in [s1, s2, s3] {
        s.cancel();
    }
    // A CA that is not the broker's: refused too.
    let other = tempfile::tempdir()?;
    let stranger = make_certs(other.path())?;
    let wrong_ca = TlsSettings {
        ca_file: stranger.ca,
        ..tls(true)
    };
    let (q, _, _, s4) = link(
        port,
        Some(("web-01", "right-password")),
        Some(wrong_ca),
        vec![],
    )?;
    refused(&q).await?;
    s4.cancel();
    // A bad CA file is a configuration error, named.
    let mut problems = Vec::new();
    MqttSettings {
        tls: Some(TlsSettings {
            ca_file: dir.path().join("missing.pem"),
            cert_file: None,
            key_file: None,
        }),
        ..Default::default()
    }
    .validate("mqtt", &mut problems);
    assert!(problems[0].starts_with("mqtt.tls: ca_file"), "{problems:?}");
    Ok(())
}

/// Publishes `body` on `topic` as the kind its last level names.
async fn put(p: &vigil_core::mqtt::Publisher, topic: &str, body: &[u8]) -> bool {
    let kind = if topic.ends_with("/metrics") {
        "metrics"
    } else {
        "command"
    };
    p.send_raw(topic, kind, body.to_vec(), false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_example_confines_an_agent_to_its_own_metrics_and_commands() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(pw) = passwords(
        dir.path(),
        &[
            ("web-01", "pw-web-01"),
            ("web-02", "pw-web-02"),
            ("edge-s1", "pw-edge"),
        ],
    )?
    else {
        skip();
        return Ok(());
    };
    let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/mosquitto/acl.conf");
    let conf = format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\n",
        pw.display(),
        acl.canonicalize()?.display()
    );
    let Some(broker) = Mosquitto::start_with(&conf)? else {
        skip();
        return Ok(());
    };
    let port = broker.addr.port();
    let (em, edge, mut edge_in, s1) = link(
        port,
        Some(("edge-s1", "pw-edge")),
        None,
        vec!["vigil/v1/s1/+/metrics".into()],
    )?;
    // web-01 tries to read every host's commands.
    let (am, agent, mut agent_in, s2) = link(
        port,
        Some(("web-01", "pw-web-01")),
        None,
        vec!["vigil/v1/s1/+/commands".into()],
    )?;
    connects(&em).await?;
    connects(&am).await?;
    // Both subscriptions are in place once a probe gets through.
    probe(&agent, "vigil/v1/s1/web-01/metrics", &mut edge_in).await?;
    probe(&edge, "vigil/v1/s1/web-01/commands", &mut agent_in).await?;
    // Forged first, then genuine: if the forgery passed, it would arrive first.
    put(&agent, "vigil/v1/s1/web-02/metrics", b"forged").await;
    put(&agent, "vigil/v1/s1/web-01/metrics", b"genuine").await;
    let got = next(&mut edge_in).await?;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("vigil/v1/s1/web-01/metrics", &b"genuine"[..])
    );
    // The edge commands both hosts; web-01 hears only its own.
    put(&edge, "vigil/v1/s1/web-02/commands", b"for-02").await;
    put(&edge, "vigil/v1/s1/web-01/commands", b"for-01").await;
    let got = next(&mut agent_in).await?;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("vigil/v1/s1/web-01/commands", &b"for-01"[..])
    );
    // And web-01 may not command anyone.
    put(&agent, "vigil/v1/s1/web-01/commands", b"self").await;
    put(&edge, "vigil/v1/s1/web-01/commands", b"after").await;
    let got = next(&mut agent_in).await?;
    assert_eq!(&got.payload[..], b"after");
    s1.cancel();
    s2.cancel();
    Ok(())
}
