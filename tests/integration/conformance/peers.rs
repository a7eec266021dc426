//! Peers real users run, against gearmand and li3g.

/// The peer checks, by the name the tables use.
pub const NAMES: &[&str] = &[];
