//! `li3g-host new`: the crate it writes builds outside the checkout against the plugin API laid
//! out as the Debian package installs it (the packaged crate's source, `cargo package`'s
//! output, in `<share>/li3g/plugin-api`), passes its own tests, and its tasks load and run in
//! the host (`plugins`, `exec`).
//!
//! Build time: the crate builds in `target/harness/scaffold`, shared from run to run, with the
//! workspace's Cargo.lock, so its dependencies (abi_stable, serde, toml) are built once.

use li3g_tests::{artifacts, host, run, workspace_root, PluginDir};
use std::path::Path;
use std::process::Command;

/// Runs cargo with `args` in `dir`, into `target`; panics with its output when it fails.
fn cargo(dir: &Path, target: &Path, args: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_TERM_COLOR", "never")
        .output()
        .expect("run cargo");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "cargo {} in {} failed:\n{stdout}\n{stderr}", args.join(" "), dir.display());
    format!("{stdout}{stderr}")
}

/// The plugin API as the Debian package installs it: `cargo package`'s normalized crate
/// (workspace settings resolved), unpacked into `<share>/li3g/plugin-api`.
fn installed_api(share: &Path) -> std::path::PathBuf {
    let root = workspace_root();
    let target = root.join("target/harness/package");
    cargo(&root, &target, &["package", "-p", "li3g-plugin-api", "--no-verify", "--allow-dirty", "-q"]);
    let version = li3g_plugin_api::VERSION;
    let crate_file = target.join(format!("package/li3g-plugin-api-{version}.crate"));
    let unpack = share.join("li3g");
    std::fs::create_dir_all(&unpack).expect("create share/li3g");
    let out = run(Command::new("tar").arg("-xzf").arg(&crate_file).arg("-C").arg(&unpack));
    assert_eq!(out.code, Some(0), "tar: {}", out.stderr);
    let api = unpack.join("plugin-api");
    std::fs::rename(unpack.join(format!("li3g-plugin-api-{version}")), &api).expect("rename the unpacked crate");
    api
}

#[test]
fn a_new_plugin_crate_builds_outside_the_checkout_passes_its_tests_and_runs_in_the_host() {
    let host_binary = &artifacts().host;
    let outside = tempfile::tempdir().expect("a directory outside the checkout");
    assert!(!outside.path().starts_with(workspace_root()));
    let api = installed_api(&outside.path().join("share"));
    let dir = outside.path().join("my-tasks");

    let out = run(host().args(["new", "my-tasks", "--dir"]).arg(&dir).arg("--plugin-api").arg(&api));
    assert_eq!(out.code, Some(0), "new: {}", out.stderr);
    assert!(out.stdout.contains("Created plugin crate my-tasks"), "{}", out.stdout);
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains(&format!("path = \"{}\"", api.display())), "{manifest}");
    for file in ["src/lib.rs", "README.md", ".gitignore"] {
        assert!(dir.join(file).is_file(), "{file} written");
    }
    // Again into the same directory: refused, nothing overwritten.
    let again = run(host().args(["new", "my-tasks", "--dir"]).arg(&dir));
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.contains("already exists and is not empty"), "{}", again.stderr);

    // The workspace's lock pins the dependencies to the versions already built.
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");
    let target = workspace_root().join("target/harness/scaffold");
    let tests = cargo(&dir, &target, &["test", "-q"]);
    assert!(tests.contains("test result: ok. 3 passed"), "the crate's own tests ran:\n{tests}");
    cargo(&dir, &target, &["build", "-q"]);

    let plugins = PluginDir::empty();
    let so = plugins.path().join("libmy_tasks.so");
    std::fs::copy(target.join("debug/libmy_tasks.so"), &so).expect("copy the plugin");
    let listed = run(host().arg("plugins").arg("--plugins").arg(plugins.path()));
    assert_eq!(listed.code, Some(0), "plugins: {}", listed.stderr);
    for task in [
        "MyTasks::say(name: String, greeting: Option<String>) -> String",
        "MyTasks::report(rows: u64)",
        "MyTasks::next",
    ] {
        assert!(listed.stdout.contains(task), "{task} listed:\n{}", listed.stdout);
    }

    let exec = |args: &[&str], config: Option<&Path>| {
        let mut command = Command::new(host_binary);
        command.arg("exec").args(args).arg("--plugins").arg(plugins.path()).env_remove("LI3G_PLUGINS");
        match config {
            Some(file) => command.arg("--config").arg(file),
            None => command.env_remove("LI3G_CONFIG"),
        };
        run(command.current_dir(outside.path()))
    };
    let say = exec(&["MyTasks::say", "Mariano"], None);
    assert_eq!((say.code, say.stdout.as_str()), (Some(0), "Hello Mariano\n"), "{}", say.stderr);
    let report = exec(&["MyTasks::report", "2", "--id", "job-9"], None);
    assert_eq!(report.stdout, "row 1\nrow 2\nreport job-9 has 2 rows\n", "{}", report.stderr);
    assert!(report.stderr.contains("progress: 2/2"), "{}", report.stderr);
    let failed = exec(&["MyTasks::report", "0"], None);
    assert_eq!(failed.code, Some(1));
    assert!(failed.stderr.contains("no rows to report"), "{}", failed.stderr);
    // Settings from the configuration reach the state's constructor.
    let config = outside.path().join("li3g.toml");
    std::fs::write(&config, "[default.plugins.my_tasks]\nstart = 41\n").expect("write li3g.toml");
    let next = exec(&["MyTasks::next"], Some(&config));
    assert_eq!((next.code, next.stdout.as_str()), (Some(0), "41\n"), "{}", next.stderr);
}

/// `li3g-host new` run in a li3g checkout (where the README's commands run) or anywhere under
/// another cargo workspace: the crate is a workspace of its own, so cargo takes it. Before, cargo
/// refused it ("current package believes it's in a workspace when it's not").
#[test]
fn a_new_plugin_crate_written_inside_another_cargo_workspace_is_a_workspace_of_its_own() {
    let checkout = tempfile::tempdir().expect("a directory standing for a checkout");
    std::fs::write(checkout.path().join("Cargo.toml"), "[workspace]\nmembers = [\"host\"]\nresolver = \"2\"\n")
        .expect("write the enclosing workspace's Cargo.toml");
    let out = run(host().args(["new", "my-tasks"]).current_dir(checkout.path()));
    assert_eq!(out.code, Some(0), "new: {}", out.stderr);
    // It says where the built plugin goes.
    assert!(
        out.stdout.contains("Then: copy target/release/libmy_tasks.so into the host's plugins directory"),
        "{}",
        out.stdout
    );
    let dir = checkout.path().join("my-tasks");
    // `cargo metadata --no-deps` reads the manifests and the workspace, nothing else (no
    // network, no build): it fails as `cargo build` would when the crate is not taken.
    let metadata =
        cargo(&dir, &checkout.path().join("target"), &["metadata", "--no-deps", "--offline", "--format-version", "1"]);
    let metadata: serde_json::Value =
        serde_json::from_str(metadata.lines().find(|l| l.starts_with('{')).unwrap_or_default())
            .expect("cargo metadata's JSON");
    let root = std::path::PathBuf::from(metadata["workspace_root"].as_str().expect("workspace_root"));
    assert_eq!(root.canonicalize().ok(), dir.canonicalize().ok(), "the crate is its own workspace root: {metadata}");
}
