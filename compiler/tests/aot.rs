//! `netc compile -o`: the object file, linked with the runtime's static
//! library into a C program, computes what the JIT computes.

mod common;

use netc::passes::Options;
use netc::weights::Weights;
use netc_runtime::init::{random_tensor, Init};
use std::path::PathBuf;
use std::process::Command;

/// Build the runtime's static library (in the release profile, which the
/// CI's main job builds anyway) and return its path.
fn runtime_staticlib() -> PathBuf {
    let root = common::root();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "netc-runtime", "--lib"])
        .current_dir(&root)
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building the runtime static library failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let lib = target.join("release/libnetc_runtime.a");
    assert!(lib.exists(), "{} not found", lib.display());
    lib
}

#[test]
fn c_program_matches_the_jit() {
    // Under target/ (Cargo's scratch directory for integration tests), so
    // runs do not pile up directories in /tmp.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("netc-aot");
    std::fs::create_dir_all(&dir).unwrap();
    for (model, batch) in [("deep_convnet", 2), ("googlenet", 1)] {
        let graph = common::model_graph(model, batch);
        let weights = Weights::random(&graph, 11);
        let pipeline = common::pipeline(Options::default(), 2);
        let object = dir.join("model.o");
        let (lowered, stem) = pipeline
            .object(common::planned(&graph, &weights), &object)
            .unwrap();
        assert_eq!(stem, "model");

        let shape = lowered.input_shapes[0].clone();
        let x = random_tensor(5, "x", shape, Init::Uniform { lo: 0.0, hi: 1.0 });
        let mut jit = common::jit(&graph, &weights, 2);
        let expected = jit.run(std::slice::from_ref(&x)).unwrap().remove(0);

        let input = dir.join("input.bin");
        let raw: Vec<u8> = x.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&input, raw).unwrap();
        let exe = dir.join("driver");
        let driver = common::root().join("compiler/tests/c/driver.c");
        let out = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(&driver)
            .arg(&object)
            .arg(runtime_staticlib())
            .args(["-lpthread", "-ldl", "-lm", "-I"])
            .arg(&dir)
            .output()
            .expect("run cc");
        assert!(
            out.status.success(),
            "cc failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let output = dir.join("output.bin");
        let run = Command::new(&exe)
            .arg(dir.join("model.weights"))
            .arg(&input)
            .arg(x.numel().to_string())
            .arg(&output)
            .arg(expected.numel().to_string())
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "driver failed:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let got: Vec<f32> = std::fs::read(&output)
            .unwrap()
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let max = expected.max_abs();
        let diff = got
            .iter()
            .zip(expected.data())
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-5 * max.max(1.0),
            "{model}: C output differs from the JIT by {diff}"
        );
    }
}

/// An object file for a named target does not depend on the machine that
/// compiles it: compiled once as this CPU is and once with AVX-512 masked
/// off (`NETC_NO_AVX512`, which is what `cpu::host()` reports on an AVX2
/// machine), the object, header and packed weights are the same bytes.
/// For `native`, the choice does follow the host.
#[test]
fn named_target_objects_do_not_depend_on_the_host() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("netc-target");
    std::fs::create_dir_all(&dir).unwrap();
    // The same file name in each run's own folder: the name becomes the
    // C symbols' prefix.
    let compile = |target: &str, no_avx512: bool, run: &str| -> Vec<Vec<u8>> {
        std::fs::create_dir_all(dir.join(run)).unwrap();
        let object = dir.join(run).join("model.o");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netc"));
        cmd.current_dir(common::root()).args([
            "compile",
            "models/resnet18.net",
            "--random-weights",
            "3",
            "--target",
            target,
            "-o",
        ]);
        cmd.arg(&object);
        if no_avx512 {
            cmd.env("NETC_NO_AVX512", "1");
        } else {
            cmd.env_remove("NETC_NO_AVX512");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ["o", "h", "weights"]
            .iter()
            .map(|ext| std::fs::read(object.with_extension(ext)).unwrap())
            .collect()
    };
    for target in ["x86-64-v3", "x86-64-v4"] {
        let here = compile(target, false, "here");
        let masked = compile(target, true, "masked");
        assert!(here == masked, "{target}: output depends on the host CPU");
    }
    // The two levels choose different kernels (mvec is AVX-512 only), so
    // the comparison above is not vacuous.
    assert!(compile("x86-64-v3", false, "v3")[2] != compile("x86-64-v4", false, "v4")[2]);
}
