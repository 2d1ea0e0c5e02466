//! `netc import`: an ONNX model as a `.net` file plus its weights.

use super::Failure;
use crate::onnx;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to import (weights inside the file).
    model: PathBuf,
    /// Write the `.net` model here.
    #[arg(short, long, value_name = "OUT.net")]
    output: PathBuf,
    /// Write the weights here as safetensors, under the ONNX initialiser
    /// names the `.net` file refers to (default: OUT.safetensors).
    #[arg(long, value_name = "W.safetensors")]
    weights_out: Option<PathBuf>,
    /// Name of the generated model (default: the output file's stem).
    #[arg(long)]
    name: Option<String>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let model = onnx::read(&a.model)?;
    let name = a.name.clone().unwrap_or_else(|| {
        a.output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "imported".into())
    });
    let imported = onnx::import(&model, &name)?;
    let weights_path = a
        .weights_out
        .clone()
        .unwrap_or_else(|| a.output.with_extension("safetensors"));
    let bytes = netc_runtime::weights::write_safetensors(&imported.weights, None)
        .map_err(|e| Failure::new(format!("{}: {e}", weights_path.display())))?;
    std::fs::write(&a.output, &imported.source)
        .map_err(|e| Failure::new(format!("{}: {e}", a.output.display())))?;
    std::fs::write(&weights_path, bytes)
        .map_err(|e| Failure::new(format!("{}: {e}", weights_path.display())))?;
    let statements = imported
        .source
        .lines()
        .filter(|l| l.contains(" = "))
        .count();
    eprintln!(
        "wrote {} ({statements} statements) and {} ({} tensors); run it with\n  netc run {} --weights {}",
        a.output.display(),
        weights_path.display(),
        imported.weights.len(),
        a.output.display(),
        weights_path.display(),
    );
    Ok(())
}
