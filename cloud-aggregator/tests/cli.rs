//! The `vigil-cloud` binary as a service manager runs it: the config shipped
//! in its Debian package (`dist/etc/cloud.yaml`) is read and printed in
//! full, and a config with a misspelt key is refused naming its line and
//! column. (It also makes `cargo test` build the binary the package test
//! packages.)

use std::process::Command;

fn cloud(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new(env!("CARGO_BIN_EXE_vigil-cloud"))
        .args(args)
        .output()
}

#[test]
fn the_shipped_config_is_read_and_a_misspelt_key_is_located() -> std::io::Result<()> {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/etc/cloud.yaml");
    let out = cloud(&["--config", shipped, "--print-config"])?;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("data_dir: /var/lib/vigil-cloud"),
        "{printed}"
    );
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen: 127.0.0.1:0\nlisten_adress: x\n")?;
    let out = cloud(&["--config", bad.to_str().unwrap_or(""), "--print-config"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("listen_adress") && said.contains("bad.yaml:2:1"),
        "{said}"
    );
    Ok(())
}
