//! Running a task by name from the host's commands (`run`, `ping`): li3g-client's
//! [`Client`], with scheduled jobs kept in this host's Redis schedule
//! (li3g-client's [`RedisStore`], the scheduler's schedule) when the configuration names Redis.

pub use li3g_client::client::*;

use crate::config::Config;
use li3g_client::redis::RedisStore;

/// A client of a configuration's servers, scheduling in its Redis (when it names one).
pub fn for_config(config: &Config) -> Client {
    let client = Client::new(config.servers.clone()).with_environment(config.environment.clone());
    match config.redis.as_deref().map(|url| RedisStore::open(url, &config.scheduler)) {
        None => client,
        Some(Ok(store)) => client.with_store(Box::new(store)),
        Some(Err(err)) => client.without_store(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_sends_jobs_to_the_names_workers_register() {
        for name in ["Hello", "Hello::say", "\\app\\tasks\\Hello", "\\app\\tasks\\Hello::say", "", "::", "a::b::c"] {
            assert_eq!(
                super::canonical_task_name(name),
                li3g_plugin_api::dispatch::canonical_task_name(name),
                "{name:?}"
            );
        }
    }
}
