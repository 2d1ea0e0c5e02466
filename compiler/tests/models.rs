//! The shipped models against torchvision's published facts: parameter
//! names and shapes, learnable totals and MACs.

use netc::check::{self, report, CheckOptions};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(model: &str, batch: usize) -> check::Network {
    let path = root().join("models").join(format!("{model}.net"));
    let options = CheckOptions {
        batch,
        ..CheckOptions::default()
    };
    match check::check_file(&path, options) {
        Ok((_, net)) => net,
        Err(e) => panic!("{model}: {e}"),
    }
}

/// (model, learnable params, published conv+dense GMACs at the model's
/// input size: 224×224, or 520×520 for the segmentation models, whose
/// figures are `shared/reference/torchvision/*.facts`)
const TORCHVISION: &[(&str, u64, f64)] = &[
    ("alexnet", 61_100_840, 0.71),
    ("vgg16", 138_357_544, 15.47),
    ("googlenet", 6_624_904, 1.50),
    ("resnet18", 11_689_512, 1.81),
    ("resnet34", 21_797_672, 3.66),
    ("resnet50", 25_557_032, 4.09),
    ("resnet101", 44_549_160, 7.80),
    ("fcn_resnet50", 35_322_218, 152.717),
    ("deeplabv3_resnet50", 42_004_074, 178.722),
    ("lraspp_mobilenet_v3_large", 3_221_538, 2.086),
];

#[test]
fn params_match_torchvision_state_dict_keys() {
    for &(model, _, _) in TORCHVISION {
        let keys = root().join(format!("../shared/reference/torchvision/{model}.keys"));
        let Ok(text) = std::fs::read_to_string(&keys) else {
            panic!("missing reference {}", keys.display());
        };
        let mut expected: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("num_batches_tracked"))
            .collect();
        let net = check(model, 1);
        let printed = report::params(&net);
        let mut got: Vec<&str> = printed.lines().collect();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected, "{model}");
    }
}

#[test]
fn totals_match_published_numbers() {
    for &(model, params, gmacs) in TORCHVISION {
        let net = check(model, 1);
        assert_eq!(net.learnable_params(), params, "{model} params");
        let got = net.macs() as f64 / 1e9;
        assert!(
            (got - gmacs).abs() / gmacs < 0.01,
            "{model}: {got:.3} GMACs vs published {gmacs}"
        );
    }
}

/// The facts files give MACs to the multiply: the segmentation models'
/// match exactly, and their two outputs are per-pixel scores at the
/// input's size, the backbone at output stride 8.
#[test]
fn segmentation_models_match_their_facts_and_predict_every_pixel() {
    for model in ["fcn_resnet50", "deeplabv3_resnet50"] {
        let net = segmentation_facts(model);
        let layer4 = net
            .layers
            .iter()
            .rev()
            .find(|l| l.name.starts_with("backbone.layer4"))
            .unwrap();
        assert_eq!(net.shape(layer4.output).0, [1, 2048, 65, 65]);
        assert_eq!(net.tensors[layer4.output].rf.unwrap().jump, [8, 8]);
    }
}

/// LR-ASPP: the low features at 1/8 of the input, the high ones at 1/16
/// (the dilated last stage keeps stride 1), one output at the input's size.
#[test]
fn lraspp_matches_its_facts_with_low_and_high_features() {
    let net = segmentation_facts("lraspp_mobilenet_v3_large");
    assert_eq!(net.outputs.len(), 1);
    let last = |prefix: &str| {
        net.layers
            .iter()
            .rev()
            .find(|l| l.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no layer {prefix}"))
    };
    let low = last("backbone.4.");
    let high = last("backbone.16.");
    assert_eq!(net.shape(low.output).0, [1, 40, 65, 65]);
    assert_eq!(net.tensors[low.output].rf.unwrap().jump, [8, 8]);
    assert_eq!(net.shape(high.output).0, [1, 960, 33, 33]);
    assert_eq!(net.tensors[high.output].rf.unwrap().jump, [16, 16]);
}

/// SegNet's encoder is torchvision's `vgg16_bn().features`: VGG-16's
/// convolutions (their shapes from `vgg16.keys`) each followed by a batch
/// norm, at vgg16_bn's Sequential indices. The decoder unpools back to
/// every pool's input size (45×60 from 22×30 at 360×480) and ends in 12
/// per-pixel class scores.
#[test]
fn segnet_encoder_is_vgg16_bn_and_the_decoder_mirrors_it() {
    let keys = root().join("../shared/reference/torchvision/vgg16.keys");
    let text = std::fs::read_to_string(keys).expect("vgg16.keys");
    // vgg16's conv weights in order, and where vgg16_bn puts each conv:
    // every conv gains a batch norm, so the index shifts by one per conv.
    let mut expected = Vec::new();
    let mut convs = 0;
    for line in text.lines().filter(|l| l.starts_with("features.")) {
        let (name, shape) = line.split_once('\t').expect("name and shape");
        let mut parts = name.split('.');
        let index: usize = parts.nth(1).and_then(|i| i.parse().ok()).expect("index");
        let role = parts.next().expect("role");
        let bn_index = index + convs;
        expected.push(format!("features.{bn_index}.{role}\t{shape}"));
        if role == "bias" {
            for bn_role in ["weight", "bias", "running_mean", "running_var"] {
                expected.push(format!("features.{}.{bn_role}\t{shape}", bn_index + 1));
            }
            convs += 1;
        }
    }
    assert_eq!(convs, 13);
    let net = check("segnet", 1);
    let printed = report::params(&net);
    let mut got: Vec<&str> = printed
        .lines()
        .filter(|l| l.starts_with("features."))
        .collect();
    let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected);
    // The decoder: 12 more conv + batch-norm layers and the classifier.
    let decoder = printed
        .lines()
        .filter(|l| l.starts_with("decoder.") && l.contains(".running_var\t"))
        .count();
    assert_eq!(decoder, 12);
    assert_eq!(net.learnable_params(), 29_449_932);
    assert_eq!(net.macs(), 106_387_292_160);
    let unpools: Vec<Vec<usize>> = net
        .layers
        .iter()
        .filter(|l| l.op.name() == "maxunpool")
        .map(|l| net.shape(l.output).0.clone())
        .collect();
    assert_eq!(
        unpools,
        [
            vec![1, 512, 22, 30],
            vec![1, 512, 45, 60],
            vec![1, 256, 90, 120],
            vec![1, 128, 180, 240],
            vec![1, 64, 360, 480],
        ]
    );
    assert_eq!(net.shape(net.outputs[0]).0, [1, 12, 360, 480]);
}

fn segmentation_facts(model: &str) -> check::Network {
    let path = root().join(format!("../shared/reference/torchvision/{model}.facts"));
    let facts = std::fs::read_to_string(path).expect("the facts file");
    let fact = |key: &str| -> u64 {
        facts
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in the facts"))
    };
    let net = check(model, 1);
    assert_eq!(net.learnable_params(), fact("params"));
    assert_eq!(net.macs(), fact("macs@520"));
    for &t in &net.outputs {
        assert_eq!(net.shape(t).0, [1, 21, 520, 520]);
    }
    net
}

#[test]
fn batch_scales_shapes_and_macs() {
    let one = check("resnet18", 1);
    let three = check("resnet18", 3);
    assert_eq!(three.macs(), 3 * one.macs());
    assert_eq!(three.shape(three.outputs[0]).0, vec![3, 1000]);
}

#[test]
fn deep_convnet_uses_the_books_names() {
    let net = check("deep_convnet", 1);
    let names: Vec<String> = net
        .params()
        .map(|p| format!("{}\t{}", p.name, p.spec.shape))
        .collect();
    assert_eq!(
        names,
        [
            "W1\t16x1x3x3",
            "b1\t16",
            "W2\t16x16x3x3",
            "b2\t16",
            "W3\t32x16x3x3",
            "b3\t32",
            "W4\t32x32x3x3",
            "b4\t32",
            "W5\t64x32x3x3",
            "b5\t64",
            "W6\t64x64x3x3",
            "b6\t64",
            "W7\t1024x50",
            "b7\t50",
            "W8\t50x10",
            "b8\t10",
        ]
    );
}

#[test]
fn claims_stacked_3x3_has_18_of_25_weights_and_same_field() {
    let net = check("claims/stacked_3x3_vs_5x5", 1);
    let weights = |prefix: &str| -> u64 {
        net.layers
            .iter()
            .filter(|l| l.name.starts_with(prefix))
            .flat_map(|l| &l.params)
            .map(|p| p.spec.shape.numel() as u64)
            .sum()
    };
    assert_eq!(weights("stacked") * 25, weights("single") * 18);
    let rfs: Vec<_> = net
        .outputs
        .iter()
        .map(|&t| net.tensors[t].rf.unwrap().size)
        .collect();
    assert_eq!(rfs, vec![[5, 5], [5, 5]]);
}

#[test]
fn claims_inception_reductions_cut_macs() {
    let net = check("claims/inception_reductions", 1);
    let macs = |prefix: &str| -> u64 {
        net.layers
            .iter()
            .filter(|l| l.name.starts_with(prefix))
            .map(|l| l.op.macs(net.shape(l.output)))
            .sum()
    };
    assert_eq!(macs("reduced"), 128_049_152);
    assert_eq!(macs("naive"), 303_464_448);
}

#[test]
fn claims_a_mobile_bottleneck_costs_less_than_one_plain_3x3() {
    let net = check("claims/squeeze_excite", 1);
    let macs = |prefix: &str| -> u64 {
        net.layers
            .iter()
            .filter(|l| l.name.starts_with(prefix))
            .map(|l| l.op.macs(net.shape(l.output)))
            .sum()
    };
    // 1x1 40→120 and 120→40 at 28², depthwise 3x3 over 120 channels, the
    // gate's two 1x1s on one value per channel.
    assert_eq!(macs("mobile"), 2 * 3_763_200 + 846_720 + 2 * 3_840);
    assert_eq!(macs("plain"), 11_289_600);
    // The gate sees the whole plane; the block's output keeps the input's shape.
    let mul = net
        .layers
        .iter()
        .find(|l| l.name == "mobile.6.mul")
        .unwrap();
    assert_eq!(net.tensors[mul.output].rf.unwrap().size, [30, 30]);
    assert_eq!(net.shape(net.outputs[0]).0, [1, 40, 28, 28]);
}

#[test]
fn json_report_has_the_documented_fields() {
    let path = root().join("models/googlenet.net");
    let (program, net) = check::check_file(&path, CheckOptions::default()).unwrap();
    let json = serde_json::to_value(report::summary(&net, &program.sources)).unwrap();
    assert_eq!(json["params"], 6_624_904);
    let layer = &json["layers"][0];
    for key in ["name", "op", "shape", "params", "macs", "receptive_field"] {
        assert!(layer.get(key).is_some(), "missing {key}");
    }
    assert_eq!(layer["receptive_field"]["size"][0], 7);
}

/// A layer made inside nested blocks names every call that led to it,
/// outermost first, each with the part of the layer's name it added.
#[test]
fn layers_know_the_calls_that_instantiated_them() {
    let path = root().join("models/googlenet.net");
    let (program, net) = check::check_file(&path, CheckOptions::default()).unwrap();
    let layer = |name: &str| net.layers.iter().find(|l| l.name == name).unwrap();
    let sources = &program.sources;
    let file = path.display().to_string();
    assert_eq!(
        sources.call_path(&layer("inception3a.branch2.1.conv").call_path),
        format!("{file}:28 inception3a › :16 branch2.1 › :7 conv")
    );
    assert_eq!(
        sources.call_path(&layer("maxpool1").call_path),
        format!("{file}:24 maxpool1")
    );
    let frames = sources.locate(&layer("conv1.relu").call_path);
    let names: Vec<(usize, &str)> = frames.iter().map(|f| (f.line, f.name.as_str())).collect();
    assert_eq!(names, [(23, "conv1"), (9, "relu")]);
    assert!(frames.iter().all(|f| f.file == file && f.col > 0));
}
