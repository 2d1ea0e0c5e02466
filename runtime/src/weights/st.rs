//! safetensors, through the `safetensors` crate (which validates the header,
//! offsets and sizes against the buffer).

use super::{decode, DType, WeightError};
use crate::tensor::Tensor;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// An 8-byte little-endian header length followed by a JSON object.
pub(crate) fn looks_like(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && bytes[8] == b'{'
}

pub(crate) fn read(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>, WeightError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        let header_len = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .unwrap_or(0);
        WeightError::Corrupt {
            path: path.to_path_buf(),
            format: "safetensors",
            offset: 8,
            message: format!(
                "{e} (header length {header_len}, file length {})",
                bytes.len()
            ),
        }
    })?;
    let mut names: Vec<(usize, String)> = Vec::new();
    // Keep file order: sort by data offset.
    for (name, view) in st.tensors() {
        let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
        names.push((start, name));
    }
    names.sort();
    let mut out = Vec::new();
    for (_, name) in names {
        let view = st.tensor(&name).map_err(|e| WeightError::Corrupt {
            path: path.to_path_buf(),
            format: "safetensors",
            offset: 8,
            message: format!("tensor `{name}`: {e}"),
        })?;
        let dtype = match view.dtype() {
            Dtype::F64 => DType::F64,
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(WeightError::Dtype {
                    path: path.to_path_buf(),
                    key: name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        let data = decode(view.data(), dtype, false);
        let tensor =
            Tensor::new(view.shape().to_vec(), data).map_err(|e| WeightError::Corrupt {
                path: path.to_path_buf(),
                format: "safetensors",
                offset: 8,
                message: format!("tensor `{name}`: {e}"),
            })?;
        out.push((name, tensor));
    }
    Ok(out)
}

/// Serialise tensors as an f32 safetensors file (keys sorted, as the
/// format requires; `metadata` goes into the header's `__metadata__`).
pub fn write_safetensors(
    tensors: &[(String, Tensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, String> {
    let bytes: Vec<(&str, Vec<u8>, &[usize])> = tensors
        .iter()
        .map(|(k, t)| {
            let b = t.data().iter().flat_map(|x| x.to_le_bytes()).collect();
            (k.as_str(), b, t.shape())
        })
        .collect();
    let mut views = Vec::new();
    for (k, b, shape) in &bytes {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.to_vec(), b)
            .map_err(|e| format!("tensor `{k}`: {e}"))?;
        views.push((*k, view));
    }
    safetensors::tensor::serialize(views, metadata).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_read_back() {
        let a = Tensor::new(vec![2, 3], (0..6).map(|x| x as f32 * 0.5).collect()).unwrap();
        let b = Tensor::new(vec![4], vec![-1.0, 2.0, f32::MIN_POSITIVE, 7.25]).unwrap();
        let file = vec![("conv.weight".to_string(), a), ("b".to_string(), b)];
        let bytes = write_safetensors(&file, None).unwrap();
        let back = read(Path::new("t.safetensors"), &bytes).unwrap();
        for (k, t) in &file {
            let (_, got) = back.iter().find(|(n, _)| n == k).unwrap();
            assert_eq!(got.shape(), t.shape());
            assert_eq!(got.data(), t.data());
        }
    }
}
