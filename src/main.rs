fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("crd") => {
            print!("{}", signal_gateway::api::crd_yaml());
            Ok(())
        }
        _ => anyhow::bail!("usage: signal-gateway [serve|crd]"),
    }
}
