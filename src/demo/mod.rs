//! The demo workload: a small real HTTP service (run as a child process),
//! a client driving it with real requests, a simulated temperature sensor,
//! and the fault injector that breaks the service in turn and records how
//! Vigil noticed and healed each fault.

pub mod injector;
pub mod sensor;
pub mod service;
pub mod workload;

/// The kinds of fault the demo injects into the service, in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Every response is delayed.
    Latency,
    /// Requests are accepted but never answered.
    Hang,
    /// The process exits.
    Crash,
    /// The process allocates memory steadily.
    MemoryGrowth,
    /// Requests fail with 500 while the health check stays well: seen only
    /// in the service's own metrics, which the agent scrapes.
    Errors,
    /// The simulated sensor drifts (not a service fault).
    SensorDrift,
}

impl FaultKind {
    /// The service faults, in the order the demo injects them.
    pub const SERVICE_CYCLE: [FaultKind; 5] = [
        FaultKind::Latency,
        FaultKind::Hang,
        FaultKind::Crash,
        FaultKind::MemoryGrowth,
        FaultKind::Errors,
    ];

    /// Name used in URLs and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Hang => "hang",
            FaultKind::Crash => "crash",
            FaultKind::MemoryGrowth => "memory_growth",
            FaultKind::Errors => "errors",
            FaultKind::SensorDrift => "sensor_drift",
        }
    }
}
