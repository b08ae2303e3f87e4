//! Hot loops, compiled three times: once for the baseline target (the scalar twin,
//! always there), once with AVX2 + FMA and once with AVX-512 (F, BW, VL) enabled, chosen
//! at run time.
//!
//! The bodies are written once as `#[inline(always)]` generic functions over contiguous
//! slices; each kernel made with `kernel!` has a scalar entry and one entry per tier
//! that inline the same body, so the compiler vectorizes each copy with that tier's
//! registers. Hand-written kernels (the dense, int8 and depthwise products) check
//! [`level`] and the [`extensions`] themselves. [`level`] picks the best tier the CPU
//! has, unless the environment says otherwise: `SLIMNN_FORCE_SCALAR=1` forces the scalar
//! twins and `SLIMNN_FORCE_AVX2=1` caps the tier at AVX2 with no dot-product extension;
//! CI runs the kernel tests each way, and the twin tests compare the tier in use with the
//! scalar copy. This module is the only place for `unsafe` and `std::arch`.

pub(crate) mod dense;
pub(crate) mod depthwise;
pub(crate) mod gemm;
pub(crate) mod half;
pub(crate) mod int8;
pub(crate) mod matmul;
pub(crate) mod mmap;
pub(crate) mod q4;
pub(crate) mod quant;
pub(crate) mod select;
pub(crate) mod sparse;

use std::sync::OnceLock;

/// The instruction-set tier the dispatched kernels use (ordered: each includes the
/// previous).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Baseline code (SSE2 on x86-64), the reference twin of every kernel.
    Scalar,
    /// AVX2 + FMA.
    Avx2,
    /// AVX2 + FMA + AVX-512 F, BW and VL (512-bit registers, mask registers).
    Avx512,
}

/// Instructions beyond a tier that single kernels use where the CPU has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// AVX-VNNI: `vpdpbusd` on 256-bit registers (VEX encoding).
    pub avx_vnni: bool,
    /// AVX-512 VNNI: `vpdpbusd` on 512-bit registers (with the AVX-512 tier).
    pub avx512_vnni: bool,
    /// AVX-512 BF16: `vcvtneps2bf16` and `vdpbf16ps` (with the AVX-512 tier).
    pub avx512_bf16: bool,
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The tier in use: detected once; `SLIMNN_FORCE_SCALAR=1` forces the scalar twins and
/// `SLIMNN_FORCE_AVX2=1` caps the tier at AVX2.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        if env_set("SLIMNN_FORCE_SCALAR") {
            Level::Scalar
        } else if env_set("SLIMNN_FORCE_AVX2") {
            detected().min(Level::Avx2)
        } else {
            detected()
        }
    })
}

/// The extensions in use: those the CPU has whose tier is in use; none when
/// `SLIMNN_FORCE_SCALAR` or `SLIMNN_FORCE_AVX2` is set.
pub fn extensions() -> Extensions {
    static EXTENSIONS: OnceLock<Extensions> = OnceLock::new();
    *EXTENSIONS.get_or_init(|| {
        if env_set("SLIMNN_FORCE_SCALAR") || env_set("SLIMNN_FORCE_AVX2") {
            return Extensions::default();
        }
        let found = detected_extensions();
        let wide = level() >= Level::Avx512;
        Extensions {
            avx_vnni: found.avx_vnni,
            avx512_vnni: found.avx512_vnni && wide,
            avx512_bf16: found.avx512_bf16 && wide,
        }
    })
}

/// Whether a tier above the scalar one runs here. The twin tests compare the dispatched
/// kernel (the tier in use) with the scalar copy only then, and pass without comparing
/// otherwise (a `prop_assume!` would reject every case and fail the test); CI runs them
/// once per tier by forcing it.
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) fn simd_in_use() -> bool {
    level() > Level::Scalar
}

/// What the CPU supports, ignoring the environment.
pub(crate) fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            if has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
                return Level::Avx512;
            }
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// The extensions the CPU supports, ignoring the environment and the tier.
pub(crate) fn detected_extensions() -> Extensions {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            return Extensions {
                avx_vnni: has!("avxvnni"),
                avx512_vnni: has!("avx512f") && has!("avx512vnni"),
                avx512_bf16: has!("avx512f") && has!("avx512bf16"),
            };
        }
    }
    Extensions::default()
}

/// How a kernel ranks values: by magnitude or as they are.
pub(crate) trait Key: Copy + Send + Sync + 'static {
    fn key<T: crate::Scalar>(x: T) -> T;
}

/// Rank by `|x|`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Abs;

/// Rank by `x`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Identity;

impl Key for Abs {
    #[inline(always)]
    fn key<T: crate::Scalar>(x: T) -> T {
        x.abs()
    }
}

impl Key for Identity {
    #[inline(always)]
    fn key<T: crate::Scalar>(x: T) -> T {
        x
    }
}

/// Defines a dispatched kernel `$name` with its scalar twin `$name::scalar`, AVX2 copy
/// `$name::avx2` and AVX-512 copy `$name::avx512`, all running the `#[inline(always)]`
/// body `$body`.
macro_rules! kernel {
    (
        $(#[$doc:meta])*
        fn $name:ident $(<$($g:ident : $b:path),*>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident
    ) => {
        $(#[$doc])*
        pub(crate) fn $name $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            match $crate::kernels::level() {
                // SAFETY: `level()` returns Avx512 only if the CPU reports AVX2, FMA and
                // AVX-512 F, BW and VL.
                $crate::kernels::Level::Avx512 => return unsafe { $name::avx512 $(::<$($g),*>)? ($($arg),*) },
                // SAFETY: `level()` returns Avx2 only if the CPU reports AVX2 and FMA.
                $crate::kernels::Level::Avx2 => return unsafe { $name::avx2 $(::<$($g),*>)? ($($arg),*) },
                $crate::kernels::Level::Scalar => {}
            }
            $name::scalar $(::<$($g),*>)? ($($arg),*)
        }

        pub(crate) mod $name {
            #[allow(unused_imports)]
            use super::*;

            /// The scalar twin (baseline target features).
            #[allow(dead_code)]
            pub(crate) fn scalar $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
                $body $(::<$($g),*>)? ($($arg),*)
            }

            /// The same body compiled with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            pub(crate) fn avx2 $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
                $body $(::<$($g),*>)? ($($arg),*)
            }

            /// The same body compiled with AVX-512 F, BW and VL (and AVX2, FMA).
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
            pub(crate) fn avx512 $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
                $body $(::<$($g),*>)? ($($arg),*)
            }
        }
    };
}
pub(crate) use kernel;
