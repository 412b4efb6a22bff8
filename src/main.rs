//! The `flagger` binary: CLI and wiring.
#![forbid(unsafe_code)]

mod cli;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    match Cli::parse().into_command() {
        Command::Crd(args) => args.execute(),
        // TODO(operator): start the operator with these flags (issue 4); `let RunArgs { .. } = args`.
        Command::Run(args) => todo!("the operator is not wired yet; flags parsed: {args:?}"),
    }
}
