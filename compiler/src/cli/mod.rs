//! The `netc` command line: argument parsing and one function per command.
//! Every error becomes one message on stderr and exit code 1.

mod check;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "netc",
    version,
    about = "Compile declarative CNN definitions (.net files) and run them on the CPU",
    long_about = "netc reads a model written in the .net language (see grammar/README.md), \
checks it and infers every shape, and runs it.\n\nExamples:\n  \
netc check models/resnet50.net\n  \
netc check models/googlenet.net --params\n  \
netc check models/vgg16.net --batch 8 --format json"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a model: parse it, infer every shape, and print a per-layer table.
    Check(check::Args),
}

/// A failed command: the message to print and the exit code.
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::new(e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(a) => check::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let msg = f.message.trim_end();
            if msg.starts_with("error") || msg.contains(": error") || msg.contains("\nerror") {
                eprintln!("{msg}");
            } else {
                eprintln!("error: {msg}");
            }
            ExitCode::from(f.code)
        }
    }
}
