//! A plugin whose loader fails (its `init` returns an error).

fn init() -> Result<(), String> {
    Err("the database it needs is not configured".into())
}

fn run() {}

li3g_plugin_api::plugin! {
    init: init,
    tasks: {
        "LoaderError::run" => run,
    }
}
