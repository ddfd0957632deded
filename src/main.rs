//! The `sluice` binary: parse arguments, hand over to the library.

use clap::Parser;

fn main() {
    let args = sluice::cli::Args::parse();
    std::process::exit(sluice::cli::run(args));
}
