//! Ablations: the detector with one part replaced or switched off, so each
//! part's worth is measured on the same data in the same run
//! (`vigil eval nab --ablate <name>`; the table is in docs/detector.md).

use std::fmt;
use std::str::FromStr;

/// One part of the detector replaced or switched off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ablation {
    /// The whole detector.
    #[default]
    Full,
    /// The LSTM's forecast replaced by the last value (persistence).
    Persistence,
    /// The LSTM's forecast replaced by the value one day earlier (the
    /// seasonal-naive forecast; the last value until a day has been seen).
    SeasonalNaive,
    /// The LSTM as initialised, never trained (online training off).
    Untrained,
    /// No new-range evidence.
    NoRange,
    /// No new-smoothed-range evidence.
    NoSmoothedRange,
    /// No forecast-record evidence.
    NoForecastRecord,
    /// No sustained-far-deviation rule.
    NoSustained,
    /// No seasonal (time-of-day profile) evidence.
    NoSeason,
    /// No refractory period after an alarm.
    NoRefractory,
    /// Range excursions counted whole, not only where the straight-line
    /// continuation missed them.
    NoLineGate,
}

impl Ablation {
    /// Every ablation, the full detector first.
    pub const ALL: [Ablation; 11] = [
        Ablation::Full,
        Ablation::Persistence,
        Ablation::SeasonalNaive,
        Ablation::Untrained,
        Ablation::NoRange,
        Ablation::NoSmoothedRange,
        Ablation::NoForecastRecord,
        Ablation::NoSustained,
        Ablation::NoSeason,
        Ablation::NoRefractory,
        Ablation::NoLineGate,
    ];

    /// The name `--ablate` takes.
    pub fn name(self) -> &'static str {
        match self {
            Ablation::Full => "full",
            Ablation::Persistence => "persistence",
            Ablation::SeasonalNaive => "seasonal-naive",
            Ablation::Untrained => "untrained",
            Ablation::NoRange => "no-range",
            Ablation::NoSmoothedRange => "no-smoothed-range",
            Ablation::NoForecastRecord => "no-forecast-record",
            Ablation::NoSustained => "no-sustained",
            Ablation::NoSeason => "no-season",
            Ablation::NoRefractory => "no-refractory",
            Ablation::NoLineGate => "no-line-gate",
        }
    }

    /// What it changes, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Ablation::Full => "the whole detector",
            Ablation::Persistence => "forecast = last value (no LSTM)",
            Ablation::SeasonalNaive => "forecast = the value a day earlier (no LSTM)",
            Ablation::Untrained => "LSTM as initialised, no online training",
            Ablation::NoRange => "new-range evidence off",
            Ablation::NoSmoothedRange => "new-smoothed-range evidence off",
            Ablation::NoForecastRecord => "forecast-record evidence off",
            Ablation::NoSustained => "sustained-deviation rule off",
            Ablation::NoSeason => "seasonal evidence off",
            Ablation::NoRefractory => "refractory period off",
            Ablation::NoLineGate => "range excursions counted whole",
        }
    }
}

impl fmt::Display for Ablation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Ablation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ablation::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Ablation::ALL.iter().map(|a| a.name()).collect();
                format!("unknown ablation {s:?}; one of: {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for a in Ablation::ALL {
            assert_eq!(a.name().parse::<Ablation>(), Ok(a));
        }
        let e = "no-lstm".parse::<Ablation>().unwrap_err();
        assert!(
            e.contains("persistence") && e.contains("no-sustained"),
            "{e}"
        );
    }
}
