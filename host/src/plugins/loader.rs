//! Loading one plugin library and turning abi_stable's errors into reasons a user can act on.
//!
//! We call `lib_header_from_path` and `init_root_module` for each file rather than
//! abi_stable's `load_from_file`/`load_from_directory`: those cache the first module per root
//! module type and hand it back for every later call, so only one plugin would ever load.

use abi_stable::library::{lib_header_from_path, LibraryError, RootModule, RootModuleError};
use abi_stable::std_types::RBoxError;
use li3g_plugin_api::abi::PluginMod_Ref;
use std::path::Path;

/// Why a file could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The dynamic loader refused it (not a shared library, missing dependency, ...).
    #[error("cannot be opened as a shared library: {0}")]
    Open(String),
    /// A shared library, but without the root module a plugin exports.
    #[error("not a li3g plugin: it exports no abi_stable root module (build it with li3g_plugin_api::plugin!)")]
    NotAPlugin,
    /// Built against another ABI: other abi_stable, other plugin-api version, other layout.
    #[error("built against an incompatible plugin API: {0}")]
    Incompatible(String),
    /// The plugin's loader (or its `init`) returned an error.
    #[error("its loader failed: {0}")]
    LoaderFailed(String),
    /// The plugin's loader panicked.
    #[error("its loader panicked")]
    LoaderPanicked,
}

/// How many lines of abi_stable's layout report to keep: the head names the mismatch.
const REPORT_LINES: usize = 12;

/// Loads the library at `path` and returns its root module.
///
/// # Errors
/// [`LoadError`] saying why the file is not a usable plugin.
pub fn load(path: &Path) -> Result<PluginMod_Ref, LoadError> {
    let header = lib_header_from_path(path).map_err(explain)?;
    header.init_root_module::<PluginMod_Ref>().map_err(explain)
}

fn explain(err: LibraryError) -> LoadError {
    match err {
        LibraryError::OpenError { err, .. } => LoadError::Open(err.to_string()),
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin,
        LibraryError::InvalidAbiHeader(_) => {
            LoadError::Incompatible("it was built with another major version of abi_stable".into())
        }
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => {
            LoadError::Incompatible(format!(
                "it was built against li3g-plugin-api {actual_version}, and this host needs a \
                 version compatible with {expected_version} (same 0.{} minor or newer); rebuild it",
                expected_version.minor
            ))
        }
        LibraryError::ParseVersionError(err) => {
            LoadError::Incompatible(format!("its plugin API version cannot be read: {err}"))
        }
        LibraryError::AbiInstability(report) => LoadError::Incompatible(format!(
            "its type layouts differ from this host's (rebuild it against li3g-plugin-api {}): {}",
            PluginMod_Ref::VERSION_STRINGS.version,
            summarize_instability(&report)
        )),
        LibraryError::InvalidCAbi { expected, found } => {
            LoadError::Incompatible(format!("its C ABI differs: expected {expected}, found {found}"))
        }
        LibraryError::RootModule { err: RootModuleError::Unwound, .. } => LoadError::LoaderPanicked,
        LibraryError::RootModule { err: RootModuleError::Returned(err), .. } => {
            LoadError::LoaderFailed(err.to_string())
        }
        LibraryError::Many(list) => {
            let reasons: Vec<String> = list.into_iter().map(|e| explain(e).to_string()).collect();
            LoadError::Incompatible(reasons.join("; "))
        }
    }
}

/// One line per mismatched type: `TaskDecl: incompatible type size (expected 104, found 112)`.
///
/// abi_stable's report (only available as text) runs to hundreds of lines, both layouts in
/// full, in sections headed `N error(s)`; the types with errors and the mismatches are what a
/// plugin author needs. Falls back to the report's head when the shape is not recognised.
fn summarize_instability(report: &RBoxError) -> String {
    let text = report.to_string();
    let mut lines = Vec::new();
    for section in split_sections(&text) {
        let ty = section
            .split("Layout of expected type:")
            .nth(1)
            .and_then(|rest| rest.lines().find_map(|l| l.trim().strip_prefix("type:")))
            .unwrap_or("a type");
        let found = mismatches(section);
        if !found.is_empty() {
            lines.push(format!("{ty}: {}", found.join("; ")));
        }
    }
    if lines.is_empty() {
        return format!("\n{}", condense(&text));
    }
    lines.join("; ")
}

/// The report's sections that start with a non-zero `N error(s)` line.
fn split_sections(text: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let count = line.split(" error(s)").next().filter(|_| line.contains(" error(s)"));
        if count.is_some_and(|n| n.trim().parse::<usize>().is_ok_and(|n| n > 0)) {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| &text[start..starts.get(i + 1).copied().unwrap_or(text.len())])
        .collect()
}

/// The `Error:`/`Expected:`/`Found:` blocks of an abi_stable error, as `what (expected X, found Y)`.
fn mismatches(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        let Some(what) = line.strip_prefix("Error:") else { continue };
        let mut section = "";
        let (mut expected, mut found) = (Vec::new(), Vec::new());
        while let Some(next) = lines.peek() {
            if next.starts_with("Error:") {
                break;
            }
            let next = lines.next().unwrap_or_default();
            match next {
                "Expected:" => section = "expected",
                "Found:" => section = "found",
                "" => {}
                value if section == "expected" => expected.push(value),
                value if section == "found" => found.push(value),
                _ => {}
            }
        }
        out.push(format!("{what} (expected {}, found {})", expected.join(" "), found.join(" ")));
    }
    out
}

/// The first lines of a long report, without blank lines, ending with a count of what was cut.
fn condense(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    let mut out: Vec<String> = lines.iter().take(REPORT_LINES).map(|l| format!("    {l}")).collect();
    if lines.len() > REPORT_LINES {
        out.push(format!("    ... ({} more lines)", lines.len() - REPORT_LINES));
    }
    out.join("\n")
}
