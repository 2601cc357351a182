//! Main is the command line: `serve` (the default: HTTP server, or Lambda when
//! `AWS_LAMBDA_RUNTIME_API` is set) and `crd` (print the CRD).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signal_gateway::{app, config::Config, telemetry};

/// Turns alert signals into exactly one active RemediationRequest per problem.
///
/// Configuration comes from the environment (GATEWAY_*, POD_*, KUBECONFIG, OTEL_*); every
/// variable is in docs/operations.md, "Configuration".
#[derive(Parser)]
#[command(name = "signal-gateway", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server, or the Lambda handler when AWS_LAMBDA_RUNTIME_API is set (default).
    Serve,
    /// Print the RemediationRequest CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Crd => {
            print!("{}", signal_gateway::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Serve => serve(),
    }
}

#[tokio::main]
async fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("signal-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match telemetry::init(config.log_format, config.metrics_addr.is_some()) {
        Ok(t) => t,
        Err(e) => {
            // An unusable OTEL_* variable is a configuration error like any other.
            eprintln!("signal-gateway: {e:#}");
            return ExitCode::from(2);
        }
    };
    let code = match app::run(config, telemetry.clone()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "signal-gateway failed");
            ExitCode::FAILURE
        }
    };
    // Exports what was recorded since the last period.
    telemetry.shutdown().await;
    code
}
