//! `netc check`: shapes, parameters and MACs of a model.

use super::Failure;
use crate::check::{self, report};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (.net).
    file: PathBuf,
    /// Value bound to the symbolic batch dimension `N`.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Print one line per parameter tensor (`name<TAB>shape`) instead.
    #[arg(long)]
    params: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let options = super::check_options(a.batch);
    let (program, net) = check::check_file(&a.file, options)?;
    if a.params {
        print!("{}", report::params(&net));
        return Ok(());
    }
    let summary = report::summary(&net, &program.sources);
    match a.format {
        Format::Table => print!("{}", report::table(&summary)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
    }
    Ok(())
}
