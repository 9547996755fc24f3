//! Templates in catalog entries: `{param}` and `{target}` filled from a
//! command, each value escaped for where it lands.

use vigil_core::message::Command;

/// Fills `{param}` and `{target}` in a template, each value passed through
/// `escape` (percent-encoding in a URL, JSON string escaping in a body), so a
/// value from the network cannot change the request's shape.
pub fn fill(template: &str, cmd: &Command, escape: impl Fn(&str) -> String) -> String {
    let mut out = template.replace("{target}", &escape(cmd.target.as_str()));
    for (k, v) in &cmd.params {
        out = out.replace(&format!("{{{k}}}"), &escape(v));
    }
    out
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The inside of a JSON string holding `v`.
pub fn json_escape(v: &str) -> String {
    let quoted = serde_json::Value::String(v.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// The `{name}` placeholders in templates: a name of letters, digits, `_`
/// or `-` between braces (other braces, as in a JSON body, are text).
pub fn placeholders(texts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for text in texts {
        let mut rest = text.as_str();
        while let Some(start) = rest.find('{') {
            rest = &rest[start + 1..];
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            if len > 0 && rest[len..].starts_with('}') {
                out.push(rest[..len].to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::EntityId;

    #[test]
    fn values_cannot_change_the_request_shape() {
        let mut cmd = Command {
            id: "c".into(),
            action: "a".into(),
            target: EntityId::service("h", "web"),
            params: Default::default(),
            issued_ms: 0,
            expires_ms: 0,
            policy: "p".into(),
            anomaly_id: None,
            holder: String::new(),
            lease_token: None,
            lease_ms: 0,
            to: "h".into(),
            signature: None,
        };
        cmd.params.insert("zone".into(), "eu\",\"x\":\"1".into());
        let body = fill(r#"{"zone":"{zone}","t":"{target}"}"#, &cmd, json_escape);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["zone"], "eu\",\"x\":\"1");
        assert_eq!(v["t"], "service/h/web");
        assert!(v.get("x").is_none());
        let url = fill("http://lb/pools/{zone}?t={target}", &cmd, percent);
        assert_eq!(
            url,
            "http://lb/pools/eu%22%2C%22x%22%3A%221?t=service%2Fh%2Fweb"
        );
    }
}
