//! `vigil`: the umbrella command. Its arguments and subcommands are in
//! `vigil::cli`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vigil::cli::run(vigil::cli::Cli::parse()).await
}
