//! The instruction-set features kernels may use: one table, detected once.
//!
//! Compile-time choices (which algorithm a layer takes, how its weights are
//! packed) read a [`Features`] value the compiler gets from its `--target`;
//! run-time choices (which micro-kernel a call runs) read [`host`]. Keeping
//! the two apart is what makes an object file compiled for a named target
//! the same bytes on every machine.

/// x86-64 vector features the kernels have variants for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Features {
    /// AVX2 with FMA3 (x86-64-v3).
    pub avx2: bool,
    /// AVX-512F on top of AVX2 and FMA (x86-64-v4).
    pub avx512: bool,
}

impl Features {
    /// Plain x86-64 (SSE2): the portable loops only.
    pub const PORTABLE: Features = Features {
        avx2: false,
        avx512: false,
    };
    /// x86-64-v3: AVX2 and FMA.
    pub const X86_64_V3: Features = Features {
        avx2: true,
        avx512: false,
    };
    /// x86-64-v4: AVX-512 as well.
    pub const X86_64_V4: Features = Features {
        avx2: true,
        avx512: true,
    };

    /// What this CPU has, asked of the CPU itself (no environment switch).
    pub fn detect() -> Features {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            Features {
                avx2,
                avx512: avx2 && std::arch::is_x86_feature_detected!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Features::PORTABLE
    }

    /// These features without AVX-512.
    pub fn without_avx512(self) -> Features {
        Features {
            avx512: false,
            ..self
        }
    }

    /// The widest level these features reach, as a target name.
    pub fn level(self) -> &'static str {
        match (self.avx2, self.avx512) {
            (_, true) => "x86-64-v4",
            (true, false) => "x86-64-v3",
            (false, false) => "x86-64",
        }
    }
}

/// The features kernels use on this machine: [`Features::detect`], less
/// AVX-512 when `NETC_NO_AVX512` is set (a way to run the AVX2 kernels on
/// an AVX-512 machine). Detected once: a lookup per call would sit on the
/// hot path.
pub fn host() -> Features {
    static HOST: std::sync::OnceLock<Features> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| {
        let f = Features::detect();
        if std::env::var_os("NETC_NO_AVX512").is_some() {
            f.without_avx512()
        } else {
            f
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_nest() {
        assert_eq!(Features::X86_64_V4.without_avx512(), Features::X86_64_V3);
        assert_eq!(Features::X86_64_V3.level(), "x86-64-v3");
        assert_eq!(Features::PORTABLE.level(), "x86-64");
        // The host never claims more than the CPU has.
        let (h, d) = (host(), Features::detect());
        assert!(!h.avx512 || d.avx512);
        assert!(!h.avx2 || d.avx2);
    }
}
