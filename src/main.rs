use clap::Parser as _;
use ssm_resync::config::{Cli, Command, LogFormat, SnsCommand};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Serve(a) => a.log_format,
        _ => LogFormat::Text,
    };
    init_tracing(log_format);
    let result = match cli.command {
        Command::Serve(args) => ssm_resync::app::serve(*args).await,
        Command::Sample(args) => ssm_resync::app::sample(args),
        Command::DevCert(args) => ssm_resync::app::write_dev_cert(args),
        Command::Sns(SnsCommand::Verify(args)) => return ssm_resync::app::verify_file(args).await,
        Command::Explain(args) => ssm_resync::app::explain(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,aws=warn,hyper=warn")
    });
    // Colours only on a terminal: a log file, `kubectl logs` or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
