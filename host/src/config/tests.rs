//! The configuration file's parsing, merging and errors.

use super::*;

const FILE: &str = r#"
[default]
servers = ["127.0.0.1:4730", "gearman2"]
plugins = "/opt/plugins"
environment = "development"

[default.tasks."Image::resize"]
timeout = 120

[default.tasks.'\Thumbs']
timeout = 1.5

[default.environments.production]
servers = "g1:4731,g2"
redis = "redis://r1/0"

[reports]
servers = ["127.0.0.1:4731"]
"#;

fn addr(host: &str, port: u16) -> ServerAddr {
    ServerAddr { host: host.into(), port, tls: false }
}

#[test]
fn named_configurations_and_environment_overrides() {
    let path = Path::new("li3g.toml");
    let config = parse(path, FILE, "default", None).unwrap();
    assert_eq!(config.servers, [addr("127.0.0.1", 4730), addr("gearman2", 4730)]);
    assert_eq!(config.plugins.as_deref(), Some(Path::new("/opt/plugins")));
    assert_eq!(config.environment.as_deref(), Some("development"));
    assert_eq!(config.tasks["Image::resize"].timeout, Some(Duration::from_secs(120)));
    assert_eq!(config.tasks["Thumbs::run"].timeout, Some(Duration::from_millis(1500)), "canonical key");

    let production = parse(path, FILE, "default", Some("production")).unwrap();
    assert_eq!(production.servers, [addr("g1", 4731), addr("g2", 4730)]);
    assert_eq!(production.redis.as_deref(), Some("redis://r1/0"));
    assert_eq!(production.plugins.as_deref(), Some(Path::new("/opt/plugins")));
    assert_eq!(production.environment.as_deref(), Some("production"));

    let reports = parse(path, FILE, "reports", None).unwrap();
    assert_eq!(reports.servers, [addr("127.0.0.1", 4731)]);
    assert!(reports.tasks.is_empty());
}

#[test]
fn plugin_settings_sections_with_environment_overrides() {
    let file = r#"
[default.plugins]
dir = "/opt/plugins"

[default.plugins.redis_counter]
url = "redis://r1/0"
pool = { size = 2, name = "a" }

[default.environments.production.plugins.redis_counter]
url = "redis://r2/0"
pool = { size = 8 }

[default.environments.production.plugins.other]
x = 1
"#;
    let path = Path::new("li3g.toml");
    let config = parse(path, file, "default", None).unwrap();
    assert_eq!(config.plugins.as_deref(), Some(Path::new("/opt/plugins")));
    assert_eq!(
        config.plugin_settings["redis_counter"],
        serde_json::json!({"url": "redis://r1/0", "pool": {"size": 2, "name": "a"}})
    );
    assert!(!config.plugin_settings.contains_key("other"));
    let production = parse(path, file, "default", Some("production")).unwrap();
    assert_eq!(
        production.plugin_settings["redis_counter"],
        serde_json::json!({"url": "redis://r2/0", "pool": {"size": 8, "name": "a"}})
    );
    assert_eq!(production.plugin_settings["other"], serde_json::json!({"x": 1}));
    let settings = production.plugin_settings();
    assert_eq!(settings.key, "default.plugins");
    assert_eq!(settings.file.as_deref(), Some(path));

    // The README's shape: the directory as a dotted key, sections as sub-tables.
    let readme = "[default]\nplugins.dir = \"/usr/lib/li3g/plugins\"\n\n[default.plugins.redis_counter]\nurl = \"u\"\n";
    let config = parse(path, readme, "default", None).unwrap();
    assert_eq!(config.plugins.as_deref(), Some(Path::new("/usr/lib/li3g/plugins")));
    assert_eq!(config.plugin_settings["redis_counter"], serde_json::json!({"url": "u"}));
}

#[test]
fn no_file_means_the_built_in_default() {
    let config = load(None, "default", None).unwrap();
    assert_eq!(config.servers, [addr("127.0.0.1", 4730)]);
    let err = load(None, "reports", None).unwrap_err().to_string();
    assert!(err.starts_with("no configuration named \"reports\" in the built-in defaults"), "{err}");
}

#[test]
fn errors_name_file_key_and_expectation() {
    let path = Path::new("/etc/li3g/li3g.toml");
    let err = parse(path, "[default]\nserverz = []\n", "default", None).unwrap_err().to_string();
    assert!(err.starts_with("/etc/li3g/li3g.toml: "), "{err}");
    assert!(err.contains("line 2") && err.contains("unknown field `serverz`"), "{err}");
    assert!(err.contains("expected one of"), "{err}");

    let err = parse(path, "[default]\nservers = [\"ok\", \"h:port\"]\n", "default", None).unwrap_err().to_string();
    assert!(err.starts_with("/etc/li3g/li3g.toml: default.servers[1]: "), "{err}");
    assert!(err.contains("expected host, host:port or tls://host:port"), "{err}");

    let err = parse(path, "[default.tasks.\"A::b\"]\ntimeout = -1\n", "default", None).unwrap_err().to_string();
    assert!(err.contains("default.tasks.\"A::b\".timeout: -1 is not a positive number of seconds"), "{err}");

    for (value, expected) in [
        ("1e30", "1000000000000000000000000000000 seconds is too long (at most 2592000, 30 days)"),
        ("nan", "NaN is not a number of seconds"),
        ("0", "0 is not a positive number of seconds"),
        ("inf", "inf seconds is too long"),
    ] {
        let text = format!("[default.tasks.\"A::b\"]\ntimeout = {value}\n");
        let err = parse(path, &text, "default", None).unwrap_err().to_string();
        assert!(err.contains(&format!("default.tasks.\"A::b\".timeout: {expected}")), "{err}");
    }

    let text = "[default.tasks.Hello]\ntimeout = 1\n[default.tasks.\"Hello::run\"]\ntimeout = 2\n";
    let err = parse(path, text, "default", None).unwrap_err().to_string();
    assert!(err.contains("names the same task as"), "{err}");

    let err = parse(path, "[default]\nplugins = 5\n", "default", None).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("plugins"), "{err}");

    let err = parse(path, "[default.plugins]\nredis = 5\n", "default", None).unwrap_err().to_string();
    assert!(err.contains("default.plugins.redis: expected a table of the plugin's settings, found integer"), "{err}");

    let err = parse(path, "[a]\n[b]\n", "c", None).unwrap_err().to_string();
    assert_eq!(err, "no configuration named \"c\" in /etc/li3g/li3g.toml (it has: a, b)");
}

#[test]
fn settings_from_the_configuration() {
    let path = std::path::Path::new("li3g.toml");
    let text = "[default]\nredis = \"redis://r/0\"\n[default.scheduler]\nprefix = \"app:\"\nlease = 2.5\n\
                [default.environments.production.scheduler]\ncompat = false\n";
    let config = parse(path, text, "default", Some("production")).unwrap();
    let expected = SchedulerSettings {
        prefix: "app:".into(),
        compat: false,
        lease: Duration::from_millis(2500),
        ..SchedulerSettings::default()
    };
    assert_eq!(config.scheduler, expected);
    let err = parse(path, "[default.scheduler]\nlease = -1\n", "default", None).unwrap_err();
    assert!(err.to_string().contains("default.scheduler.lease: -1 is not a positive number"), "{err}");
    let err = parse(path, "[default.scheduler]\nprefx = \"a\"\n", "default", None).unwrap_err();
    assert!(err.to_string().contains("unknown field `prefx`"), "{err}");
    let err = parse(path, "[default.scheduler]\nlease = 8.658082506447196e212\n", "default", None).unwrap_err();
    assert!(err.to_string().contains("default.scheduler.lease: 8658082506447196"), "{err}");
    let err = parse(path, "[default.scheduler]\nlease = 1e-9\n", "default", None).unwrap_err();
    assert!(err.to_string().contains("outside 0.1..=86400 seconds"), "{err}");
}

#[test]
fn a_task_takes_a_cpu_limit() {
    let path = Path::new("/etc/li3g/li3g.toml");
    let text = "[default.tasks.\"A::b\"]\ncpu_limit = 2.5\n";
    let config = parse(path, text, "default", None).unwrap();
    assert_eq!(config.tasks["A::b"].cpu_limit, Some(Duration::from_millis(2500)));
    let err = parse(path, "[default.tasks.\"A::b\"]\ncpu_limit = 0\n", "default", None).unwrap_err().to_string();
    assert!(err.contains("default.tasks.\"A::b\".cpu_limit: 0 is not a positive number of seconds"), "{err}");
}

#[test]
fn redis_urls_are_checked_and_redacted() {
    let path = std::path::Path::new("li3g.toml");
    let err = parse(path, "[default]\nredis = \"garbage\"\n", "default", None).unwrap_err().to_string();
    assert!(err.contains("default.redis") && err.contains("not a Redis URL"), "{err}");
    let text = "[default]\nredis = \"redis://r/0\"\n[default.environments.p]\nredis = \"redis://a:pw@h/0\"\n";
    assert!(parse(path, text, "default", Some("p")).is_ok());
    let err = parse(path, "[default]\nredis = \"http://u:secret@h/0\"\n", "default", None).unwrap_err().to_string();
    assert!(!err.contains("secret"), "{err}");
    assert_eq!(redact_url("redis://app:apppw@127.0.0.1:6379/0"), "redis://***@127.0.0.1:6379/0");
    assert_eq!(redact_url("redis://127.0.0.1/0"), "redis://127.0.0.1/0");
    assert_eq!(redact_url("rediss://:p@ss@h/0"), "rediss://***@h/0");
}
