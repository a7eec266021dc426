//! Triggers a background and a synchronous job: `cargo run -p li3g-client --example trigger
//! [HOST:PORT]` against a job server with li3g's workers (`li3g-host start`).

use li3g_client::{Client, ServerAddr};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut client = match std::env::args().nth(1) {
        Some(server) => Client::new(vec![server.parse::<ServerAddr>()?]),
        None => Client::from_config("default")?,
    };
    // In the background: the job id and where it is queued.
    let queued = client.submit("Hello::say", ("from the background",))?;
    println!("queued job {} as {}", queued.id, queued.handle);
    // Synchronously: the task's result, at most 30 s.
    let greeting: String = client.job("Hello::say", ("Mariano",)).timeout(Duration::from_secs(30)).call()?;
    println!("{greeting}");
    Ok(())
}
