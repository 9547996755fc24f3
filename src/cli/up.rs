//! `vigil up`: the whole stack with a live console, faults injected in
//! turn, and on exit what became of each.

use super::UpArgs;
use crate::stack::{run_injector, BrokerChoice, Stack, StackOptions};
use anyhow::Context;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs until Ctrl-C or `--duration`, then stops everything and reports.
pub(super) async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let log = args.data_dir.join("vigil-up.log");
    vigil_core::telemetry::init_tracing_to_file("info,rumqttd=warn", &log)?;
    let exe = std::env::current_exe().context("finding the vigil executable")?;
    let mut opts = StackOptions::demo(
        args.data_dir.clone(),
        vec![exe.display().to_string(), "demo-service".into()],
    );
    opts.broker = match args.broker {
        Some(addr) => BrokerChoice::External(addr),
        None => BrokerChoice::Embedded(args.mqtt_port),
    };
    (opts.agent_port, opts.edge_port, opts.cloud_port) =
        (args.agent_port, args.edge_port, args.cloud_port);
    let shutdown = vigil_core::shutdown::on_signal();
    let stack = Arc::new(Stack::start(opts).await?);
    let injector = tokio::spawn(run_injector(
        stack.clone(),
        Duration::from_secs(args.fault_interval_secs.max(5)),
        Duration::from_secs(args.warmup_secs),
    ));

    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(if tty { 1 } else { 10 }));
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs(d));
    let log_name = log.display().to_string();
    println!("Vigil is starting; logs go to {log_name}.");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = tick.tick() => {
                let text = crate::console::render(&stack, started.elapsed(), &log_name);
                if tty { print!("\x1b[H\x1b[2J{text}") } else { println!("{text}") }
            }
        }
    }
    println!("\nStopping…");
    injector.abort();
    // An aborted task drops its Arc only once it has really stopped.
    let _ = injector.await;
    stop_and_report(stack, started, args.summary.as_deref()).await
}

/// Stops the stack, writes the summary file when asked, and prints what
/// became of each fault.
async fn stop_and_report(
    stack: Arc<Stack>,
    started: Instant,
    summary: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let report = stack.tracker.lock().map(|t| t.report()).unwrap_or_default();
    let errors = stack.errors();
    let stack =
        Arc::try_unwrap(stack).map_err(|_| anyhow::anyhow!("stack still in use at shutdown"))?;
    let workload = stack.workload.snapshot();
    let broker = stack.broker;
    let clean = stack.stop(Duration::from_secs(4)).await;
    if let Some(path) = summary {
        let summary = serde_json::json!({
            "duration_secs": started.elapsed().as_secs_f64(),
            "broker": broker.to_string(),
            "faults": report,
            "workload": workload,
            "errors": errors,
            "clean_shutdown": clean,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("Summary written to {}.", path.display());
    }
    for f in &report {
        match (f.heal_secs, &f.why_not) {
            (Some(h), _) => println!(
                "  {:<14} healed in {h:.1} s ({})",
                f.kind.as_str(),
                f.action.clone().unwrap_or_default()
            ),
            (None, Some(w)) => println!("  {:<14} not healed: {w}", f.kind.as_str()),
            _ => {}
        }
    }
    if !clean {
        eprintln!("Some parts did not stop within 4 s.");
    }
    Ok(())
}
