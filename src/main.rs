use std::process::ExitCode;

use signal_gateway::{config::Config, serve, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("crd") => {
            print!("{}", signal_gateway::api::crd_yaml());
            ExitCode::SUCCESS
        }
        None | Some("serve") => {
            let config = match Config::from_env() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("signal-gateway: {e}");
                    return ExitCode::from(2);
                }
            };
            telemetry::init(config.log_format);
            let meters = match telemetry::init_metrics() {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "signal-gateway failed");
                    return ExitCode::FAILURE;
                }
            };
            let code = match serve::run(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "signal-gateway failed");
                    ExitCode::FAILURE
                }
            };
            if let Some(provider) = meters {
                // Exports what was recorded since the last period.
                let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
                if !matches!(flushed, Ok(Ok(()))) {
                    tracing::warn!("flushing metrics at exit failed");
                }
            }
            code
        }
        Some(other) => {
            eprintln!(
                "signal-gateway: unknown command '{other}'; usage: signal-gateway [serve|crd]"
            );
            ExitCode::from(2)
        }
    }
}
