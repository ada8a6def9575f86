#pragma once

// Hot loops are written so the compiler vectorizes them, and cloned for AVX-512 and
// AVX2, picked at load time from what the CPU has (same results: the operations are
// exact or correctly rounded, and never contracted into FMAs). target_clones cannot
// take templates (clang), hence the overloads.
#if defined(__clang__)
#define MQ_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MQ_HOT                                                                   \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), \
                 optimize("O3", "fp-contract=off")))
#endif

// Exceptions must not leave a cloned kernel (GCC may treat clones as nothrow and
// terminate): kernels report failure in their result and callers throw.
