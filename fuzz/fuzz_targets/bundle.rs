//! Model bundles as they arrive from the network: the tar container, the
//! manifest, the signature and the weights.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_models::bundle::Bundle;
use vigil_models::signing::Keyring;

fuzz_target!(|data: &[u8]| {
    let Ok(b) = Bundle::from_bytes(data) else {
        return;
    };
    let _ = b.check_files();
    let _ = b.verify(&Keyring::new(Vec::new()));
    // Building the model reads the weights; bound the work a manifest can ask for.
    let cfg = &b.manifest().detector;
    if cfg.hidden <= 64 && cfg.train_window <= 512 && cfg.train_batch <= 512 {
        let _ = b.detector();
    }
});
