//! The `li3g-host` binary's first commands, as a user runs them: `exec` and `plugins`.

use li3g_tests::{host, run, PluginDir};

#[test]
fn exec_hello_say_prints_the_greeting() {
    let dir = PluginDir::with(&["hello"]);
    let out = run(host().args(["exec", "Hello::say", "Mariano", "--plugins"]).arg(dir.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "Hello Mariano\n");
}

#[test]
fn exec_reads_json_arguments_and_bare_words() {
    let dir = PluginDir::with(&["misbehave"]);
    let out = run(host().args(["exec", "Misbehave::add", "40", "2"]).env("LI3G_PLUGINS", dir.path()));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "42\n"), "{}", out.stderr);
    let out = run(host().args(["exec", "Misbehave::add", "-40", "2"]).env("LI3G_PLUGINS", dir.path()));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "-38\n"), "{}", out.stderr);
    let out = run(host().args(["exec", "Misbehave::echo", r#"{"a":[1,true]}"#]).env("LI3G_PLUGINS", dir.path()));
    assert_eq!(out.stdout, "{\"a\":[1,true]}\n", "{}", out.stderr);
}

#[test]
fn exec_prints_progress_to_stderr_and_data_to_stdout() {
    let dir = PluginDir::with(&["hello"]);
    let out = run(host().args(["exec", "Hello::count", "2"]).env("LI3G_PLUGINS", dir.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "1\n2\n2\n");
    assert_eq!(out.stderr, "progress: 1/2\nprogress: 2/2\n");
}

#[test]
fn exec_of_a_panicking_task_reports_it_and_exits_1() {
    let dir = PluginDir::with(&["misbehave"]);
    let out = run(host().args(["exec", "Misbehave::panic", "boom"]).env("LI3G_PLUGINS", dir.path()));
    assert_eq!(out.code, Some(1), "the process must exit normally with 1, not die: {}", out.stderr);
    assert!(out.stderr.contains("task Misbehave::panic panicked at"), "{}", out.stderr);
    assert!(out.stderr.contains(": boom"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
}

#[test]
fn exec_of_bad_arguments_or_unknown_task_exits_1_with_the_reason() {
    let dir = PluginDir::with(&["hello"]);
    let out = run(host().args(["exec", "Hello::say", "5"]).env("LI3G_PLUGINS", dir.path()));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("Hello::say: argument 1 (name: String): invalid type: integer `5`"), "{}", out.stderr);
    let out = run(host().args(["exec", "Hello::nope"]).env("LI3G_PLUGINS", dir.path()));
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("unknown task Hello::nope (known tasks: Hello::count, Hello::run, Hello::say)"),
        "{}",
        out.stderr
    );
}

#[test]
fn plugins_lists_tasks_with_signatures_and_rejected_files_with_reasons() {
    let dir = PluginDir::with(&["hello", "not_a_plugin"]);
    dir.add("abi_layout", "libold.so");
    let out = run(host().arg("plugins").arg("--plugins").arg(dir.path()));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let text = out.stdout;
    let header = format!("{}: 1 plugin loaded, 0 plugins refused, 2 files rejected\n", dir.path().display());
    assert!(text.starts_with(&header), "{text}");
    assert!(text.contains("li3g-plugin-hello 0.1.0 (libhello.so)\n"), "{text}");
    assert!(text.contains("    Hello::run() -> &str\n"), "{text}");
    assert!(text.contains("    Hello::say(name: String) -> String\n"), "{text}");
    assert!(text.contains("libold.so: built against an incompatible plugin API"), "{text}");
    assert!(text.contains("libnot_a_plugin.so: not a li3g plugin"), "{text}");
}

#[test]
fn the_default_plugins_directory_is_the_executables() {
    // A cargo build puts libhello.so next to li3g-host, so a build tree works with no flags.
    let out = run(host().args(["exec", "Hello::say", "default"]).env_remove("LI3G_PLUGINS"));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Hello default\n"), "{}", out.stderr);
}

#[test]
fn a_missing_plugins_directory_is_a_clear_error() {
    let dir = PluginDir::empty();
    let missing = dir.path().join("missing");
    let out = run(host().args(["plugins", "--plugins"]).arg(&missing));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains(&format!("plugins directory {}", missing.display())), "{}", out.stderr);
}
