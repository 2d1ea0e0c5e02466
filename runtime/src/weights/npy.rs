//! The NumPy `.npy` format: a magic string, a Python-dict header giving
//! dtype, order and shape, then the raw array.

use super::{decode, DType, Numbers, WeightError};
use crate::tensor::Tensor;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

fn corrupt(path: &Path, offset: usize, message: impl Into<String>) -> WeightError {
    WeightError::Corrupt {
        path: path.to_path_buf(),
        format: "npy",
        offset: offset as u64,
        message: message.into(),
    }
}

/// Read one `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor, WeightError> {
    let bytes = std::fs::read(path).map_err(|source| WeightError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let key = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(path, &key, &bytes, Numbers::Any)
}

/// Parse `.npy` bytes; `key` names the array in errors.
pub(crate) fn parse(
    path: &Path,
    key: &str,
    bytes: &[u8],
    numbers: Numbers,
) -> Result<Tensor, WeightError> {
    if !bytes.starts_with(MAGIC) {
        return Err(corrupt(path, 0, "missing the \\x93NUMPY magic"));
    }
    let major = *bytes
        .get(6)
        .ok_or_else(|| corrupt(path, 6, "file ends in the version"))?;
    let (header_len, header_start): (usize, usize) = match major {
        1 => {
            let b = bytes
                .get(8..10)
                .ok_or_else(|| corrupt(path, 8, "file ends in the header length"))?;
            (u16::from_le_bytes([b[0], b[1]]) as usize, 10)
        }
        2 | 3 => {
            let b = bytes
                .get(8..12)
                .ok_or_else(|| corrupt(path, 8, "file ends in the header length"))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(corrupt(path, 6, format!("unsupported format version {v}"))),
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            corrupt(
                path,
                header_start,
                format!(
                    "header claims {header_len} bytes, the file has {}",
                    bytes.len() - header_start
                ),
            )
        })?;
    let header = std::str::from_utf8(&bytes[header_start..header_end])
        .map_err(|e| corrupt(path, header_start + e.valid_up_to(), "header is not text"))?;
    let field = |name: &str| -> Option<&str> {
        let at = header.find(&format!("'{name}'"))?;
        let rest = &header[at + name.len() + 2..];
        let colon = rest.find(':')?;
        Some(rest[colon + 1..].trim_start())
    };
    let descr = field("descr")
        .and_then(|v| v.strip_prefix('\''))
        .and_then(|v| v.split('\'').next())
        .ok_or_else(|| corrupt(path, header_start, "header has no 'descr'"))?;
    let fortran = field("fortran_order")
        .map(|v| v.starts_with("True"))
        .ok_or_else(|| corrupt(path, header_start, "header has no 'fortran_order'"))?;
    let shape_text = field("shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| corrupt(path, header_start, "header has no 'shape'"))?;
    let mut shape = Vec::new();
    for part in shape_text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let d: usize = part.parse().map_err(|_| {
            corrupt(
                path,
                header_start,
                format!("bad dimension `{part}` in shape"),
            )
        })?;
        shape.push(d);
    }
    let (big_endian, code) = match descr.as_bytes().first() {
        Some(b'<') | Some(b'|') | Some(b'=') => (false, &descr[1..]),
        Some(b'>') => (true, &descr[1..]),
        _ => (false, descr),
    };
    let dtype = match code {
        "f8" => DType::F64,
        "f4" => DType::F32,
        "f2" => DType::F16,
        "bfloat16" => DType::BF16,
        "i1" | "b1" if numbers == Numbers::Any => DType::Int(1, code == "i1"),
        "u1" if numbers == Numbers::Any => DType::Int(1, false),
        "i2" if numbers == Numbers::Any => DType::Int(2, true),
        "u2" if numbers == Numbers::Any => DType::Int(2, false),
        "i4" if numbers == Numbers::Any => DType::Int(4, true),
        "u4" if numbers == Numbers::Any => DType::Int(4, false),
        "i8" if numbers == Numbers::Any => DType::Int(8, true),
        "u8" if numbers == Numbers::Any => DType::Int(8, false),
        _ => {
            return Err(WeightError::Dtype {
                path: path.to_path_buf(),
                key: key.to_string(),
                dtype: descr.to_string(),
            })
        }
    };
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| corrupt(path, header_start, "shape overflows"))?;
    let needed = count
        .checked_mul(dtype.size())
        .ok_or_else(|| corrupt(path, header_start, "shape overflows"))?;
    let available = bytes.len() - header_end;
    if available < needed {
        return Err(WeightError::Truncated {
            path: path.to_path_buf(),
            key: key.to_string(),
            offset: header_end as u64,
            needed: needed as u64,
            available: available as u64,
        });
    }
    let mut data = decode(&bytes[header_end..header_end + needed], dtype, big_endian);
    if fortran && shape.len() > 1 {
        data = fortran_to_c(&data, &shape);
    }
    Tensor::new(shape, data).map_err(|e| corrupt(path, header_end, e.to_string()))
}

/// Reorder column-major data to row-major.
fn fortran_to_c(data: &[f32], shape: &[usize]) -> Vec<f32> {
    let rank = shape.len();
    let mut out = vec![0.0; data.len()];
    let mut idx = vec![0usize; rank];
    for v in out.iter_mut() {
        // Column-major offset of the row-major index `idx`.
        let mut off = 0;
        let mut stride = 1;
        for a in 0..rank {
            off += idx[a] * stride;
            stride *= shape[a];
        }
        *v = data[off];
        for a in (0..rank).rev() {
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// Serialise a tensor as a version-1 little-endian f32 `.npy`.
pub fn write_npy(tensor: &Tensor) -> Vec<u8> {
    let dims: Vec<String> = tensor.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so the data starts on a 64-byte boundary, ending in a newline.
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(total + tensor.numel() * 4 + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in tensor.data() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Tensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let bytes = write_npy(&t);
        assert_eq!(bytes.iter().position(|&b| b == b'\n').unwrap() % 64, 63);
        let back = parse(Path::new("t.npy"), "t", &bytes, Numbers::Floats).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn fortran_order_is_transposed() {
        // [[1, 2, 3], [4, 5, 6]] stored column-major is 1 4 2 5 3 6.
        let mut bytes = write_npy(&Tensor::new(vec![2, 3], vec![1., 4., 2., 5., 3., 6.]).unwrap());
        let at = bytes.windows(5).position(|w| w == b"False").unwrap();
        bytes[at..at + 5].copy_from_slice(b"True ");
        let back = parse(Path::new("t.npy"), "t", &bytes, Numbers::Floats).unwrap();
        assert_eq!(back.shape(), &[2, 3]);
        assert_eq!(back.data(), &[1., 2., 3., 4., 5., 6.]);
    }
}
