//! A plugin that defines `Hello::say`, which the hello plugin defines too.

fn say(name: String) -> String {
    format!("Hi {name}")
}

fn other() -> &'static str {
    "Duplicate::other"
}

li3g_plugin_api::plugin! {
    name: "duplicate",
    tasks: {
        "Duplicate::other" => other,
        "Hello::say" => say,
    }
}
