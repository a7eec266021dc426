//! A plugin whose loader panics (its `init` panics).

fn init() -> Result<(), String> {
    panic!("loader-panic: init panics on purpose")
}

fn run() {}

li3g_plugin_api::plugin! {
    init: init,
    tasks: {
        "LoaderPanic::run" => run,
    }
}
