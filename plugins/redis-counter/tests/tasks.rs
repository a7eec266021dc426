//! The stateful example's own tests, with the test kit: settings as in the configuration, the
//! state built by the plugin's constructor and kept across calls as a worker keeps it, against
//! a real redis-server.

use li3g_plugin_api::testing::Harness;
use li3g_plugin_api::TaskErrorKind;
use serde_json::json;

#[test]
fn incr_counts_on_one_connection_kept_across_calls() {
    let redis = li3g_tests::Redis::start();
    let mut counter =
        Harness::new(redis_counter::LI3G_PLUGIN).settings(&format!("url = \"{}\"", redis.url())).id("job-1");
    assert_eq!(counter.call("Counter::incr", json!(["k"])).json(), json!(1));
    assert_eq!(counter.call("Counter::incr", json!(["k"])).json(), json!(2));
    let first = counter.call("Counter::whoami", json!([])).json();
    let second = counter.call("Counter::whoami", json!([])).json();
    assert_eq!(first["id"], second["id"], "one connection for every call, as in a worker");
    assert_eq!(first["job"], "job-1");
    // A fresh state is a fresh connection.
    counter.reset_state();
    assert_ne!(counter.call("Counter::whoami", json!([])).json()["id"], first["id"]);
}

#[test]
fn bad_settings_fail_the_tasks_that_take_the_state_and_name_the_key() {
    let mut counter = Harness::new(redis_counter::LI3G_PLUGIN).settings("url = 5");
    let call = counter.call("Counter::incr", json!(["k"]));
    assert_eq!(call.failure_kind(), Some(TaskErrorKind::BadArguments));
    let message = call.failure().expect("it failed");
    assert!(message.contains("url: invalid type: integer `5`, expected a string"), "{message}");
    // A task that takes no state still runs.
    assert_eq!(counter.call("Counter::pid", json!([])).json(), json!(std::process::id()));
}
