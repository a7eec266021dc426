//! Refusing plugin files and directories that someone else could have written.
//!
//! Loading a `.so` runs its code with the host's privileges. So a plugin file, and the
//! directory it sits in, must be owned by the user running the host (or by root) and must not
//! be writable by group or others: otherwise anyone with that write access could run code as
//! the host. This is the same rule sshd applies to `authorized_keys`.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What is wrong with a path's ownership or mode, with the command that fixes it. The message
/// names the path only in the fix: the caller's message leads with the path it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Insecure {
    /// Group or others may write it.
    #[error("writable by {who} (mode {mode:o}); fix it with: chmod go-w {path}")]
    Writable {
        /// The path, for the message.
        path: String,
        /// "group", "others" or "group and others".
        who: &'static str,
        /// The permission bits.
        mode: u32,
    },
    /// Owned by a user who is neither the host's user nor root.
    #[error("owned by uid {owner}, not by this user (uid {me}) or root; fix it with: chown {me} {path}")]
    Owner {
        /// The path, for the message.
        path: String,
        /// Its owner.
        owner: u32,
        /// The host's effective uid.
        me: u32,
    },
}

impl Insecure {
    /// The path it is about.
    pub fn path(&self) -> &str {
        match self {
            Insecure::Writable { path, .. } | Insecure::Owner { path, .. } => path,
        }
    }
}

/// Checks that `meta` (of `path`) is owned by us or root and not writable by group/others.
///
/// # Errors
/// [`Insecure`] naming the path and the fix.
pub fn check(path: &Path, meta: &Metadata) -> Result<(), Insecure> {
    let mode = meta.mode() & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("group and others"),
        (true, false) => Some("group"),
        (false, true) => Some("others"),
        (false, false) => None,
    };
    if let Some(who) = who {
        return Err(Insecure::Writable { path: path.display().to_string(), who, mode });
    }
    let me = nix::unistd::geteuid().as_raw();
    let owner = meta.uid();
    if owner != me && owner != 0 {
        return Err(Insecure::Owner { path: path.display().to_string(), owner, me });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_or_other_write_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.so");
        fs::write(&file, b"").unwrap();
        for (mode, ok) in [(0o644, true), (0o755, true), (0o664, false), (0o646, false), (0o666, false)] {
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
            let result = check(&file, &fs::metadata(&file).unwrap());
            assert_eq!(result.is_ok(), ok, "mode {mode:o}: {result:?}");
            if let Err(err) = result {
                let who = match mode {
                    0o664 => "group",
                    0o646 => "others",
                    _ => "group and others",
                };
                let fix = format!("writable by {who} (mode {mode:o}); fix it with: chmod go-w {}", file.display());
                assert_eq!(err.to_string(), fix);
            }
        }
    }
}
