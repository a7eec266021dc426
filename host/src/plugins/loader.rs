//! Loading one plugin library and turning abi_stable's errors into reasons a user can act on.
//!
//! We call `lib_header_from_path` and `init_root_module` for each file rather than
//! abi_stable's `load_from_file`/`load_from_directory`: those cache the first module per root
//! module type and hand it back for every later call, so only one plugin would ever load.
//!
//! The file that is checked is the file that loads, and a loaded plugin never changes under a
//! running process:
//! - [`open`] opens the path without following a symbolic link (`O_NOFOLLOW`) and reads the
//!   metadata of that descriptor, for the permission checks ([`super::permissions`]). A plugin
//!   that is a symbolic link is refused: a link's target is outside the checked directory, and
//!   resolving the path twice (once to check, once to load) is a race.
//! - [`load`] copies that descriptor's contents into a sealed memory file (`memfd_create`) and
//!   loads the copy through `/proc/self/fd/N`. The process maps its private snapshot, not the
//!   file on disk, so `cp new.so plugins/libx.so` over a loaded plugin cannot change the code a
//!   running worker executes (it used to die with SIGILL or SIGBUS); the next process (after
//!   `restart`) loads the new file. The cost is the mapped part of the file (not its debug
//!   information) in memory per process that loads it (see the README). The ELF header and
//!   program headers are read with the `object` crate. The memory file stays open for the life of the process: the
//!   dynamic loader knows the library by its `/proc/self/fd/N` name, and a number reused for
//!   another plugin would be taken for the already loaded library.

use abi_stable::library::{lib_header_from_path, LibraryError, RootModule, RootModuleError};
use abi_stable::std_types::RBoxError;
use li3g_plugin_api::abi::PluginMod_Ref;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why a file could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path is a symbolic link.
    #[error(
        "is a symbolic link; plugins load only from regular files in the plugins directory (copy the file there \
         instead of linking it)"
    )]
    SymbolicLink,
    /// Not a regular file (a directory, a socket, ...).
    #[error("not a regular file")]
    NotAFile,
    /// It cannot be opened or read.
    #[error("cannot be read: {0}")]
    Unreadable(String),
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

/// Opens the plugin file at `path` without following a symbolic link; returns it with the
/// metadata of that very descriptor, for the permission checks.
///
/// # Errors
/// [`LoadError::SymbolicLink`], [`LoadError::NotAFile`], [`LoadError::Unreadable`].
pub fn open(path: &Path) -> Result<(File, Metadata), LoadError> {
    let file = OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO someone put there must not hang the scan.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => LoadError::SymbolicLink,
            _ => LoadError::Unreadable(os_reason(&err)),
        })?;
    let meta = file.metadata().map_err(|err| LoadError::Unreadable(os_reason(&err)))?;
    if !meta.is_file() {
        return Err(LoadError::NotAFile);
    }
    Ok((file, meta))
}

/// Loads the plugin in `file` (from [`open`]) and returns its root module.
///
/// # Errors
/// [`LoadError`] saying why the file is not a usable plugin.
pub fn load(file: &File) -> Result<PluginMod_Ref, LoadError> {
    let snapshot = snapshot(file).map_err(|err| LoadError::Unreadable(os_reason(&err)))?;
    let name = format!("/proc/self/fd/{}", snapshot.as_raw_fd());
    let loaded = lib_header_from_path(Path::new(&name)).and_then(|header| header.init_root_module::<PluginMod_Ref>());
    if !matches!(loaded, Err(LibraryError::OpenError { .. })) {
        // The library is mapped (and never unloaded): its name must stay its own.
        std::mem::forget(snapshot);
    }
    loaded.map_err(|err| explain(err, &name))
}

/// How many times [`snapshot`] copies a file that changes while it is copied.
const SNAPSHOT_TRIES: usize = 3;

/// How much of a file's head is read to find its program headers (they follow the ELF header).
const HEAD: u64 = 64 << 10;

/// A sealed in-memory copy of what the dynamic loader uses of `file`: everything up to the end
/// of its last segment (see [`loaded_extent`]). A file that changes during the copy (a `cp`
/// over it under way) is copied again.
fn snapshot(file: &File) -> io::Result<OwnedFd> {
    for _ in 0..SNAPSHOT_TRIES {
        let before = file.metadata()?;
        let mut head = Vec::new();
        file.try_clone()?.take(HEAD).read_to_end(&mut head)?;
        let extent = loaded_extent(&head).filter(|&end| end < before.size());
        let copy: File = memfd_create("li3g-plugin", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?.into();
        let mut source = file.try_clone()?;
        source.seek(io::SeekFrom::Start(0))?;
        io::copy(&mut source.take(extent.unwrap_or(u64::MAX)), &mut &copy)?;
        if extent.is_some() {
            // The section headers were past the end: say there are none (e_shoff, e_shnum,
            // e_shstrndx), so that nothing reads beyond the copy. The loader does not use them.
            copy.write_all_at(&[0; 8], 0x28)?;
            copy.write_all_at(&[0; 4], 0x3c)?;
        }
        let after = file.metadata()?;
        if unchanged(&before, &after) {
            let seals =
                SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE;
            fcntl(&copy, FcntlArg::F_ADD_SEALS(seals))?;
            return Ok(copy.into());
        }
    }
    Err(io::Error::other("it kept changing while it was read; try again once it is written"))
}

/// Where the part of a 64-bit ELF file that the dynamic loader maps ends: the furthest end of
/// its program headers and of every segment they describe. What follows (section headers,
/// symbol tables and debug information, often 90% of a Rust library built with debug
/// information) is never mapped. `None` when `head` is no 64-bit ELF file whose program
/// headers it holds: then the whole file is copied.
fn loaded_extent(head: &[u8]) -> Option<u64> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let header = object::elf::FileHeader64::<object::Endianness>::parse(head).ok()?;
    let endian = header.endian().ok()?;
    let segments = header.program_headers(endian, head).ok()?;
    if segments.is_empty() {
        return None;
    }
    let table_end = header.e_phoff(endian) + u64::from(header.e_phentsize(endian)) * segments.len() as u64;
    segments.iter().try_fold(table_end, |end, segment| {
        Some(end.max(segment.p_offset(endian).checked_add(segment.p_filesz(endian))?))
    })
}

fn unchanged(a: &Metadata, b: &Metadata) -> bool {
    (a.size(), a.mtime(), a.mtime_nsec(), a.ctime(), a.ctime_nsec())
        == (b.size(), b.mtime(), b.mtime_nsec(), b.ctime(), b.ctime_nsec())
}

/// An OS error's text without Rust's `(os error N)` suffix.
fn os_reason(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// How many lines of abi_stable's layout report to keep: the head names the mismatch.
const REPORT_LINES: usize = 12;

/// abi_stable's error as a reason; `name` is the path the library was loaded by, which the
/// dynamic loader's messages repeat and the caller's message already names otherwise.
fn explain(err: LibraryError, name: &str) -> LoadError {
    match err {
        LibraryError::OpenError { err, .. } => {
            let text = err.to_string();
            let text = text.split_once(&format!("{name}: ")).map_or(text.as_str(), |(_, rest)| rest).to_string();
            LoadError::Open(text)
        }
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin,
        LibraryError::InvalidAbiHeader(_) => {
            LoadError::Incompatible("it was built with another major version of abi_stable".into())
        }
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => {
            LoadError::Incompatible(format!(
                "it was built against li3g-plugin-api {actual_version}, and this host needs a \
                 version compatible with {expected_version} (the same 0.{} minor, patch {} or later); rebuild it",
                expected_version.minor, expected_version.patch
            ))
        }
        LibraryError::ParseVersionError(err) => {
            LoadError::Incompatible(format!("its plugin API version cannot be read: {err}"))
        }
        LibraryError::AbiInstability(report) => match summarize_instability(&report) {
            // A package version mismatch found by the layout check: the versions say it all.
            summary if summary.starts_with("it was built against") => LoadError::Incompatible(summary),
            summary => LoadError::Incompatible(format!(
                "its type layouts differ from this host's (rebuild it against li3g-plugin-api {}): {}",
                PluginMod_Ref::VERSION_STRINGS.version,
                summary
            )),
        },
        LibraryError::InvalidCAbi { expected, found } => {
            LoadError::Incompatible(format!("its C ABI differs: expected {expected}, found {found}"))
        }
        LibraryError::RootModule { err: RootModuleError::Unwound, .. } => LoadError::LoaderPanicked,
        LibraryError::RootModule { err: RootModuleError::Returned(err), .. } => {
            LoadError::LoaderFailed(err.to_string())
        }
        LibraryError::Many(list) => {
            let reasons: Vec<String> = list.into_iter().map(|e| explain(e, name).to_string()).collect();
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
    // A package version mismatch found inside the layout check (a plugin built against a later
    // minor): abi_stable reports it within both layouts in full; say only the two versions.
    if let Some(at) = text.find("incompatible package versions") {
        let versions: Vec<&str> = text[at..]
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|w| w.split('.').count() == 3 && w.split('.').all(|n| !n.is_empty()))
            .take(2)
            .collect();
        if let [expected, found] = versions[..] {
            return format!(
                "it was built against li3g-plugin-api {found}, and this host needs a version compatible with \
                 {expected} (the same minor); rebuild it"
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loaded_extent_of_an_elf_file_and_none_for_anything_else() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let head = &exe[..exe.len().min(HEAD as usize)];
        let end = loaded_extent(head).expect("this test binary is a 64-bit ELF file");
        // This debug build's symbols and debug information lie past its segments.
        assert!(end > 0 && end < exe.len() as u64, "{end} of {}", exe.len());
        assert_eq!(loaded_extent(b"not ELF at all"), None);
        assert_eq!(loaded_extent(&exe[..32]), None, "a truncated header");
    }

    #[test]
    fn os_errors_lose_their_number_only() {
        assert_eq!(os_reason(&io::Error::from_raw_os_error(13)), "Permission denied");
        assert_eq!(os_reason(&io::Error::other("plain")), "plain");
    }
}
