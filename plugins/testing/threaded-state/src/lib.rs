//! A plugin whose state constructor starts a thread that never ends (as a connection pool or
//! an async runtime would). Without `--atomic` that is allowed; a forking worker must refuse
//! this plugin, naming it, and keep serving the others.

/// No settings.
#[derive(serde::Deserialize)]
pub struct Settings {}

/// The state: nothing but the thread it left behind.
pub struct Pool;

fn connect(_: Settings) -> Result<Pool, String> {
    std::thread::spawn(|| loop {
        std::thread::park();
    });
    Ok(Pool)
}

fn run(_: &Pool) -> &'static str {
    "ThreadedState::run"
}

li3g_plugin_api::plugin! {
    name: "threaded_state",
    state: connect,
    tasks: {
        "ThreadedState::run" => run,
    }
}
