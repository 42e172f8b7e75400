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
        .and_then(|s| Ok((runbuilds::own_settings(&matches, s.knobs.wake.value)?, s)))
        .and_then(|(own, s)| Ok((own, daemon::Daemon::start(s, 2)?)));
    let (own, d) = match started {
        Ok(x) => x,
        Err(e) => return daemon::cannot_start("runbuilds", &e),
    };
    daemon::exit_code("runbuilds", runbuilds::run(d, own).await)
}
