//! The example plugin's own tests, with the test kit: its tasks called as the host calls them,
//! no job server, no host process.

use li3g_plugin_api::testing::Harness;
use li3g_plugin_api::TaskErrorKind;
use serde_json::json;

#[test]
fn say_greets_and_a_bare_class_runs_its_run_task() {
    let mut hello = Harness::new(hello::LI3G_PLUGIN);
    assert_eq!(hello.name(), "li3g-plugin-hello");
    assert_eq!(hello.call("Hello::say", json!(["Mariano"])).text(), "Hello Mariano");
    // Job names resolve as in li3_gearman: `Hello` is `Hello::run`, a namespace is dropped.
    assert_eq!(hello.call("Hello", json!([])).text(), "I am Hello::run");
    assert_eq!(hello.call("\\app\\tasks\\Hello::say", json!("PHP")).text(), "Hello PHP");
}

#[test]
fn count_reports_progress_and_data() {
    let call = Harness::new(hello::LI3G_PLUGIN).call("Hello::count", json!([3]));
    assert_eq!(call.json(), json!(3));
    assert_eq!(call.progress, [(1, 3), (2, 3), (3, 3)]);
    assert_eq!(call.data_text(), "1\n2\n3\n");
}

#[test]
fn bad_arguments_fail_with_the_hosts_message() {
    let call = Harness::new(hello::LI3G_PLUGIN).call("Hello::count", json!(["three"]));
    assert_eq!(call.failure_kind(), Some(TaskErrorKind::BadArguments));
    assert_eq!(
        call.failure(),
        Some("Hello::count: argument 1 (to: u64): invalid type: string \"three\", expected u64")
    );
}
