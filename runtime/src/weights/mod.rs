//! Weight files: safetensors, NumPy `.npz` archives and single `.npy`
//! arrays, converted to f32 from f64, f32, f16 or bf16.
//!
//! The format is recognised by the file's first bytes, not its extension.
//! Every malformed input — truncated, corrupt, lying about sizes or offsets —
//! is an error naming the key and byte offset; nothing is read outside the
//! file's bytes and nothing is silently zero-filled.

mod npy;
mod npz;
mod st;

pub use npy::{read_npy, write_npy};
pub use npz::write as write_npz;
pub use st::write_safetensors;

use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a weight file: expected safetensors, .npz or .npy, found {found}")]
    UnknownFormat { path: PathBuf, found: String },
    #[error("{path}: corrupt {format} file at byte {offset}: {message}")]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        offset: u64,
        message: String,
    },
    #[error("{path}: tensor `{key}` is truncated: needs {needed} bytes from byte {offset}, the file has {available}")]
    Truncated {
        path: PathBuf,
        key: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("{path}: tensor `{key}` has dtype {dtype}; supported are f64, f32, f16 and bf16")]
    Dtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{path}: tensor `{key}` appears twice")]
    DuplicateKey { path: PathBuf, key: String },
}

/// The tensors of a weight file, in file order.
#[derive(Debug, Default)]
pub struct WeightFile {
    pub path: PathBuf,
    pub tensors: Vec<(String, Tensor)>,
}

impl WeightFile {
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }
}

/// Element types a weight file may store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DType {
    F64,
    F32,
    F16,
    BF16,
    /// Integers (labels, uint8 images) in `.npy` files: `(bytes, signed)`.
    Int(usize, bool),
}

impl DType {
    pub(crate) fn size(self) -> usize {
        match self {
            DType::F64 => 8,
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Int(bytes, _) => bytes,
        }
    }
}

/// Convert raw little- or big-endian bytes of `dtype` to f32.
pub(crate) fn decode(bytes: &[u8], dtype: DType, big_endian: bool) -> Vec<f32> {
    let size = dtype.size();
    bytes
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(c);
            if big_endian {
                b[..size].reverse();
            }
            match dtype {
                DType::F64 => f64::from_le_bytes(b) as f32,
                DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                DType::Int(n, signed) => {
                    let raw = u64::from_le_bytes(b);
                    if signed {
                        // Sign-extend from the top bit of `n` bytes.
                        let shift = 64 - 8 * n as u32;
                        ((raw << shift) as i64 >> shift) as f32
                    } else {
                        raw as f32
                    }
                }
            }
        })
        .collect()
}

/// Which element types an array file may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Numbers {
    /// Weights: floating point only (an integer weight file is a mistake
    /// worth naming).
    Floats,
    /// Data (images, labels, inputs): integers too, converted to f32.
    Any,
}

/// Load every tensor of a weight file.
pub fn load(path: &Path) -> Result<WeightFile, WeightError> {
    let bytes = std::fs::read(path).map_err(|source| WeightError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_bytes(path, &bytes)
}

/// Every array of an `.npz` data archive (images, labels): integer arrays
/// are read too, converted to f32.
pub fn load_arrays(path: &Path) -> Result<WeightFile, WeightError> {
    let bytes = std::fs::read(path).map_err(|source| WeightError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(WeightFile {
        path: path.to_path_buf(),
        tensors: npz::read(path, &bytes, Numbers::Any)?,
    })
}

/// Load from bytes already in memory; `path` names the source in errors.
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<WeightFile, WeightError> {
    let tensors = if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        npz::read(path, bytes, Numbers::Floats)?
    } else if bytes.starts_with(b"\x93NUMPY") {
        let key = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![(key.clone(), npy::parse(path, &key, bytes, Numbers::Floats)?)]
    } else if st::looks_like(bytes) {
        st::read(path, bytes)?
    } else {
        let head: String = bytes
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(WeightError::UnknownFormat {
            path: path.to_path_buf(),
            found: if bytes.is_empty() {
                "an empty file".into()
            } else {
                format!("first bytes {head}")
            },
        });
    };
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &tensors {
        if !seen.insert(k.as_str()) {
            return Err(WeightError::DuplicateKey {
                path: path.to_path_buf(),
                key: k.clone(),
            });
        }
    }
    Ok(WeightFile {
        path: path.to_path_buf(),
        tensors,
    })
}
