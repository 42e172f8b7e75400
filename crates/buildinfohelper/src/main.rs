use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

#[actix_web::main]
async fn main() -> ExitCode {
    let matches = buildinfohelper::Config::command().get_matches();
    if let Err(e) = buildinfohelper::Config::from_arg_matches(&matches) {
        e.exit();
    }
    daemon::init_logging();
    let started = daemon::settings_from(
        &matches,
        buildinfohelper::OWN_IDS,
        buildinfohelper::DEFAULTS,
    )
    .and_then(|s| Ok((buildinfohelper::Own::resolve(&matches)?, s)))
    .and_then(|(own, s)| Ok((own, daemon::Daemon::start(s, 2)?)));
    let (own, d) = match started {
        Ok(x) => x,
        Err(e) => return daemon::cannot_start("buildinfohelper", &e),
    };
    daemon::exit_code("buildinfohelper", buildinfohelper::run(d, own).await)
}
