use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

#[actix_web::main]
async fn main() -> ExitCode {
    let matches = runbuilds::Config::command().get_matches();
    if let Err(e) = runbuilds::Config::from_arg_matches(&matches) {
        e.exit();
    }
    daemon::init_logging();
    let started = daemon::settings_from(&matches, runbuilds::OWN_IDS, runbuilds::DEFAULTS)
        .and_then(|s| Ok((runbuilds::poll_interval(&matches)?, s)))
        .and_then(|(poll, s)| Ok((poll, daemon::Daemon::start(s, 2)?)));
    let (poll, d) = match started {
        Ok(x) => x,
        Err(e) => {
            eprintln!("runbuilds: cannot start: {e:#}");
            return ExitCode::from(2);
        }
    };
    match runbuilds::run(d, poll).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runbuilds: {e:#}");
            ExitCode::FAILURE
        }
    }
}
