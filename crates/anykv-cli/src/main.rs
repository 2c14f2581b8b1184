//! The `anykv` command-line tool; see `anykv --help` and the `anykv_cli`
//! crate documentation.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = anykv_cli::cli::Cli::parse();
    std::process::ExitCode::from(anykv_cli::run(cli))
}
