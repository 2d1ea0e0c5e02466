//! The machine code is compiled for: `--target native` (this CPU, the
//! default), `x86-64-v3` (AVX2 and FMA) or `x86-64-v4` (AVX-512).
//!
//! A target fixes two things: the kernel features [`crate::select`] may
//! choose algorithms for (so packed weights and descriptors follow the
//! target, not the compiling machine), and the instruction set Cranelift
//! emits the generated function for. With a named target both are
//! independent of the host, so an object file is the same bytes wherever
//! it is compiled. Run-time kernels still pick their micro-kernels by the
//! CPU they run on.

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use netc_runtime::cpu::Features;
use std::fmt;
use std::str::FromStr;

/// A compile target: a name and the kernel features it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    kind: Kind,
    pub features: Features,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Native,
    Level(&'static str),
}

/// The named targets `--target` accepts besides `native`.
pub const NAMED: &[(&str, Features)] = &[
    ("x86-64-v3", Features::X86_64_V3),
    ("x86-64-v4", Features::X86_64_V4),
];

#[derive(Debug, thiserror::Error)]
#[error("unknown target `{0}`; the targets are: native, x86-64-v3, x86-64-v4")]
pub struct UnknownTarget(pub String);

#[derive(Debug, thiserror::Error)]
#[error("cranelift cannot build code for target {target}: {message}")]
pub struct IsaError {
    pub target: String,
    pub message: String,
}

impl Target {
    /// This CPU, as the kernels see it ([`netc_runtime::cpu::host`]:
    /// `NETC_NO_AVX512` counts).
    pub fn native() -> Target {
        Target {
            kind: Kind::Native,
            features: netc_runtime::cpu::host(),
        }
    }

    /// A named level, independent of the machine compiling.
    pub fn level(name: &str) -> Option<Target> {
        NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(n, f)| Target {
                kind: Kind::Level(n),
                features: f,
            })
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Native => "native",
            Kind::Level(n) => n,
        }
    }

    /// Whether code for this target runs on a CPU with `host` features.
    pub fn runs_on(&self, host: Features) -> bool {
        (!self.features.avx2 || host.avx2) && (!self.features.avx512 || host.avx512)
    }

    /// Cranelift's instruction set for this target, optimising for speed.
    pub fn isa(&self, pic: bool) -> Result<OwnedTargetIsa, IsaError> {
        let err = |message: String| IsaError {
            target: self.name().to_string(),
            message,
        };
        let mut flags = settings::builder();
        flags
            .set("opt_level", "speed")
            .map_err(|e| err(e.to_string()))?;
        flags
            .set("is_pic", if pic { "true" } else { "false" })
            .map_err(|e| err(e.to_string()))?;
        let builder = match self.kind {
            Kind::Native => cranelift_native::builder().map_err(|e| err(e.to_string()))?,
            Kind::Level(name) => {
                let mut b = cranelift_codegen::isa::lookup_by_name("x86_64-unknown-linux-gnu")
                    .map_err(|e| err(e.to_string()))?;
                b.enable(name).map_err(|e| err(e.to_string()))?;
                b
            }
        };
        builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| err(e.to_string()))
    }
}

impl Default for Target {
    fn default() -> Self {
        Target::native()
    }
}

impl FromStr for Target {
    type Err = UnknownTarget;

    fn from_str(s: &str) -> Result<Target, UnknownTarget> {
        if s == "native" {
            return Ok(Target::native());
        }
        Target::level(s).ok_or_else(|| UnknownTarget(s.to_string()))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Native => write!(f, "native ({})", self.features.level()),
            Kind::Level(n) => f.write_str(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_named_targets_and_refuses_others() {
        let v3: Target = "x86-64-v3".parse().unwrap();
        assert_eq!(v3.features, Features::X86_64_V3);
        assert!(!v3.features.avx512);
        let v4: Target = "x86-64-v4".parse().unwrap();
        assert!(v4.features.avx512);
        assert!(v4.runs_on(Features::X86_64_V4));
        assert!(!v4.runs_on(Features::X86_64_V3));
        let e = "x86-64-v5".parse::<Target>().unwrap_err();
        assert!(e.to_string().contains("x86-64-v4"), "{e}");
        assert_eq!("native".parse::<Target>().unwrap().name(), "native");
    }

    #[test]
    fn named_isas_build() {
        for (name, _) in NAMED {
            let isa = Target::level(name).unwrap().isa(true).unwrap();
            assert_eq!(isa.triple().architecture.to_string(), "x86_64");
        }
    }
}
