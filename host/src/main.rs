//! The `li3g-host` binary: everything happens in [`li3g_host::cli::run`].

fn main() -> std::process::ExitCode {
    li3g_host::cli::run(std::env::args_os())
}
