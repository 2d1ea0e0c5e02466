//! `netc train` end to end: a checkpointed, interrupted and resumed run
//! ends at the same weights as an uninterrupted one; trained weights load
//! into `netc run`; user errors are one clear message.

mod common;

use netc_runtime::weights::{load, write_npy};
use netc_runtime::Tensor;
use std::path::Path;
use std::process::Command;

use common::netc;

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A model with everything whose state a resume must restore: batch-norm
/// running statistics, dropout's stream, Adam's moments.
const MODEL: &str = "model small(x: [N, 1, 6, 6]) {
    c = x -> conv(4, 3, pad: 1, bias: false)
    b = c -> batchnorm
    h = b -> [relu, maxpool(2), flatten, dropout(0.3)]
    y = h -> dense(3)
    return y
}
";

fn write_data(dir: &Path, n: usize) {
    let images: Vec<f32> = (0..n * 36)
        .map(|i| ((i * 37) % 101) as f32 / 101.0)
        .collect();
    let labels: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
    let x = Tensor::new(vec![n, 1, 6, 6], images).unwrap();
    let y = Tensor::new(vec![n], labels).unwrap();
    std::fs::write(dir.join("x.npy"), write_npy(&x)).unwrap();
    std::fs::write(dir.join("y.npy"), write_npy(&y)).unwrap();
    std::fs::write(dir.join("small.net"), MODEL).unwrap();
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut t: Vec<(String, Vec<f32>)> = load(path)
        .unwrap()
        .tensors
        .into_iter()
        .filter(|(k, _)| !k.starts_with("optimizer."))
        .map(|(k, t)| (k, t.into_data()))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

#[test]
fn resumed_run_ends_where_an_uninterrupted_one_does() {
    let dir = std::env::temp_dir().join(format!("netc-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_data(&dir, 40);
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let base = [
        "train",
        &p("small.net"),
        "--train-images",
        &p("x.npy"),
        "--train-labels",
        &p("y.npy"),
        "--batch",
        "8",
        "--epochs",
        "3",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--schedule",
        "cosine",
        "--augment",
        "shift=1,rotate=5",
        "--seed",
        "9",
    ]
    .map(String::from)
    .to_vec();
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let out = netc(&args);
        ok(&out);
    };
    run(&["--out", &p("whole.safetensors")]);
    // Stopped mid-epoch (step 7 of 5 per epoch), then resumed twice.
    let ckpt = p("ckpt");
    run(&["--steps", "7", "--checkpoint", &ckpt]);
    let last = dir.join("ckpt").join("last.safetensors");
    let last = last.to_string_lossy().into_owned();
    run(&["--steps", "11", "--resume", &last, "--checkpoint", &ckpt]);
    run(&["--resume", &last, "--out", &p("resumed.safetensors")]);
    let whole = weights(&dir.join("whole.safetensors"));
    let resumed = weights(&dir.join("resumed.safetensors"));
    assert_eq!(
        whole.len(),
        7,
        "{:?}",
        whole.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    for ((ka, a), (kb, b)) in whole.iter().zip(&resumed) {
        assert_eq!(ka, kb);
        assert_eq!(a, b, "{ka} differs after resuming");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trained_weights_load_into_netc_run() {
    let dir = std::env::temp_dir().join(format!("netc-trained-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("dc.safetensors").to_string_lossy().into_owned();
    let mnist = common::root().join("../shared/data/mnist");
    let images = mnist.join("t10k-images-idx3-ubyte.gz");
    let labels = mnist.join("t10k-labels-idx1-ubyte.gz");
    let (images, labels) = (images.to_string_lossy(), labels.to_string_lossy());
    let trained = netc(&[
        "train",
        "models/deep_convnet.net",
        "--train-images",
        &images,
        "--train-labels",
        &labels,
        "--batch",
        "50",
        "--steps",
        "40",
        "--lr",
        "0.002",
        "--out",
        &out,
    ]);
    ok(&trained);
    let run = netc(&[
        "run",
        "models/deep_convnet.net",
        "--weights",
        &out,
        "--mnist-images",
        &images,
        "--mnist-labels",
        &labels,
        "--limit",
        "1000",
    ]);
    ok(&run);
    // 40 steps of 50 images lift the untrained 10% well above chance (the
    // book's dropout on the logits makes early training slow).
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    let acc = text
        .split("accuracy:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no accuracy in: {text}"));
    assert!(acc > 0.3, "accuracy {acc} after 40 steps:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn user_errors_are_one_message() {
    for (args, needle) in [
        (
            vec![
                "train",
                "models/deep_convnet.net",
                "--train-images",
                "nope.idx",
                "--train-labels",
                "nope",
            ],
            "cannot read",
        ),
        (
            vec![
                "train",
                "models/resnet18.net",
                "--train-images",
                "../shared/data/mnist/t10k-images-idx3-ubyte.gz",
                "--train-labels",
                "../shared/data/mnist/t10k-labels-idx1-ubyte.gz",
            ],
            "the model takes",
        ),
        (
            vec![
                "train",
                "models/deep_convnet.net",
                "--train-images",
                "x",
                "--augment",
                "wobble=2",
            ],
            "unknown augmentation",
        ),
        (
            vec![
                "train",
                "models/deep_convnet.net",
                "--train-images",
                "../shared/data/mnist/t10k-images-idx3-ubyte.gz",
                "--train-labels",
                "../shared/data/mnist/t10k-labels-idx1-ubyte.gz",
                "--schedule",
                "linear",
            ],
            "--schedule",
        ),
    ] {
        let out = netc(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Debian's `dataset-fashion-mnist` (`.ci/run` installs it; elsewhere the
/// test is skipped unless `NETC_REQUIRE_DATASETS` is set).
#[test]
fn fashion_mnist_trains_from_debians_files() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        assert!(
            std::env::var_os("NETC_REQUIRE_DATASETS").is_none(),
            "{} is missing: apt install dataset-fashion-mnist",
            dir.display()
        );
        eprintln!("skipped: {} is missing", dir.display());
        return;
    }
    let f = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let out = netc(&[
        "train",
        "models/deep_convnet.net",
        "--train-images",
        &f("train-images-idx3-ubyte.gz"),
        "--train-labels",
        &f("train-labels-idx1-ubyte.gz"),
        "--test-images",
        &f("t10k-images-idx3-ubyte.gz"),
        "--test-labels",
        &f("t10k-labels-idx1-ubyte.gz"),
        "--batch",
        "100",
        "--steps",
        "30",
        "--lr",
        "0.002",
    ]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("on 60000 images"), "{err}");
    let test = err
        .split("test ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no test accuracy in: {err}"));
    // 30 steps (3,000 images) take the 10% of chance past 50%.
    assert!(test > 50.0, "test accuracy {test}% after 30 steps:\n{err}");
}

/// `.npz` archives and image folders (one sub-folder per class) train
/// like IDX files.
#[test]
fn npz_and_image_folders_are_training_data() {
    let dir = std::env::temp_dir().join(format!("netc-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let n = 16;
    let images = Tensor::new(
        vec![n, 1, 6, 6],
        (0..n * 36).map(|i| (i % 7) as f32 / 7.0).collect(),
    )
    .unwrap();
    let labels = Tensor::new(vec![n], (0..n).map(|i| (i % 3) as f32).collect()).unwrap();
    let npz =
        netc_runtime::weights::write_npz(&[("images", &images), ("labels", &labels)]).unwrap();
    std::fs::write(dir.join("d.npz"), npz).unwrap();
    std::fs::write(dir.join("small.net"), MODEL).unwrap();
    let trained = netc(&[
        "train",
        &p("small.net"),
        "--train-images",
        &p("d.npz"),
        "--batch",
        "4",
        "--epochs",
        "1",
    ]);
    ok(&trained);
    assert!(String::from_utf8_lossy(&trained.stderr).contains("on 16 images"));

    // Three classes of 6×6 RGB PNGs.
    for class in ["a", "b", "c"] {
        let sub = dir.join("folder").join(class);
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..4u8 {
            let img = image::RgbImage::from_fn(6, 6, |x, y| {
                image::Rgb([i * 40, x as u8 * 30, y as u8 * 30])
            });
            img.save(sub.join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(
        dir.join("rgb.net"),
        MODEL.replace("[N, 1, 6, 6]", "[N, 3, 6, 6]"),
    )
    .unwrap();
    let trained = netc(&[
        "train",
        &p("rgb.net"),
        "--train-images",
        &p("folder"),
        "--batch",
        "4",
        "--epochs",
        "2",
    ]);
    ok(&trained);
    assert!(String::from_utf8_lossy(&trained.stderr).contains("on 12 images"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ctrl-C while checkpoints are being written leaves the last one whole:
/// it is written aside and renamed.
#[test]
fn interrupted_run_leaves_a_whole_checkpoint() {
    let dir = std::env::temp_dir().join(format!("netc-sigint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_data(&dir, 40);
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let ckpt = dir.join("ckpt").join("last.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_netc"))
        .args([
            "train",
            &p("small.net"),
            "--train-images",
            &p("x.npy"),
            "--train-labels",
            &p("y.npy"),
            "--batch",
            "8",
            "--epochs",
            "100000",
            "--checkpoint",
            &p("ckpt"),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start netc");
    let start = std::time::Instant::now();
    while !ckpt.exists() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Let it overwrite the checkpoint many times, then interrupt.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let _ = child.wait();
    let resumed = netc(&[
        "train",
        &p("small.net"),
        "--train-images",
        &p("x.npy"),
        "--train-labels",
        &p("y.npy"),
        "--batch",
        "8",
        "--epochs",
        "100000",
        "--steps",
        "1",
        "--resume",
        &ckpt.to_string_lossy(),
    ]);
    // The checkpoint loads; with --steps 1 already behind it, nothing runs.
    ok(&resumed);
    let _ = std::fs::remove_dir_all(&dir);
}
