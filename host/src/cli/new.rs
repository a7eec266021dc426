//! `li3g-host new NAME [--dir DIR]`: write a plugin crate (see [`crate::scaffold`]).

use crate::scaffold::{self, ApiSource};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(super) struct NewArgs {
    /// The crate's name (`my-tasks`); its tasks are `MyTasks::say`, `::report`, `::next`.
    name: String,
    /// Where to write it [default: ./NAME]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The plugin API's source to depend on [default: /usr/share/li3g/plugin-api, else the
    /// source this host was built from, else crates.io]
    #[arg(long, env = "LI3G_PLUGIN_API", value_name = "DIR")]
    plugin_api: Option<PathBuf>,
}

/// Said when no plugin API source was found: the crate then names the crates.io version, which
/// builds only once li3g-plugin-api is published there.
fn crates_io_warning() -> String {
    format!(
        "li3g-host: warning: no li3g-plugin-api source was found (no --plugin-api, no {}, and the source this \
         li3g-host was built from is gone), so the crate depends on li3g-plugin-api {} from crates.io; if cargo \
         cannot find it there, write the crate again with --plugin-api DIR (the plugin-api directory of a li3g \
         checkout of this version) or LI3G_PLUGIN_API=DIR",
        scaffold::INSTALLED_API,
        scaffold::API_VERSION
    )
}

pub(super) fn run(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    let api = ApiSource::find(args.plugin_api.as_deref())?;
    scaffold::write(&args.name, &dir, &api)?;
    let lib = args.name.replace('-', "_");
    println!("Created plugin crate {} in {}", args.name, dir.display());
    match &api {
        ApiSource::Path(path) => println!("li3g-plugin-api {}: {}", scaffold::API_VERSION, path.display()),
        ApiSource::CratesIo => {
            println!("li3g-plugin-api {}: from crates.io", scaffold::API_VERSION);
            eprintln!("{}", crates_io_warning());
        }
    }
    println!("Next: cd {} && cargo test && cargo build --release", dir.display());
    println!("      li3g-host plugins --plugins target/release   (lib{lib}.so)");
    println!(
        "Then: copy target/release/lib{lib}.so into the host's plugins directory (the first line of \
         `li3g-host plugins` names it) and run li3g-host restart"
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_crates_io_fallback_says_how_to_name_the_source() {
        let warning = super::crates_io_warning();
        assert!(warning.contains("/usr/share/li3g/plugin-api"), "{warning}");
        assert!(warning.contains("write the crate again with --plugin-api DIR"), "{warning}");
        assert!(warning.contains(&format!("li3g-plugin-api {}", crate::scaffold::API_VERSION)), "{warning}");
    }
}
