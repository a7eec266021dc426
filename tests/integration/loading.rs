//! Loading plugins: what loads, what is rejected and why, and that one bad file never stops
//! the others from loading.

use li3g_host::client::{Client, Outcome, RunOptions};
use li3g_host::gearman::conn::ServerAddr;
use li3g_host::plugins::{loader, Registry};
use li3g_tests::{host, run, wait_for_workers, wait_until, ChildGuard, Gearmand, PluginDir};
use serde_json::json;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::Duration;

fn rejection(registry: &Registry, file: &str) -> String {
    registry
        .rejected()
        .iter()
        .find(|r| r.path.file_name().is_some_and(|f| f == file))
        .map(|r| r.to_string())
        .unwrap_or_else(|| panic!("{file} was not rejected; rejected: {:?}", registry.rejected()))
}

#[test]
fn hello_loads_with_its_tasks_and_version() {
    let dir = PluginDir::with(&["hello"]);
    let registry = Registry::scan(dir.path()).unwrap();
    assert!(registry.rejected().is_empty(), "{:?}", registry.rejected());
    let [plugin] = registry.plugins() else { panic!("expected one plugin") };
    assert_eq!(plugin.name, "li3g-plugin-hello");
    assert_eq!(plugin.version, "0.1.0");
    assert_eq!(registry.task_names(), ["Hello::count", "Hello::run", "Hello::say"]);
    let say = registry.task("Hello::say").unwrap();
    assert_eq!(say.params.len(), 1);
    assert_eq!(say.params[0].name.as_str(), "name");
    assert_eq!(say.params[0].ty.as_str(), "String");
    assert_eq!(say.output.as_str(), "String");
}

#[test]
fn incompatible_layout_is_rejected_naming_file_and_mismatch_and_others_still_load() {
    let dir = PluginDir::with(&["hello"]);
    dir.add("abi_layout", "libmismatch.so");
    let registry = Registry::scan(dir.path()).unwrap();
    let reason = rejection(&registry, "libmismatch.so");
    assert!(reason.contains(&dir.path().join("libmismatch.so").display().to_string()), "{reason}");
    assert!(reason.contains("incompatible plugin API"), "{reason}");
    assert!(reason.contains("TaskDecl: incompatible type size"), "{reason}");
    assert!(registry.task("Hello::say").is_some(), "hello must still load");
    assert!(registry.task("Mismatch::run").is_none());
}

#[test]
fn a_root_module_with_fewer_fields_than_the_hosts_is_refused() {
    // Built without the fields 0.3 appended to the prefix type `PluginMod`: abi_stable refuses
    // a plugin whose prefix type is shorter than the host's (appending is no way to keep older
    // plugins loading, hence the minor bump); the others still load.
    let dir = PluginDir::with(&["hello", "abi_old_prefix"]);
    let registry = Registry::scan(dir.path()).unwrap();
    let reason = rejection(&registry, "libabi_old_prefix.so");
    assert!(reason.contains("rebuild it against li3g-plugin-api 0.3.0"), "{reason}");
    assert!(reason.contains("PluginMod: too many fields (expected 6, found 3)"), "{reason}");
    assert_eq!(registry.plugins().len(), 1);
}

#[test]
fn the_same_plugin_built_compatibly_loads() {
    // Proves that the rejection above is about the ABI, not about this plugin's code.
    let dir = PluginDir::with(&["abi_mismatch"]);
    let registry = Registry::scan(dir.path()).unwrap();
    assert!(registry.rejected().is_empty(), "{:?}", registry.rejected());
    assert_eq!(registry.task_names(), ["Mismatch::run"]);
}

#[test]
fn older_interface_version_is_rejected_with_both_versions() {
    let dir = PluginDir::with(&["hello", "abi_version"]);
    let registry = Registry::scan(dir.path()).unwrap();
    let reason = rejection(&registry, "libabi_version.so");
    assert!(reason.contains("li3g-plugin-api 0.2.0"), "{reason}");
    assert!(reason.contains("compatible with 0.3.0"), "{reason}");
    assert_eq!(registry.plugins().len(), 1);
}

#[test]
fn a_library_that_is_not_a_plugin_is_rejected() {
    let dir = PluginDir::with(&["not_a_plugin", "hello"]);
    let registry = Registry::scan(dir.path()).unwrap();
    let reason = rejection(&registry, "libnot_a_plugin.so");
    assert!(reason.contains("not a li3g plugin"), "{reason}");
    assert_eq!(registry.plugins().len(), 1);
}

#[test]
fn a_file_that_is_not_a_library_is_rejected() {
    let dir = PluginDir::with(&["hello"]);
    dir.write("garbage.so", b"this is not an ELF file\n");
    let registry = Registry::scan(dir.path()).unwrap();
    let reason = rejection(&registry, "garbage.so");
    assert!(reason.contains("cannot be opened as a shared library"), "{reason}");
    assert_eq!(registry.plugins().len(), 1);
}

#[test]
fn a_loader_that_panics_is_rejected_with_the_panic() {
    let dir = PluginDir::with(&["loader_panic", "hello"]);
    let registry = Registry::scan(dir.path()).unwrap();
    let reason = rejection(&registry, "libloader_panic.so");
    assert!(reason.contains("init panicked"), "{reason}");
    assert!(reason.contains("init panics on purpose"), "{reason}");
    assert_eq!(registry.plugins().len(), 1);
}

#[test]
fn a_loader_that_fails_is_rejected_with_its_error() {
    let dir = PluginDir::with(&["loader_error", "hello"]);
    let registry = Registry::scan(dir.path()).unwrap();
    let reason = rejection(&registry, "libloader_error.so");
    assert!(reason.contains("the database it needs is not configured"), "{reason}");
    assert_eq!(registry.plugins().len(), 1);
}

#[test]
fn a_duplicate_task_names_both_files() {
    let dir = PluginDir::with(&["hello", "duplicate"]);
    let registry = Registry::scan(dir.path()).unwrap();
    // Files load in name order: libduplicate.so first, so libhello.so is the one refused.
    let reason = rejection(&registry, "libhello.so");
    assert!(reason.contains("task Hello::say is already defined by"), "{reason}");
    assert!(reason.contains(&dir.path().join("libduplicate.so").display().to_string()), "{reason}");
    assert!(reason.contains(&dir.path().join("libhello.so").display().to_string()), "{reason}");
    assert_eq!(registry.task_names(), ["Duplicate::other", "Hello::say"]);
}

#[test]
fn a_group_or_world_writable_plugin_is_refused_with_the_fix() {
    let dir = PluginDir::with(&["misbehave"]);
    let file = dir.add("hello", "libhello.so");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
    let registry = Registry::scan(dir.path()).unwrap();
    let reason = rejection(&registry, "libhello.so");
    assert!(reason.contains("writable by group and others"), "{reason}");
    assert!(reason.contains(&format!("chmod go-w {}", file.display())), "{reason}");
    assert!(registry.task("Hello::say").is_none(), "an insecure plugin must not be loaded");
    assert_eq!(registry.plugins().len(), 1);
}

#[test]
fn a_writable_plugins_directory_is_refused_with_the_fix() {
    let dir = PluginDir::with(&["hello"]);
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let err = Registry::scan(dir.path()).err().expect("an insecure directory must be refused");
    let message = err.to_string();
    assert!(message.contains("writable by group and others"), "{message}");
    assert!(message.contains(&format!("chmod go-w {}", dir.path().display())), "{message}");
}

#[test]
fn a_plugin_owned_by_another_user_is_refused() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot give a file to another user; ownership is covered in CI (root)");
        return;
    }
    let dir = PluginDir::with(&["misbehave"]);
    let file = dir.add("hello", "libhello.so");
    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    let registry = Registry::scan(dir.path()).unwrap();
    let reason = rejection(&registry, "libhello.so");
    assert!(reason.contains("owned by uid 65534"), "{reason}");
    assert_eq!(registry.plugins().len(), 1);
}

#[test]
fn only_so_files_are_considered_and_a_missing_directory_is_an_error() {
    let dir = PluginDir::with(&["hello"]);
    dir.write("README.txt", b"not a plugin");
    dir.write(".hidden.so", b"skipped: hidden");
    let registry = Registry::scan(dir.path()).unwrap();
    assert!(registry.rejected().is_empty(), "{:?}", registry.rejected());
    assert_eq!(registry.plugins().len(), 1);

    let missing = dir.path().join("nope");
    let err = Registry::scan(&missing).err().expect("a missing directory is an error");
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
}

#[test]
fn messages_say_each_reason_once() {
    let dir = PluginDir::with(&["hello"]);
    let missing = dir.path().join("nope");
    let out = run(host().args(["plugins", "--plugins"]).arg(&missing));
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        format!("li3g-host: error: plugins directory {}: No such file or directory (os error 2)\n", missing.display())
    );

    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o770)).unwrap();
    let out = run(host().args(["plugins", "--plugins"]).arg(dir.path()));
    let shown = dir.path().display();
    assert_eq!(
        out.stderr,
        format!("li3g-host: error: plugins directory {shown} refused: writable by group (mode 770); fix it with: chmod go-w {shown}\n")
    );

    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.path().join("libhello.so");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o757)).unwrap();
    let garbage = dir.write("garbage.so", b"not ELF\n");
    let registry = Registry::scan(dir.path()).unwrap();
    assert_eq!(
        rejection(&registry, "libhello.so"),
        format!(
            "{}: refused: writable by others (mode 757); fix it with: chmod go-w {}",
            file.display(),
            file.display()
        )
    );
    assert_eq!(
        rejection(&registry, "garbage.so"),
        format!("{}: cannot be opened as a shared library: file too short", garbage.display())
    );
}

#[test]
fn a_symbolic_link_is_refused_even_to_a_good_plugin() {
    let elsewhere = PluginDir::with(&["hello"]);
    let dir = PluginDir::with(&["misbehave"]);
    let link = dir.path().join("libhello.so");
    std::os::unix::fs::symlink(elsewhere.path().join("libhello.so"), &link).unwrap();
    let registry = Registry::scan(dir.path()).unwrap();
    assert_eq!(
        rejection(&registry, "libhello.so"),
        format!(
            "{}: is a symbolic link; plugins load only from regular files in the plugins directory (copy the file \
             there instead of linking it)",
            link.display()
        )
    );
    assert!(registry.task("Hello::say").is_none());
    assert_eq!(registry.plugins().len(), 1);
}

#[test]
fn the_file_that_was_checked_is_the_file_that_loads() {
    let dir = PluginDir::with(&["hello"]);
    let path = dir.path().join("libhello.so");
    let (file, meta) = loader::open(&path).unwrap();
    li3g_host::plugins::permissions::check(&path, &meta).unwrap();
    // The path now names another file: a world-writable one that is no plugin.
    let swapped = dir.write("swapped.so", b"not what was checked");
    fs::set_permissions(&swapped, fs::Permissions::from_mode(0o666)).unwrap();
    fs::rename(&swapped, &path).unwrap();
    let module = loader::load(&file).unwrap();
    assert_eq!(module.name().as_str(), "li3g-plugin-hello");
}

#[test]
fn a_plugin_overwritten_in_place_does_not_crash_running_workers() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let mut command = host();
    command.args(["work", "--servers", &gearmand.addr()]).arg("--plugins").arg(dir.path());
    let mut worker = ChildGuard::spawn(command.stdout(Stdio::null()).stderr(Stdio::null()));
    wait_for_workers(&[&gearmand], "Misbehave::counter", 1);
    let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]);
    let sync = RunOptions { background: false, timeout: Some(Duration::from_secs(30)), ..RunOptions::default() };
    let mut call = |task: &str, args: &[serde_json::Value]| match client.run(task, args, &sync, &mut |_| {}) {
        Ok(Outcome::Completed { result, .. }) => String::from_utf8(result).unwrap(),
        other => panic!("{task}: {other:?}"),
    };
    assert_eq!(call("Misbehave::counter", &[]), "1");

    // The worker runs a private snapshot: a memory file holding the mapped part of the library,
    // without the debug information that makes up most of the file.
    let file = dir.path().join("libmisbehave.so");
    let snapshots: Vec<u64> = fs::read_dir(format!("/proc/{}/fd", worker.id()))
        .unwrap()
        .filter_map(|fd| {
            let fd = fd.ok()?.path();
            let target = fs::read_link(&fd).ok()?;
            target.to_string_lossy().starts_with("/memfd:li3g-plugin").then(|| fs::metadata(&fd).unwrap().len())
        })
        .collect();
    let [snapshot] = snapshots[..] else { panic!("one snapshot per plugin: {snapshots:?}") };
    let size = fs::metadata(&file).unwrap().len();
    assert!(snapshot > 0 && snapshot < size / 2, "snapshot of {snapshot} bytes for a file of {size}");

    // A job in flight while another library is copied over the file, in place (same inode).
    let inode = fs::metadata(&file).unwrap().ino();
    let (port, options) = (gearmand.port, sync.clone());
    let in_flight = std::thread::spawn(move || {
        let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port, tls: false }]);
        client.run("Misbehave::sleep", &[json!(1)], &options, &mut |_| {}).map(|_| ())
    });
    wait_until("the job runs", Duration::from_secs(15), || {
        gearmand.status().iter().any(|s| s.function == "Misbehave::sleep" && s.running == 1)
    });
    let status = Command::new("cp").arg(li3g_tests::artifacts().lib("hello")).arg(&file).status().unwrap();
    assert!(status.success());
    assert_eq!(fs::metadata(&file).unwrap().ino(), inode, "cp wrote over the same file");
    in_flight.join().unwrap().expect("the job in flight completes");

    // The same worker process still runs the code it loaded, and keeps its state.
    for expected in ["2", "3"] {
        assert_eq!(call("Misbehave::counter", &[]), expected);
    }
    assert_eq!(call("Misbehave::add", &[json!(40), json!(2)]), "42");
    assert!(worker.wait_timeout(Duration::from_millis(1)).is_none(), "the worker is still running");

    // A new process (what `restart` starts) loads the new file.
    let registry = Registry::scan(dir.path()).unwrap();
    assert_eq!(registry.task_names(), ["Hello::count", "Hello::run", "Hello::say"]);
}

#[test]
fn restart_after_a_plugin_is_overwritten_in_place_loads_the_new_one() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "misbehave"]);
    let pid_file = dir.path().join("li3g.pid");
    let mut command = host();
    command
        .args(["start", "--workers", "1", "--servers", &gearmand.addr()])
        .arg("--plugins")
        .arg(dir.path())
        .arg("--pid")
        .arg(&pid_file);
    let _daemon = ChildGuard::spawn(command.stdout(Stdio::null()).stderr(Stdio::null()));
    wait_for_workers(&[&gearmand], "Hello::say", 1);
    let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]);
    let sync = RunOptions { background: false, timeout: Some(Duration::from_secs(30)), ..RunOptions::default() };
    let mut call = |task: &str, args: &[serde_json::Value]| match client.run(task, args, &sync, &mut |_| {}) {
        Ok(Outcome::Completed { result, .. }) => String::from_utf8(result).unwrap(),
        other => panic!("{task}: {other:?}"),
    };
    assert_eq!(call("Hello::say", &[json!("x")]), "Hello x");

    // The only worker is busy while Hello's file is rewritten in place with a rebuild whose
    // Hello::say answers "Hi".
    let (port, options) = (gearmand.port, sync.clone());
    let in_flight = std::thread::spawn(move || {
        let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port, tls: false }]);
        client.run("Misbehave::sleep", &[json!(1.5)], &options, &mut |_| {}).map(|_| ())
    });
    wait_until("the job runs", Duration::from_secs(15), || {
        gearmand.status().iter().any(|s| s.function == "Misbehave::sleep" && s.running == 1)
    });
    let file = dir.path().join("libhello.so");
    let status = Command::new("cp").arg(li3g_tests::artifacts().lib("duplicate")).arg(&file).status().unwrap();
    assert!(status.success());
    let out = run(host().arg("restart").arg("--pid").arg(&pid_file));
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // The new worker loaded the new file; the old one finished its job and left without a crash.
    assert_eq!(call("Hello::say", &[json!("x")]), "Hi x");
    in_flight.join().unwrap().expect("the job in flight completes");
}
