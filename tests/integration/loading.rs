//! Loading plugins: what loads, what is rejected and why, and that one bad file never stops
//! the others from loading.

use li3g_host::plugins::Registry;
use li3g_tests::PluginDir;
use std::fs;
use std::os::unix::fs::PermissionsExt;

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
    assert!(reason.contains("li3g-plugin-api 0.1.0"), "{reason}");
    assert!(reason.contains("compatible with 0.2.0"), "{reason}");
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
