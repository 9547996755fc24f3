//! The demo service as a binary of the test package, so end-to-end tests
//! can start it through the agent: `vigil-demo-service --port N`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = match args.as_slice() {
        [_, flag, port] if flag == "--port" => port.parse::<u16>()?,
        _ => anyhow::bail!("usage: vigil-demo-service --port N"),
    };
    vigil::demo::service::run(port).await
}
