//! ONNX interop: export a checked model with its weights as ONNX (opset 17),
//! and import a CNN ONNX model as `.net` source plus weights.
//!
//! [`proto`] holds the protobuf messages, [`export`] and [`import`] the two
//! directions. Both are checked against ONNX's own checker and ONNX Runtime
//! in `compiler/tests/onnx.rs`.

pub mod export;
pub mod import;
pub mod proto;

use prost::Message;
use std::path::Path;

pub use export::{export, Batch};
pub use import::{import, Imported};

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot export node `{node}`: {message}")]
    Export { node: String, message: String },
    #[error("ONNX node `{node}` ({op}): {message}")]
    Import {
        node: String,
        op: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: not an ONNX model: {message}")]
    Decode { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Decode an ONNX model from its bytes.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<proto::ModelProto, OnnxError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if model.graph.is_none() {
        return Err(OnnxError::Decode {
            path: path.display().to_string(),
            message: "it has no graph".into(),
        });
    }
    Ok(model)
}

/// Read and decode an ONNX model file.
pub fn read(path: &Path) -> Result<proto::ModelProto, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    decode(path, &bytes)
}

/// Encode and write an ONNX model file.
pub fn write(path: &Path, model: &proto::ModelProto) -> Result<(), OnnxError> {
    std::fs::write(path, model.encode_to_vec()).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })
}
