//! A shared library that is not a li3g plugin: it exports a C function and no root module.

/// Something for the library to export.
#[unsafe(no_mangle)]
pub extern "C" fn not_a_plugin() -> i32 {
    42
}
