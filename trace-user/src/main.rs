use std::process::ExitCode;

use clap::Parser as _;
use trace_user::{
    check,
    cli::{Cli, Command},
    error::SetupError,
    export, fill, replay, stop, top, trace, udp,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_target(false)
        .init();

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockbuf: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        if cli.command.ends_on_signals() {
            stop::watch();
        }
        match cli.command {
            Command::Trace(args) => trace::run(args, cli.verbose).await.map(|()| true),
            Command::Top(args) => top::run(args, cli.verbose).await.map(|()| true),
            Command::Export(args) => export::run(args, cli.verbose).await.map(|()| true),
            Command::Fill(args) => fill::run(args, cli.verbose).await,
            Command::Udp(args) => udp::run(args, cli.verbose).await,
            Command::Check { json } => check::run(json),
            Command::Replay(args) => replay::run(args),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // A check failed; the report says which.
        Ok(false) => ExitCode::FAILURE,
        // A closed pipe (`sockbuf trace | head`) is how a reader says it has enough.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line, never a backtrace: the chain of contexts joined by ": ".
            eprintln!("sockbuf: error: {e:#}");
            if e.chain().any(|c| c.downcast_ref::<SetupError>().is_some()) {
                ExitCode::from(SetupError::EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
