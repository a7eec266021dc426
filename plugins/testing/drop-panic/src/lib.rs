//! A plugin whose state's destructor panics (an `.unwrap()` in a `Drop`): the panic must be
//! caught in the plugin and reported, never unwind into the host (which would abort it).

/// No settings.
#[derive(serde::Deserialize)]
pub struct Settings {}

/// The state.
pub struct Fragile;

impl Drop for Fragile {
    fn drop(&mut self) {
        panic!("Fragile cannot be dropped");
    }
}

fn connect(_: Settings) -> Result<Fragile, String> {
    Ok(Fragile)
}

fn run(_: &Fragile) -> &'static str {
    "DropPanic::run"
}

li3g_plugin_api::plugin! {
    name: "drop_panic",
    state: connect,
    tasks: {
        "DropPanic::run" => run,
    }
}
