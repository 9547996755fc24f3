//! Swapping models: asking for a release's chunks, verifying and building
//! a complete bundle off the async threads, and putting the new detector
//! in place between two ticks (or refusing it, counted and logged).

use super::*;

impl Node {
    /// Acts on what the model updater asks: a chunk request goes out; a
    /// complete bundle is verified and built on a blocking thread, and comes
    /// back through `installs` to be swapped in between two ticks.
    pub(super) fn model_next(&mut self, next: Next) {
        match next {
            Next::Idle => {}
            Next::Ask(req) => {
                let want = topic::model_chunks(&req.family, req.version);
                if self.chunk_sub.as_deref() != Some(want.as_str()) {
                    self.drop_chunk_sub();
                    self.publisher.subscribe(&want);
                    self.chunk_sub = Some(want);
                }
                let t = topic::model_request(self.models.family());
                self.out.send(t, &req, false);
            }
            Next::Reset => self.reset_model(),
            Next::Install { release, bytes } => {
                self.drop_chunk_sub();
                let (keys, tx) = (self.keys.clone(), self.installs_tx.clone());
                tokio::task::spawn_blocking(move || {
                    let built = verify_bundle(&bytes, &keys, Some(&release));
                    let _ = tx.blocking_send((release, bytes, built));
                });
            }
        }
    }

    /// Goes back to the edge's own model (a signed rollback to release 0).
    pub(super) fn reset_model(&mut self) {
        self.drop_chunk_sub();
        match Detector::new(self.config.detector.clone()) {
            Ok(fresh) => {
                if let Err(e) = self.models.reset() {
                    warn!(error = %e, "Could not move the model bundle aside.");
                }
                let (was, now) = self.put_model(fresh, None);
                self.put_entities(None);
                info!(from = %was, to = %now, "Rolled back to the edge's own model.");
            }
            Err(e) => {
                warn!(error = %e, "Could not build the default model; the running one stays.")
            }
        }
    }

    /// Puts `new` in place of the running model between two ticks: it takes
    /// over the per-series state, so scoring goes on with no warm-up.
    /// Returns the versions before and after.
    pub(super) fn put_model(
        &mut self,
        mut new: Detector,
        release: Option<u64>,
    ) -> (String, String) {
        if let Some(old) = self.detector.as_mut() {
            new.adopt_state(old);
        }
        let was = self.model_version();
        let now = new.model_version();
        self.detector = Some(new);
        if let Ok(mut i) = self.shared.info.lock() {
            i.model_version = now.clone();
            i.model_release = release;
        }
        self.metrics.model.release.set(release.unwrap_or(0) as i64);
        self.metrics
            .model
            .updates
            .with_label_values(&["installed"])
            .inc();
        (was, now)
    }

    /// Installs the cloud's entity models for this site (none: back to each
    /// entity's own fits).
    fn put_entities(&mut self, set: Option<&vigil_models::entity::EntitySet>) {
        let cfg = self.config.entity_model.clone();
        let n = self
            .entity_models
            .get_or_insert_with(|| crate::entity::EntityModels::new(cfg))
            .install(&self.config.site, set);
        if set.is_some() {
            info!(entities = n, "Entity models from the cloud installed.");
        }
    }

    /// Counts a refused release or bundle; the running model stays.
    pub(super) fn refused(&self, reason: &str) {
        self.metrics
            .model
            .refusals
            .with_label_values(&[reason])
            .inc();
        self.metrics
            .model
            .updates
            .with_label_values(&["refused"])
            .inc();
    }

    pub(super) fn drop_chunk_sub(&mut self) {
        if let Some(f) = self.chunk_sub.take() {
            self.publisher.unsubscribe(&f);
        }
    }

    /// Swaps in a verified model; a refused one leaves the running model scoring.
    pub(super) fn swap(&mut self, (release, bytes, built): Install) {
        let (new, entities) = match built {
            Ok(d) => d,
            Err((e, reason)) => {
                self.models.abandon();
                self.refused(reason);
                warn!(version = release.version, reason, error = %e, "Model bundle refused; the running model keeps scoring.");
                return;
            }
        };
        let started = self.models.transfer_started_ms();
        if let Err(e) = self.models.installed(release.version, &bytes) {
            warn!(error = %e, "Could not keep the model bundle on disk; it scores until restart.");
        }
        let (was, now) = self.put_model(new, Some(release.version));
        self.put_entities(entities.as_ref());
        if let Some(t) = started {
            self.metrics
                .model
                .transfer_seconds
                .observe((now_ms() - t).max(0) as f64 / 1000.0);
        }
        info!(from = %was, to = %now, stage = release.stage.as_str(), bytes = bytes.len(), "Model swapped in.");
    }

    pub(super) fn count_chunks(&self) {
        let c = self.models.counts;
        for (label, n) in [
            ("stored", c.stored),
            ("duplicate", c.duplicate),
            ("bad", c.bad),
            ("unexpected", c.unexpected),
        ] {
            let m = self.metrics.model.chunks.with_label_values(&[label]);
            m.inc_by(n.saturating_sub(m.get()));
        }
    }

    pub(super) fn model_version(&self) -> String {
        self.shared
            .info
            .lock()
            .map(|i| i.model_version.clone())
            .unwrap_or_default()
    }
}

/// Checks a bundle file (format, every hash, signature) and builds its
/// detector and reads its entity models; when `release` is given, the
/// bundle must be that release.
pub(super) fn verify_bundle(
    bytes: &[u8],
    keys: &Keyring,
    release: Option<&Release>,
) -> Result<super::Built, (String, &'static str)> {
    let refuse = |e: vigil_models::bundle::BundleError| (e.to_string(), e.reason());
    let b = Bundle::from_bytes(bytes).map_err(refuse)?;
    b.verify(keys).map_err(refuse)?;
    let m = b.manifest();
    if let Some(r) = release {
        if m.family != r.family || m.version != r.version {
            return Err((
                format!(
                    "bundle is {}-v{}, the release names {}-v{}",
                    m.family, m.version, r.family, r.version
                ),
                "mismatch",
            ));
        }
    }
    Ok((b.detector().map_err(refuse)?, b.entities().map_err(refuse)?))
}

/// The model to start with: the release installed before a restart
/// (verified again), else the default, with the entity models it carries;
/// and the detector snapshot from before a restart, whose rows go back as
/// their series return.
pub(super) fn starting_model(
    config: &EdgeConfig,
    keys: &Keyring,
    metrics: &EdgeMetrics,
) -> anyhow::Result<(
    Models,
    Detector,
    crate::entity::EntityModels,
    crate::snapshot::Snapshot,
)> {
    let site = &config.site;
    let node_id = format!("{site}/{}", config.node);
    let (mut models, installed) = Models::open(
        config.model.clone(),
        keys.clone(),
        &node_id,
        &config.data_dir.join("models"),
    );
    // The model installed before a restart, verified again before it scores.
    let (detector, entities) = match installed.map(|b| verify_bundle(&b, keys, None)) {
        Some(Ok((d, entities))) => {
            if let Some((_, v)) = d.release() {
                models.resumed(v);
                metrics.model.release.set(v as i64);
            }
            info!(model = %d.model_version(), "Loaded the installed model.");
            (d, entities)
        }
        Some(Err(e)) => {
            warn!(error = %e.0, "The installed model does not verify; starting the default model.");
            (Detector::new(config.detector.clone())?, None)
        }
        None => (Detector::new(config.detector.clone())?, None),
    };
    // A snapshot from before a restart: rows go back as their series return.
    let snap_path = config.data_dir.join("detector.snap");
    let mut snapshot = crate::snapshot::load(&snap_path).unwrap_or_default();
    let mut detector = detector;
    if let Some((w, steps)) = snapshot
        .weights
        .take()
        .filter(|_| detector.release().is_none())
    {
        if let Err(e) = detector.load_weights_bytes(&w, steps) {
            warn!(error = %e, "The snapshot's weights do not fit; starting from the model's own.");
        }
    }
    if !snapshot.is_empty() {
        info!(
            series = snapshot.len(),
            "Detector snapshot read; series resume where they left off."
        );
    }
    let mut entity_models = crate::entity::EntityModels::new(config.entity_model.clone());
    entity_models.install(site, entities.as_ref());
    Ok((models, detector, entity_models, snapshot))
}
