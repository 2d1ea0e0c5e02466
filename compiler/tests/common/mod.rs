//! Helpers shared by the integration tests.
#![allow(dead_code)]

use netc::check::{self, CheckOptions};
use netc::ir::Graph;
use std::path::{Path, PathBuf};

/// The project root (tests run from `compiler/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Check `models/<name>.net` at `batch` and lower it.
pub fn model_graph(name: &str, batch: usize) -> Graph {
    let path = root().join("models").join(format!("{name}.net"));
    let options = CheckOptions {
        batch,
        ..CheckOptions::default()
    };
    match check::check_file(&path, options) {
        Ok((_, net)) => Graph::from_network(&net),
        Err(e) => panic!("{name}: {e}"),
    }
}

/// Lower model source text.
pub fn source_graph(src: &str, batch: usize) -> Graph {
    let options = CheckOptions {
        batch,
        ..CheckOptions::default()
    };
    match check::check_source("test.net", src, options) {
        Ok(net) => Graph::from_network(&net),
        Err((sources, d)) => panic!("{}", d.render(&sources)),
    }
}
pub mod gen;
