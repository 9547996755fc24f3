//! Liveness conditions in a policy's `match.when`: `<metric pattern> <op>
//! <number>`, such as `up == 0` (judged over the cache by `liveness`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A comparison in a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    // Two-character operators first, so `<=` is not read as `<`.
    const ALL: [(&'static str, Op); 6] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("?", |(s, _)| s)
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Eq => a == b,
            Op::Ne => a != b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }
}

/// `<metric pattern> <op> <number>`, e.g. `up == 0` or `http_*_seconds > 2`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Condition {
    /// Metric pattern (`*` matches any run of characters).
    pub metric: String,
    /// Comparison.
    pub op: Op,
    /// Right-hand side.
    pub value: f64,
}

impl Condition {
    /// Whether `value` of a matching metric meets the condition.
    pub fn holds(&self, value: f64) -> bool {
        self.op.holds(value, self.value)
    }
}

impl TryFrom<String> for Condition {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bad = || {
            format!(
                "condition {text:?} is not `<metric> <op> <number>` with op one of == != < <= > >="
            )
        };
        let (at, op, len) = Op::ALL
            .iter()
            .filter_map(|(s, op)| text.find(s).map(|i| (i, *op, s.len())))
            .min_by_key(|(i, _, len)| (*i, std::cmp::Reverse(*len)))
            .ok_or_else(bad)?;
        let metric = text[..at].trim();
        let number = text[at + len..].trim();
        let value: f64 = number.parse().map_err(|_| bad())?;
        let metric_ok = !metric.is_empty()
            && metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*'));
        if !metric_ok || !value.is_finite() {
            return Err(bad());
        }
        Ok(Self {
            metric: metric.to_string(),
            op,
            value,
        })
    }
}

impl From<Condition> for String {
    fn from(c: Condition) -> String {
        c.to_string()
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.metric, self.op.as_str(), self.value)
    }
}
