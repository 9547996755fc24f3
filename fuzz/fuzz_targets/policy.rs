//! Remediation policy files and action catalogs: every problem is reported
//! with file and line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = vigil_edge::PolicySet::parse(text, Path::new("fuzz.yaml"));
    let services = vec!["web".to_string()];
    let _ = vigil_agent::catalog::Catalog::parse(text, Path::new("fuzz.yaml"), &services);
});
