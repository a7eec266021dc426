//! A plugin whose state constructor misbehaves as its settings say (`mode = "hang" | "panic" |
//! "abort" | "fail" | "ok"`), so that the host's tests see what `start`, `work` and `plugins`
//! do about it.

/// `mode`: what the constructor does.
#[derive(serde::Deserialize)]
pub struct Settings {
    mode: String,
}

/// The state: nothing.
pub struct State;

fn connect(settings: Settings) -> Result<State, String> {
    match settings.mode.as_str() {
        "hang" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        "panic" => panic!("the constructor panics on purpose"),
        "abort" => std::process::abort(),
        "fail" => Err("the constructor fails on purpose".into()),
        _ => Ok(State),
    }
}

fn run(_: &State) -> &'static str {
    "StateMisbehave::run"
}

li3g_plugin_api::plugin! {
    name: "state_misbehave",
    state: connect,
    tasks: {
        "StateMisbehave::run" => run,
    }
}
