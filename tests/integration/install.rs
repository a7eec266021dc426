//! An installed `li3g-host` finds its plugins without flags: the configuration's directory,
//! then /usr/lib/li3g/plugins, then the executable's own directory, where the example plugin
//! linked into the binary serves when no file there does (`cargo install` installs no `.so`).

use li3g_tests::{artifacts, run, PluginDir};
use std::path::Path;
use std::process::Command;

const SYSTEM_DIR: &str = "/usr/lib/li3g/plugins";

/// `li3g-host` copied alone into a directory of its own, as `cargo install` leaves it.
fn installed() -> (PluginDir, std::path::PathBuf) {
    let bin = PluginDir::empty();
    let host = bin.path().join("li3g-host");
    std::fs::copy(&artifacts().host, &host).expect("copy li3g-host");
    (bin, host)
}

fn bare(host: &Path, dir: &Path) -> Command {
    let mut command = Command::new(host);
    for var in ["LI3G_CONFIG", "LI3G_PLUGINS", "LI3G_SERVERS", "LI3G_ENVIRONMENT"] {
        command.env_remove(var);
    }
    command.current_dir(dir);
    command
}

#[test]
fn an_installed_host_finds_its_example_plugin_without_flags() {
    let (bin, host) = installed();
    let listed = run(bare(&host, bin.path()).arg("plugins"));
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    if Path::new(SYSTEM_DIR).is_dir() {
        // The Debian package is installed on this machine: its directory comes first.
        assert!(listed.stdout.starts_with(&format!("{SYSTEM_DIR}:")), "{}", listed.stdout);
        return;
    }
    assert!(listed.stdout.starts_with(&format!("{}:", bin.path().display())), "{}", listed.stdout);
    assert!(listed.stdout.contains("li3g-plugin-hello 0.1.0 (built into li3g-host)"), "{}", listed.stdout);
    assert!(listed.stdout.contains("Hello::say(name: String) -> String"), "{}", listed.stdout);
    let said = run(bare(&host, bin.path()).args(["exec", "Hello::say", "Mariano"]));
    assert_eq!((said.code, said.stdout.as_str()), (Some(0), "Hello Mariano\n"), "{}", said.stderr);

    // A plugin file serving the example's tasks next to the binary wins over the linked-in copy.
    bin.add("hello", "libhello.so");
    let listed = run(bare(&host, bin.path()).arg("plugins"));
    assert!(listed.stdout.contains("li3g-plugin-hello 0.1.0 (libhello.so)"), "{}", listed.stdout);
    assert!(!listed.stdout.contains("built into"), "{}", listed.stdout);
}

#[test]
fn a_configured_directory_gets_no_linked_in_example() {
    let (bin, host) = installed();
    let empty = PluginDir::empty();
    let listed = run(bare(&host, bin.path()).arg("plugins").arg("--plugins").arg(empty.path()));
    assert!(listed.stdout.starts_with(&format!("{}: 0 plugins loaded", empty.path().display())), "{}", listed.stdout);
    let unknown = run(bare(&host, bin.path()).args(["exec", "Hello::say", "x", "--plugins"]).arg(empty.path()));
    assert_eq!(unknown.code, Some(1), "{}", unknown.stdout);
}
