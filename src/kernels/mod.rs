//! Hot loops, compiled twice: once for the baseline target (the scalar twin, always
//! there) and once with AVX2 + FMA enabled, chosen at run time.
//!
//! The bodies are written once as `#[inline(always)]` generic functions over contiguous
//! slices; each kernel has a scalar entry and an AVX2 entry that inline the same body,
//! so the compiler vectorizes the AVX2 copy with 256-bit registers. [`level`] picks the
//! AVX2 copy when the CPU has AVX2 and FMA, unless the environment variable
//! `SLIMNN_FORCE_SCALAR` is set (CI runs the scalar twins that way too). The int8 matrix
//! product also has an AVX-VNNI version (`vpdpbusd`), used where the CPU has it unless
//! `SLIMNN_FORCE_AVX2` is set. This module is the only place for `unsafe` and
//! `std::arch`.

pub(crate) mod dense;
pub(crate) mod depthwise;
pub(crate) mod gemm;
pub(crate) mod half;
pub(crate) mod mmap;
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
    /// AVX2 + FMA + AVX-VNNI (`vpdpbusd`: 8-bit dot products into 32-bit lanes).
    AvxVnni,
}

/// The tier in use: detected once; `SLIMNN_FORCE_SCALAR=1` forces the scalar twins and
/// `SLIMNN_FORCE_AVX2=1` caps the tier at AVX2.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0");
    *LEVEL.get_or_init(|| {
        if set("SLIMNN_FORCE_SCALAR") {
            Level::Scalar
        } else if set("SLIMNN_FORCE_AVX2") {
            detected().min(Level::Avx2)
        } else {
            detected()
        }
    })
}

/// Whether the AVX2 copies of the kernels run here: the CPU has AVX2 and FMA and the
/// scalar tier is not forced (`SLIMNN_FORCE_SCALAR=1` simulates a CPU without them).
/// The twin tests compare the AVX2 copy with the scalar one only then, and pass without
/// comparing otherwise (a `prop_assume!` would reject every case and fail the test).
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) fn avx2_in_use() -> bool {
    level() >= Level::Avx2
}

/// What the CPU supports, ignoring the environment.
pub(crate) fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        if std::arch::is_x86_feature_detected!("avxvnni") {
            return Level::AvxVnni;
        }
        return Level::Avx2;
    }
    Level::Scalar
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

/// Defines a dispatched kernel `$name` with its scalar twin `$name::scalar` and AVX2
/// copy, all running the `#[inline(always)]` body `$body`.
macro_rules! kernel {
    (
        $(#[$doc:meta])*
        fn $name:ident $(<$($g:ident : $b:path),*>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident
    ) => {
        $(#[$doc])*
        pub(crate) fn $name $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::level() >= $crate::kernels::Level::Avx2 {
                // SAFETY: `level()` returns Avx2 only if the CPU reports AVX2 and FMA.
                return unsafe { $name::avx2 $(::<$($g),*>)? ($($arg),*) };
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
        }
    };
}
pub(crate) use kernel;
