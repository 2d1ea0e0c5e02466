//! The checker on malformed models: every file in `tests/malformed/` must
//! fail with the listed `line:col` and message, rendered with a caret.

use netc::check::{self, CheckOptions};
use std::path::{Path, PathBuf};

/// (file stem, line, column, start of the message)
const CASES: &[(&str, usize, usize, &str)] = &[
    (
        "conv_transpose_output_padding",
        2,
        58,
        "`output_padding` (2) must be smaller than the stride or the dilation",
    ),
    (
        "clip_bounds",
        2,
        18,
        "`clip` needs finite bounds with min < max, found 6 and 0",
    ),
    (
        "mul_gate_channels",
        3,
        5,
        "mul inputs disagree: 1x3x8x8 vs 1x4x1x1",
    ),
    (
        "maxunpool_not_a_pool",
        3,
        5,
        "`maxunpool`'s second tensor must be a max pool's output; this one comes from `conv`",
    ),
    (
        "maxunpool_input",
        3,
        5,
        "`maxunpool`'s second tensor must be a max pool's output; this one is a model input",
    ),
    (
        "maxunpool_shape",
        4,
        5,
        "maxunpool: the values are 1x3x2x2 but the pool they undo gave 1x3x4x4",
    ),
    (
        "maxunpool_one_tensor",
        3,
        5,
        "`maxunpool` takes two tensors (the values and a max pool's output), found 1",
    ),
    (
        "channel_shuffle_groups",
        2,
        26,
        "`groups` (4) must divide the input's 6 channels",
    ),
    (
        "slice_bounds",
        2,
        19,
        "`slice(4, 9)` needs 0 <= start < end <= 6, the input's channels",
    ),
    (
        "resize_nearest_align_corners",
        2,
        59,
        "`align_corners` applies to bilinear resizing only",
    ),
    (
        "resize_size_and_scale",
        2,
        10,
        "`resize` takes exactly one of `size: [h, w]` and `scale`",
    ),
    (
        "add_shape_mismatch",
        4,
        5,
        "add inputs disagree: 1x4x8x8 vs 1x8x8x8",
    ),
    (
        "bad_input_rank",
        1,
        9,
        "model inputs are rank 4 `[N, C, H, W]` or rank 2 `[N, F]`, f",
    ),
    (
        "batch_not_first",
        1,
        16,
        "the batch dimension `N` must be the first dimension",
    ),
    (
        "block_missing_param",
        3,
        10,
        "block `a` needs a value for parameter `k`",
    ),
    (
        "block_named_like_op",
        1,
        7,
        "block `conv` has the name of a built-in op or function",
    ),
    (
        "block_too_many_args",
        3,
        15,
        "block `a` takes 1 parameter, found 2 arguments",
    ),
    (
        "block_unknown_param",
        3,
        15,
        "block `a` has no parameter `width`",
    ),
    (
        "call_a_value",
        3,
        5,
        "`y` is a value, not an op or block, and cannot be called",
    ),
    (
        "channels_mismatch_after_block",
        2,
        3,
        "add inputs disagree: 1x3x8x8 vs 1x4x8x8",
    ),
    (
        "concat_spatial_mismatch",
        4,
        5,
        "concat inputs disagree: 1x4x8x8 vs 1x4x6x6",
    ),
    (
        "condition_not_bool",
        2,
        8,
        "condition must be a boolean, found an integer",
    ),
    (
        "dense_bad_layout",
        2,
        27,
        "`layout` is \"out_in\" (PyTorch) or \"in_out\" (NumPy), found \"r",
    ),
    (
        "dense_needs_flatten",
        2,
        10,
        "dense expects a rank-2 input (add `flatten` first), found sh",
    ),
    ("division_by_zero", 2, 15, "division by zero"),
    (
        "dropout_bad_mode",
        2,
        34,
        "`inference` is \"identity\" (inverted dropout, PyTorch) or \"sc",
    ),
    ("duplicate_arg", 2, 29, "argument `pad` is given twice"),
    ("duplicate_block", 2, 7, "block `a` is defined twice"),
    (
        "duplicate_param_name",
        2,
        37,
        "parameter name `c.weight` is used twice",
    ),
    (
        "duplicate_statement_name",
        3,
        5,
        "`y` is already defined in this scope",
    ),
    (
        "empty_body",
        1,
        26,
        "this body computes nothing; it must end with an expression o",
    ),
    (
        "empty_output",
        2,
        10,
        "conv would produce an output height of 0 (input height 8); i",
    ),
    (
        "groups_not_dividing",
        2,
        29,
        "groups (2) must divide both the input channels (3) and the o",
    ),
    (
        "huge_activation",
        2,
        10,
        "tensor of shape 1x1000000000x8x8 would need 238.4 GiB of mem",
    ),
    (
        "huge_tensor",
        2,
        30,
        "tensor of shape 1000000x1000000x1x1 would need 3.6 TiB of me",
    ),
    ("integer_overflow", 2, 15, "integer overflow"),
    (
        "layer_as_value_in_arith",
        2,
        15,
        "operator `+` cannot combine a layer and an integer",
    ),
    (
        "merge_single_input",
        2,
        5,
        "`concat` needs at least two tensors, found 1",
    ),
    (
        "missing_required_arg",
        2,
        10,
        "`conv` needs argument `kernel`",
    ),
    ("negative_pad", 2, 26, "`pad` must be at least 0, found -1"),
    ("no_model", 1, 1, "this file defines no `model`"),
    ("pipe_into_int", 2, 10, "expected a layer, found an integer"),
    (
        "pool_too_big",
        2,
        52,
        "maxpool would produce an output height of 0 (input height 1)",
    ),
    (
        "positional_after_named",
        2,
        29,
        "positional arguments must come before named ones",
    ),
    (
        "recursion",
        2,
        22,
        "block `a` calls itself (recursion is not allowed)",
    ),
    (
        "repeat_negative",
        2,
        17,
        "repeat count must be between 0 and 10000, found -2",
    ),
    (
        "syntax_bad_dim",
        1,
        19,
        "expected `N`, an integer or an open size like `H: 224`, found `eight`",
    ),
    (
        "syntax_bad_token",
        2,
        21,
        "expected `(`, `->`, `[`, `}`, a name, an expression or an op",
    ),
    (
        "syntax_keyword_as_name",
        2,
        5,
        "expected a name or an expression, found `block`",
    ),
    (
        "syntax_missing_paren",
        3,
        1,
        "expected `(`, `)`, `,`, `->` or an operator, found `}`",
    ),
    (
        "syntax_trailing_arrow",
        3,
        1,
        "expected `(`, `[` or an expression, found `}`",
    ),
    (
        "syntax_unclosed_body",
        3,
        1,
        "expected `(`, `->`, `[`, `}`, a name, an expression or an op",
    ),
    ("syntax_unterminated_string", 2, 29, "unterminated string"),
    (
        "too_many_args",
        2,
        36,
        "`maxpool` takes at most 5 positional arguments, found 6",
    ),
    ("two_models", 2, 7, "a file defines at most one model"),
    (
        "unknown_argument",
        2,
        21,
        "`conv` has no argument `padding`",
    ),
    ("unknown_block", 3, 10, "unknown op or block `b`"),
    ("unknown_name", 3, 5, "unknown name `z`"),
    ("unknown_op", 2, 10, "unknown op or block `convv`"),
    (
        "wrong_arg_type",
        2,
        29,
        "`stride` expects an integer or `[h, w]`, found a boolean",
    ),
    ("zero_kernel", 2, 18, "`kernel` must be at least 1, found 0"),
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed")
}

#[test]
fn every_malformed_file_reports_its_location_and_message() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut listed: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    listed.sort();
    assert_eq!(files, listed, "every corpus file needs an expectation");
    assert!(CASES.len() >= 30);
    for &(stem, line, col, message) in CASES {
        let path = dir().join(format!("{stem}.net"));
        let err = match check::check_file(&path, CheckOptions::default()) {
            Ok(_) => panic!("{stem}: expected an error"),
            Err(e) => e.rendered,
        };
        let first = err.lines().next().unwrap();
        let expected = format!("{}:{line}:{col}: {message}", path.display());
        assert!(
            first.starts_with(&expected),
            "{stem}:\n  got      {first}\n  expected {expected}"
        );
        // The rendered form shows the source line and a caret under the span.
        assert!(err.contains('^'), "{stem}: no caret in\n{err}");
        assert!(
            err.contains(&format!("{line} │")),
            "{stem}: no source line in\n{err}"
        );
    }
}

/// A tiny deterministic generator so failures reproduce.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// An error inside a block names each instantiation it happened in,
/// innermost first.
#[test]
fn errors_inside_blocks_name_their_instantiations() {
    let src = "block basic(out)(x) {\n    x -> conv(out, 30) -> relu\n}\n\
               block outer(c)(x) {\n    x -> basic(c) as inner\n}\n\
               model m(x: [1, 3, 8, 8]) {\n    x -> outer(4) as o1\n}\n";
    let Err((sources, d)) = check::check_source("t.net", src, CheckOptions::default()) else {
        panic!("a 30x30 kernel on an 8x8 input must fail");
    };
    assert_eq!(sources.location(d.span), "t.net:2:10");
    assert_eq!(
        d.instantiation_notes(&sources),
        [
            "in block `basic` instantiated at t.net:5:10",
            "in block `outer` instantiated at t.net:8:10"
        ]
    );
    let text = d.render(&sources);
    assert!(
        text.contains("= in block `basic` instantiated at t.net:5:10"),
        "{text}"
    );
}

fn check_bytes(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let options = CheckOptions::default();
    match check::check_source("fuzz.net", &text, options) {
        Ok(_) => {}
        Err((sources, d)) => {
            // Rendering must not panic either, whatever the span.
            let _ = d.render(&sources);
        }
    }
}

#[test]
fn random_and_truncated_bytes_give_clean_errors() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for e in std::fs::read_dir(&models).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "net") {
            seeds.push(std::fs::read(p).unwrap());
        }
    }
    for e in std::fs::read_dir(dir()).unwrap() {
        seeds.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    let mut rng = SplitMix(42);
    // Every truncation of every seed at 40 random points.
    for s in &seeds {
        for _ in 0..40 {
            let cut = (rng.next() as usize) % (s.len() + 1);
            check_bytes(&s[..cut]);
        }
    }
    // Random bytes, random printable text and byte flips of real models.
    const ALPHABET: &[u8] = b"abcxyzNconvrelu_0123456789 \n()[]{},:=->+*/%!<>&|\"#;.as";
    for round in 0..3000 {
        let len = (rng.next() % 300) as usize;
        let bytes: Vec<u8> = match round % 3 {
            0 => (0..len).map(|_| rng.next() as u8).collect(),
            1 => (0..len)
                .map(|_| ALPHABET[(rng.next() as usize) % ALPHABET.len()])
                .collect(),
            _ => {
                let mut s = seeds[(rng.next() as usize) % seeds.len()].clone();
                for _ in 0..1 + rng.next() % 4 {
                    if s.is_empty() {
                        break;
                    }
                    let i = (rng.next() as usize) % s.len();
                    s[i] = ALPHABET[(rng.next() as usize) % ALPHABET.len()];
                }
                s
            }
        };
        check_bytes(&bytes);
    }
}
