//! How to reach the broker (every role's `mqtt:` section) and TLS.

use super::*;

/// How to reach the broker. Shared by every role's config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port.
    pub port: u16,
    /// Client id; empty means one derived from the role and node name.
    pub client_id: String,
    /// Keep-alive interval in seconds.
    pub keep_alive_secs: u64,
    /// Largest packet sent, in bytes (rumqttc's default is 10 KiB); also
    /// the broker's limit to set (Mosquitto: `message_size_limit`).
    pub max_packet_bytes: usize,
    /// Largest packet read off the connection. A larger one costs the
    /// connection (the MQTT stream cannot skip it), so this sits well above
    /// `max_packet_bytes`: a message between the two is read and refused by
    /// size (counted as `oversized`), and the broker's own limit keeps
    /// anything larger from arriving at all.
    pub max_incoming_bytes: usize,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional password.
    pub password: Option<String>,
    /// Connect with TLS (e.g. Mosquitto's port 8883) when set.
    pub tls: Option<TlsSettings>,
    /// First reconnect delay in milliseconds.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in milliseconds.
    pub reconnect_max_ms: u64,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            keep_alive_secs: 15,
            max_packet_bytes: 1024 * 1024,
            max_incoming_bytes: 16 * 1024 * 1024,
            username: None,
            password: None,
            tls: None,
            reconnect_min_ms: 200,
            reconnect_max_ms: 10_000,
        }
    }
}

impl MqttSettings {
    /// Appends every problem to `errors`, each prefixed with `at` (e.g. `mqtt`).
    pub fn validate(&self, at: &str, errors: &mut Vec<String>) {
        if self.host.is_empty() {
            errors.push(format!("{at}.host: must not be empty"));
        }
        if self.port == 0 {
            errors.push(format!("{at}.port: must be 1..65535"));
        }
        if self.keep_alive_secs < 5 {
            errors.push(format!(
                "{at}.keep_alive_secs: must be at least 5 (rumqttc refuses less)"
            ));
        }
        if self.max_packet_bytes < 1024 {
            errors.push(format!("{at}.max_packet_bytes: must be at least 1024"));
        }
        if self.max_incoming_bytes < self.max_packet_bytes {
            errors.push(format!(
                "{at}.max_incoming_bytes: must be at least max_packet_bytes ({})",
                self.max_packet_bytes
            ));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            errors.push(format!(
                "{at}.reconnect_min_ms: must be positive and at most reconnect_max_ms"
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            errors.push(format!("{at}: username and password go together"));
        }
        if let Some(t) = &self.tls {
            if let Err(e) = t.client_config() {
                errors.push(format!("{at}.tls: {e}"));
            }
        }
    }
}

/// TLS to the broker: the CA that signed the broker's certificate, and
/// optionally this client's own certificate and key (for brokers that
/// require client certificates). PEM files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// CA certificate(s) to trust for the broker.
    pub ca_file: std::path::PathBuf,
    /// This client's certificate chain.
    #[serde(default)]
    pub cert_file: Option<std::path::PathBuf>,
    /// This client's private key.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

impl TlsSettings {
    /// Reads the files into a rustls client configuration (ring provider).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |p: &std::path::Path| format!("{}", p.display());
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&self.ca_file)
            .map_err(|e| format!("ca_file {}: {e}", read(&self.ca_file)))?;
        for c in cas {
            let c = c.map_err(|e| format!("ca_file {}: {e}", read(&self.ca_file)))?;
            roots
                .add(c)
                .map_err(|e| format!("ca_file {}: {e}", read(&self.ca_file)))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "ca_file {}: no certificate in it",
                read(&self.ca_file)
            ));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("cert_file {}: {e}", read(cert)))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("key_file {}: {e}", read(key)))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("cert_file and key_file: {e}"))
            }
            _ => Err("cert_file and key_file go together".into()),
        }
    }
}
