//! Role configuration files: parse, then validate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = serde_yaml_ng::from_str::<vigil_edge::EdgeConfig>(text) {
        let _ = c.validate();
    }
    if let Ok(c) = serde_yaml_ng::from_str::<vigil_agent::config::AgentConfig>(text) {
        let _ = c.validate();
    }
});
