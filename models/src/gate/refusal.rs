//! Why the gate refused a candidate, as data: which rule, the candidate's
//! figure and the current model's, so that the API and a metric can say
//! which count it lost on and by how much.

use serde::Serialize;

/// A rule of the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Held-back forecast loss above the current model's (times the ratio).
    ForecastLoss,
    /// Share of points (or rows) flagged outside faults above the current's.
    FlagRate,
    /// Fewer confirmed incidents caught.
    Incidents,
    /// Fewer injected faults found.
    InjectedFound,
    /// The injected faults both find, found later on average (samples).
    InjectedDelay,
}

impl Rule {
    /// Every rule, for metric labels.
    pub const ALL: [Rule; 5] = [
        Rule::ForecastLoss,
        Rule::FlagRate,
        Rule::Incidents,
        Rule::InjectedFound,
        Rule::InjectedDelay,
    ];

    /// The rule's name in the API and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ForecastLoss => "forecast_loss",
            Rule::FlagRate => "flag_rate",
            Rule::Incidents => "incidents",
            Rule::InjectedFound => "injected_found",
            Rule::InjectedDelay => "injected_delay",
        }
    }
}

/// One count a candidate lost on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Refusal {
    /// The rule.
    pub rule: Rule,
    /// The candidate's figure.
    pub candidate: f64,
    /// The current model's figure.
    pub current: f64,
    /// The same in words.
    pub reason: String,
}

impl Refusal {
    /// How far the candidate is from the current model (candidate − current).
    pub fn by(&self) -> f64 {
        self.candidate - self.current
    }
}
