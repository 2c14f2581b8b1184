//! `anykv` with one more backend: the deliberately broken
//! `broken-memory://` ([`broken`]). The CLI's own tests run it to prove
//! that `anykv conformance` fails a broken backend; no normal build of
//! `anykv` has this backend.

mod broken;

use clap::Parser;

fn main() -> std::process::ExitCode {
    broken::register();
    let cli = anykv_cli::cli::Cli::parse();
    std::process::ExitCode::from(anykv_cli::run(cli))
}
