use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

#[actix_web::main]
async fn main() -> ExitCode {
    let matches = webui::Config::command().get_matches();
    if let Err(e) = webui::Config::from_arg_matches(&matches) {
        e.exit();
    }
    daemon::init_logging();
    let started = daemon::settings_from(&matches, &[], webui::DEFAULTS)
        .and_then(|s| daemon::Daemon::start(s, webui::POOL_SIZE));
    let d = match started {
        Ok(d) => d,
        Err(e) => return daemon::cannot_start("webui", &e),
    };
    daemon::exit_code("webui", webui::run(d).await)
}
