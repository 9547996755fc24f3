//! The real `vigil` binary: `up --duration` writes its summary and exits 0;
//! SIGINT stops the whole stack, demo service included, within 5 s; `eval nab`
//! and `eval smd` run on tiny corpora and print their figures.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FREE_PORTS: [&str; 8] = [
    "--mqtt-port",
    "0",
    "--agent-port",
    "0",
    "--edge-port",
    "0",
    "--cloud-port",
    "0",
];

fn vigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
}

/// Runs the command, asserts it succeeded (showing its stderr if not) and returns its stdout.
fn stdout_of_success(cmd: &mut Command) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// The demo service's PID, from the agent's log line.
fn service_pid(log: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .find(|l| l.contains("Started supervised service."))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
}

#[test]
fn up_with_duration_writes_a_summary_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let status = vigil()
        .arg("up")
        .args(FREE_PORTS)
        .args([
            "--duration",
            "12",
            "--fault-interval-secs",
            "5",
            "--warmup-secs",
            "0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--summary")
        .arg(&summary)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let faults = s["faults"].as_array().unwrap();
    assert!(faults.len() >= 2, "{s:#}");
    assert_eq!(faults[0]["kind"], "latency");
    assert_eq!(faults[1]["kind"], "hang");
    for f in faults {
        assert!(f["injected_at_ms"].as_i64().unwrap() > 0);
        // Healed, or a reason why not: never silent.
        assert!(
            f["healed_at_ms"].is_i64() || f["why_not"].is_string(),
            "{f:#}"
        );
    }
    assert_eq!(s["clean_shutdown"], true);
    assert!(s["workload"]["requests"].as_u64().unwrap() > 0);
}

#[test]
fn ctrl_c_stops_everything_within_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = vigil()
        .arg("up")
        .args(FREE_PORTS)
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = data.join("vigil-up.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = service_pid(&log) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the demo service never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(alive(pid));
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("vigil up did not stop within 5 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!alive(pid), "demo service {pid} left behind");
}

#[test]
fn eval_nab_writes_results_and_prints_three_scores() {
    // A tiny corpus in NAB's layout: one file with a level jump inside its window.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data/cat");
    std::fs::create_dir_all(&data).unwrap();
    let mut csv = String::from("timestamp,value\n");
    for i in 0..400 {
        let v = if (300..320).contains(&i) {
            90.0
        } else {
            10.0 + (i % 5) as f64
        };
        csv.push_str(&format!("2020-01-01 {:02}:{:02}:00,{v}\n", i / 60, i % 60));
    }
    std::fs::write(data.join("f.csv"), csv).unwrap();
    std::fs::create_dir_all(dir.path().join("labels")).unwrap();
    let labels = dir.path().join("labels/combined_windows.json");
    std::fs::write(
        &labels,
        r#"{"cat/f.csv": [["2020-01-01 04:55:00.000000", "2020-01-01 05:15:00.000000"]]}"#,
    )
    .unwrap();
    // Where a NAB checkout keeps its profiles: found without --profiles.
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/profiles.json"),
        r#"{"standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}}}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let eval_nab = |ablate: &str| {
        let mut cmd = vigil();
        cmd.args(["eval", "nab", "--data"])
            .arg(dir.path().join("data"))
            .arg("--labels")
            .arg(&labels)
            .arg("--out")
            .arg(&out)
            .args(["--ablate", ablate]);
        cmd
    };
    let stdout = stdout_of_success(&mut eval_nab("all"));
    assert!(stdout.contains("standard"), "{stdout}");
    // The operator's figures beside NAB's: the jump is one incident, caught
    // at the shipped threshold, with nothing else alarming.
    assert!(stdout.contains("at the shipped threshold"), "{stdout}");
    let events: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("vigil/vigil_events.json")).unwrap())
            .unwrap();
    let shipped = &events["shipped"];
    assert_eq!(shipped["incidents"], 1, "{events}");
    assert_eq!(shipped["caught"], 1, "{events}");
    assert_eq!(shipped["false_alarms"], 0, "{events}");
    assert_eq!(
        shipped["level"],
        vigil_models::DetectorConfig::default().threshold as f64
    );
    // Every ablation is measured in the same run, each with its own results.
    let table = stdout.rsplit("vs full").next().unwrap_or_default();
    for a in vigil_models::Ablation::ALL {
        assert!(table.contains(a.name()), "{a} missing from {stdout}");
        if a != vigil_models::Ablation::Full {
            assert!(out
                .join(format!("vigil-{a}/vigil-{a}_scores.json"))
                .is_file());
        }
    }
    // An unknown ablation is refused with the choices named.
    let bad = eval_nab("no-lstm").output().unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("persistence"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let result = std::fs::read_to_string(out.join("vigil/cat/vigil_f.csv")).unwrap();
    assert!(result.starts_with("timestamp,value,anomaly_score,label\n"));
    assert_eq!(result.lines().count(), 401);
    let scores: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("vigil/vigil_scores.json")).unwrap())
            .unwrap();
    // The jump sits inside the window and the file is otherwise quiet: a positive score.
    assert!(
        scores["standard"]["normalised"].as_f64().unwrap() > 0.0,
        "{scores}"
    );
}

#[test]
fn eval_smd_reads_parquet_and_reports_events_and_root_cause() {
    use polars::prelude::{df, ParquetWriter};
    // One machine, two metrics; in the test file metric 1 leaves its range for
    // 10 minutes, labelled (as Int8, like the real files).
    let dir = tempfile::tempdir().unwrap();
    let wave = |t: usize, k: usize| ((t * (k + 2)) % 7) as f32 / 10.0;
    let write = |name: &str, rows: std::ops::Range<usize>, labelled: bool| {
        let m0: Vec<f32> = rows.clone().map(|t| wave(t, 0)).collect();
        let mut m1: Vec<f32> = rows.clone().map(|t| wave(t, 1)).collect();
        let mut label = vec![0i8; m0.len()];
        if labelled {
            for t in 200..210 {
                m1[t] = 0.95;
                label[t] = 1;
            }
        }
        let mut frame = if labelled {
            df!("m0" => m0, "m1" => m1, "label" => label)
        } else {
            df!("m0" => m0, "m1" => m1)
        }
        .unwrap();
        let file = std::fs::File::create(dir.path().join(name)).unwrap();
        ParquetWriter::new(file).finish(&mut frame).unwrap();
    };
    write("machine-9-9_train.parquet", 0..600, false);
    write("machine-9-9_test.parquet", 600..1000, true);
    let json = dir.path().join("smd.json");
    let stdout = stdout_of_success(
        vigil()
            .args(["eval", "smd", "--model", "series", "--data"])
            .arg(dir.path())
            .arg("--json")
            .arg(&json),
    );
    assert!(
        stdout.contains("machine-9-9") && stdout.contains("overall"),
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let c = &v[0]["counts"];
    assert_eq!(c["events"], 1, "{v}");
    assert_eq!(c["events_found"], 1, "{v}");
    assert_eq!(c["root_cause_hits"], 1, "{v}");
}

#[test]
fn eval_smd_entity_model_finds_the_event_and_ranks_its_metric() {
    use polars::prelude::{df, ParquetWriter};
    // One machine, four noisy metrics; in the test file metric 2 leaves its
    // range for 10 minutes, labelled, with its root cause published.
    let dir = tempfile::tempdir().unwrap();
    let noise = |t: usize, k: usize| ((t * 7919 + k * 104_729) % 1000) as f32 / 1000.0;
    let write = |name: &str, rows: std::ops::Range<usize>, labelled: bool| {
        let col = |k: usize| -> Vec<f32> {
            rows.clone()
                .enumerate()
                .map(|(i, t)| {
                    let v = 0.3 + 0.1 * noise(t, k);
                    if labelled && k == 2 && (200..210).contains(&i) {
                        0.95
                    } else {
                        v
                    }
                })
                .collect()
        };
        let label: Vec<i8> = (0..rows.len())
            .map(|i| i8::from(labelled && (200..210).contains(&i)))
            .collect();
        let mut frame = if labelled {
            df!("m0" => col(0), "m1" => col(1), "m2" => col(2), "m3" => col(3), "label" => label)
        } else {
            df!("m0" => col(0), "m1" => col(1), "m2" => col(2), "m3" => col(3))
        }
        .unwrap();
        let file = std::fs::File::create(dir.path().join(name)).unwrap();
        ParquetWriter::new(file).finish(&mut frame).unwrap();
    };
    write("machine-9-9_train.parquet", 0..2000, false);
    write("machine-9-9_test.parquet", 2000..2400, true);
    let labels = dir.path().join("interpretation_label");
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::write(labels.join("machine-9-9.txt"), "200-210:3\n").unwrap();
    let json = dir.path().join("smd.json");
    let stdout = stdout_of_success(
        vigil()
            .args(["eval", "smd", "--model", "entity", "--data"])
            .arg(dir.path())
            .arg("--json")
            .arg(&json),
    );
    assert!(stdout.contains("Hit@150"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let c = &v[0]["counts"];
    assert_eq!(c["events_found"], 1, "{v}");
    assert_eq!(c["root_cause_hits"], 1, "{v}");
    assert_eq!(c["interpreted"], 1, "{v}");
    assert_eq!(c["hit100"], 1.0, "the published metric ranked first: {v}");
    // A risk that is not a probability is refused, and says so.
    let out = vigil()
        .args(["eval", "smd", "--model", "entity", "--risk", "0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--risk 0 is outside (0, 1)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn up_with_an_unreachable_broker_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let out = vigil()
        .arg("up")
        .args(FREE_PORTS)
        .args(["--broker", &dead.to_string(), "--duration", "30"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exited 0 with no broker: {stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the MQTT broker at {dead}")),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Seven minutes of the demo with a fault every 20 s: every fault is
/// healed, and a crash or a hang is acted on within 3 s of its injection
/// (the liveness rule; the summary's injection and action times).
#[test]
fn every_fault_of_a_seven_minute_demo_is_healed_and_crashes_and_hangs_within_3_s() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let status = vigil()
        .arg("up")
        .args(FREE_PORTS)
        .args([
            "--duration",
            "420",
            "--fault-interval-secs",
            "20",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--summary")
        .arg(&summary)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let faults = s["faults"].as_array().unwrap();
    assert!(faults.len() >= 15, "{} faults", faults.len());
    // The last fault may be cut short by the end of the run.
    let ended = s["duration_secs"].as_f64().unwrap();
    let first = faults[0]["injected_at_ms"].as_i64().unwrap();
    let start_ms = first - 60_000;
    for f in faults {
        let injected = f["injected_at_ms"].as_i64().unwrap();
        if (injected - start_ms) as f64 / 1000.0 > ended - 25.0 {
            continue;
        }
        assert!(
            f["healed_at_ms"].is_i64(),
            "not healed: {f:#}\n{s:#}\nthe log on its target:\n{}",
            log_on(
                &dir.path().join("data"),
                f["target"].as_str().unwrap_or("?")
            )
        );
        if matches!(f["kind"].as_str(), Some("crash" | "hang")) {
            let acted = f["action_at_ms"].as_i64().unwrap() - injected;
            assert!(acted <= 3000, "acted on {acted} ms after injection: {f:#}");
        }
    }
    assert_eq!(s["clean_shutdown"], true);
}

/// The lines of `vigil up`'s log (in its data folder) that name `target`,
/// the first 120 (faults early in a run, on series still learning, are the
/// likelier misses): what the edge made of a fault that was not healed.
fn log_on(data: &std::path::Path, target: &str) -> String {
    let log = std::fs::read_to_string(data.join("vigil-up.log")).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(target))
        .take(120)
        .collect();
    lines.join("\n")
}
