//! Weight files: every way a file can be wrong gives an error naming the
//! key, the shapes or the byte offset.

mod common;

use netc::weights::{BindError, Weights};
use netc_runtime::weights::{self, write_npy, WeightError};
use netc_runtime::Tensor;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const MODEL: &str = "model m(x: [N, 2, 4, 4]) {\n    x -> conv(3, 1) as c -> batchnorm as bn\n}\n";

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("netc-weights");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn t(shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape.to_vec(), (0..n).map(|i| i as f32 * 0.5).collect()).unwrap()
}

fn good() -> Vec<(&'static str, Tensor)> {
    vec![
        ("c.weight", t(&[3, 2, 1, 1])),
        ("c.bias", t(&[3])),
        ("bn.weight", t(&[3])),
        ("bn.bias", t(&[3])),
        ("bn.running_mean", t(&[3])),
        ("bn.running_var", t(&[3])),
    ]
}

/// Write an `.npz` (zip of `.npy`) with the given raw entries.
fn npz(name: &str, entries: &[(&str, Vec<u8>)]) -> PathBuf {
    let path = tmp(name);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (key, bytes) in entries {
        zip.start_file(
            format!("{key}.npy"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    path
}

fn npz_of(name: &str, tensors: &[(&str, Tensor)]) -> PathBuf {
    let entries: Vec<(&str, Vec<u8>)> = tensors.iter().map(|(k, t)| (*k, write_npy(t))).collect();
    npz(name, &entries)
}

fn bind(path: &Path) -> Result<Weights, String> {
    let graph = common::source_graph(MODEL, 1);
    let file = weights::load(path).map_err(|e| e.to_string())?;
    Weights::bind(&graph, file).map_err(|e| e.to_string())
}

#[test]
fn a_complete_npz_binds() {
    let w = bind(&npz_of("good.npz", &good())).unwrap();
    assert_eq!(w.len(), 6);
    assert_eq!(w.get("c.bias").unwrap().data(), &[0.0, 0.5, 1.0]);
}

#[test]
fn missing_key_names_key_and_shape() {
    let mut ts = good();
    ts.retain(|(k, _)| *k != "bn.running_var");
    let e = bind(&npz_of("missing.npz", &ts)).unwrap_err();
    assert!(
        e.contains("missing tensor `bn.running_var` (expected shape 3)"),
        "{e}"
    );
}

#[test]
fn unexpected_key_is_an_error_but_num_batches_tracked_is_ignored() {
    let mut ts = good();
    ts.push((
        "bn.num_batches_tracked",
        Tensor::new(vec![], vec![0.0]).unwrap(),
    ));
    bind(&npz_of("nbt.npz", &ts)).unwrap();
    ts.push(("fc.weight", t(&[2, 2])));
    let e = bind(&npz_of("extra.npz", &ts)).unwrap_err();
    assert!(
        e.contains("unexpected tensor `fc.weight` (shape 2x2)"),
        "{e}"
    );
}

#[test]
fn shape_mismatch_names_both_shapes() {
    let mut ts = good();
    ts[0].1 = t(&[3, 2, 3, 3]);
    let e = bind(&npz_of("shape.npz", &ts)).unwrap_err();
    assert!(
        e.contains("tensor `c.weight` has shape 3x2x3x3, the model expects 3x2x1x1"),
        "{e}"
    );
}

#[test]
fn wrong_dtype_is_named() {
    let mut bytes = write_npy(&t(&[3]));
    let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
    bytes[at + 1] = b'i';
    let e = bind(&npz("dtype.npz", &[("c.bias", bytes)])).unwrap_err();
    assert!(e.contains("tensor `c.bias` has dtype <i4"), "{e}");
}

#[test]
fn truncated_npy_gives_the_byte_offset() {
    let mut bytes = write_npy(&t(&[3, 2, 1, 1]));
    bytes.truncate(bytes.len() - 5);
    let e = bind(&npz("trunc.npz", &[("c.weight", bytes)])).unwrap_err();
    assert!(
        e.contains("tensor `c.weight` is truncated: needs 24 bytes from byte 128, the file has 19"),
        "{e}"
    );
}

#[test]
fn corrupt_zip_and_unknown_format() {
    let path = npz_of("corrupt.npz", &good());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(&path, &bytes).unwrap();
    let e = bind(&path).unwrap_err();
    assert!(e.contains("corrupt npz file"), "{e}");

    let path = tmp("text.safetensors");
    std::fs::write(&path, b"hello, world").unwrap();
    let e = bind(&path).unwrap_err();
    assert!(
        e.contains("not a weight file") && e.contains("68 65 6c 6c"),
        "{e}"
    );
    let path = tmp("empty.npz");
    std::fs::write(&path, b"").unwrap();
    assert!(bind(&path).unwrap_err().contains("an empty file"));
}

fn safetensors_bytes(tensors: &[(&str, Vec<usize>, safetensors::Dtype, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, shape, dtype, data)| {
            (
                k.to_string(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()
}

#[test]
fn safetensors_converts_f64_f16_bf16() {
    let f64s: Vec<u8> = [1.5f64, -2.0, 3.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f16s: Vec<u8> = [1.5f32, -2.0, 3.25]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = [1.5f32, -2.0, 3.25]
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let bytes = safetensors_bytes(&[
        ("a", vec![3], safetensors::Dtype::F64, f64s),
        ("b", vec![3], safetensors::Dtype::F16, f16s),
        ("c", vec![3], safetensors::Dtype::BF16, bf16s),
    ]);
    let path = tmp("mixed.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let file = weights::load(&path).unwrap();
    for key in ["a", "b", "c"] {
        assert_eq!(file.get(key).unwrap().data(), &[1.5, -2.0, 3.25], "{key}");
    }
}

#[test]
fn safetensors_header_claiming_more_than_the_file_has() {
    let data: Vec<u8> = [1.0f32; 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut bytes = safetensors_bytes(&[("c.bias", vec![3], safetensors::Dtype::F32, data)]);
    bytes.truncate(bytes.len() - 4);
    let e = weights::load_bytes(Path::new("w.safetensors"), &bytes).unwrap_err();
    assert!(
        matches!(
            e,
            WeightError::Corrupt {
                format: "safetensors",
                ..
            }
        ),
        "{e}"
    );
    // A header length larger than the file.
    let mut lying = bytes.clone();
    lying[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = weights::load_bytes(Path::new("w.safetensors"), &lying).unwrap_err();
    assert!(
        e.to_string().contains("corrupt safetensors file at byte 8"),
        "{e}"
    );
}

#[test]
fn safetensors_integer_dtype_is_rejected() {
    let bytes = safetensors_bytes(&[("c.bias", vec![3], safetensors::Dtype::I32, vec![0; 12])]);
    let e = weights::load_bytes(Path::new("w.safetensors"), &bytes).unwrap_err();
    assert!(
        e.to_string().contains("tensor `c.bias` has dtype I32"),
        "{e}"
    );
}

#[test]
fn bind_error_is_typed() {
    let graph = common::source_graph(MODEL, 1);
    let file = weights::load(&npz_of("typed.npz", &good()[..5])).unwrap();
    let e = Weights::bind(&graph, file).unwrap_err();
    assert!(matches!(e, BindError::Missing { ref key, .. } if key == "bn.running_var"));
}
