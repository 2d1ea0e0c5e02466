//! The `netc` binary end to end: exit codes, messages and report schemas.

mod common;

use common::netc;

#[test]
fn bench_json_has_the_documented_schema() {
    let out = netc(&[
        "bench",
        "models/deep_convnet.net",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["latency_ms"]["median"].as_f64().unwrap() > 0.0);
    let conv = &v["by_type"]["conv 3x3"];
    assert!(conv["ms"].as_f64().unwrap() > 0.0);
    let share: f64 = v["by_type"]
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["share"].as_f64().unwrap())
        .sum();
    assert!((share - 1.0).abs() < 1e-6, "shares sum to {share}");
    for key in ["weights_bytes", "arena_bytes", "peak_rss_bytes"] {
        assert!(v["memory"][key].as_u64().unwrap() > 0, "memory.{key}");
    }
    for key in ["peak_gflops", "bandwidth_gbs"] {
        assert!(v["machine"][key].as_f64().unwrap() > 0.0, "machine.{key}");
    }
    // Every conv row names its source statement.
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.iter().filter(|l| l["type"] == "conv 3x3").count(), 6);
    assert!(layers.iter().all(|l| l["source"]
        .as_str()
        .unwrap()
        .starts_with("models/deep_convnet.net:")));
    // How long compiling took, by stage, adding up.
    let c = &v["compile_ms"];
    let stages: f64 = ["parse_check", "weights", "passes", "pack", "codegen"]
        .iter()
        .map(|k| c[k].as_f64().unwrap())
        .sum();
    let total = c["total"].as_f64().unwrap();
    assert!(total > 0.0 && (stages - total).abs() < 1e-6, "{c}");
    // ... and frame by frame.
    let site = &layers[0]["call_site"][0];
    assert_eq!(site["file"], "models/deep_convnet.net");
    assert!(site["line"].as_u64().unwrap() > 0 && site["col"].as_u64().unwrap() > 0);
    assert!(site["name"].is_string());
}

#[test]
fn errors_exit_1_with_one_message() {
    let out = netc(&["check", "compiler/tests/malformed/unknown_op.net"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "compiler/tests/malformed/unknown_op.net:2:10: unknown op or block `convv`"
        ),
        "{err}"
    );
    let out = netc(&[
        "run",
        "models/deep_convnet.net",
        "--weights",
        "no/such/file.npz",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read no/such/file.npz"));
    let out = netc(&[
        "compile",
        "models/deep_convnet.net",
        "--emit",
        "ir",
        "--disable-pass",
        "nope",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown pass `nope`"));
}

#[test]
fn export_and_import_round_trip_through_files() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-onnx");
    std::fs::create_dir_all(&dir).unwrap();
    let onnx = dir.join("deep.onnx");
    let net = dir.join("deep.net");
    let model = common::root().join("models/deep_convnet.net");
    let out = netc(&[
        "export",
        model.to_str().unwrap(),
        "--onnx",
        onnx.to_str().unwrap(),
        "--random-weights",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = netc(&[
        "import",
        onnx.to_str().unwrap(),
        "-o",
        net.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&net).unwrap();
    assert!(
        text.contains("conv(16, 3, pad: 1, weight: \"W1\", bias: \"b1\")"),
        "{text}"
    );
    let weights = dir.join("deep.safetensors");
    let out = netc(&[
        "run",
        net.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--top-k",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not an ONNX file: one message, exit code 1.
    let out = netc(&[
        "import",
        model.to_str().unwrap(),
        "-o",
        net.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("not an ONNX model"),
        "{err}"
    );
}

/// A scratch directory for one test, under target/ (Cargo's scratch
/// directory for integration tests) so runs do not pile up in /tmp.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("netc-cli-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Write `source` as `<dir>/<file>` and return its path as a string.
fn write_model(dir: &std::path::Path, file: &str, source: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, source).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn non_finite_weights_warn_and_strict_refuses_them() {
    let dir = scratch("nan");
    let model = write_model(
        &dir,
        "t.net",
        "model t(x: [N, 1, 4, 4]) {\n    x -> conv(2, 3, pad: 1) -> relu\n}\n",
    );
    let mut w = vec![0.1f32; 18];
    w[4] = f32::NAN;
    w[7] = f32::INFINITY;
    let tensors = vec![
        (
            "conv.weight".to_string(),
            netc_runtime::Tensor::new(vec![2, 1, 3, 3], w).unwrap(),
        ),
        (
            "conv.bias".to_string(),
            netc_runtime::Tensor::new(vec![2], vec![0.0; 2]).unwrap(),
        ),
    ];
    let file = dir.join("w.safetensors");
    std::fs::write(
        &file,
        netc_runtime::weights::write_safetensors(&tensors, None).unwrap(),
    )
    .unwrap();
    let (model, file) = (model.as_str(), file.to_str().unwrap());
    let out = netc(&["compile", model, "--weights", file, "--emit", "ir"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning:")
            && err.contains(
                "`conv.weight` has 2 NaN or infinite value(s) of 18 (first at flat index 4)"
            ),
        "{err}"
    );
    let out = netc(&[
        "compile",
        model,
        "--weights",
        file,
        "--emit",
        "ir",
        "--strict",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("refused because of --strict"),
        "{err}"
    );
}

#[test]
fn tensor_memory_limit_is_configurable() {
    let dir = scratch("limit");
    // 2e6 channels at 64x64: 30.5 GiB for one activation.
    let model = write_model(
        &dir,
        "wide.net",
        "model wide(x: [N, 3, 64, 64]) {\n    x -> conv(2000000, 1)\n}\n",
    );
    let model = model.as_str();
    let out = netc(&["check", model]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("would need 30.5 GiB of memory; the limit is 16.0 GiB"),
        "{err}"
    );
    let out = netc(&["check", model, "--max-tensor-memory", "32GiB"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = netc(&[
        "check",
        "models/deep_convnet.net",
        "--max-tensor-memory",
        "1KiB",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the limit is 1.0 KiB"), "{err}");
    let out = netc(&["check", model, "--max-tensor-memory", "12 parsecs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 2 is kept for bench regressions: {err}"
    );
    assert!(err.contains("unknown size unit `parsecs`"), "{err}");
}

/// `--emit ir` shows the kernel chosen for every conv and dense layer, and
/// the choice follows `--target`; an unknown target is one clear error.
#[test]
fn emit_ir_shows_kernels_for_the_target() {
    let ir = |target: &str| {
        let out = netc(&[
            "compile",
            "models/resnet18.net",
            "--emit",
            "ir",
            "--target",
            target,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (v3, v4) = (ir("x86-64-v3"), ir("x86-64-v4"));
    for text in [&v3, &v4] {
        assert!(text.contains("[winograd-f4]"), "{text}");
        assert!(text.contains("[gemv]"), "{text}");
        assert!(!text.contains("[unselected]"), "{text}");
    }
    // mvec is an AVX-512 kernel: chosen for v4 (ResNet-18's 3×3/2 layers
    // with long reductions), never for v3.
    assert!(v4.contains("[mvec]") && !v3.contains("[mvec]"), "{v4}");
    let out = netc(&[
        "compile",
        "models/resnet18.net",
        "--emit",
        "ir",
        "--target",
        "pentium",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown target `pentium`") && err.contains("x86-64-v3"),
        "{err}"
    );
}

/// `--size` binds a model's open height and width (FCN's input is
/// `[N, 3, H: 520, W: 520]`); a model with fixed sizes refuses it.
#[test]
fn size_binds_open_spatial_dimensions() {
    let out = netc(&[
        "check",
        "models/fcn_resnet50.net",
        "--size",
        "64x96",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["layers"].as_array().unwrap();
    let last = layers.last().unwrap();
    assert_eq!(last["shape"], "1x21x64x96", "{last}");
    // The default, without `--size`.
    let out = netc(&["check", "models/fcn_resnet50.net", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["macs"], 152_716_512_000u64);
    let out = netc(&["check", "models/resnet18.net", "--size", "64x96"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("height and width are fixed"), "{err}");
    let out = netc(&["check", "models/fcn_resnet50.net", "--size", "64"]);
    assert_eq!(out.status.code(), Some(1));
}

/// `--output` writes every output by name to an `.npz` (FCN's `out` and
/// `aux`, read back with the runtime's own reader); an `.npy` cannot hold
/// two outputs and says so.
#[test]
fn run_writes_every_output_by_name_to_npz() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("netc-npz");
    std::fs::create_dir_all(&dir).unwrap();
    let npz = dir.join("y.npz");
    let npz_arg = npz.to_string_lossy().into_owned();
    let args = [
        "run",
        "models/fcn_resnet50.net",
        "--size",
        "32x48",
        "--top-k",
        "0",
        "--output",
    ];
    let out = netc(&[&args[..], &[npz_arg.as_str()]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = netc_runtime::weights::load(&npz).unwrap();
    let names: Vec<&str> = file.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["out", "aux"]);
    for (_, t) in &file.tensors {
        assert_eq!(t.shape(), [1, 21, 32, 48]);
    }
    let npy = dir.join("y.npy").to_string_lossy().into_owned();
    let out = netc(&[&args[..], &[npy.as_str()]].concat());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 outputs (out, aux)") && err.contains(".npz"),
        "{err}"
    );
}

/// `--mask` is the argmax of the first output in VOC colours, the printed
/// shares count its pixels, and `--overlay` tints the shipped photo; an
/// overlay without a photo is an error that says what to give.
#[test]
fn run_draws_a_segmentation_mask_and_overlay() {
    let dir = scratch("mask");
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let (mask, overlay, npz) = (path("mask.png"), path("overlay.png"), path("y.npz"));
    let out = netc(&[
        "run",
        "models/fcn_resnet50.net",
        "--random-weights",
        "1",
        "--size",
        "64x96",
        "--image",
        "examples/images/chelsea.jpg",
        "--mask",
        &mask,
        "--overlay",
        &overlay,
        "--output",
        &npz,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = netc_runtime::weights::load(std::path::Path::new(&npz)).unwrap();
    let scores = &file.tensors[0].1;
    assert_eq!(scores.shape(), [1, 21, 64, 96]);
    let plane = 64 * 96;
    let classes: Vec<usize> = (0..plane)
        .map(|p| {
            (1..21).fold(0, |b, c| {
                if scores.data()[c * plane + p] > scores.data()[b * plane + p] {
                    c
                } else {
                    b
                }
            })
        })
        .collect();
    let palette = |i: usize| -> [u8; 3] {
        let mut rgb = [0u8; 3];
        let mut c = i;
        for j in 0..8 {
            for (k, v) in rgb.iter_mut().enumerate() {
                *v |= (((c >> k) & 1) as u8) << (7 - j);
            }
            c >>= 3;
        }
        rgb
    };
    let img = image::open(&mask).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (96, 64));
    for (p, px) in img.pixels().enumerate() {
        assert_eq!(px.0, palette(classes[p]), "pixel {p}");
    }
    // The shares printed for each class are its pixel counts.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut total = 0.0;
    for line in stdout.lines().filter(|l| l.trim_end().ends_with('%')) {
        let mut words = line.split_whitespace();
        let (name, share) = (words.next().unwrap(), words.next().unwrap());
        total += share.trim_end_matches('%').parse::<f64>().unwrap();
        assert!(!name.is_empty());
    }
    assert!(
        (total - 100.0).abs() < 0.05,
        "shares sum to {total}\n{stdout}"
    );
    let over = image::open(&overlay).unwrap().to_rgb8();
    assert_eq!(over.dimensions(), (96, 64));
    assert_ne!(over.as_raw(), img.as_raw());

    let out = netc(&[
        "run",
        "models/fcn_resnet50.net",
        "--size",
        "32x32",
        "--overlay",
        &overlay,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give the photo with --image"), "{err}");
}
