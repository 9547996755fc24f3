//! How an attempt failed, and how HTTP answers map onto it.

/// How an attempt failed: worth another try (network, 5xx, 409, 429), or not
/// (a 4xx the same request will get again, nothing left to scale).
#[derive(Debug, PartialEq)]
pub enum Fail {
    /// Try again after a backoff.
    Retry(String),
    /// Stop now.
    Final(String),
}

impl Fail {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Fail::Retry(m) | Fail::Final(m) => m,
        }
    }
}

/// A non-2xx answer: retried when the same request may later succeed.
fn status(what: &str, status: reqwest::StatusCode, body: &str) -> Fail {
    let msg = format!(
        "{what}: HTTP {status}: {}",
        body.trim().chars().take(300).collect::<String>()
    );
    if status.is_server_error() || status.as_u16() == 409 || status.as_u16() == 429 {
        Fail::Retry(msg)
    } else {
        Fail::Final(msg)
    }
}

/// The request did not get an answer.
fn send(what: &str, e: reqwest::Error) -> Fail {
    Fail::Retry(format!("{what}: {e}"))
}

/// Sends a request and maps a non-2xx answer to a [`Fail`]; `Ok` is the
/// answer, its body not yet read.
pub(super) async fn call(
    what: &str,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, Fail> {
    let resp = req.send().await.map_err(|e| send(what, e))?;
    let code = resp.status();
    if code.is_success() {
        Ok(resp)
    } else {
        let text = resp.text().await.unwrap_or_default();
        Err(status(what, code, &text))
    }
}
