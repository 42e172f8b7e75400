use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    // A CLI piped into `head` ends quietly when the pipe closes, as Unix tools
    // do, instead of panicking on the failed write.
    // SAFETY: restoring SIGPIPE's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = locklab::Cli::command().get_matches();
    let cli = match locklab::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let _ = env_logger_init();
    match locklab::run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("locklab: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn env_logger_init() -> Result<(), ()> {
    daemon::init_logging();
    Ok(())
}
