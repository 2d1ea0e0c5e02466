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

/// Read and decode an ONNX model file, with initialisers kept in external
/// data files (PyTorch's dynamo exporter writes `model.onnx.data`) read in.
pub fn read(path: &Path) -> Result<proto::ModelProto, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut model = decode(path, &bytes)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(graph) = model.graph.as_mut() {
        let mut files = std::collections::HashMap::new();
        for t in &mut graph.initializer {
            load_external(t, dir, &mut files)?;
        }
    }
    Ok(model)
}

/// Replace `t`'s external-data reference by the bytes it names: `location`
/// relative to the model's directory (no absolute paths, no `..`), from
/// `offset`, `length` bytes or to the end. Files are read once.
fn load_external(
    t: &mut proto::TensorProto,
    dir: &Path,
    files: &mut std::collections::HashMap<String, Vec<u8>>,
) -> Result<(), OnnxError> {
    if t.data_location != Some(1) && t.external_data.is_empty() {
        return Ok(());
    }
    let name = t.name.clone().unwrap_or_default();
    let bad = |m: String| OnnxError::Invalid(format!("initialiser `{name}`: {m}"));
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let location =
        entry("location").ok_or_else(|| bad("external data without a location".into()))?;
    let relative = Path::new(&location);
    let inside = relative.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if !inside {
        return Err(bad(format!(
            "external data `{location}` is outside the model's directory"
        )));
    }
    let number = |key: &str| -> Result<Option<usize>, OnnxError> {
        entry(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad(format!("{key} `{v}` is not a number")))
            })
            .transpose()
    };
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    if !files.contains_key(&location) {
        let file = dir.join(relative);
        let bytes = std::fs::read(&file).map_err(|source| OnnxError::Io {
            path: file.display().to_string(),
            source,
        })?;
        files.insert(location.clone(), bytes);
    }
    let bytes = &files[&location];
    let end = match length {
        Some(n) => offset.checked_add(n),
        None => Some(bytes.len()),
    }
    .filter(|&e| e <= bytes.len() && offset <= e)
    .ok_or_else(|| {
        bad(format!(
            "external data {offset}+{length:?} is beyond `{location}` ({} bytes)",
            bytes.len()
        ))
    })?;
    t.raw_data = Some(bytes[offset..end].to_vec());
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

/// Encode and write an ONNX model file.
pub fn write(path: &Path, model: &proto::ModelProto) -> Result<(), OnnxError> {
    std::fs::write(path, model.encode_to_vec()).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{StringStringEntryProto, TensorProto};

    fn external(location: &str, offset: &str, length: &str) -> TensorProto {
        let entry = |k: &str, v: &str| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        TensorProto {
            name: Some("w".into()),
            data_location: Some(1),
            external_data: vec![
                entry("location", location),
                entry("offset", offset),
                entry("length", length),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn external_data_is_read_from_beside_the_model_and_nowhere_else() {
        let dir = std::env::temp_dir().join(format!("netc-external-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.data"), [1u8, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let mut files = std::collections::HashMap::new();
        let mut t = external("m.data", "2", "4");
        load_external(&mut t, &dir, &mut files).unwrap();
        assert_eq!(t.raw_data.as_deref(), Some(&[3u8, 4, 5, 6][..]));
        assert!(t.external_data.is_empty() && t.data_location.is_none());
        for (location, offset, length) in [("../m.data", "0", "4"), ("/etc/passwd", "0", "4")] {
            let e = load_external(&mut external(location, offset, length), &dir, &mut files);
            assert!(e.unwrap_err().to_string().contains("outside"), "{location}");
        }
        let e = load_external(&mut external("m.data", "6", "4"), &dir, &mut files);
        assert!(e.unwrap_err().to_string().contains("beyond"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
