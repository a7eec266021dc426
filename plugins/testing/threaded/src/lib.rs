//! A plugin that breaks the ABI contract: its `init` starts a thread that never ends. A worker
//! that loads it is multi-threaded, so `--atomic` must refuse to fork (and say why) rather
//! than risk a child deadlocked on a lock that thread held.

fn init() -> Result<(), String> {
    std::thread::spawn(|| loop {
        std::thread::park();
    });
    Ok(())
}

fn run() -> &'static str {
    "Threaded::run"
}

li3g_plugin_api::plugin! {
    init: init,
    tasks: {
        "Threaded::run" => run,
    }
}
