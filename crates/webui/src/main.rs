use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

#[actix_web::main]
async fn main() -> ExitCode {
    let matches = webui::Config::command().get_matches();
    let config = match webui::Config::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Some(file) = &config.who_snapshot {
        return webui::dashboard::who_child(file);
    }
    daemon::init_logging();
    let started = daemon::settings_from(&matches, webui::own::OWN_IDS, webui::DEFAULTS)
        .and_then(|s| Ok((webui::own::own_settings(&matches)?, s)))
        .and_then(|(own, s)| Ok((own, daemon::Daemon::start(s, webui::POOL_SIZE)?)));
    let (own, d) = match started {
        Ok(x) => x,
        Err(e) => return daemon::cannot_start("webui", &e),
    };
    daemon::exit_code("webui", webui::run(d, own).await)
}
