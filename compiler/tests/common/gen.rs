//! A generator of random valid `.net` models: chains, branches, residual
//! skips, concats, every op, odd sizes. Deterministic from a seed.

use netc_runtime::init::SplitMix64;

pub struct Gen {
    rng: SplitMix64,
    lines: Vec<String>,
    next: usize,
}

/// A tensor in the model being generated: its name and C, H, W.
#[derive(Clone)]
struct T {
    name: String,
    c: usize,
    h: usize,
    w: usize,
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen {
            rng: SplitMix64::new(seed),
            lines: Vec::new(),
            next: 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn bind(&mut self, expr: String, c: usize, h: usize, w: usize) -> T {
        let name = format!("t{}", self.next);
        self.next += 1;
        self.lines.push(format!("    {name} = {expr}"));
        T { name, c, h, w }
    }

    fn activation(&mut self) -> &'static str {
        ["relu", "relu", "leaky_relu(0.1)", "sigmoid", "tanh"][self.below(5)]
    }

    /// A random conv (+ optional batch norm and activation) from `x`.
    fn conv(&mut self, x: &T) -> T {
        for _ in 0..20 {
            let k = [1, 1, 2, 3, 3, 5, 7, 11][self.below(8)];
            let stride = self.range(1, 4);
            let dil = if k > 1 && self.chance(20) { 2 } else { 1 };
            let pads = [self.below(k), self.below(k), self.below(k), self.below(k)];
            let span = dil * (k - 1) + 1;
            let (ph, pw) = (x.h + pads[0] + pads[2], x.w + pads[1] + pads[3]);
            if ph < span || pw < span {
                continue;
            }
            let oh = (ph - span) / stride + 1;
            let ow = (pw - span) / stride + 1;
            let mut out = if self.chance(20) {
                self.range(17, 40)
            } else {
                self.range(1, 13)
            };
            let groups = if x.c.is_multiple_of(2) && self.chance(25) {
                out = 2 * self.range(1, 6);
                2
            } else {
                1
            };
            let pad = if pads.iter().all(|&p| p == pads[0]) {
                pads[0].to_string()
            } else {
                format!("[{}, {}, {}, {}]", pads[0], pads[1], pads[2], pads[3])
            };
            let bias = if self.chance(30) { ", bias: false" } else { "" };
            let mut layers = vec![format!(
                "conv({out}, {k}, stride: {stride}, pad: {pad}, dilation: {dil}, groups: {groups}{bias})"
            )];
            if self.chance(50) {
                layers.push("batchnorm(eps: 0.001)".into());
            }
            if self.chance(70) {
                layers.push(self.activation().into());
            }
            let e = format!("{} -> [{}]", x.name, layers.join(", "));
            return self.bind(e, out, oh, ow);
        }
        self.bind(format!("{} -> relu", x.name), x.c, x.h, x.w)
    }

    fn pool(&mut self, x: &T) -> T {
        let k = self.range(2, 3);
        let stride = self.range(1, 2);
        let pad = self.below(k / 2 + 1);
        let ceil = self.chance(40);
        let size = |n: usize| -> Option<usize> {
            let room = (n + 2 * pad).checked_sub(k)?;
            let mut o = if ceil {
                room.div_ceil(stride) + 1
            } else {
                room / stride + 1
            };
            if ceil && (o - 1) * stride >= n + pad {
                o -= 1;
            }
            Some(o)
        };
        let (Some(oh), Some(ow)) = (size(x.h), size(x.w)) else {
            return self.bind(format!("{} -> tanh", x.name), x.c, x.h, x.w);
        };
        let e = if self.chance(50) {
            format!(
                "{} -> maxpool({k}, stride: {stride}, pad: {pad}, ceil: {ceil})",
                x.name
            )
        } else {
            let cip = self.chance(50);
            format!(
                "{} -> avgpool({k}, stride: {stride}, pad: {pad}, ceil: {ceil}, count_include_pad: {cip})",
                x.name
            )
        };
        self.bind(e, x.c, oh, ow)
    }

    /// A residual block: `add(x -> conv 3x3 same, x)`, maybe then ReLU.
    fn skip(&mut self, x: &T) -> T {
        let bn = if self.chance(50) { ", batchnorm" } else { "" };
        let relu = if self.chance(70) { " -> relu" } else { "" };
        let e = format!(
            "add({} -> [conv({}, 3, pad: 1, bias: false){bn}], {}){relu}",
            x.name, x.c, x.name
        );
        self.bind(e, x.c, x.h, x.w)
    }

    /// Inception-like branches: 1x1 siblings and maybe a pool branch.
    fn branches(&mut self, x: &T) -> T {
        let n = self.range(2, 3);
        let mut parts = Vec::new();
        let mut c = 0;
        for _ in 0..n {
            let out = self.range(1, 6);
            let tail = if self.chance(70) { ", relu" } else { "" };
            let bn = if self.chance(40) { ", batchnorm" } else { "" };
            parts.push(format!("{} -> [conv({out}, 1){bn}{tail}]", x.name));
            c += out;
        }
        if self.chance(40) {
            parts.push(format!("{} -> maxpool(3, stride: 1, pad: 1)", x.name));
            c += x.c;
        }
        self.bind(format!("concat({})", parts.join(", ")), c, x.h, x.w)
    }

    /// A whole model source.
    pub fn model(mut self) -> String {
        let c = self.range(1, 5);
        let h = self.range(3, 24);
        let w = self.range(3, 24);
        let mut x = T {
            name: "x".into(),
            c,
            h,
            w,
        };
        let mut extra_output = None;
        for _ in 0..self.range(1, 6) {
            x = match self.below(6) {
                0 | 1 => self.conv(&x),
                2 => self.pool(&x),
                3 => self.skip(&x),
                4 => self.branches(&x),
                _ => {
                    let e = if self.chance(50) {
                        format!("{} -> scale(0.5)", x.name)
                    } else {
                        format!("{} -> dropout(0.3, inference: \"scale\")", x.name)
                    };
                    self.bind(e, x.c, x.h, x.w)
                }
            };
            if extra_output.is_none() && self.chance(10) {
                extra_output = Some(x.name.clone());
            }
        }
        let result = match self.below(3) {
            0 => x.name.clone(),
            1 => {
                let hidden = self.range(1, 9);
                let classes = self.range(1, 6);
                let layout = if self.chance(50) { "in_out" } else { "out_in" };
                let mid = if self.chance(50) {
                    ", relu"
                } else {
                    ", dropout(0.5, inference: \"scale\")"
                };
                format!(
                    "{} -> [flatten, dense({hidden}, layout: \"{layout}\"){mid}, dense({classes}), softmax]",
                    x.name
                )
            }
            _ => format!(
                "{} -> [global_avgpool, flatten, dense({})]",
                x.name,
                self.range(1, 7)
            ),
        };
        let ret = match extra_output {
            Some(e) if e != x.name => format!("    return {result}, {e}"),
            _ => format!("    return {result}"),
        };
        format!(
            "model random(x: [N, {c}, {h}, {w}]) {{\n{}\n{ret}\n}}\n",
            self.lines.join("\n")
        )
    }
}
