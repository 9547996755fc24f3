//! The entity models of a fleet, as the cloud trains them and a bundle
//! carries them (`entities.json`): one per (site, entity), each with the
//! metric names its columns stand for, so an edge installs a model only
//! for an entity whose metrics are the same.

use super::EntityModel;
use serde::{Deserialize, Serialize};

/// The file a bundle carries them in.
pub const FILE: &str = "entities.json";

/// One entity's model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityEntry {
    /// Site of the entity.
    pub site: String,
    /// The entity (`host/h1`, `service/h1/web`).
    pub entity: String,
    /// Metric names, sorted: the model's columns.
    pub metrics: Vec<String>,
    /// The fitted model.
    pub model: EntityModel,
}

/// Every entity's model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySet {
    /// The models, sorted by site and entity.
    pub entries: Vec<EntityEntry>,
}

impl EntitySet {
    /// The model of `entity` at `site`, if any.
    pub fn get(&self, site: &str, entity: &str) -> Option<&EntityEntry> {
        self.entries
            .binary_search_by(|e| (e.site.as_str(), e.entity.as_str()).cmp(&(site, entity)))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Sorts the entries (for [`Self::get`]).
    pub fn sort(&mut self) {
        self.entries
            .sort_by(|a, b| (&a.site, &a.entity).cmp(&(&b.site, &b.entity)));
    }

    /// Checks what a bundle's file holds: each model's width matches its
    /// metric names, and the names are sorted and distinct.
    pub fn check(&self) -> Result<(), String> {
        for e in &self.entries {
            if e.model.metrics() != e.metrics.len() {
                return Err(format!(
                    "{} {}: {} metric names for a model of {}",
                    e.site,
                    e.entity,
                    e.metrics.len(),
                    e.model.metrics()
                ));
            }
            if e.metrics.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("{} {}: metric names not sorted", e.site, e.entity));
            }
        }
        Ok(())
    }
}
