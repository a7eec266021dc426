//! A plugin built against a deliberately incompatible plugin API: with the feature `layout`
//! its types' layout differs from the host's; with `version` it claims an older API version.
//! Without either feature it is an ordinary plugin.

fn run() -> &'static str {
    "Mismatch::run"
}

li3g_plugin_api::plugin! {
    name: "abi-mismatch",
    tasks: {
        "Mismatch::run" => run,
    }
}
