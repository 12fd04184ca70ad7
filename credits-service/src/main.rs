//! `credits-service`: reads its configuration from the environment, serves until SIGTERM or
//! Ctrl-C, then shuts down gracefully.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use credits_service::{Config, Service, init_tracing, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            // Logging is configured by the configuration being refused: say why plainly.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("credits-service: {e}");
            }
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    let result = async {
        let running = Service::builder(config).build().await?.start().await?;
        running.run_until(shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "credits service failed");
            ExitCode::FAILURE
        }
    }
}
