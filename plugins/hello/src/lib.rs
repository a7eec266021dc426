//! The example plugin, as in li3_gearman's README: `Hello::run` and `Hello::say(name)`,
//! plus `Hello::count`, which shows the job context (progress and partial data).

use li3g_plugin_api::{plugin, Job};

/// `Hello::run`, what a job named just `Hello` runs.
pub fn run() -> &'static str {
    "I am Hello::run"
}

/// `Hello::say(name)`: a greeting.
pub fn say(name: String) -> String {
    format!("Hello {name}")
}

/// `Hello::count(to)`: counts to `to`, reporting progress and sending each number as data.
pub fn count(job: &Job, to: u64) -> u64 {
    for i in 1..=to {
        job.send_data(format!("{i}\n"));
        job.progress(i, to);
    }
    to
}

plugin! {
    tasks: {
        "Hello::run" => run,
        "Hello::say"(name) => say,
        "Hello::count"(to) => count,
    }
}
