/* moemlora_simd.h - compute kernels of moemlora with run-time ISA dispatch.
 *
 * One scalar reference per kernel, then AVX2+FMA, AVX-512 (F,BW,DQ,VL) and NEON
 * versions of the same kernels in this header. Per-ISA functions carry
 * __attribute__((target(...))), so users need no -m flags; the dispatcher picks
 * the best ISA from cpuid + xgetbv (OS saves the register state) and caches it.
 * The vector ISAs share one blocked GEMM driver and most kernel bodies: each
 * ISA brings a thin width layer over its intrinsics, its micro-kernels come
 * from one body, and only where the algorithm differs does it keep its own.
 *
 * Usage:
 *     #define MOEMLORA_IMPLEMENTATION      // in exactly one C/C++ file
 *     #include "moemlora_simd.h"          // (moemlora.h includes it for you)
 *
 *     mml_isa isa; char err[256];
 *     if (mml_simd_resolve(&isa, err, sizeof err) != 0) { puts(err); return 1; }
 *     const mml_kernels_t *k = mml_simd_kernels(isa);
 *     k->gemm_nn(M, N, K, A, lda, B, ldb, C, ldc, 0);
 *
 * Environment: MOEMLORA_ISA=scalar|avx2|avx512|neon forces an ISA (an ISA the
 * CPU lacks is an error, never a silent fallback). gemm_*_bf16 run the CPU's
 * AMX tiles where it has them (Intel Xeon from Sapphire Rapids on, Linux),
 * else its bf16 dot products, except on Intel's cores, where those are
 * slower than the fp32 GEMM on rounded copies (the emulation), which runs
 * there and everywhere else. MOEMLORA_BF16=emulate runs the emulation even
 * where the CPU has bf16 dot products or tiles; MOEMLORA_BF16=native runs the
 * dot products (not the tiles) even on Intel's cores, MOEMLORA_BF16=amx the
 * tiles; each makes mml_simd_resolve fail unless the chosen ISA runs that
 * path here (read once, at detection).
 * Config macros: MOEMLORA_STATIC (static linkage), MOEMLORA_API.
 * Link: -lsleef -lm.
 *
 * Conventions: matrices are row-major with explicit leading dimensions (in
 * elements); pointers may be unaligned; no kernel reads or writes past the given
 * extents; no kernel allocates (gemm packs into a static thread-local buffer);
 * kernels are single-threaded and reentrant.
 *
 * Chapters (grep the banners):
 *   >>kernels-api      kernel list, table type, public functions
 *   >>kernels-scalar   reference implementations (the semantics)
 *   >>kernels-gemm     the blocked GEMM driver every vector ISA runs
 *   >>kernels-shared   kernel bodies written once over a per-ISA width layer
 *   >>kernels-avx2     x86-64 AVX2 + FMA: width layer, kernels of its own
 *   >>kernels-avx512   x86-64 AVX-512 F/BW/DQ/VL: width layer, kernels of its own
 *   >>kernels-neon     aarch64 Advanced SIMD: width layer, kernels of its own
 *   >>crc32c           CRC32C: slice-by-8 tables, SSE4.2, ARMv8 CRC
 *   >>dispatch         cpuid/xgetbv/getauxval detection, tables, MOEMLORA_ISA
 * Accuracy, the dropout hash, the GEMM driver and where to add an ISA or a
 * micro-kernel: docs/KERNELS.md.
 */
#ifndef MOEMLORA_SIMD_H
#define MOEMLORA_SIMD_H

#include <stddef.h>
#include <stdint.h>

#ifndef MOEMLORA_API
#ifdef MOEMLORA_STATIC
#define MOEMLORA_API static
#else
#define MOEMLORA_API extern
#endif
#endif

#ifndef MML_RESTRICT
#define MML_RESTRICT __restrict
#endif

#ifdef __cplusplus
extern "C" {
#endif

// >>kernels-api -------------------------------------------------------------

typedef enum mml_isa {
    MML_ISA_SCALAR = 0,
    MML_ISA_AVX2 = 1,
    MML_ISA_AVX512 = 2,
    MML_ISA_NEON = 3,
    MML_ISA_COUNT = 4
} mml_isa;

typedef struct mml_adam_hp {   /* PyTorch Adam semantics */
    float lr, beta1, beta2, eps;
    float bc1, bc2;            /* 1 - beta1^t, 1 - beta2^t (caller computes) */
    float weight_decay;        /* L2 added to the gradient (0 = off) */
} mml_adam_hp;
/* update per element: g' = g + wd*p; m = b1*m + (1-b1)*g'; v = b2*v + (1-b2)*g'^2;
   p -= lr * (m/bc1) / (sqrt(v/bc2) + eps) */

/* The kernel list: X(return type, name, parameter list). It generates the table
 * type and every ISA's table, so a kernel missing in one ISA is a compile error.
 * Semantics (the scalar reference is the definition):
 *  gemm_nn   C[M,N] (+)= A[M,K] . B[K,N]
 *  gemm_nt   C[M,N] (+)= A[M,K] . B[N,K]^T          (dX = dY . W^T)
 *  gemm_tn   C[M,N] (+)= A[K,M]^T . B[K,N]          (dW += X^T . dY)
 *            "(+)=" : accumulate ? C + ... : ...; K may be 0.
 *  gemm_nn_bf16 / gemm_nt_bf16 / gemm_tn_bf16  the same products with every
 *            element of A and B first rounded to bf16 (mml__bf16_round: to
 *            nearest even, as vcvtne2ps2bf16 does), products summed in fp32;
 *            AVX-512 runs AMX's tdpbf16ps where the CPU has AMX-BF16, else
 *            vdpbf16ps where it has AVX512_BF16, NEON bfdot
 *            where it has BF16, elsewhere the ISA's fp32 GEMM on rounded
 *            copies (equal up to summation order)
 *  gemm_pair  C1[M,N1] (+)= op(A) . B1[K,N1] and C2[M,N2] (+)= op(A) . B2[K,N2],
 *            op(A) = A[M,K] (a_trans 0, as gemm_nn) or A[K,M]^T (1, as
 *            gemm_tn): two products on one left operand, each exactly what
 *            the single call gives (x W beside x A_all, x^T dz beside x^T dT)
 *  gemm_pair_bf16  the same with gemm_nn_bf16 / gemm_tn_bf16's products; on
 *            the AMX tiles and with vdpbf16ps A is converted once for both
 *            (where N1, N2 <= 256 and, vdpbf16ps, both B blocks fit the
 *            pack buffer)
 *  gemm_pack_size  floats gemm_pack_b writes for B[K,N] (this ISA's layout)
 *  gemm_pack_b  B[K,N] (row-major, ldb) -> Bp, the layout gemm_packed reads
 *  gemm_packed  C[M,N] = A[M,K] . B (+ bias[j] if bias) (then max(., 0) if relu),
 *            B packed once by gemm_pack_b (weights reused over many calls)
 *  gemm_pack_size_bf16 / gemm_pack_b_bf16 / gemm_packed_bf16  the same with
 *            gemm_nn_bf16's products (A and B rounded to bf16, fp32 sums); the
 *            layout is that of what gemm_nn_bf16 runs: AMX's tiles of bf16
 *            pairs, vdpbf16ps's pair panels, the fp32 panels rounded (AVX-512
 *            emulation), else B rounded, row-major, for gemm_nn_bf16
 *  add_bias  C[i,j] += bias[j]
 *  colsum_add out[j] += sum_i A[i,j]
 *  relu_fwd  y = max(x, 0) (y may alias x)
 *  relu_bwd  dx = y > 0 ? dy : 0 (dx may alias dy)
 *  dropout_keep  keep[i] = 1 if element offset+i survives dropout at this rate and
 *            seed, else 0: the same mask on every ISA (hash in the dropout section)
 *  mask_scale    y[i] = keep[i] ? x[i] * scale : 0 (y may alias x); with
 *            dropout_keep and scale = 1/(1-rate) it applies dropout, in forward
 *            and again (same mask) in backward
 *  bias_dropout_relu  C[M,N] (contiguous) = C + bias, then if rate > 0 dropout
 *            (element (i,j) has index offset + i*N + j; its keep byte stored in
 *            keep[i*N+j] unless keep is NULL), then if relu max(., 0): the bits of
 *            add_bias, dropout_keep, mask_scale and relu_fwd in turn, in one pass
 *  dropout_relu_bwd  dz[M,N] (contiguous): if y, dz = y > 0 ? dz : 0; then
 *            dz = keep ? (keep[i] ? dz * scale : 0) : dz * scale; then if colsum,
 *            colsum[j] += sum_i dz[i,j]: the bits of relu_bwd, mask_scale and
 *            colsum_add in turn (y > 0 implies kept when y = relu(dropout(.)),
 *            so that layer passes keep = NULL)
 *  softmax_rows  row-wise stable softmax, E in 1..256
 *  sigmoid   y = 1/(1+exp(-x)) (stable form)
 *  bce_logits  returns sum_i max(z,0) - z*y + log1p(exp(-|z|)) (double sum);
 *            dz (if not NULL) = scale*(sigmoid(z) - y)
 *  gather_rows   out[i*ldo+j] = table[ids[i]*dim+j]
 *  scatter_add_rows  table_grad[ids[i]*dim+j] += g[i*ldg+j], i in order
 *  adam_dense / adam_rows  Adam update (see mml_adam_hp); adam_rows only for the
 *            listed unique rows of [*, dim] tables (g is the full gradient table)
 *  adam_steps  `steps` Adam updates with a zero gradient, step s with hp[s]; if
 *            first is not NULL, element i takes only steps s >= first[i]; the
 *            same bits as the matching adam_dense calls on a zero g
 *  block_scale  U[i, e*r+j] = w[i*ldw+e] * T[i, e*r+j]
 *  block_dot    dw[i*ldw+e] (+)= sum_j dU[i,e*r+j] * T[i,e*r+j]
 *  axpy y += a*x;  dot;  mul z = x*y (z may alias) */
#define MML_KERNEL_LIST(X)                                                          \
    X(void, gemm_nn, (int M, int N, int K, const float *MML_RESTRICT A, int lda,    \
                      const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C,  \
                      int ldc, int accumulate))                                     \
    X(void, gemm_nt, (int M, int N, int K, const float *MML_RESTRICT A, int lda,    \
                      const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C,  \
                      int ldc, int accumulate))                                     \
    X(void, gemm_tn, (int M, int N, int K, const float *MML_RESTRICT A, int lda,    \
                      const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C,  \
                      int ldc, int accumulate))                                     \
    X(void, gemm_nn_bf16, (int M, int N, int K, const float *MML_RESTRICT A, int lda, \
                           const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C, \
                           int ldc, int accumulate))                                \
    X(void, gemm_nt_bf16, (int M, int N, int K, const float *MML_RESTRICT A, int lda, \
                           const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C, \
                           int ldc, int accumulate))                                \
    X(void, gemm_tn_bf16, (int M, int N, int K, const float *MML_RESTRICT A, int lda, \
                           const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C, \
                           int ldc, int accumulate))                                \
    X(void, gemm_pair, (int M, int K, const float *A, int lda, int a_trans, int N1,  \
                        const float *B1, int ldb1, float *C1, int ldc1, int N2,     \
                        const float *B2, int ldb2, float *C2, int ldc2, int accumulate)) \
    X(void, gemm_pair_bf16, (int M, int K, const float *A, int lda, int a_trans, int N1, \
                             const float *B1, int ldb1, float *C1, int ldc1, int N2, \
                             const float *B2, int ldb2, float *C2, int ldc2,        \
                             int accumulate))                                       \
    X(int64_t, gemm_pack_size, (int K, int N))                                      \
    X(void, gemm_pack_b, (int K, int N, const float *MML_RESTRICT B, int ldb,       \
                          float *MML_RESTRICT Bp))                                  \
    X(void, gemm_packed, (int M, int N, int K, const float *MML_RESTRICT A, int lda, \
                          const float *MML_RESTRICT Bp, float *MML_RESTRICT C,      \
                          int ldc, const float *bias, int relu))                    \
    X(int64_t, gemm_pack_size_bf16, (int K, int N))                                 \
    X(void, gemm_pack_b_bf16, (int K, int N, const float *MML_RESTRICT B, int ldb,  \
                               float *MML_RESTRICT Bp))                             \
    X(void, gemm_packed_bf16, (int M, int N, int K, const float *MML_RESTRICT A,    \
                               int lda, const float *MML_RESTRICT Bp,               \
                               float *MML_RESTRICT C, int ldc, const float *bias,   \
                               int relu))                                           \
    X(void, add_bias, (int M, int N, const float *bias, float *C, int ldc))         \
    X(void, colsum_add, (int M, int N, const float *A, int lda, float *out))        \
    X(void, relu_fwd, (int64_t n, const float *x, float *y))                        \
    X(void, relu_bwd, (int64_t n, const float *y, const float *dy, float *dx))      \
    X(void, dropout_keep, (int64_t n, float rate, uint64_t seed, uint64_t offset,   \
                           uint8_t *keep))                                          \
    X(void, mask_scale, (int64_t n, const uint8_t *keep, const float *x, float *y,  \
                         float scale))                                              \
    X(void, bias_dropout_relu, (int M, int N, const float *bias, float *C, float rate, \
                                uint64_t seed, uint64_t offset, uint8_t *keep, int relu)) \
    X(void, dropout_relu_bwd, (int M, int N, const float *y, const uint8_t *keep,   \
                               float scale, float *dz, float *colsum))              \
    X(void, softmax_rows, (int M, int E, const float *x, int ldx, float *y, int ldy)) \
    X(void, sigmoid, (int64_t n, const float *x, float *y))                         \
    X(double, bce_logits, (int64_t n, const float *z, const float *label,           \
                           float scale, float *dz))                                 \
    X(void, gather_rows, (int n, const int32_t *ids, const float *table, int dim,   \
                          float *out, int ldo))                                     \
    X(void, scatter_add_rows, (int n, const int32_t *ids, const float *g, int ldg,  \
                               int dim, float *table_grad))                         \
    X(void, adam_dense, (int64_t n, float *p, const float *g, float *m, float *v,   \
                         const mml_adam_hp *hp))                                    \
    X(void, adam_rows, (int nrows, const int32_t *rows, int dim, float *p,          \
                        const float *g, float *m, float *v, const mml_adam_hp *hp)) \
    X(void, adam_steps, (int64_t n, float *p, float *m, float *v,                   \
                         const mml_adam_hp *hp, int steps, const int32_t *first))   \
    X(void, block_scale, (int M, int E, int r, const float *T, int ldt,             \
                          const float *w, int ldw, float *U, int ldu))              \
    X(void, block_dot, (int M, int E, int r, const float *dU, int ldu,              \
                        const float *T, int ldt, float *dw, int ldw, int accumulate)) \
    X(void, axpy, (int64_t n, float a, const float *x, float *y))                   \
    X(float, dot, (int64_t n, const float *x, const float *y))                      \
    X(void, mul, (int64_t n, const float *x, const float *y, float *z))

#define MML__KFIELD(ret, name, params) ret (*name) params;
typedef struct mml_kernels_t {
    MML_KERNEL_LIST(MML__KFIELD)
} mml_kernels_t;

/* Compiled in AND supported by CPU + OS (cpuid + xgetbv). */
MOEMLORA_API int mml_simd_isa_supported(mml_isa isa);
/* Best supported ISA; detection runs once and is cached. */
MOEMLORA_API mml_isa mml_simd_best(void);
/* "scalar", "avx2", "avx512", "neon" ("?" for anything else). */
MOEMLORA_API const char *mml_isa_name(mml_isa isa);
/* 0 and *out set if s names an ISA, -1 otherwise. */
MOEMLORA_API int mml_isa_from_name(const char *s, mml_isa *out);
/* MOEMLORA_ISA from the environment if set (unknown or unsupported: returns -1
 * and writes the reason into err), else mml_simd_best(); -1 as well when
 * MOEMLORA_BF16 is unknown, or native and that ISA has no bf16 dot products here. */
MOEMLORA_API int mml_simd_resolve(mml_isa *out, char *err, size_t errlen);
/* The kernel table of an ISA, NULL if not supported here. */
MOEMLORA_API const mml_kernels_t *mml_simd_kernels(mml_isa isa);
/* Name of the ISA mml_simd_resolve picks ("?" on error). */
MOEMLORA_API const char *mml_simd_isa_name(void);
/* CRC32C (Castagnoli) of p[0..n), chainable: mml_crc32c(mml_crc32c(0, a, na), b,
 * nb) is the CRC of a followed by b; mml_crc32c(0, "123456789", 9) = 0xE3069283.
 * Runs the SSE4.2 or ARMv8 CRC instructions when the CPU has them (the value
 * does not depend on the path). Thread-safe. */
MOEMLORA_API uint32_t mml_crc32c(uint32_t crc, const void *p, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* MOEMLORA_SIMD_H */

/* ======================================================================== */
#ifdef MOEMLORA_IMPLEMENTATION
#ifndef MOEMLORA_SIMD_IMPLEMENTED
#define MOEMLORA_SIMD_IMPLEMENTED

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define MML__X86 1
#include <immintrin.h>
#if defined(__GNUC__) || defined(__clang__)
#include <cpuid.h>
#endif
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#if defined(__GNUC__) && !defined(__clang__)
#include <arm_acle.h>
#endif
#if defined(__linux__)
#include <sys/auxv.h>
#endif
#endif
#if defined(MML__X86) || defined(__aarch64__)
#define MML__VEC 1 /* a vector ISA is compiled in: the GEMM driver and shared bodies */
#endif

#ifdef __cplusplus
#define MML__TLS thread_local
extern "C" {
#else
#define MML__TLS _Thread_local
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MML__ALIGN64 __attribute__((aligned(64)))
#define MML__MAYBE_UNUSED __attribute__((unused))
#else
#define MML__ALIGN64
#define MML__MAYBE_UNUSED
#endif

/* Every function of ISA S carries MML__ATTR_S (its target attribute; each ISA
 * chapter defines its own), small inline helpers included. */
#define MML__ATTR_scalar
#define MML__INLINE(S) MML__ATTR_##S static inline

/* Rows addressed by id (scatters, Adam over a batch's rows) land
 * anywhere in tables far larger than the caches: loops over such rows ask for
 * the lines of the row MML__ROW_AHEAD ids on while they work on this one. */
#define MML__ROW_AHEAD 4
/* GCC 12 counts a prefetch as no effect at all: a function that only asks
 * for lines is taken as side-effect free and its calls are dropped. The
 * empty volatile asm keeps them (it emits nothing). */
#if defined(__GNUC__) || defined(__clang__)
#define MML__KEEP_PREFETCH(x) __asm__ __volatile__("" : : "r"(x))
#endif
static inline void mml__prefetch_floats(const float *x, int64_t n) {
#if defined(__GNUC__) || defined(__clang__)
    for (int64_t j = 0; j < n; j += 16) __builtin_prefetch(x + j, 1);
    MML__KEEP_PREFETCH(x);
#else
    (void)x, (void)n;
#endif
}
/* The lines of `bytes` bytes at x into the outer caches only (L2 on x86):
 * for lines wanted several rows on, which would crowd the few lines L1 can
 * have on the way. */
static inline void mml__prefetch_far(const void *x, int64_t bytes) {
#if defined(__GNUC__) || defined(__clang__)
    for (int64_t j = 0; j < bytes; j += 64) __builtin_prefetch((const char *)x + j, 1, 2);
    MML__KEEP_PREFETCH(x);
#else
    (void)x, (void)bytes;
#endif
}

/* Adam streams four arrays that the rest of a training step has pushed out
 * of cache; the hardware prefetcher alone leaves it waiting on memory (about
 * 1 ns per float against 0.25 in cache). Asking for the lines 2 KB ahead
 * halves that. */
#define MML__ADAM_PREFETCH 512
static inline void mml__adam_prefetch(const float *p, const float *g, const float *m, const float *v,
                                      int64_t i) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p + i, 0, 3);
    __builtin_prefetch(g + i, 0, 3);
    __builtin_prefetch(m + i, 0, 3);
    __builtin_prefetch(v + i, 0, 3);
    MML__KEEP_PREFETCH(p);
#else
    (void)p, (void)g, (void)m, (void)v, (void)i;
#endif
}

// >>kernels-scalar ----------------------------------------------------------

/* adam_steps as adam_dense calls on a block of zeros (bit-identical to them). */
#define MML__ADAM_STEPS_PLAIN(S)                                                      \
    MML__ATTR_##S static void mml__adam_steps_##S(int64_t n, float *p, float *m, float *v, \
                                                  const mml_adam_hp *hp, int steps,   \
                                                  const int32_t *first) {             \
        static const float zeros[256] = {0.0f};                                       \
        for (int64_t o = 0; o < n;) { /* runs of one first step, <= 256 long */       \
            int64_t c = 1;                                                            \
            int s0 = first ? first[o] : 0;                                            \
            while (o + c < n && c < 256 && (!first || first[o + c] == s0)) c++;       \
            for (int s = s0 < 0 ? 0 : s0; s < steps; s++)                             \
                mml__adam_dense_##S(c, p + o, zeros, m + o, v + o, hp + s);           \
            o += c;                                                                   \
        }                                                                             \
    }

/* gemm_packed's epilogue on C[M,N]: + bias (if any), then max(., 0) if relu. */
#define MML__BIAS_RELU(S, M, N, bias, relu, C, ldc)                                   \
    do {                                                                              \
        if (bias) mml__add_bias_##S(M, N, bias, C, ldc);                              \
        if (relu)                                                                     \
            for (int i_ = 0; i_ < (M); i_++)                                          \
                mml__relu_fwd_##S(N, (C) + (int64_t)i_ * (ldc), (C) + (int64_t)i_ * (ldc)); \
    } while (0)

/* The bf16 packed GEMM of an ISA whose fp32 gemm_packed has no layout of its
 * own (MML__PACKED_PLAIN): Bp is B rounded to bf16, row-major (ld N), and a
 * call runs S's gemm_nn_bf16. */
#define MML__PACKED_BF16_PLAIN(S)                                                     \
    MML__ATTR_##S static int64_t mml__gemm_pack_size_bf16_##S(int K, int N) {         \
        return K > 0 && N > 0 ? (int64_t)K * N : 0;                                   \
    }                                                                                 \
    MML__ATTR_##S static void mml__gemm_pack_b_bf16_##S(int K, int N, const float *MML_RESTRICT B, \
                                                         int ldb, float *MML_RESTRICT Bp) { \
        for (int k = 0; k < K; k++)                                                   \
            for (int j = 0; j < N; j++) Bp[(int64_t)k * N + j] = mml__bf16_round(B[(int64_t)k * ldb + j]); \
    }                                                                                 \
    MML__ATTR_##S static void mml__gemm_packed_bf16_##S(                              \
        int M, int N, int K, const float *MML_RESTRICT A, int lda, const float *MML_RESTRICT Bp, \
        float *MML_RESTRICT C, int ldc, const float *bias, int relu) {                \
        if (M <= 0 || N <= 0) return;                                                 \
        mml__gemm_nn_bf16_##S(M, N, K, A, lda, Bp, N, C, ldc, 0);                     \
        MML__BIAS_RELU(S, M, N, bias, relu, C, ldc);                                  \
    }

/* gemm_pair of ISA S as two calls of its gemm_nn / gemm_tn (SUF: the
 * precision's suffix of their names, empty or _bf16), named NAME. */
#define MML__GEMM_PAIR_CALLS_AS(NAME, S, SUF)                                         \
    MML__ATTR_##S static void NAME(                                                   \
        int M, int K, const float *A, int lda, int a_trans, int N1, const float *B1, int ldb1, float *C1, \
        int ldc1, int N2, const float *B2, int ldb2, float *C2, int ldc2, int accumulate) { \
        if (a_trans) {                                                                \
            mml__gemm_tn##SUF##_##S(M, N1, K, A, lda, B1, ldb1, C1, ldc1, accumulate); \
            mml__gemm_tn##SUF##_##S(M, N2, K, A, lda, B2, ldb2, C2, ldc2, accumulate); \
        } else {                                                                      \
            mml__gemm_nn##SUF##_##S(M, N1, K, A, lda, B1, ldb1, C1, ldc1, accumulate); \
            mml__gemm_nn##SUF##_##S(M, N2, K, A, lda, B2, ldb2, C2, ldc2, accumulate); \
        }                                                                             \
    }
#define MML__GEMM_PAIR_CALLS(S, SUF) MML__GEMM_PAIR_CALLS_AS(mml__gemm_pair##SUF##_##S, S, SUF)
/* gemm_pair_bf16 of ISA S named NAME: where DOT holds (the CPU's bf16 dot
 * product), each sliver of A rounded into pairs once for both products
 * (mml__gemm_pair_run on mml__gemm_isa_bf16_S); else two calls. */
#define MML__GEMM_PAIR_BF16_AS(NAME, S, DOT)                                          \
    MML__GEMM_PAIR_CALLS_AS(NAME##_calls, S, _bf16)                                   \
    MML__ATTR_##S static void NAME(                                                   \
        int M, int K, const float *A, int lda, int a_trans, int N1, const float *B1, int ldb1, float *C1, \
        int ldc1, int N2, const float *B2, int ldb2, float *C2, int ldc2, int accumulate) { \
        if (DOT)                                                                      \
            mml__gemm_pair_run(&mml__gemm_isa_bf16_##S, M, K, A, lda, a_trans, N1, B1, ldb1, C1, ldc1, N2, \
                               B2, ldb2, C2, ldc2, accumulate);                       \
        else                                                                          \
            NAME##_calls(M, K, A, lda, a_trans, N1, B1, ldb1, C1, ldc1, N2, B2, ldb2, C2, ldc2, accumulate); \
    }
#define MML__GEMM_PAIRS_CALLS(S) MML__GEMM_PAIR_CALLS(S, ) MML__GEMM_PAIR_CALLS(S, _bf16)

/* Packed GEMM where an ISA has no layout of its own: Bp is B row-major (ld N)
 * and gemm_packed is that ISA's gemm_nn, add_bias and relu_fwd in turn. */
#define MML__PACKED_PLAIN(S)                                                          \
    MML__ATTR_##S static int64_t mml__gemm_pack_size_##S(int K, int N) {              \
        return K > 0 && N > 0 ? (int64_t)K * N : 0;                                   \
    }                                                                                 \
    MML__ATTR_##S static void mml__gemm_pack_b_##S(int K, int N, const float *MML_RESTRICT B, \
                                                   int ldb, float *MML_RESTRICT Bp) { \
        for (int k = 0; k < K && N > 0; k++)                                          \
            memcpy(Bp + (int64_t)k * N, B + (int64_t)k * ldb, (size_t)N * sizeof(float)); \
    }                                                                                 \
    MML__ATTR_##S static void mml__gemm_packed_##S(int M, int N, int K, const float *MML_RESTRICT A, \
                                                   int lda, const float *MML_RESTRICT Bp, \
                                                   float *MML_RESTRICT C, int ldc,    \
                                                   const float *bias, int relu) {     \
        if (M <= 0 || N <= 0) return;                                                 \
        mml__gemm_nn_##S(M, N, K, A, lda, Bp, N, C, ldc, 0);                          \
        MML__BIAS_RELU(S, M, N, bias, relu, C, ldc);                                  \
    }

static void mml__gemm_nn_scalar(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                                const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C,
                                int ldc, int accumulate) {
    for (int i = 0; i < M; i++) {
        float *c = C + (int64_t)i * ldc;
        if (!accumulate)
            for (int j = 0; j < N; j++) c[j] = 0.0f;
        for (int k = 0; k < K; k++) {
            float a = A[(int64_t)i * lda + k];
            const float *b = B + (int64_t)k * ldb;
            for (int j = 0; j < N; j++) c[j] += a * b[j];
        }
    }
}

/* x rounded to bf16 and back, as vcvtne2ps2bf16 rounds: to nearest even, a
 * denormal input to the zero of its sign (the instruction's DAZ), NaN quiet.
 * bf16 keeps fp32's exponent, so a product of two is exact in fp32. */
static inline float mml__bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7F800000u) == 0) u &= 0x80000000u;
    else if ((u & 0x7FFFFFFFu) > 0x7F800000u) u |= 0x00400000u;
    else u += 0x7FFFu + ((u >> 16) & 1u);
    u &= 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* The bf16 GEMMs' reference: gemm_nn_scalar's loops on rounded inputs
 * (a_trans: A[k*lda + i]; b_trans: B[j*ldb + k]). */
static void mml__gemm_bf16_ref(int M, int N, int K, const float *A, int lda, int a_trans,
                               const float *B, int ldb, int b_trans, float *C, int ldc,
                               int accumulate) {
    for (int i = 0; i < M; i++) {
        float *c = C + (int64_t)i * ldc;
        if (!accumulate)
            for (int j = 0; j < N; j++) c[j] = 0.0f;
        for (int k = 0; k < K; k++) {
            const float a = mml__bf16_round(a_trans ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k]);
            for (int j = 0; j < N; j++)
                c[j] += a * mml__bf16_round(b_trans ? B[(int64_t)j * ldb + k] : B[(int64_t)k * ldb + j]);
        }
    }
}
#define MML__GEMM_BF16_SCALAR(OP, AT, BT)                                             \
    static void mml__gemm_##OP##_bf16_scalar(int M, int N, int K, const float *MML_RESTRICT A, \
                                             int lda, const float *MML_RESTRICT B, int ldb, \
                                             float *MML_RESTRICT C, int ldc, int accumulate) { \
        mml__gemm_bf16_ref(M, N, K, A, lda, AT, B, ldb, BT, C, ldc, accumulate);      \
    }
MML__GEMM_BF16_SCALAR(nn, 0, 0) MML__GEMM_BF16_SCALAR(nt, 0, 1) MML__GEMM_BF16_SCALAR(tn, 1, 0)

static void mml__gemm_nt_scalar(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                                const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C,
                                int ldc, int accumulate) {
    for (int i = 0; i < M; i++) {
        const float *a = A + (int64_t)i * lda;
        for (int j = 0; j < N; j++) {
            const float *b = B + (int64_t)j * ldb;
            float s = 0.0f;
            for (int k = 0; k < K; k++) s += a[k] * b[k];
            float *c = C + (int64_t)i * ldc + j;
            *c = accumulate ? *c + s : s;
        }
    }
}

static void mml__gemm_tn_scalar(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                                const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C,
                                int ldc, int accumulate) {
    if (!accumulate)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(int64_t)i * ldc + j] = 0.0f;
    for (int k = 0; k < K; k++) {
        const float *b = B + (int64_t)k * ldb;
        for (int i = 0; i < M; i++) {
            float a = A[(int64_t)k * lda + i];
            float *c = C + (int64_t)i * ldc;
            for (int j = 0; j < N; j++) c[j] += a * b[j];
        }
    }
}

static void mml__add_bias_scalar(int M, int N, const float *bias, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) C[(int64_t)i * ldc + j] += bias[j];
}

static void mml__colsum_add_scalar(int M, int N, const float *A, int lda, float *out) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) out[j] += A[(int64_t)i * lda + j];
}

static void mml__relu_fwd_scalar(int64_t n, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void mml__relu_bwd_scalar(int64_t n, const float *y, const float *dy, float *dx) {
    for (int64_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

/* Dropout mask: a counter-based hash, identical on every ISA.
 *   lowbias32(x): x ^= x>>16; x *= 0x7feb352d; x ^= x>>15; x *= 0x846ca68b; x ^= x>>16
 *   k1 = lowbias32(seed_lo ^ lowbias32(seed_hi + 0x9e3779b9))
 *   k2 = lowbias32(k1 + 0x632be5ab)
 *   for index i (64-bit): key1 = lowbias32(k1 ^ (i_hi * 0x85ebca6b)) (i_hi = i >> 32)
 *   h = lowbias32(lowbias32(i_lo ^ key1) ^ k2)
 *   keep  <=>  (h >> 8) >= thr,  thr = round(rate * 2^24)
 * The high half of the index is constant over runs of 2^32 indices, so SIMD code
 * computes key1 once per run and only mixes the 32-bit low half per lane. */
static inline uint32_t mml__lowbias32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

typedef struct mml__drop_keys { uint32_t k1, k2, thr; } mml__drop_keys;

static inline mml__drop_keys mml__dropout_keys(uint64_t seed, float rate) {
    mml__drop_keys d;
    d.k1 = mml__lowbias32((uint32_t)seed ^ mml__lowbias32((uint32_t)(seed >> 32) + 0x9e3779b9U));
    d.k2 = mml__lowbias32(d.k1 + 0x632be5abU);
    double t = (double)rate * 16777216.0 + 0.5;
    d.thr = t >= 16777216.0 ? 16777216U : (uint32_t)t;
    return d;
}

static inline uint32_t mml__dropout_key1(uint32_t k1, uint32_t hi) {
    return mml__lowbias32(k1 ^ (hi * 0x85ebca6bU));
}

/* dropout_keep of ISA S: its keep_run over the runs of indices whose high half
 * (so key1) is constant. */
#define MML__DROPOUT_KEEP(S)                                                          \
    MML__ATTR_##S static void mml__dropout_keep_##S(int64_t n, float rate, uint64_t seed, \
                                                    uint64_t offset, uint8_t *keep) { \
        if (!(rate > 0.0f)) {                                                         \
            if (n > 0) memset(keep, 1, (size_t)n);                                    \
            return;                                                                   \
        }                                                                             \
        const mml__drop_keys dk = mml__dropout_keys(seed, rate);                      \
        for (int64_t done = 0; done < n;) {                                           \
            const uint64_t idx = offset + (uint64_t)done, room = 4294967296ULL - (uint32_t)idx; \
            const int64_t cnt = (uint64_t)(n - done) > room ? (int64_t)room : n - done; \
            mml__keep_run_##S(keep + done, cnt, (uint32_t)idx,                        \
                              mml__dropout_key1(dk.k1, (uint32_t)(idx >> 32)), &dk);  \
            done += cnt;                                                              \
        }                                                                             \
    }

/* Does the element whose index has low half lo (and key1 from its high half) survive? */
static inline uint8_t mml__keep_bit(uint32_t lo, uint32_t key1, const mml__drop_keys *dk) {
    return (uint8_t)((mml__lowbias32(mml__lowbias32(lo ^ key1) ^ dk->k2) >> 8) >= dk->thr);
}

static void mml__keep_run_scalar(uint8_t *keep, int64_t n, uint32_t lo, uint32_t key1,
                                 const mml__drop_keys *dk) {
    for (int64_t i = 0; i < n; i++) keep[i] = mml__keep_bit(lo + (uint32_t)i, key1, dk);
}
MML__DROPOUT_KEEP(scalar)

static void mml__mask_scale_scalar(int64_t n, const uint8_t *keep, const float *x, float *y, float scale) {
    for (int64_t i = 0; i < n; i++) y[i] = keep[i] ? x[i] * scale : 0.0f;
}

static void mml__bias_dropout_relu_scalar(int M, int N, const float *bias, float *C, float rate, uint64_t seed,
                                          uint64_t offset, uint8_t *keep, int relu) {
    const int drop = rate > 0.0f;
    const mml__drop_keys dk = mml__dropout_keys(seed, rate);
    const float scale = drop ? 1.0f / (1.0f - rate) : 1.0f;
    uint32_t hi = (uint32_t)(offset >> 32), key1 = mml__dropout_key1(dk.k1, hi);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            const int64_t e = i * N + j;
            float v = C[e] + bias[j];
            if (drop) {
                const uint64_t idx = offset + (uint64_t)e;
                if ((uint32_t)(idx >> 32) != hi) key1 = mml__dropout_key1(dk.k1, hi = (uint32_t)(idx >> 32));
                const uint8_t k = mml__keep_bit((uint32_t)idx, key1, &dk);
                if (keep) keep[e] = k;
                v = k ? v * scale : 0.0f;
            }
            C[e] = relu && !(v > 0.0f) ? 0.0f : v;
        }
}

static void mml__dropout_relu_bwd_scalar(int M, int N, const float *y, const uint8_t *keep, float scale, float *dz,
                                         float *colsum) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            const int64_t e = i * N + j;
            float d = y && !(y[e] > 0.0f) ? 0.0f : dz[e];
            d = keep && !keep[e] ? 0.0f : d * scale;
            dz[e] = d;
            if (colsum) colsum[j] += d;
        }
}

static void mml__softmax_rows_scalar(int M, int E, const float *x, int ldx, float *y, int ldy) {
    for (int i = 0; i < M; i++) {
        const float *xi = x + (int64_t)i * ldx;
        float *yi = y + (int64_t)i * ldy;
        float mx = xi[0];
        for (int e = 1; e < E; e++) mx = xi[e] > mx ? xi[e] : mx;
        float s = 0.0f;
        for (int e = 0; e < E; e++) {
            yi[e] = expf(xi[e] - mx);
            s += yi[e];
        }
        float inv = 1.0f / s;
        for (int e = 0; e < E; e++) yi[e] *= inv;
    }
}

/* sigmoid from e = exp(-|x|): no overflow for any x. */
static inline float mml__sigmoid_from_e(float x, float e) {
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

static void mml__sigmoid_scalar(int64_t n, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) {
        float xi = x[i];
        y[i] = mml__sigmoid_from_e(xi, expf(-fabsf(xi)));
    }
}

static double mml__bce_logits_scalar(int64_t n, const float *z, const float *label, float scale,
                                     float *dz) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float zi = z[i], yi = label[i];
        float e = expf(-fabsf(zi));
        sum += (double)((zi > 0.0f ? zi : 0.0f) - zi * yi + log1pf(e));
        if (dz) dz[i] = scale * (mml__sigmoid_from_e(zi, e) - yi);
    }
    return sum;
}

static void mml__gather_rows_scalar(int n, const int32_t *ids, const float *table, int dim,
                                    float *out, int ldo) {
    for (int i = 0; i < n; i++)
        memcpy(out + (int64_t)i * ldo, table + (int64_t)ids[i] * dim, (size_t)dim * sizeof(float));
}

static void mml__scatter_add_rows_scalar(int n, const int32_t *ids, const float *g, int ldg,
                                         int dim, float *table_grad) {
    for (int i = 0; i < n; i++) {
        float *t = table_grad + (int64_t)ids[i] * dim;
        const float *gi = g + (int64_t)i * ldg;
        for (int j = 0; j < dim; j++) t[j] += gi[j];
    }
}

static void mml__adam_dense_scalar(int64_t n, float *p, const float *g, float *m, float *v,
                                   const mml_adam_hp *hp) {
    const float b1 = hp->beta1, b2 = hp->beta2, c1 = 1.0f - hp->beta1, c2 = 1.0f - hp->beta2;
    const float wd = hp->weight_decay, lr = hp->lr, eps = hp->eps;
    const float ibc1 = 1.0f / hp->bc1, ibc2 = 1.0f / hp->bc2;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi * ibc1) / (sqrtf(vi * ibc2) + eps);
    }
}

static void mml__adam_rows_scalar(int nrows, const int32_t *rows, int dim, float *p,
                                  const float *g, float *m, float *v, const mml_adam_hp *hp) {
    for (int r = 0; r < nrows; r++) {
        int64_t o = (int64_t)rows[r] * dim;
        mml__adam_dense_scalar(dim, p + o, g + o, m + o, v + o, hp);
    }
}

static void mml__block_scale_scalar(int M, int E, int r, const float *T, int ldt,
                                    const float *w, int ldw, float *U, int ldu) {
    for (int i = 0; i < M; i++)
        for (int e = 0; e < E; e++) {
            float we = w[(int64_t)i * ldw + e];
            const float *t = T + (int64_t)i * ldt + (int64_t)e * r;
            float *u = U + (int64_t)i * ldu + (int64_t)e * r;
            for (int j = 0; j < r; j++) u[j] = we * t[j];
        }
}

static void mml__block_dot_scalar(int M, int E, int r, const float *dU, int ldu, const float *T,
                                  int ldt, float *dw, int ldw, int accumulate) {
    for (int i = 0; i < M; i++)
        for (int e = 0; e < E; e++) {
            const float *a = dU + (int64_t)i * ldu + (int64_t)e * r;
            const float *b = T + (int64_t)i * ldt + (int64_t)e * r;
            float s = 0.0f;
            for (int j = 0; j < r; j++) s += a[j] * b[j];
            float *d = dw + (int64_t)i * ldw + e;
            *d = accumulate ? *d + s : s;
        }
}

static void mml__axpy_scalar(int64_t n, float a, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static float mml__dot_scalar(int64_t n, const float *x, const float *y) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

static void mml__mul_scalar(int64_t n, const float *x, const float *y, float *z) {
    for (int64_t i = 0; i < n; i++) z[i] = x[i] * y[i];
}

MML__PACKED_PLAIN(scalar)
MML__PACKED_BF16_PLAIN(scalar)
MML__GEMM_PAIRS_CALLS(scalar)
MML__ADAM_STEPS_PLAIN(scalar)

/* What the CPU runs (>>dispatch): 1 << isa per ISA, MML__CPU_* bits. */
static int mml__cpu(void);
#define MML__CPU_CRC32C (1 << 8) /* the CRC32C instructions of mml__crc32c_hw */
/* bf16 dot products in use: AVX512_BF16 beside AVX-512 (vdpbf16ps), aarch64
 * BF16 (bfdot), where the CPU has them (MML__CPU_BF16_HW) and they are not
 * slower than the emulation there (MML__CPU_BF16_SLOW), or where
 * MOEMLORA_BF16=native asks for them; MOEMLORA_BF16=emulate clears it
 * (>>dispatch) */
#define MML__CPU_BF16 (1 << 9)
#define MML__CPU_BF16_HW (1 << 10)
/* Intel's cores (without AMX) run vdpbf16ps at about half the rate of their
 * two fp32 FMA ports, so the fp32 GEMM on rounded copies is faster there
 * (a Xeon, family 6 model 207: gemm_nn_bf16 at 45% of the fp32 FMA peak with
 * vdpbf16ps, 70% emulated; AMD's Zen 4 and Zen 5 run it at twice the FMA's
 * rate). */
#define MML__CPU_BF16_SLOW (1 << 11)
/* AMX-TILE and AMX-BF16, the tile state enabled by the OS and granted to this
 * process (MML__CPU_AMX_HW); in use (MML__CPU_AMX) unless MOEMLORA_BF16 is
 * emulate or native. Where it is, gemm_*_bf16 run on the tiles. */
#define MML__CPU_AMX_HW (1 << 12)
#define MML__CPU_AMX (1 << 13)

#ifdef MML__VEC
// >>kernels-gemm ------------------------------------------------------------
/* One blocked GEMM runs every vector ISA. An ISA describes itself in an
 * mml__gemm_isa (micro-kernels, packers, widths) and the driver does the rest,
 * so the loop order below fixes how each element of C is summed:
 *   for jc (NC=256 columns): for pc (K split evenly into blocks <= KC=384):
 *     pack B[pc:pc+kc, jc:jc+nc] into k-major panels of 2W columns (the last
 *     one W wide when that fits), zero-padded, so micro-kernels load whole
 *     vectors;
 *     for ic (MR-row blocks, the last one smaller): for each panel:
 *       micro-kernel: mr x (W*nv) accumulators summed from zero over the
 *       block's k (one broadcast of A per row and k, nv FMAs); then + C (a k
 *       block after the first, or accumulate), + bias and ReLU (packed GEMM,
 *       last k block), stored through column masks.
 *   nn/nt read A in place (row pointers, k stride 1); for tn, when the ISA
 *   has pack_a, each MR x kc sliver of A[K,M] is first copied k-major (rows
 *   lda apart would all map to one L1 set).
 * The driver only moves panel pointers by mml__panel_bytes, so a micro-kernel
 * on other panels (bf16 pairs for vdpbf16ps, say) brings its own pack_b and
 * b_bytes/k_step and runs in the same loops. */
#define MML__GEMM_KC 384
#define MML__GEMM_NC 256
#define MML__GEMM_MR_MAX 12
/* A's rows packed as bf16 pairs row by row (mml__gemm_isa.a_rows_strided):
 * row i's pairs at i*MML__BF16_ROWS_LD (4-byte units) of mml__gemm_apack. */
#define MML__BF16_ROWS_LD (MML__GEMM_KC / 2)
/* Pack buffers shared by every ISA (one kernel runs at a time per thread). */
static MML__TLS float mml__gemm_pack[MML__GEMM_KC * MML__GEMM_NC] MML__ALIGN64;
static MML__TLS float mml__gemm_apack[MML__GEMM_KC * MML__GEMM_MR_MAX + 16] MML__ALIGN64;
typedef char mml__gemm_rows_fit[MML__GEMM_MR_MAX * MML__BF16_ROWS_LD <= MML__GEMM_KC * MML__GEMM_MR_MAX ? 1 : -1];

/* C[0:mr, 0:w] (+)= A . one panel b; the kernel's own mr and 2W-wide panel. */
typedef void (*mml__uk_fn)(int kc, const float *a, int64_t lda, const void *b, float *c,
                           int64_t ldc, int w, int load_c, const float *bias, int relu);
/* B[0:kc, 0:nc] (transposed: B[0:nc, 0:kc]) -> the panels of one block. */
typedef void (*mml__pack_b_fn)(int kc, int nc, const float *B, int64_t ldb, void *pb);
typedef void (*mml__gemm_fn)(int M, int N, int K, const float *A, int lda, const float *B,
                             int ldb, float *C, int ldc, int accumulate);

typedef struct mml__gemm_isa {
    int mr;                   /* rows per micro-kernel (<= MML__GEMM_MR_MAX) */
    int w;                    /* floats per vector: panels are 2w columns, the last w when it fits */
    int b_bytes, k_step;      /* packed B: bytes per element; a panel's k rounded up to k_step */
    /* [mode][nv-1][mr-1]; mode 0: A^T, 1: A rows in place, 2: rows in place with
     * the bias/ReLU epilogue (ISAs with a packed layout of their own) */
    const mml__uk_fn *uk;
    mml__pack_b_fn pack_b[2]; /* [b_trans] */
    /* A^T sliver A[k*lda + i] (i < mr) -> pa[k*mr_isa + i]; NULL: read A^T in place */
    void (*pack_a)(int kc, int mr, const float *a, int64_t lda, float *pa);
    mml__gemm_fn small_m;     /* nn with M <= small_m_max without packing (NULL: none) */
    int small_m_max;
    /* rows of A (k stride 1) -> pa, for panels the micro-kernels cannot read
     * A in place for (bf16 pairs); NULL: A rows read in place. Its layout:
     * that of pack_a when a_rows_strided is 0, else row i at
     * pa + i*MML__BF16_ROWS_LD (4-byte units), read by the mode-1
     * micro-kernels, which have that stride built in */
    void (*pack_a_rows)(int kc, int mr, const float *a, int64_t lda, float *pa);
    int a_rows_strided;
} mml__gemm_isa;

static inline int mml__mini(int a, int b) { return a < b ? a : b; }

/* k-block size: split K evenly into blocks of at most MML__GEMM_KC. */
static inline int mml__gemm_kc(int K) {
    int nb = (K + MML__GEMM_KC - 1) / MML__GEMM_KC;
    return (K + nb - 1) / nb;
}

/* Bytes of packed panels: kc rows (rounded up to k_step) of cols columns. */
static inline int64_t mml__panel_bytes(const mml__gemm_isa *d, int kc, int cols) {
    return (int64_t)((kc + d->k_step - 1) / d->k_step * d->k_step) * cols * d->b_bytes;
}

/* Columns the panels of an nc-wide block span. */
static inline int mml__panel_cols(const mml__gemm_isa *d, int nc) {
    const int full = nc / (2 * d->w) * (2 * d->w), rem = nc - full;
    return full + (rem == 0 ? 0 : rem > d->w ? 2 * d->w : d->w);
}

/* The mr-row sliver of A at row ic as the micro-kernels read it (*la: its
 * stride): packed into mml__gemm_apack where the ISA packs it (A^T slivers,
 * bf16 pairs), else in place. */
static inline const float *mml__gemm_sliver(const mml__gemm_isa *d, int kc, int mr, const float *A, int64_t lda,
                                            int a_trans, int ic, int64_t *la) {
    const float *a = a_trans ? A + ic : A + (int64_t)ic * lda;
    void (*pack)(int, int, const float *, int64_t, float *) = a_trans ? d->pack_a : d->pack_a_rows;
    *la = lda;
    if (!pack) return a;
    pack(kc, mr, a, lda, mml__gemm_apack);
    *la = a_trans || !d->a_rows_strided ? d->mr : MML__BF16_ROWS_LD;
    return mml__gemm_apack;
}

/* C[0:mr, 0:nc] (+)= one sliver a . every panel of an nc-wide block pb. */
static inline void mml__gemm_panels(const mml__gemm_isa *d, const mml__uk_fn *uk, int mr, int nc, int kc,
                                    const float *a, int64_t la, const unsigned char *pb, float *C, int64_t ldc,
                                    int load_c, const float *bias, int relu) {
    const int64_t vec_bytes = mml__panel_bytes(d, kc, d->w); /* a panel W columns wide */
    for (int j0 = 0; j0 < nc; j0 += 2 * d->w) {
        const int w = mml__mini(nc - j0, 2 * d->w), nv = w > d->w ? 2 : 1;
        uk[(nv - 1) * d->mr + mr - 1](kc, a, la, pb, C + j0, ldc, w, load_c, bias ? bias + j0 : NULL, relu);
        pb += vec_bytes * nv;
    }
}

/* One product of a k block: C[0:M, 0:nc] (+)= A[0:M, 0:kc] . pb, the packed
 * panels of B's nc-wide column block. */
typedef struct mml__gemm_out {
    int nc;
    const unsigned char *pb;
    float *C;
    int64_t ldc;
} mml__gemm_out;

/* The n products o of one k block of A: every MR-row sliver of A (packed
 * once where the ISA packs it) against every panel of each (a_trans:
 * element (i, k) of A at A[k*lda + i]). */
static void mml__gemm_block(const mml__gemm_isa *d, int M, int kc, const float *A, int64_t lda, int a_trans,
                            const mml__gemm_out *o, int n, int load_c, const float *bias, int relu) {
    const mml__uk_fn *uk = d->uk + (bias || relu ? 4 : a_trans ? 0 : 2) * d->mr; /* the mode */
    for (int ic = 0; ic < M; ic += d->mr) {
        const int mr = mml__mini(M - ic, d->mr);
        int64_t la;
        const float *a = mml__gemm_sliver(d, kc, mr, A, lda, a_trans, ic, &la);
        for (int q = 0; q < n; q++)
            mml__gemm_panels(d, uk, mr, o[q].nc, kc, a, la, o[q].pb, o[q].C + (int64_t)ic * o[q].ldc, o[q].ldc,
                             load_c, bias, relu);
    }
}

/* A GEMM with nothing to multiply: M or N empty (nothing to do), or K empty
 * (C := 0 unless accumulating). Returns 1 if the call was one of these. */
static inline int mml__gemm_trivial(int M, int N, int K, float *C, int ldc, int accumulate) {
    if (M <= 0 || N <= 0) return 1;
    if (K > 0) return 0;
    if (!accumulate)
        for (int i = 0; i < M; i++) memset(C + (int64_t)i * ldc, 0, (size_t)N * sizeof(float));
    return 1;
}

/* One column block of a product: C[0:M, 0:N] (+)= op(A) . op(B), N <= the
 * block width, its k blocks packed at off in mml__gemm_pack. */
typedef struct mml__gemm_mat {
    int N;
    const float *B;
    int ldb, b_trans;
    float *C;
    int ldc;
    int64_t off;
} mml__gemm_mat;

/* The n column blocks b, all with the same A, k block by k block: each k
 * block of every B packed, then each sliver of A packed once for all of
 * them (mml__gemm_block, on the caller's n records o). */
static void mml__gemm_cols(const mml__gemm_isa *d, int M, int K, const float *A, int lda, int a_trans,
                           const mml__gemm_mat *b, mml__gemm_out *o, int n, int accumulate) {
    const int kcb = mml__gemm_kc(K);
    unsigned char *pack = (unsigned char *)mml__gemm_pack;
    for (int pc = 0; pc < K; pc += kcb) {
        const int kc = mml__mini(K - pc, kcb);
        for (int q = 0; q < n; q++) {
            d->pack_b[b[q].b_trans](kc, b[q].N, b[q].b_trans ? b[q].B + pc : b[q].B + (int64_t)pc * b[q].ldb,
                                    b[q].ldb, pack + b[q].off);
            o[q].nc = b[q].N, o[q].pb = pack + b[q].off, o[q].C = b[q].C, o[q].ldc = b[q].ldc;
        }
        mml__gemm_block(d, M, kc, a_trans ? A + (int64_t)pc * lda : A + pc, lda, a_trans, o, n, accumulate || pc > 0,
                        NULL, 0);
    }
}

/* C[M,N] (+)= op(A) . op(B) on ISA d: gemm_nn, gemm_nt and gemm_tn. */
static void mml__gemm_run(const mml__gemm_isa *d, int M, int N, int K, const float *A, int lda,
                          int a_trans, const float *B, int ldb, int b_trans, float *C, int ldc,
                          int accumulate) {
    if (mml__gemm_trivial(M, N, K, C, ldc, accumulate)) return;
    if (d->small_m && M <= d->small_m_max && !a_trans && !b_trans) {
        d->small_m(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
        return;
    }
    for (int jc = 0; jc < N; jc += MML__GEMM_NC) {
        const mml__gemm_mat b = {mml__mini(N - jc, MML__GEMM_NC), b_trans ? B + (int64_t)jc * ldb : B + jc, ldb,
                                 b_trans, C + jc, ldc, 0};
        mml__gemm_out o;
        mml__gemm_cols(d, M, K, A, lda, a_trans, &b, &o, 1, accumulate);
    }
}

/* gemm_pair on ISA d: C1 (+)= op(A) . B1 and C2 (+)= op(A) . B2 with each
 * sliver of A packed once for both, where both products are one column block
 * and their k blocks fit the pack buffer side by side; else two
 * mml__gemm_run calls. Every element of C is summed as mml__gemm_run sums it
 * (same k blocks, same micro-kernels), so the two ways agree bit for bit. */
MML__MAYBE_UNUSED static void mml__gemm_pair_run(const mml__gemm_isa *d, int M, int K, const float *A, int lda,
                                                 int a_trans, int N1, const float *B1, int ldb1, float *C1,
                                                 int ldc1, int N2, const float *B2, int ldb2, float *C2, int ldc2,
                                                 int accumulate) {
    int together = M > 0 && K > 0 && N1 > 0 && N2 > 0 && N1 <= MML__GEMM_NC && N2 <= MML__GEMM_NC &&
                   !(d->small_m && M <= d->small_m_max && !a_trans);
    int64_t off = 0; /* B2's panels in the pack buffer, after B1's (a cache line boundary) */
    if (together) {
        const int kcb = mml__gemm_kc(K);
        off = (mml__panel_bytes(d, kcb, mml__panel_cols(d, N1)) + 63) / 64 * 64;
        together = off + mml__panel_bytes(d, kcb, mml__panel_cols(d, N2)) <= (int64_t)sizeof mml__gemm_pack;
    }
    if (!together) {
        mml__gemm_run(d, M, N1, K, A, lda, a_trans, B1, ldb1, 0, C1, ldc1, accumulate);
        mml__gemm_run(d, M, N2, K, A, lda, a_trans, B2, ldb2, 0, C2, ldc2, accumulate);
        return;
    }
    const mml__gemm_mat b[2] = {{N1, B1, ldb1, 0, C1, ldc1, 0}, {N2, B2, ldb2, 0, C2, ldc2, off}};
    mml__gemm_out o[2];
    mml__gemm_cols(d, M, K, A, lda, a_trans, b, o, 2, accumulate);
}

/* bf16 GEMM where the CPU lacks bf16 arithmetic: the ISA's fp32 GEMM fn on
 * blocks of A and B rounded to bf16 (k blocks after the first accumulate;
 * mml__gemm_bf16_emul). The packed form rounds A in blocks of
 * MML__BF16_PACKED_MB rows of one k block (<= MML__GEMM_KC) into the same
 * buffer. */
#define MML__BF16_MB 64
#define MML__BF16_KB 128
#define MML__BF16_NB 256
#define MML__BF16_PACKED_MB 16
static MML__TLS float mml__bf16_abuf[MML__BF16_MB * MML__BF16_KB];
static MML__TLS float mml__bf16_bbuf[MML__BF16_KB * MML__BF16_NB];
typedef char mml__bf16_abuf_fits[MML__BF16_PACKED_MB * MML__GEMM_KC <= MML__BF16_MB * MML__BF16_KB ? 1 : -1];

MML__MAYBE_UNUSED static void mml__bf16_round_block(int rows, int cols, const float *src, int64_t ld, float *dst) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dst[(int64_t)r * cols + c] = mml__bf16_round(src[r * ld + c]);
}

/* Packed B: the panels mml__gemm_run would pack, every block in loop order,
 * stored once (gemm_pack_size in floats, gemm_pack_b). */
MML__MAYBE_UNUSED static int64_t mml__gemm_pack_size_run(const mml__gemm_isa *d, int K, int N) {
    if (K <= 0 || N <= 0) return 0;
    const int kcb = mml__gemm_kc(K);
    int64_t bytes = 0;
    for (int jc = 0; jc < N; jc += MML__GEMM_NC) {
        const int cols = mml__panel_cols(d, mml__mini(N - jc, MML__GEMM_NC));
        for (int pc = 0; pc < K; pc += kcb) bytes += mml__panel_bytes(d, mml__mini(K - pc, kcb), cols);
    }
    return (bytes + 3) / 4;
}

MML__MAYBE_UNUSED static int64_t mml__gemm_pack_b_run(const mml__gemm_isa *d, int K, int N, const float *B,
                                                      int ldb, float *Bp) {
    if (K <= 0 || N <= 0) return 0;
    const int kcb = mml__gemm_kc(K);
    unsigned char *p = (unsigned char *)Bp;
    for (int jc = 0; jc < N; jc += MML__GEMM_NC) {
        const int nc = mml__mini(N - jc, MML__GEMM_NC);
        for (int pc = 0; pc < K; pc += kcb) {
            const int kc = mml__mini(K - pc, kcb);
            d->pack_b[0](kc, nc, B + (int64_t)pc * ldb + jc, ldb, p);
            p += mml__panel_bytes(d, kc, mml__panel_cols(d, nc));
        }
    }
    return ((int64_t)(p - (unsigned char *)Bp) + 3) / 4; /* floats written: gemm_pack_size */
}

/* A packed GEMM with K = 0: C = bias (or 0), then ReLU if relu. */
MML__MAYBE_UNUSED static void mml__packed_empty(int M, int N, float *C, int ldc, const float *bias, int relu) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            const float v = bias ? bias[j] : 0.0f;
            C[(int64_t)i * ldc + j] = relu && !(v > 0.0f) ? 0.0f : v;
        }
}

/* C = A . Bp (+ bias) (ReLU) on panels packed beforehand: the loops of
 * mml__gemm_run; bias and ReLU are applied as the last k block is stored. */
MML__MAYBE_UNUSED static void mml__gemm_packed_run(const mml__gemm_isa *d, int M, int N, int K,
                                                   const float *A, int lda, const float *Bp, float *C,
                                                   int ldc, const float *bias, int relu, int round_a) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        mml__packed_empty(M, N, C, ldc, bias, relu);
        return;
    }
    const int kcb = mml__gemm_kc(K);
    const unsigned char *p = (const unsigned char *)Bp;
    for (int jc = 0; jc < N; jc += MML__GEMM_NC) {
        const int nc = mml__mini(N - jc, MML__GEMM_NC);
        for (int pc = 0; pc < K; pc += kcb) {
            const int kc = mml__mini(K - pc, kcb), last = pc + kc == K;
            const float *bj = last && bias ? bias + jc : NULL;
            mml__gemm_out o = {nc, p, C + jc, ldc};
            if (!round_a) mml__gemm_block(d, M, kc, A + pc, lda, 0, &o, 1, pc > 0, bj, last && relu);
            for (int ic = 0; ic < M && round_a; ic += MML__BF16_PACKED_MB) {
                const int mb = mml__mini(M - ic, MML__BF16_PACKED_MB);
                mml__bf16_round_block(mb, kc, A + (int64_t)ic * lda + pc, lda, mml__bf16_abuf);
                o.C = C + (int64_t)ic * ldc + jc;
                mml__gemm_block(d, mb, kc, mml__bf16_abuf, kc, 0, &o, 1, pc > 0, bj, last && relu);
            }
            p += mml__panel_bytes(d, kc, mml__panel_cols(d, nc));
        }
    }
}

MML__MAYBE_UNUSED static void mml__gemm_bf16_emul(mml__gemm_fn fn, int M, int N, int K, const float *A,
                                                  int lda, int a_trans, const float *B, int ldb,
                                                  int b_trans, float *C, int ldc, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        fn(M, N, 0, A, lda, B, ldb, C, ldc, accumulate);
        return;
    }
    for (int jc = 0; jc < N; jc += MML__BF16_NB) {
        const int nb = mml__mini(N - jc, MML__BF16_NB);
        for (int pc = 0; pc < K; pc += MML__BF16_KB) {
            const int kb = mml__mini(K - pc, MML__BF16_KB);
            if (b_trans) mml__bf16_round_block(nb, kb, B + (int64_t)jc * ldb + pc, ldb, mml__bf16_bbuf);
            else mml__bf16_round_block(kb, nb, B + (int64_t)pc * ldb + jc, ldb, mml__bf16_bbuf);
            for (int ic = 0; ic < M; ic += MML__BF16_MB) {
                const int mb = mml__mini(M - ic, MML__BF16_MB);
                if (a_trans) mml__bf16_round_block(kb, mb, A + (int64_t)pc * lda + ic, lda, mml__bf16_abuf);
                else mml__bf16_round_block(mb, kb, A + (int64_t)ic * lda + pc, lda, mml__bf16_abuf);
                fn(mb, nb, kb, mml__bf16_abuf, a_trans ? mb : kb, mml__bf16_bbuf, b_trans ? kb : nb,
                   C + (int64_t)ic * ldc + jc, ldc, accumulate || pc > 0);
            }
        }
    }
}
/* S's gemm_OP_bf16 through mml__gemm_bf16_emul and S's fp32 gemm_OP. */
#define MML__GEMM_BF16_EMUL(S, OP, AT, BT)                                            \
    MML__ATTR_##S static void mml__gemm_##OP##_bf16_##S(                              \
        int M, int N, int K, const float *MML_RESTRICT A, int lda, const float *MML_RESTRICT B, \
        int ldb, float *MML_RESTRICT C, int ldc, int accumulate) {                    \
        mml__gemm_bf16_emul(mml__gemm_##OP##_##S, M, N, K, A, lda, AT, B, ldb, BT, C, ldc, accumulate); \
    }
#define MML__GEMM_BF16_EMUL_ALL(S)                                                    \
    MML__GEMM_BF16_EMUL(S, nn, 0, 0) MML__GEMM_BF16_EMUL(S, nt, 0, 1) MML__GEMM_BF16_EMUL(S, tn, 1, 0)
/* S's gemm_OP_bf16 where S has a bf16 description DESC: its matrix tiles
 * mml__gemm_tiles_S where the CPU has them (MML__CPU_AMX), else the driver on
 * DESC when the CPU has bf16 dot products (MML__CPU_BF16; MOEMLORA_BF16=emulate
 * clears both), else as MML__GEMM_BF16_EMUL. */
typedef void (*mml__gemm_tiles_fn)(int M, int N, int K, const float *A, int lda, int a_trans, const float *B,
                                   int ldb, int b_trans, float *C, int ldc, int accumulate);
#define MML__GEMM_BF16_NATIVE(S, DESC, OP, AT, BT)                                    \
    MML__ATTR_##S static void mml__gemm_##OP##_bf16_##S(                              \
        int M, int N, int K, const float *MML_RESTRICT A, int lda, const float *MML_RESTRICT B, \
        int ldb, float *MML_RESTRICT C, int ldc, int accumulate) {                    \
        if (mml__gemm_tiles_##S && (mml__cpu() & MML__CPU_AMX))                       \
            mml__gemm_tiles_##S(M, N, K, A, lda, AT, B, ldb, BT, C, ldc, accumulate);  \
        else if (mml__cpu() & MML__CPU_BF16)                                          \
            mml__gemm_run(&DESC, M, N, K, A, lda, AT, B, ldb, BT, C, ldc, accumulate); \
        else                                                                          \
            mml__gemm_bf16_emul(mml__gemm_##OP##_##S, M, N, K, A, lda, AT, B, ldb, BT, C, ldc, \
                                accumulate);                                          \
    }
#define MML__GEMM_BF16_NATIVE_ALL(S, DESC)                                            \
    MML__GEMM_BF16_NATIVE(S, DESC, nn, 0, 0) MML__GEMM_BF16_NATIVE(S, DESC, nt, 0, 1) \
    MML__GEMM_BF16_NATIVE(S, DESC, tn, 1, 0)
/* S's bf16 GEMM on its micro-kernels mml__ukbf_MR_NV_MODE_S (MR up to
 * UPTO's, panels of 2 x W floats of bf16 pairs) and its pack_*_bf16_S hooks:
 * the kernel table (A always reaches the kernels packed: mode 0 on k-major
 * pairs, for A's rows mode RM: 1 where pack_a_rows_bf16_S writes rows
 * MML__BF16_ROWS_LD apart, else 0; no epilogue mode), the description
 * mml__gemm_isa_bf16_S and the gemm_*_bf16 entries. */
#define MML__UKBF_PTR(S, MR, NV, MODE) mml__ukbf_##MR##_##NV##_##MODE##_##S,
#define MML__GEMM_BF16_ISA(S, UPTO, W, RM)                                            \
    static const mml__uk_fn mml__uk_bf16_##S[] = {                                    \
        UPTO(MML__UKBF_PTR, S, 1, 0) UPTO(MML__UKBF_PTR, S, 2, 0)                     \
        UPTO(MML__UKBF_PTR, S, 1, RM) UPTO(MML__UKBF_PTR, S, 2, RM)};                 \
    static const mml__gemm_isa mml__gemm_isa_bf16_##S = {                             \
        MML__MR_##S, W, 2, 2, mml__uk_bf16_##S, {mml__pack_bn_bf16_##S, mml__pack_bt_bf16_##S}, \
        mml__pack_at_bf16_##S, NULL, 0, mml__pack_a_rows_bf16_##S, RM};               \
    MML__GEMM_BF16_NATIVE_ALL(S, mml__gemm_isa_bf16_##S)

/* B^T (B[j*ldb + k]) -> panels of 2w columns by plain loads and stores, each
 * row of B read once along k (the cost is spread over M). */
static inline void mml__pack_bt_plain(int kc, int nc, const float *B, int64_t ldb, int w, float *pb) {
    for (int j0 = 0; j0 < nc; j0 += 2 * w) {
        const int cols = mml__mini(nc - j0, 2 * w), nr = cols > w ? 2 * w : w;
        for (int jj = 0; jj < nr; jj++) {
            float *dst = pb + jj;
            if (jj < cols) {
                const float *src = B + (int64_t)(j0 + jj) * ldb;
                for (int k = 0; k < kc; k++) dst[k * nr] = src[k];
            } else {
                for (int k = 0; k < kc; k++) dst[k * nr] = 0.0f;
            }
        }
        pb += (int64_t)kc * nr;
    }
}

/* gemm_nn/nt/tn of ISA S: the driver with S's description mml__gemm_isa_S. */
#define MML__GEMM_ENTRY(S, OP, AT, BT)                                                \
    MML__ATTR_##S static void mml__gemm_##OP##_##S(                                   \
        int M, int N, int K, const float *MML_RESTRICT A, int lda, const float *MML_RESTRICT B, \
        int ldb, float *MML_RESTRICT C, int ldc, int accumulate) {                    \
        mml__gemm_run(&mml__gemm_isa_##S, M, N, K, A, lda, AT, B, ldb, BT, C, ldc, accumulate); \
    }
/* S's description for the driver (fp32 panels from mml__pack_bn_S and
 * mml__pack_bt_S, micro-kernels mml__uk_S) and its gemm_nn/nt/tn. */
#define MML__GEMM_ISA(S, PACK_A, SMALL_M, SMALL_M_MAX)                                \
    static const mml__gemm_isa mml__gemm_isa_##S = {                                  \
        MML__MR_##S, MML__W_##S, 4, 1, mml__uk_##S, {mml__pack_bn_##S, mml__pack_bt_##S}, \
        PACK_A, SMALL_M, SMALL_M_MAX, NULL, 0};                                       \
    MML__GEMM_ENTRY(S, nn, 0, 0) MML__GEMM_ENTRY(S, nt, 0, 1) MML__GEMM_ENTRY(S, tn, 1, 0)
/* gemm_pack_size, gemm_pack_b, gemm_packed on S's own panels. */
#define MML__GEMM_PACKED(S)                                                           \
    MML__ATTR_##S static int64_t mml__gemm_pack_size_##S(int K, int N) {              \
        return mml__gemm_pack_size_run(&mml__gemm_isa_##S, K, N);                     \
    }                                                                                 \
    MML__ATTR_##S static void mml__gemm_pack_b_##S(int K, int N, const float *MML_RESTRICT B, \
                                                   int ldb, float *MML_RESTRICT Bp) { \
        mml__gemm_pack_b_run(&mml__gemm_isa_##S, K, N, B, ldb, Bp);                   \
    }                                                                                 \
    MML__ATTR_##S static void mml__gemm_packed_##S(                                   \
        int M, int N, int K, const float *MML_RESTRICT A, int lda, const float *MML_RESTRICT Bp, \
        float *MML_RESTRICT C, int ldc, const float *bias, int relu) {                \
        mml__gemm_packed_run(&mml__gemm_isa_##S, M, N, K, A, lda, Bp, C, ldc, bias, relu, 0); \
    }
/* B^T packing for an ISA without a faster one of its own. */
#define MML__PACK_BT_PLAIN(S)                                                         \
    MML__ATTR_##S static void mml__pack_bt_##S(int kc, int nc, const float *B, int64_t ldb, void *pb) { \
        mml__pack_bt_plain(kc, nc, B, ldb, MML__W_##S, (float *)pb);                  \
    }

// >>kernels-shared ----------------------------------------------------------
/* Kernel bodies written once for every vector ISA S, over S's width layer:
 * thin inline functions mml__v<op>_S that S's chapter defines.
 *   MML__W_S floats per vector; MML__MR_S micro-kernel rows; MML__ATTR_S.
 *   types: mml__vf_S floats; mml__vm_S the lanes [0, rem) of a tail;
 *     mml__vp_S a compare's lanes; mml__vi_S uint32; mml__vd_S doubles (W/2)
 *   vmask(rem) (rem clamped to 0..W); vld(m, p), vldf(m, p, fill), vst(p, m, v)
 *     touch no lane outside m (vld reads 0 there, vldf fill); vldu(p), vstu(p, v)
 *     whole vectors; vset1(x), vzero(), vbcast(p) = vset1(*p)
 *   vadd vsub vmul vdiv vmax vsqrt; vfma(a, b, c) = a*b + c rounded once
 *   vrelu(v) = v > 0 ? v : 0; vnabs(v) = -|v|; vexp, vlog1p (SLEEF u10)
 *   vgt, vge -> vp; vsel(p, a, b) = p ? a : b; vand(p, v) = p ? v : +0;
 *   vtail(m, v) = v in the lanes of m, +0 elsewhere; vhsum, vhmax -> float
 *   vdzero, vdadd, vdlo(v)/vdhi(v) (low/high half of v widened), vdhsum -> double
 *   viset1, vixor, vimul, viadd, vsrl8/15/16, viota(lo) = lo + lane,
 *   vige(a, b) = a >= b (lanes below 2^31) -> vp; vkeepst(keep, rem, p): bytes
 *   1/0 for the first rem lanes of p; vkeepld(keep, rem) -> keep[i] != 0
 * A layer maps each op to the instruction that ISA used before the bodies were
 * shared, and a body's operations and their order are the contract: bits do
 * not change (GCC fuses a mul feeding an add into an FMA the same way in
 * every body). */

/* The layer as a table: a row per operation, the code of each ISA in columns
 * AVX2 | AVX-512 | NEON. MML__WIDTH_LAYER(S, F, M, P, I, D) defines mml__v<op>_S
 * with S's types (F floats, M tail mask, P compare lanes, I uint32, D
 * doubles); an op that takes more than an expression (tail masks, reductions,
 * NEON's tails through the stack) is written in S's chapter. */
#define MML__COL_avx2(e2, e5, en) e2
#define MML__COL_avx512(e2, e5, en) e5
#define MML__COL_neon(e2, e5, en) en
#define MML__OP(S, R, NAME, PARAMS, E2, E5, EN)                                       \
    MML__INLINE(S) R mml__##NAME##_##S PARAMS { return MML__COL_##S(E2, E5, EN); }
#define MML__OPV(S, NAME, PARAMS, E2, E5, EN)                                         \
    MML__INLINE(S) void mml__##NAME##_##S PARAMS { MML__COL_##S(E2, E5, EN); }
#define MML__WIDTH_LAYER(S, F, M, P, I, D)                                            \
    MML__OP(S, F, vld, (M m, const float *p), _mm256_maskload_ps(p, m),               \
            _mm512_maskz_loadu_ps(m, p), mml__ldtail_neon(m, p, 0.0f))                \
    MML__OP(S, F, vldf, (M m, const float *p, float fill),                            \
            _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m)), \
            _mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, p), mml__ldtail_neon(m, p, fill)) \
    MML__OPV(S, vst, (float *p, M m, F v), _mm256_maskstore_ps(p, m, v),              \
             _mm512_mask_storeu_ps(p, m, v), mml__sttail_neon(p, m, v))               \
    MML__OP(S, F, vldu, (const float *p), _mm256_loadu_ps(p), _mm512_loadu_ps(p), vld1q_f32(p)) \
    MML__OPV(S, vstu, (float *p, F v), _mm256_storeu_ps(p, v), _mm512_storeu_ps(p, v), vst1q_f32(p, v)) \
    MML__OP(S, F, vset1, (float x), _mm256_set1_ps(x), _mm512_set1_ps(x), vdupq_n_f32(x)) \
    MML__OP(S, F, vzero, (void), _mm256_setzero_ps(), _mm512_setzero_ps(), vdupq_n_f32(0.0f)) \
    MML__OP(S, F, vbcast, (const float *p), _mm256_broadcast_ss(p), _mm512_set1_ps(*p), vld1q_dup_f32(p)) \
    MML__OP(S, F, vadd, (F a, F b), _mm256_add_ps(a, b), _mm512_add_ps(a, b), vaddq_f32(a, b)) \
    MML__OP(S, F, vsub, (F a, F b), _mm256_sub_ps(a, b), _mm512_sub_ps(a, b), vsubq_f32(a, b)) \
    MML__OP(S, F, vmul, (F a, F b), _mm256_mul_ps(a, b), _mm512_mul_ps(a, b), vmulq_f32(a, b)) \
    MML__OP(S, F, vdiv, (F a, F b), _mm256_div_ps(a, b), _mm512_div_ps(a, b), vdivq_f32(a, b)) \
    MML__OP(S, F, vmax, (F a, F b), _mm256_max_ps(a, b), _mm512_max_ps(a, b), vmaxq_f32(a, b)) \
    MML__OP(S, F, vsqrt, (F a), _mm256_sqrt_ps(a), _mm512_sqrt_ps(a), vsqrtq_f32(a))  \
    MML__OP(S, F, vfma, (F a, F b, F c), _mm256_fmadd_ps(a, b, c), _mm512_fmadd_ps(a, b, c), \
            vfmaq_f32(c, a, b))                                                       \
    /* NaN -> 0 as in the scalar code: x86 max returns its second operand, vmaxq the NaN */ \
    MML__OP(S, F, vrelu, (F v), _mm256_max_ps(v, _mm256_setzero_ps()), _mm512_max_ps(v, _mm512_setzero_ps()), \
            vbslq_f32(vcgtq_f32(v, vdupq_n_f32(0.0f)), v, vdupq_n_f32(0.0f)))         \
    MML__OP(S, F, vnabs, (F v),                                                       \
            _mm256_sub_ps(_mm256_setzero_ps(), _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)))), \
            _mm512_sub_ps(_mm512_setzero_ps(),                                        \
                          _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)))), \
            vnegq_f32(vabsq_f32(v)))                                                  \
    MML__OP(S, F, vexp, (F v), Sleef_expf8_u10avx2(v), Sleef_expf16_u10avx512f(v), Sleef_expf4_u10advsimd(v)) \
    MML__OP(S, F, vlog1p, (F v), Sleef_log1pf8_u10avx2(v), Sleef_log1pf16_u10avx512f(v), \
            Sleef_log1pf4_u10advsimd(v))                                              \
    MML__OP(S, P, vgt, (F a, F b), _mm256_cmp_ps(a, b, _CMP_GT_OQ), _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), \
            vcgtq_f32(a, b))                                                          \
    MML__OP(S, P, vge, (F a, F b), _mm256_cmp_ps(a, b, _CMP_GE_OQ), _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ), \
            vcgeq_f32(a, b))                                                          \
    MML__OP(S, F, vsel, (P p, F a, F b), _mm256_blendv_ps(b, a, p), _mm512_mask_blend_ps(p, b, a), \
            vbslq_f32(p, a, b))                                                       \
    MML__OP(S, F, vand, (P p, F v), _mm256_and_ps(p, v), _mm512_maskz_mov_ps(p, v),   \
            vbslq_f32(p, v, vdupq_n_f32(0.0f)))                                       \
    MML__OP(S, F, vtail, (M m, F v), _mm256_and_ps(v, _mm256_castsi256_ps(m)), _mm512_maskz_mov_ps(m, v), \
            mml__zerotail_neon(m, v))                                                 \
    MML__OP(S, D, vdzero, (void), _mm256_setzero_pd(), _mm512_setzero_pd(), vdupq_n_f64(0.0)) \
    MML__OP(S, D, vdadd, (D a, D b), _mm256_add_pd(a, b), _mm512_add_pd(a, b), vaddq_f64(a, b)) \
    MML__OP(S, D, vdlo, (F v), _mm256_cvtps_pd(_mm256_castps256_ps128(v)),            \
            _mm512_cvtps_pd(_mm512_castps512_ps256(v)), vcvt_f64_f32(vget_low_f32(v))) \
    MML__OP(S, D, vdhi, (F v), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)),          \
            _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0x4E))), \
            vcvt_high_f64_f32(v))                                                     \
    MML__OP(S, I, viset1, (uint32_t x), _mm256_set1_epi32((int)x), _mm512_set1_epi32((int)x), vdupq_n_u32(x)) \
    MML__OP(S, I, vixor, (I a, I b), _mm256_xor_si256(a, b), _mm512_xor_si512(a, b), veorq_u32(a, b)) \
    MML__OP(S, I, vimul, (I a, I b), _mm256_mullo_epi32(a, b), _mm512_mullo_epi32(a, b), vmulq_u32(a, b)) \
    MML__OP(S, I, viadd, (I a, I b), _mm256_add_epi32(a, b), _mm512_add_epi32(a, b), vaddq_u32(a, b)) \
    MML__OP(S, I, vsrl8, (I a), _mm256_srli_epi32(a, 8), _mm512_srli_epi32(a, 8), vshrq_n_u32(a, 8)) \
    MML__OP(S, I, vsrl15, (I a), _mm256_srli_epi32(a, 15), _mm512_srli_epi32(a, 15), vshrq_n_u32(a, 15)) \
    MML__OP(S, I, vsrl16, (I a), _mm256_srli_epi32(a, 16), _mm512_srli_epi32(a, 16), vshrq_n_u32(a, 16)) \
    /* a >= b; AVX2 compares signed only, as a > b - 1 (the values are below 2^24) */ \
    MML__OP(S, P, vige, (I a, I b),                                                   \
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(a, _mm256_sub_epi32(b, _mm256_set1_epi32(1)))), \
            _mm512_cmpge_epu32_mask(a, b), vcgeq_u32(a, b))

/* ---- GEMM: micro-kernels and packers ---- */
#define MML__R12(X, S) X(0, S) X(1, S) X(2, S) X(3, S) X(4, S) X(5, S) X(6, S) X(7, S) \
    X(8, S) X(9, S) X(10, S) X(11, S)
#define MML__UK_DECL(r, S) mml__vf_##S c##r##0 = mml__vzero_##S(), c##r##1 = c##r##0;
#define MML__UK_FMA(r, S)                                                             \
    if (MR_ > r) {                                                                    \
        const mml__vf_##S ar = mml__vbcast_##S(RM_ ? ap + r * lda : ap + r);          \
        c##r##0 = mml__vfma_##S(ar, b0, c##r##0);                                     \
        if (NV_ > 1) c##r##1 = mml__vfma_##S(ar, b1, c##r##1);                        \
    }
/* One vector of output: + C, + bias, ReLU, in that order, then the store. */
#define MML__UK_OUT(S, v, p, m, bv)                                                   \
    if (load_c) v = mml__vadd_##S(v, mml__vld_##S(m, p));                             \
    if (EPI_ && bias) v = mml__vadd_##S(v, bv);                                       \
    if (EPI_ && relu) v = mml__vrelu_##S(v);                                          \
    mml__vst_##S(p, m, v);
#define MML__UK_STORE(r, S)                                                           \
    if (MR_ > r) {                                                                    \
        MML__UK_OUT(S, c##r##0, c + r * ldc, m0, bv0)                                 \
        if (NV_ > 1) { MML__UK_OUT(S, c##r##1, c + r * ldc + W_, m1, bv1) }           \
    }
/* Micro-kernel MR x (W*NV) of ISA S (mml__uk_fn). MODE 0: A^T, element (r, k)
 * at a + k*lda + r; 1: row r of A at a + r*lda, k stride 1; 2: as 1, then the
 * bias and ReLU (the other modes leave them out of their stores). */
#define MML__UK(S, MR, NV, MODE)                                                      \
    MML__ATTR_##S static void mml__uk_##MR##_##NV##_##MODE##_##S(                     \
        int kc, const float *a, int64_t lda, const void *bp, float *c, int64_t ldc,   \
        int w, int load_c, const float *bias, int relu) {                             \
        enum { MR_ = MR, NV_ = NV, RM_ = MODE != 0, EPI_ = MODE == 2, W_ = MML__W_##S }; \
        const float *b = (const float *)bp, *ap = a;                                  \
        MML__R12(MML__UK_DECL, S)                                                     \
        for (int k = 0; k < kc; k++) {                                                \
            const mml__vf_##S b0 = mml__vldu_##S(b);                                  \
            const mml__vf_##S b1 = NV_ > 1 ? mml__vldu_##S(b + W_) : b0;              \
            (void)b1;                                                                 \
            MML__R12(MML__UK_FMA, S)                                                  \
            b += W_ * NV_;                                                            \
            ap += RM_ ? 1 : lda;                                                      \
        }                                                                             \
        const mml__vm_##S m0 = mml__vmask_##S(w), m1 = mml__vmask_##S(w - W_);        \
        const mml__vf_##S bv0 = EPI_ && bias ? mml__vld_##S(m0, bias) : mml__vzero_##S(); \
        const mml__vf_##S bv1 = EPI_ && bias && NV_ > 1 ? mml__vld_##S(m1, bias + W_) : bv0; \
        (void)relu;                                                                   \
        MML__R12(MML__UK_STORE, S)                                                    \
    }
/* X(S, mr, nv, mode) for every micro-kernel of S, in table order; S has
 * MML__UK_MODES_S modes (3 with a packed layout of its own, else 2). */
#define MML__UPTO6(X, S, NV, RM)                                                      \
    X(S, 1, NV, RM) X(S, 2, NV, RM) X(S, 3, NV, RM) X(S, 4, NV, RM) X(S, 5, NV, RM) X(S, 6, NV, RM)
#define MML__UPTO8(X, S, NV, RM) MML__UPTO6(X, S, NV, RM) X(S, 7, NV, RM) X(S, 8, NV, RM)
#define MML__UPTO12(X, S, NV, RM)                                                     \
    MML__UPTO8(X, S, NV, RM) X(S, 9, NV, RM) X(S, 10, NV, RM) X(S, 11, NV, RM) X(S, 12, NV, RM)
#define MML__UPTO(N) MML__UPTO_(N)
#define MML__UPTO_(N) MML__UPTO##N
#define MML__UK_EACH2(X, S)                                                           \
    MML__UPTO(MML__MR_##S)(X, S, 1, 0) MML__UPTO(MML__MR_##S)(X, S, 2, 0)             \
    MML__UPTO(MML__MR_##S)(X, S, 1, 1) MML__UPTO(MML__MR_##S)(X, S, 2, 1)
#define MML__UK_EACH3(X, S)                                                           \
    MML__UK_EACH2(X, S) MML__UPTO(MML__MR_##S)(X, S, 1, 2) MML__UPTO(MML__MR_##S)(X, S, 2, 2)
#define MML__UK_EACH(N) MML__UK_EACH_(N)
#define MML__UK_EACH_(N) MML__UK_EACH##N
#define MML__UK_PTR(S, MR, NV, MODE) mml__uk_##MR##_##NV##_##MODE##_##S,
/* S's micro-kernels and their table mml__uk_S. */
#define MML__GEMM_UKERNELS(S)                                                         \
    MML__UK_EACH(MML__UK_MODES_##S)(MML__UK, S)                                       \
    static const mml__uk_fn mml__uk_##S[] = {MML__UK_EACH(MML__UK_MODES_##S)(MML__UK_PTR, S)};

/* B[kc, nc] (row-major) -> k-major panels of 2W columns (the last W wide when
 * it fits), zero-padded. */
#define MML__PACK_BN(S)                                                               \
    MML__ATTR_##S static void mml__pack_bn_##S(int kc, int nc, const float *B, int64_t ldb, \
                                               void *pbv) {                           \
        enum { W_ = MML__W_##S };                                                     \
        float *pb = (float *)pbv;                                                     \
        for (int j0 = 0; j0 < nc; j0 += 2 * W_) {                                     \
            const int w = mml__mini(nc - j0, 2 * W_), nr = w > W_ ? 2 * W_ : W_;      \
            const mml__vm_##S m0 = mml__vmask_##S(w), m1 = mml__vmask_##S(w - W_);    \
            for (int k = 0; k < kc; k++) {                                            \
                const float *src = B + (int64_t)k * ldb + j0;                         \
                mml__vstu_##S(pb + k * nr, mml__vld_##S(m0, src));                    \
                if (nr > W_) mml__vstu_##S(pb + k * nr + W_, mml__vld_##S(m1, src + W_)); \
            }                                                                         \
            pb += (int64_t)kc * nr;                                                   \
        }                                                                             \
    }
/* The A^T sliver for tn, k-major with stride MR (mml__gemm_isa.pack_a). */
#define MML__PACK_A(S)                                                                \
    MML__ATTR_##S static void mml__pack_a_##S(int kc, int mr, const float *a, int64_t lda, \
                                              float *pa) {                            \
        const mml__vm_##S m = mml__vmask_##S(mr);                                     \
        for (int k = 0; k < kc; k++)                                                  \
            mml__vst_##S(pa + k * MML__MR_##S, m, mml__vld_##S(m, a + (int64_t)k * lda)); \
    }

/* ---- elementwise and rows ---- */
#define MML__RELU_FWD(S)                                                              \
    MML__ATTR_##S static void mml__relu_fwd_##S(int64_t n, const float *x, float *y) { \
        for (int64_t i = 0; i < n; i += MML__W_##S) {                                 \
            const mml__vm_##S m = mml__vmask_##S(n - i);                              \
            mml__vst_##S(y + i, m, mml__vrelu_##S(mml__vld_##S(m, x + i)));           \
        }                                                                             \
    }
#define MML__RELU_BWD(S)                                                              \
    MML__ATTR_##S static void mml__relu_bwd_##S(int64_t n, const float *y, const float *dy, \
                                                float *dx) {                          \
        const mml__vf_##S z = mml__vzero_##S();                                       \
        for (int64_t i = 0; i < n; i += MML__W_##S) {                                 \
            const mml__vm_##S m = mml__vmask_##S(n - i);                              \
            const mml__vp_##S pos = mml__vgt_##S(mml__vld_##S(m, y + i), z);          \
            mml__vst_##S(dx + i, m, mml__vand_##S(pos, mml__vld_##S(m, dy + i)));     \
        }                                                                             \
    }
/* t[0:n] += g[0:n]: add_bias on each row of C, scatter_add_rows on each id's row. */
#define MML__ADD_ROWS(S)                                                              \
    MML__INLINE(S) void mml__row_add_##S(float *t, const float *g, int n) {           \
        for (int j = 0; j < n; j += MML__W_##S) {                                     \
            const mml__vm_##S m = mml__vmask_##S(n - j);                              \
            mml__vst_##S(t + j, m, mml__vadd_##S(mml__vld_##S(m, t + j), mml__vld_##S(m, g + j))); \
        }                                                                             \
    }                                                                                 \
    MML__ATTR_##S static void mml__add_bias_##S(int M, int N, const float *bias, float *C, \
                                                int ldc) {                            \
        for (int i = 0; i < M; i++) mml__row_add_##S(C + (int64_t)i * ldc, bias, N);  \
    }                                                                                 \
    MML__ATTR_##S static void mml__scatter_add_rows_##S(int n, const int32_t *ids, const float *g, \
                                                        int ldg, int dim, float *table_grad) { \
        for (int i = 0; i < n; i++) {                                                 \
            if (i + MML__ROW_AHEAD < n)                                               \
                mml__prefetch_floats(table_grad + (int64_t)ids[i + MML__ROW_AHEAD] * dim, dim); \
            mml__row_add_##S(table_grad + (int64_t)ids[i] * dim, g + (int64_t)i * ldg, dim); \
        }                                                                             \
    }
/* Same summation order as the scalar reference (out + row0 + row1 + ...). */
#define MML__COLSUM_ADD(S)                                                            \
    MML__ATTR_##S static void mml__colsum_add_##S(int M, int N, const float *A, int lda, \
                                                  float *out) {                       \
        enum { W_ = MML__W_##S };                                                     \
        int j = 0;                                                                    \
        for (; j + 4 * W_ <= N; j += 4 * W_) {                                        \
            mml__vf_##S s0 = mml__vldu_##S(out + j), s1 = mml__vldu_##S(out + j + W_); \
            mml__vf_##S s2 = mml__vldu_##S(out + j + 2 * W_), s3 = mml__vldu_##S(out + j + 3 * W_); \
            for (int i = 0; i < M; i++) {                                             \
                const float *a = A + (int64_t)i * lda + j;                            \
                s0 = mml__vadd_##S(s0, mml__vldu_##S(a));                             \
                s1 = mml__vadd_##S(s1, mml__vldu_##S(a + W_));                        \
                s2 = mml__vadd_##S(s2, mml__vldu_##S(a + 2 * W_));                    \
                s3 = mml__vadd_##S(s3, mml__vldu_##S(a + 3 * W_));                    \
            }                                                                         \
            mml__vstu_##S(out + j, s0);                                               \
            mml__vstu_##S(out + j + W_, s1);                                          \
            mml__vstu_##S(out + j + 2 * W_, s2);                                      \
            mml__vstu_##S(out + j + 3 * W_, s3);                                      \
        }                                                                             \
        for (; j < N; j += W_) {                                                      \
            const mml__vm_##S m = mml__vmask_##S(N - j);                              \
            mml__vf_##S s = mml__vld_##S(m, out + j);                                 \
            for (int i = 0; i < M; i++) s = mml__vadd_##S(s, mml__vld_##S(m, A + (int64_t)i * lda + j)); \
            mml__vst_##S(out + j, m, s);                                              \
        }                                                                             \
    }

/* The dropout hash on W lanes (see the scalar chapter). */
#define MML__KEEP_RUN(S)                                                              \
    MML__INLINE(S) mml__vi_##S mml__vlowbias32_##S(mml__vi_##S x) {                   \
        x = mml__vixor_##S(x, mml__vsrl16_##S(x));                                    \
        x = mml__vimul_##S(x, mml__viset1_##S(0x7feb352dU));                          \
        x = mml__vixor_##S(x, mml__vsrl15_##S(x));                                    \
        x = mml__vimul_##S(x, mml__viset1_##S(0x846ca68bU));                          \
        return mml__vixor_##S(x, mml__vsrl16_##S(x));                                 \
    }                                                                                 \
    /* the lanes of indices idx that survive (k1 = key1 of their high half) */        \
    MML__INLINE(S) mml__vp_##S mml__vkeep_##S(mml__vi_##S idx, mml__vi_##S k1, mml__vi_##S k2, \
                                              mml__vi_##S thr) {                      \
        const mml__vi_##S h = mml__vlowbias32_##S(mml__vixor_##S(idx, k1));           \
        return mml__vige_##S(mml__vsrl8_##S(mml__vlowbias32_##S(mml__vixor_##S(h, k2))), thr); \
    }                                                                                 \
    MML__ATTR_##S static void mml__keep_run_##S(uint8_t *keep, int64_t n, uint32_t lo, \
                                                uint32_t key1, const mml__drop_keys *dk) { \
        const mml__vi_##S k1 = mml__viset1_##S(key1), k2 = mml__viset1_##S(dk->k2);   \
        const mml__vi_##S thr = mml__viset1_##S(dk->thr), step = mml__viset1_##S(MML__W_##S); \
        mml__vi_##S idx = mml__viota_##S(lo);                                         \
        for (int64_t i = 0; i < n; i += MML__W_##S) {                                 \
            mml__vkeepst_##S(keep + i, n - i, mml__vkeep_##S(idx, k1, k2, thr));      \
            idx = mml__viadd_##S(idx, step);                                          \
        }                                                                             \
    }                                                                                 \
    MML__DROPOUT_KEEP(S)
#define MML__MASK_SCALE(S)                                                            \
    MML__ATTR_##S static void mml__mask_scale_##S(int64_t n, const uint8_t *keep, const float *x, \
                                                  float *y, float scale) {            \
        const mml__vf_##S sc = mml__vset1_##S(scale);                                 \
        for (int64_t i = 0; i < n; i += MML__W_##S) {                                 \
            const mml__vm_##S m = mml__vmask_##S(n - i);                              \
            const mml__vp_##S on = mml__vkeepld_##S(keep + i, n - i);                 \
            mml__vst_##S(y + i, m, mml__vand_##S(on, mml__vmul_##S(mml__vld_##S(m, x + i), sc))); \
        }                                                                             \
    }

/* bias_dropout_relu of ISA S: one row's columns [0, n) whose dropout indices
 * lo, lo+1, ... share key1 (a row crossing 2^32 is two runs). */
#define MML__BIAS_DROPOUT_RELU(S)                                                     \
    MML__INLINE(S) void mml__bdr_run_##S(float *c, const float *bias, uint8_t *keep, int n, \
                                         uint32_t lo, uint32_t key1, const mml__drop_keys *dk, \
                                         float scale, int drop, int relu) {           \
        const mml__vi_##S k1 = mml__viset1_##S(key1), k2 = mml__viset1_##S(dk->k2);   \
        const mml__vi_##S thr = mml__viset1_##S(dk->thr), step = mml__viset1_##S(MML__W_##S); \
        const mml__vf_##S sc = mml__vset1_##S(scale);                                 \
        mml__vi_##S idx = mml__viota_##S(lo);                                         \
        for (int j = 0; j < n; j += MML__W_##S) {                                     \
            const mml__vm_##S m = mml__vmask_##S(n - j);                              \
            mml__vf_##S v = mml__vadd_##S(mml__vld_##S(m, c + j), mml__vld_##S(m, bias + j)); \
            if (drop) {                                                               \
                const mml__vp_##S on = mml__vkeep_##S(idx, k1, k2, thr);              \
                if (keep) mml__vkeepst_##S(keep + j, n - j, on);                      \
                v = mml__vand_##S(on, mml__vmul_##S(v, sc));                          \
                idx = mml__viadd_##S(idx, step);                                      \
            }                                                                         \
            if (relu) v = mml__vrelu_##S(v);                                          \
            mml__vst_##S(c + j, m, v);                                                \
        }                                                                             \
    }                                                                                 \
    MML__ATTR_##S static void mml__bias_dropout_relu_##S(int M, int N, const float *bias, float *C, \
                                                         float rate, uint64_t seed, uint64_t offset, \
                                                         uint8_t *keep, int relu) {   \
        const int drop = rate > 0.0f;                                                 \
        const mml__drop_keys dk = mml__dropout_keys(seed, rate);                      \
        const float scale = drop ? 1.0f / (1.0f - rate) : 1.0f;                       \
        for (int64_t i = 0; i < M; i++) {                                             \
            float *c = C + i * N;                                                     \
            uint8_t *k = keep ? keep + i * N : NULL;                                  \
            const uint64_t base = offset + (uint64_t)(i * N), room = 4294967296ULL - (uint32_t)base; \
            const int n0 = (uint64_t)N > room ? (int)room : N;                        \
            mml__bdr_run_##S(c, bias, k, n0, (uint32_t)base, mml__dropout_key1(dk.k1, (uint32_t)(base >> 32)), \
                             &dk, scale, drop, relu);                                 \
            if (n0 < N)                                                               \
                mml__bdr_run_##S(c + n0, bias + n0, k ? k + n0 : NULL, N - n0, 0,     \
                                 mml__dropout_key1(dk.k1, (uint32_t)((base + (uint64_t)n0) >> 32)), &dk, \
                                 scale, drop, relu);                                  \
        }                                                                             \
    }
/* dropout_relu_bwd of ISA S: strips of 4 vectors of columns, the column sums
 * in registers over the rows in order (colsum_add's order). */
#define MML__DROPOUT_RELU_BWD(S)                                                      \
    MML__INLINE(S) mml__vf_##S mml__drb_vec_##S(float *d, const float *y, const uint8_t *keep, \
                                                mml__vm_##S m, int rem, mml__vf_##S sc) { \
        mml__vf_##S v = mml__vld_##S(m, d);                                           \
        if (y) v = mml__vand_##S(mml__vgt_##S(mml__vld_##S(m, y), mml__vzero_##S()), v); \
        v = mml__vmul_##S(v, sc);                                                     \
        if (keep) v = mml__vand_##S(mml__vkeepld_##S(keep, rem), v);                  \
        mml__vst_##S(d, m, v);                                                        \
        return v;                                                                     \
    }                                                                                 \
    MML__ATTR_##S static void mml__dropout_relu_bwd_##S(int M, int N, const float *y, const uint8_t *keep, \
                                                        float scale, float *dz, float *colsum) { \
        enum { W_ = MML__W_##S };                                                     \
        const mml__vf_##S sc = mml__vset1_##S(scale), zero = mml__vzero_##S();        \
        for (int j = 0; j < N; j += 4 * W_) {                                         \
            const int w = mml__mini(N - j, 4 * W_);                                   \
            const mml__vm_##S m0 = mml__vmask_##S(w), m1 = mml__vmask_##S(w - W_);    \
            const mml__vm_##S m2 = mml__vmask_##S(w - 2 * W_), m3 = mml__vmask_##S(w - 3 * W_); \
            mml__vf_##S s0 = colsum ? mml__vld_##S(m0, colsum + j) : zero, s1 = zero, s2 = zero, s3 = zero; \
            if (colsum && w > W_) s1 = mml__vld_##S(m1, colsum + j + W_);             \
            if (colsum && w > 2 * W_) s2 = mml__vld_##S(m2, colsum + j + 2 * W_);     \
            if (colsum && w > 3 * W_) s3 = mml__vld_##S(m3, colsum + j + 3 * W_);     \
            for (int64_t i = 0; i < M; i++) {                                         \
                const int64_t o = i * N + j;                                          \
                const float *yy = y ? y + o : NULL;                                   \
                const uint8_t *kk = keep ? keep + o : NULL;                           \
                s0 = mml__vadd_##S(s0, mml__drb_vec_##S(dz + o, yy, kk, m0, w, sc));  \
                if (w > W_)                                                           \
                    s1 = mml__vadd_##S(s1, mml__drb_vec_##S(dz + o + W_, yy ? yy + W_ : NULL, \
                                                            kk ? kk + W_ : NULL, m1, w - W_, sc)); \
                if (w > 2 * W_)                                                       \
                    s2 = mml__vadd_##S(s2, mml__drb_vec_##S(dz + o + 2 * W_, yy ? yy + 2 * W_ : NULL, \
                                                            kk ? kk + 2 * W_ : NULL, m2, w - 2 * W_, sc)); \
                if (w > 3 * W_)                                                       \
                    s3 = mml__vadd_##S(s3, mml__drb_vec_##S(dz + o + 3 * W_, yy ? yy + 3 * W_ : NULL, \
                                                            kk ? kk + 3 * W_ : NULL, m3, w - 3 * W_, sc)); \
            }                                                                         \
            if (colsum) {                                                             \
                mml__vst_##S(colsum + j, m0, s0);                                     \
                if (w > W_) mml__vst_##S(colsum + j + W_, m1, s1);                    \
                if (w > 2 * W_) mml__vst_##S(colsum + j + 2 * W_, m2, s2);            \
                if (w > 3 * W_) mml__vst_##S(colsum + j + 3 * W_, m3, s3);            \
            }                                                                         \
        }                                                                             \
    }

/* Lanes past E load as -inf for the maximum and are zeroed after exp. */
#define MML__SOFTMAX_ROWS(S)                                                          \
    MML__ATTR_##S static void mml__softmax_rows_##S(int M, int E, const float *x, int ldx, \
                                                    float *y, int ldy) {              \
        for (int i = 0; i < M; i++) {                                                 \
            const float *xi = x + (int64_t)i * ldx;                                   \
            float *yi = y + (int64_t)i * ldy;                                         \
            mml__vf_##S mx = mml__vset1_##S(-INFINITY);                               \
            for (int e = 0; e < E; e += MML__W_##S)                                   \
                mx = mml__vmax_##S(mx, mml__vldf_##S(mml__vmask_##S(E - e), xi + e, -INFINITY)); \
            const mml__vf_##S vmax = mml__vset1_##S(mml__vhmax_##S(mx));              \
            mml__vf_##S s = mml__vzero_##S();                                         \
            for (int e = 0; e < E; e += MML__W_##S) {                                 \
                const mml__vm_##S m = mml__vmask_##S(E - e);                          \
                const mml__vf_##S t = mml__vtail_##S(                                 \
                    m, mml__vexp_##S(mml__vsub_##S(mml__vldf_##S(m, xi + e, -INFINITY), vmax))); \
                s = mml__vadd_##S(s, t);                                              \
                mml__vst_##S(yi + e, m, t);                                           \
            }                                                                         \
            const mml__vf_##S inv = mml__vset1_##S(1.0f / mml__vhsum_##S(s));         \
            for (int e = 0; e < E; e += MML__W_##S) {                                 \
                const mml__vm_##S m = mml__vmask_##S(E - e);                          \
                mml__vst_##S(yi + e, m, mml__vmul_##S(mml__vld_##S(m, yi + e), inv)); \
            }                                                                         \
        }                                                                             \
    }

/* e = exp(-|x|); sigmoid = (x >= 0 ? 1 : e) / (1 + e), as in the scalar code;
 * bce_logits sums in doubles, lanes past n zeroed. */
#define MML__SIGMOID_BCE(S)                                                           \
    MML__INLINE(S) mml__vf_##S mml__vsigmoid_e_##S(mml__vf_##S v, mml__vf_##S e) {    \
        const mml__vf_##S one = mml__vset1_##S(1.0f);                                 \
        const mml__vp_##S ge = mml__vge_##S(v, mml__vzero_##S());                     \
        return mml__vdiv_##S(mml__vsel_##S(ge, one, e), mml__vadd_##S(one, e));       \
    }                                                                                 \
    MML__ATTR_##S static void mml__sigmoid_##S(int64_t n, const float *x, float *y) { \
        for (int64_t i = 0; i < n; i += MML__W_##S) {                                 \
            const mml__vm_##S m = mml__vmask_##S(n - i);                              \
            const mml__vf_##S v = mml__vld_##S(m, x + i);                             \
            mml__vst_##S(y + i, m, mml__vsigmoid_e_##S(v, mml__vexp_##S(mml__vnabs_##S(v)))); \
        }                                                                             \
    }                                                                                 \
    MML__ATTR_##S static double mml__bce_logits_##S(int64_t n, const float *z, const float *label, \
                                                    float scale, float *dz) {         \
        mml__vd_##S s0 = mml__vdzero_##S(), s1 = s0;                                  \
        const mml__vf_##S vs = mml__vset1_##S(scale), zero = mml__vzero_##S();        \
        for (int64_t i = 0; i < n; i += MML__W_##S) {                                 \
            const mml__vm_##S m = mml__vmask_##S(n - i);                              \
            const mml__vf_##S v = mml__vld_##S(m, z + i), yv = mml__vld_##S(m, label + i); \
            const mml__vf_##S e = mml__vexp_##S(mml__vnabs_##S(v));                   \
            mml__vf_##S l = mml__vsub_##S(mml__vmax_##S(v, zero), mml__vmul_##S(v, yv)); \
            l = mml__vtail_##S(m, mml__vadd_##S(l, mml__vlog1p_##S(e)));              \
            s0 = mml__vdadd_##S(s0, mml__vdlo_##S(l));                                \
            s1 = mml__vdadd_##S(s1, mml__vdhi_##S(l));                                \
            if (dz)                                                                   \
                mml__vst_##S(dz + i, m, mml__vmul_##S(vs, mml__vsub_##S(mml__vsigmoid_e_##S(v, e), yv))); \
        }                                                                             \
        return mml__vdhsum_##S(mml__vdadd_##S(s0, s1));                               \
    }

#define MML__GATHER_ROWS(S)                                                           \
    MML__INLINE(S) void mml__copy_##S(int64_t n, const float *src, float *dst) {      \
        int64_t j = 0;                                                                \
        for (; j + MML__W_##S <= n; j += MML__W_##S) mml__vstu_##S(dst + j, mml__vldu_##S(src + j)); \
        if (j < n) {                                                                  \
            const mml__vm_##S m = mml__vmask_##S(n - j);                              \
            mml__vst_##S(dst + j, m, mml__vld_##S(m, src + j));                       \
        }                                                                             \
    }                                                                                 \
    MML__ATTR_##S static void mml__gather_rows_##S(int n, const int32_t *ids, const float *table, \
                                                   int dim, float *out, int ldo) {    \
        for (int i = 0; i < n; i++)                                                   \
            mml__copy_##S(dim, table + (int64_t)ids[i] * dim, out + (int64_t)i * ldo); \
    }
/* ---- Adam ---- */
/* The plain update (sqrt and divide); AVX-512 has its own. Each ISA has
 * its constants mml__adamc_S (mml__adam_consts_S, once per call) and
 * mml__adam_span_S (n floats on them), which adam_dense and adam_rows share. */
#define MML__ADAM_DENSE(S)                                                            \
    typedef struct { mml__vf_##S b1, b2, c1, c2, wd, lr, eps, ibc1, ibc2; } mml__adamc_##S; \
    MML__INLINE(S) mml__adamc_##S mml__adam_consts_##S(const mml_adam_hp *hp) {       \
        mml__adamc_##S c;                                                             \
        c.b1 = mml__vset1_##S(hp->beta1), c.b2 = mml__vset1_##S(hp->beta2);           \
        c.c1 = mml__vset1_##S(1.0f - hp->beta1), c.c2 = mml__vset1_##S(1.0f - hp->beta2); \
        c.wd = mml__vset1_##S(hp->weight_decay), c.lr = mml__vset1_##S(hp->lr);       \
        c.eps = mml__vset1_##S(hp->eps);                                              \
        c.ibc1 = mml__vset1_##S(1.0f / hp->bc1), c.ibc2 = mml__vset1_##S(1.0f / hp->bc2); \
        return c;                                                                     \
    }                                                                                 \
    MML__INLINE(S) void mml__adam_span_##S(const mml__adamc_##S *c, int64_t n, float *p, const float *g, \
                                           float *m, float *v) {                      \
        for (int64_t i = 0; i < n; i += MML__W_##S) {                                 \
            const mml__vm_##S k = mml__vmask_##S(n - i);                              \
            if (!(i & 15) && i + MML__ADAM_PREFETCH < n) mml__adam_prefetch(p, g, m, v, i + MML__ADAM_PREFETCH); \
            const mml__vf_##S pv = mml__vld_##S(k, p + i);                            \
            const mml__vf_##S gv = mml__vadd_##S(mml__vld_##S(k, g + i), mml__vmul_##S(c->wd, pv)); \
            const mml__vf_##S mv = mml__vadd_##S(mml__vmul_##S(c->b1, mml__vld_##S(k, m + i)), \
                                                 mml__vmul_##S(c->c1, gv));           \
            const mml__vf_##S vv = mml__vadd_##S(mml__vmul_##S(c->b2, mml__vld_##S(k, v + i)), \
                                                 mml__vmul_##S(c->c2, mml__vmul_##S(gv, gv))); \
            mml__vst_##S(m + i, k, mv);                                               \
            mml__vst_##S(v + i, k, vv);                                               \
            const mml__vf_##S den = mml__vadd_##S(mml__vsqrt_##S(mml__vmul_##S(vv, c->ibc2)), c->eps); \
            const mml__vf_##S upd = mml__vdiv_##S(mml__vmul_##S(c->lr, mml__vmul_##S(mv, c->ibc1)), den); \
            mml__vst_##S(p + i, k, mml__vsub_##S(pv, upd));                           \
        }                                                                             \
    }                                                                                 \
    MML__ATTR_##S static void mml__adam_dense_##S(int64_t n, float *p, const float *g, float *m, \
                                                  float *v, const mml_adam_hp *hp) {  \
        const mml__adamc_##S c = mml__adam_consts_##S(hp);                            \
        mml__adam_span_##S(&c, n, p, g, m, v);                                        \
    }
#define MML__ADAM_ROWS(S)                                                             \
    MML__ATTR_##S static void mml__adam_rows_##S(int nrows, const int32_t *rows, int dim, float *p, \
                                                 const float *g, float *m, float *v,  \
                                                 const mml_adam_hp *hp) {             \
        const mml__adamc_##S c = mml__adam_consts_##S(hp); /* once for all the rows */ \
        for (int r = 0; r < nrows; r++) {                                             \
            const int64_t o = (int64_t)rows[r] * dim;                                 \
            if (r + MML__ROW_AHEAD < nrows)                                           \
                for (int64_t j = 0, q = (int64_t)rows[r + MML__ROW_AHEAD] * dim; j < dim; j += 16) \
                    mml__adam_prefetch(p, g, m, v, q + j);                            \
            mml__adam_span_##S(&c, dim, p + o, g + o, m + o, v + o);                  \
        }                                                                             \
    }

/* ---- blocks and vectors ---- */
#define MML__BLOCK_SCALE(S)                                                           \
    MML__ATTR_##S static void mml__block_scale_##S(int M, int E, int r, const float *T, int ldt, \
                                                   const float *w, int ldw, float *U, int ldu) { \
        for (int i = 0; i < M; i++)                                                   \
            for (int e = 0; e < E; e++) {                                             \
                const mml__vf_##S we = mml__vset1_##S(w[(int64_t)i * ldw + e]);       \
                const float *t = T + (int64_t)i * ldt + (int64_t)e * r;               \
                float *u = U + (int64_t)i * ldu + (int64_t)e * r;                     \
                for (int j = 0; j < r; j += MML__W_##S) {                             \
                    const mml__vm_##S m = mml__vmask_##S(r - j);                      \
                    mml__vst_##S(u + j, m, mml__vmul_##S(we, mml__vld_##S(m, t + j))); \
                }                                                                     \
            }                                                                         \
    }
#define MML__BLOCK_DOT(S)                                                             \
    MML__ATTR_##S static void mml__block_dot_##S(int M, int E, int r, const float *dU, int ldu, \
                                                 const float *T, int ldt, float *dw, int ldw, \
                                                 int accumulate) {                    \
        for (int i = 0; i < M; i++)                                                   \
            for (int e = 0; e < E; e++) {                                             \
                const float *a = dU + (int64_t)i * ldu + (int64_t)e * r;              \
                const float *b = T + (int64_t)i * ldt + (int64_t)e * r;               \
                mml__vf_##S s = mml__vzero_##S();                                     \
                for (int j = 0; j < r; j += MML__W_##S) {                             \
                    const mml__vm_##S m = mml__vmask_##S(r - j);                      \
                    s = mml__vfma_##S(mml__vld_##S(m, a + j), mml__vld_##S(m, b + j), s); \
                }                                                                     \
                const float d = mml__vhsum_##S(s);                                    \
                float *o = dw + (int64_t)i * ldw + e;                                 \
                *o = accumulate ? *o + d : d;                                         \
            }                                                                         \
    }
#define MML__AXPY_MUL(S)                                                              \
    MML__ATTR_##S static void mml__axpy_##S(int64_t n, float a, const float *x, float *y) { \
        const mml__vf_##S va = mml__vset1_##S(a);                                     \
        for (int64_t i = 0; i < n; i += MML__W_##S) {                                 \
            const mml__vm_##S m = mml__vmask_##S(n - i);                              \
            mml__vst_##S(y + i, m, mml__vfma_##S(va, mml__vld_##S(m, x + i), mml__vld_##S(m, y + i))); \
        }                                                                             \
    }                                                                                 \
    MML__ATTR_##S static void mml__mul_##S(int64_t n, const float *x, const float *y, float *z) { \
        for (int64_t i = 0; i < n; i += MML__W_##S) {                                 \
            const mml__vm_##S m = mml__vmask_##S(n - i);                              \
            mml__vst_##S(z + i, m, mml__vmul_##S(mml__vld_##S(m, x + i), mml__vld_##S(m, y + i))); \
        }                                                                             \
    }
/* Four accumulators over 4W floats, the tail into the first. */
#define MML__DOT(S)                                                                   \
    MML__ATTR_##S static float mml__dot_##S(int64_t n, const float *x, const float *y) { \
        enum { W_ = MML__W_##S };                                                     \
        mml__vf_##S s0 = mml__vzero_##S(), s1 = s0, s2 = s0, s3 = s0;                 \
        int64_t i = 0;                                                                \
        for (; i + 4 * W_ <= n; i += 4 * W_) {                                        \
            s0 = mml__vfma_##S(mml__vldu_##S(x + i), mml__vldu_##S(y + i), s0);       \
            s1 = mml__vfma_##S(mml__vldu_##S(x + i + W_), mml__vldu_##S(y + i + W_), s1); \
            s2 = mml__vfma_##S(mml__vldu_##S(x + i + 2 * W_), mml__vldu_##S(y + i + 2 * W_), s2); \
            s3 = mml__vfma_##S(mml__vldu_##S(x + i + 3 * W_), mml__vldu_##S(y + i + 3 * W_), s3); \
        }                                                                             \
        for (; i < n; i += W_) {                                                      \
            const mml__vm_##S m = mml__vmask_##S(n - i);                              \
            s0 = mml__vfma_##S(mml__vld_##S(m, x + i), mml__vld_##S(m, y + i), s0);   \
        }                                                                             \
        return mml__vhsum_##S(mml__vadd_##S(mml__vadd_##S(s0, s1), mml__vadd_##S(s2, s3))); \
    }

/* The bodies every vector ISA instantiates (after its adam_dense). */
#define MML__VEC_KERNELS(S)                                                           \
    MML__GEMM_UKERNELS(S) MML__PACK_BN(S) MML__RELU_FWD(S) MML__RELU_BWD(S)           \
    MML__ADD_ROWS(S) MML__COLSUM_ADD(S) MML__KEEP_RUN(S) MML__BIAS_DROPOUT_RELU(S)    \
    MML__SOFTMAX_ROWS(S)                                                              \
    MML__SIGMOID_BCE(S) MML__ADAM_ROWS(S) MML__BLOCK_DOT(S)                           \
    MML__AXPY_MUL(S)
/* ... and those only the x86 ISAs take (NEON keeps scalar ones or its own). */
#define MML__X86_KERNELS(S)                                                           \
    MML__PACK_A(S) MML__MASK_SCALE(S) MML__DROPOUT_RELU_BWD(S) MML__GATHER_ROWS(S)    \
    MML__BLOCK_SCALE(S) MML__DOT(S)
#endif /* MML__VEC */

#ifdef MML__X86
// >>kernels-avx2 ------------------------------------------------------------
#define MML__ATTR_avx2 __attribute__((target("avx2,fma")))
#define MML__W_avx2 8
#define MML__MR_avx2 6 /* 6 x 16 micro-kernel: 12 ymm accumulators */
#define MML__UK_MODES_avx2 2

MML__ATTR_avx2 __m256 Sleef_expf8_u10avx2(__m256);
MML__ATTR_avx2 __m256 Sleef_log1pf8_u10avx2(__m256);

/* Width layer (see >>kernels-shared): tail masks are maskload/maskstore lane
 * masks, compare results all-ones float lanes. */
typedef __m256 mml__vf_avx2;
typedef __m256i mml__vm_avx2;
typedef __m256 mml__vp_avx2;
typedef __m256i mml__vi_avx2;
typedef __m256d mml__vd_avx2;
MML__WIDTH_LAYER(avx2, __m256, __m256i, __m256, __m256i, __m256d)
static const int32_t mml__mask_tbl_avx2[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                               0,  0,  0,  0,  0,  0,  0,  0};
MML__INLINE(avx2) __m256i mml__vmask_avx2(int64_t rem) {
    const int r = rem <= 0 ? 0 : rem >= 8 ? 8 : (int)rem;
    return _mm256_loadu_si256((const __m256i *)(const void *)(mml__mask_tbl_avx2 + 8 - r));
}
MML__INLINE(avx2) float mml__vhsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
MML__INLINE(avx2) float mml__vhmax_avx2(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
MML__INLINE(avx2) double mml__vdhsum_avx2(__m256d v) {
    const __m128d t = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}
MML__INLINE(avx2) __m256i mml__viota_avx2(uint32_t lo) {
    return _mm256_add_epi32(_mm256_set1_epi32((int)lo), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
MML__INLINE(avx2) void mml__vkeepst_avx2(uint8_t *keep, int64_t rem, __m256 p) {
    const int bits = _mm256_movemask_ps(p), c = rem < 8 ? (int)rem : 8;
    for (int j = 0; j < c; j++) keep[j] = (uint8_t)((bits >> j) & 1);
}
/* The tail's bytes go through a zeroed copy: no byte past keep[rem-1] is read. */
MML__INLINE(avx2) __m256 mml__vkeepld_avx2(const uint8_t *keep, int64_t rem) {
    uint8_t t[8] = {0};
    if (rem < 8) memcpy(t, keep, (size_t)rem);
    const __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)(rem < 8 ? t : keep));
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_cvtepu8_epi32(b), _mm256_setzero_si256()));
}

/* Shared bodies, the plain Adam and packed GEMM, B^T packed by plain copies. */
MML__PACK_BT_PLAIN(avx2) MML__ADAM_DENSE(avx2) MML__VEC_KERNELS(avx2) MML__X86_KERNELS(avx2)
MML__GEMM_ISA(avx2, mml__pack_a_avx2, NULL, 0) MML__PACKED_PLAIN(avx2) MML__ADAM_STEPS_PLAIN(avx2)
MML__GEMM_BF16_EMUL_ALL(avx2)
MML__PACKED_BF16_PLAIN(avx2)
MML__GEMM_PAIRS_CALLS(avx2)

// >>kernels-avx512 ----------------------------------------------------------
#define MML__ATTR_avx512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define MML__W_avx512 16
#define MML__MR_avx512 12 /* 12 x 32 micro-kernel: 24 zmm accumulators */
#define MML__UK_MODES_avx512 3
/* GCC 12 in C++ mode warns inside its own AVX-512 headers (_mm512_undefined_ps,
 * GCC bug 105593); silence that one warning for this chapter. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

MML__ATTR_avx512 __m512 Sleef_expf16_u10avx512f(__m512);
MML__ATTR_avx512 __m512 Sleef_log1pf16_u10avx512f(__m512);

/* Width layer (see >>kernels-shared): tails and compares are __mmask16. */
typedef __m512 mml__vf_avx512;
typedef __mmask16 mml__vm_avx512;
typedef __mmask16 mml__vp_avx512;
typedef __m512i mml__vi_avx512;
typedef __m512d mml__vd_avx512;
MML__WIDTH_LAYER(avx512, __m512, __mmask16, __mmask16, __m512i, __m512d)
MML__INLINE(avx512) __mmask16 mml__vmask_avx512(int64_t rem) {
    return rem >= 16 ? (__mmask16)0xFFFF : rem <= 0 ? (__mmask16)0 : (__mmask16)((1u << rem) - 1u);
}
/* Horizontal reductions by shuffles (GCC 12's _mm512_reduce_* warn in C++):
 * lane i meets lane i^8, then i^4, i^2, i^1. */
MML__INLINE(avx512) __m512 mml__vswap_avx512(__m512 v, int step) {
    switch (step) {
    case 0: return _mm512_shuffle_f32x4(v, v, 0x4E);
    case 1: return _mm512_shuffle_f32x4(v, v, 0xB1);
    case 2: return _mm512_permute_ps(v, 0x4E);
    default: return _mm512_permute_ps(v, 0xB1);
    }
}
MML__INLINE(avx512) float mml__vhsum_avx512(__m512 v) {
    for (int step = 0; step < 4; step++) v = _mm512_add_ps(v, mml__vswap_avx512(v, step));
    return _mm512_cvtss_f32(v);
}
MML__INLINE(avx512) float mml__vhmax_avx512(__m512 v) {
    for (int step = 0; step < 4; step++) v = _mm512_max_ps(v, mml__vswap_avx512(v, step));
    return _mm512_cvtss_f32(v);
}
MML__INLINE(avx512) double mml__vdhsum_avx512(__m512d v) {
    v = _mm512_add_pd(v, _mm512_shuffle_f64x2(v, v, 0x4E));
    v = _mm512_add_pd(v, _mm512_shuffle_f64x2(v, v, 0xB1));
    v = _mm512_add_pd(v, _mm512_permute_pd(v, 0x55));
    return _mm512_cvtsd_f64(v);
}
MML__INLINE(avx512) __m512i mml__viota_avx512(uint32_t lo) {
    return _mm512_add_epi32(_mm512_set1_epi32((int)lo),
                            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}
MML__INLINE(avx512) void mml__vkeepst_avx512(uint8_t *keep, int64_t rem, __mmask16 p) {
    _mm_mask_storeu_epi8(keep, mml__vmask_avx512(rem), _mm_maskz_set1_epi8(p, 1));
}
MML__INLINE(avx512) __mmask16 mml__vkeepld_avx512(const uint8_t *keep, int64_t rem) {
    const __m128i kb = _mm_maskz_loadu_epi8(mml__vmask_avx512(rem), keep);
    return _mm_test_epi8_mask(kb, kb);
}

/* GEMM with few rows (batch-1 inference): stream row-major B once, 64 columns
 * of four accumulators per pass, no packing (mml__gemm_isa.small_m). */
MML__ATTR_avx512 static void mml__gemm_smallm_avx512(int M, int N, int K, const float *A, int lda,
                                                     const float *B, int ldb, float *C, int ldc,
                                                     int accumulate) {
    for (int i = 0; i < M; i++) {
        const float *a = A + (int64_t)i * lda;
        float *c = C + (int64_t)i * ldc;
        for (int j = 0; j < N; j += 64) {
            const __mmask16 m0 = mml__vmask_avx512(N - j), m1 = mml__vmask_avx512(N - j - 16),
                            m2 = mml__vmask_avx512(N - j - 32), m3 = mml__vmask_avx512(N - j - 48);
            __m512 c0 = accumulate ? _mm512_maskz_loadu_ps(m0, c + j) : _mm512_setzero_ps();
            __m512 c1 = accumulate ? _mm512_maskz_loadu_ps(m1, c + j + 16) : _mm512_setzero_ps();
            __m512 c2 = accumulate ? _mm512_maskz_loadu_ps(m2, c + j + 32) : _mm512_setzero_ps();
            __m512 c3 = accumulate ? _mm512_maskz_loadu_ps(m3, c + j + 48) : _mm512_setzero_ps();
            const float *b = B + j;
            for (int k = 0; k < K; k++, b += ldb) {
                const __m512 av = _mm512_set1_ps(a[k]);
                c0 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m0, b), c0);
                c1 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m1, b + 16), c1);
                c2 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m2, b + 32), c2);
                c3 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m3, b + 48), c3);
            }
            _mm512_mask_storeu_ps(c + j, m0, c0);
            _mm512_mask_storeu_ps(c + j + 16, m1, c1);
            _mm512_mask_storeu_ps(c + j + 32, m2, c2);
            _mm512_mask_storeu_ps(c + j + 48, m3, c3);
        }
    }
}

/* In-register transpose of 16 x 16 floats: r[i][j] -> r[j][i]. */
MML__ATTR_avx512 static inline void mml__transpose16_avx512(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
            t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xDD);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
    }
}

/* B^T [nc, kc] -> the panels, by 16 x 16 tiles of B's rows read along k and
 * turned in registers (rows past nc read as zero, k tails masked): 5-12%
 * faster over the whole gemm_nt than a gather per k and 16 columns. */
MML__ATTR_avx512 static void mml__pack_bt_avx512(int kc, int nc, const float *B, int64_t ldb, void *pbv) {
    float *pb = (float *)pbv;
    for (int j0 = 0; j0 < nc; j0 += 32) {
        const int w = nc - j0 < 32 ? nc - j0 : 32;
        const int nr = w > 16 ? 32 : 16;
        for (int k0 = 0; k0 < kc; k0 += 16) {
            const int kk = kc - k0 < 16 ? kc - k0 : 16;
            const __mmask16 mk = mml__vmask_avx512(kk);
            for (int h = 0; h < nr; h += 16) {
                __m512 r[16];
                for (int i = 0; i < 16; i++)
                    r[i] = h + i < w ? _mm512_maskz_loadu_ps(mk, B + (int64_t)(j0 + h + i) * ldb + k0)
                                     : _mm512_setzero_ps();
                mml__transpose16_avx512(r);
                for (int c = 0; c < kk; c++) _mm512_storeu_ps(pb + (int64_t)(k0 + c) * nr + h, r[c]);
            }
        }
        pb += (int64_t)kc * nr;
    }
}

/* One Adam update of 16 lanes (the body adam_dense and adam_steps share). */
typedef struct mml__adamc_avx512 {
    __m512 b1, b2, c1, c2, wd, lr, eps, ibc1, ibc2, tiny, half, one;
} mml__adamc_avx512;

MML__ATTR_avx512 static inline mml__adamc_avx512 mml__adam_consts_avx512(const mml_adam_hp *hp) {
    mml__adamc_avx512 c;
    c.b1 = _mm512_set1_ps(hp->beta1);
    c.b2 = _mm512_set1_ps(hp->beta2);
    c.c1 = _mm512_set1_ps(1.0f - hp->beta1);
    c.c2 = _mm512_set1_ps(1.0f - hp->beta2);
    c.wd = _mm512_set1_ps(hp->weight_decay);
    c.lr = _mm512_set1_ps(hp->lr);
    c.eps = _mm512_set1_ps(hp->eps);
    c.ibc1 = _mm512_set1_ps(1.0f / hp->bc1);
    c.ibc2 = _mm512_set1_ps(1.0f / hp->bc2);
    c.tiny = _mm512_set1_ps(FLT_MIN);
    c.half = _mm512_set1_ps(0.5f);
    c.one = _mm512_set1_ps(1.0f);
    return c;
}

/* p -= lr * (m / bc1) / (sqrt(v / bc2) + eps). sqrt and divide take ~20
 * cycles of throughput per vector; 14-bit estimates with one Newton step each
 * are good to about 1 ulp and cost a few FMAs. sqrt(x) for x below FLT_MIN
 * (< 1.1e-19) counts as 0 next to eps. */
MML__ATTR_avx512 static inline void mml__adam512_apply(const mml__adamc_avx512 *c, __m512 *p, __m512 m, __m512 v) {
    __m512 x = _mm512_mul_ps(v, c->ibc2), y = _mm512_rsqrt14_ps(x);
    __mmask16 pos = _mm512_cmp_ps_mask(x, c->tiny, _CMP_GE_OQ);
    __m512 sq = _mm512_maskz_mul_ps(pos, x, y);
    sq = _mm512_mask3_fmadd_ps(_mm512_mul_ps(c->half, y), _mm512_fnmadd_ps(sq, sq, x), sq, pos);
    __m512 den = _mm512_add_ps(sq, c->eps), rc = _mm512_rcp14_ps(den);
    rc = _mm512_fmadd_ps(rc, _mm512_fnmadd_ps(den, rc, c->one), rc);
    *p = _mm512_sub_ps(*p, _mm512_mul_ps(_mm512_mul_ps(c->lr, _mm512_mul_ps(m, c->ibc1)), rc));
}

/* p, m, v of 16 lanes and the gradient g -> updated in place. */
MML__ATTR_avx512 static inline void mml__adam512_step(const mml__adamc_avx512 *c, __m512 g, __m512 *p, __m512 *m,
                                                      __m512 *v) {
    __m512 gv = _mm512_add_ps(g, _mm512_mul_ps(c->wd, *p));
    *m = _mm512_add_ps(_mm512_mul_ps(c->b1, *m), _mm512_mul_ps(c->c1, gv));
    *v = _mm512_add_ps(_mm512_mul_ps(c->b2, *v), _mm512_mul_ps(c->c2, _mm512_mul_ps(gv, gv)));
    mml__adam512_apply(c, p, *m, *v);
}

/* mml__adam512_step with g = 0 and no weight decay: the gradient terms are
 * +0 (for a finite p), and adding +0 keeps the bits (it also turns -0 into +0,
 * as the full step does). A fifth fewer operations for the replays. */
MML__ATTR_avx512 static inline void mml__adam512_step_zero(const mml__adamc_avx512 *c, __m512 *p, __m512 *m,
                                                           __m512 *v) {
    const __m512 zero = _mm512_setzero_ps();
    *m = _mm512_add_ps(_mm512_mul_ps(c->b1, *m), zero);
    *v = _mm512_add_ps(_mm512_mul_ps(c->b2, *v), zero);
    mml__adam512_apply(c, p, *m, *v);
}

MML__ATTR_avx512 static inline void mml__adam_span_avx512(const mml__adamc_avx512 *c, int64_t n, float *p,
                                                         const float *g, float *m, float *v) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = mml__vmask_avx512(n - i);
        if (i + MML__ADAM_PREFETCH < n) mml__adam_prefetch(p, g, m, v, i + MML__ADAM_PREFETCH);
        __m512 pv = _mm512_maskz_loadu_ps(k, p + i), mv = _mm512_maskz_loadu_ps(k, m + i);
        __m512 vv = _mm512_maskz_loadu_ps(k, v + i);
        mml__adam512_step(c, _mm512_maskz_loadu_ps(k, g + i), &pv, &mv, &vv);
        _mm512_mask_storeu_ps(m + i, k, mv);
        _mm512_mask_storeu_ps(v + i, k, vv);
        _mm512_mask_storeu_ps(p + i, k, pv);
    }
}
MML__ATTR_avx512 static void mml__adam_dense_avx512(int64_t n, float *p, const float *g, float *m,
                                                    float *v, const mml_adam_hp *hp) {
    const mml__adamc_avx512 c = mml__adam_consts_avx512(hp);
    mml__adam_span_avx512(&c, n, p, g, m, v);
}

/* Blocks of up to 128 floats stay in registers across the steps; with
 * first, a lane keeps its values until its first step (the masking stops
 * once every lane of the block has joined: most steps of a replay). */
MML__ATTR_avx512 static void mml__adam_steps_avx512(int64_t n, float *p, float *m, float *v,
                                                    const mml_adam_hp *hp, int steps, const int32_t *first) {
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t o = 0; o < n; o += 128) {
        __m512 pv[8], mv[8], vv[8];
        __m512i fv[8];
        __mmask16 k[8];
        for (int j = 0; j < 8; j++) {
            int64_t i = o + 16 * j;
            k[j] = i < n ? mml__vmask_avx512(n - i) : 0;
            pv[j] = _mm512_maskz_loadu_ps(k[j], p + i);
            mv[j] = _mm512_maskz_loadu_ps(k[j], m + i);
            vv[j] = _mm512_maskz_loadu_ps(k[j], v + i);
            fv[j] = first ? _mm512_maskz_loadu_epi32(k[j], first + i) : _mm512_setzero_si512();
        }
        int all_from = 0; /* the first step at which every lane of the block takes part */
        if (first)
            for (int j = 0; j < 8; j++) {
                int f = _mm512_reduce_max_epi32(fv[j]);
                all_from = f > all_from ? f : all_from;
            }
        for (int s = 0; s < steps; s++) {
            const mml__adamc_avx512 c = mml__adam_consts_avx512(hp + s);
            const int plain = hp[s].weight_decay == 0.0f;
            if (s >= all_from) {
                if (plain)
                    for (int j = 0; j < 8; j++) mml__adam512_step_zero(&c, &pv[j], &mv[j], &vv[j]);
                else
                    for (int j = 0; j < 8; j++) mml__adam512_step(&c, zero, &pv[j], &mv[j], &vv[j]);
                continue;
            }
            const __m512i sv = _mm512_set1_epi32(s);
            for (int j = 0; j < 8; j++) {
                __m512 p1 = pv[j], m1 = mv[j], v1 = vv[j];
                if (plain) mml__adam512_step_zero(&c, &p1, &m1, &v1);
                else mml__adam512_step(&c, zero, &p1, &m1, &v1);
                __mmask16 on = _mm512_cmple_epi32_mask(fv[j], sv);
                pv[j] = _mm512_mask_mov_ps(pv[j], on, p1);
                mv[j] = _mm512_mask_mov_ps(mv[j], on, m1);
                vv[j] = _mm512_mask_mov_ps(vv[j], on, v1);
            }
        }
        for (int j = 0; j < 8; j++) {
            int64_t i = o + 16 * j;
            _mm512_mask_storeu_ps(m + i, k[j], mv[j]);
            _mm512_mask_storeu_ps(v + i, k[j], vv[j]);
            _mm512_mask_storeu_ps(p + i, k[j], pv[j]);
        }
    }
}

/* Shared bodies; the GEMM with the few-rows path and its own packed layout. */
MML__VEC_KERNELS(avx512) MML__X86_KERNELS(avx512)
MML__GEMM_ISA(avx512, mml__pack_a_avx512, mml__gemm_smallm_avx512, 2) MML__GEMM_PACKED(avx512)

/* ---- AVX512_BF16: vdpbf16ps micro-kernels on panels of bf16 k-pairs ----
 * A 32-bit lane holds (bf16 of k, bf16 of k+1) of one column of B or row of
 * A; vdpbf16ps adds both products to an fp32 accumulator. Odd k ends with a
 * zero pair half on both sides. The compiler must know the instructions. */
#if (defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10)
#define MML__BF16_HW 1
#define MML__ATTR_avx512bf16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))
typedef uint32_t mml__u32a __attribute__((may_alias));

/* Lanes (lo[i], hi[i]) as bf16 pairs: i-th 32-bit lane = bf16(lo[i]) | bf16(hi[i]) << 16. */
MML__ATTR_avx512bf16 static inline __m512i mml__bf16_pairs_avx512(__m512 lo, __m512 hi) {
    /* 16-bit indices 0, 16, 1, 17, ...: lane i is i | (16 + i) << 16 */
    const __m512i idx = _mm512_add_epi32(_mm512_mullo_epi32(mml__viota_avx512(0), _mm512_set1_epi32(0x10001)),
                                         _mm512_set1_epi32(0x100000));
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}
/* n <= 32 consecutive floats (zero beyond n) -> 16 pairs, in k order. */
MML__ATTR_avx512bf16 static inline __m512i mml__bf16_run_avx512(const float *x, int n) {
    const __m512 lo = _mm512_maskz_loadu_ps(mml__vmask_avx512(n), x);
    const __m512 hi = _mm512_maskz_loadu_ps(mml__vmask_avx512(n - 16), x + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}
/* Rows of k-contiguous floats (row j at src + j*ld, j < n) -> pairs at
 * dst[kp*stride + j]: 16 rows by 16 pairs at a time, turned in registers
 * (rows past n read as zero and are not stored). */
MML__ATTR_avx512bf16 static void mml__bf16_rows_avx512(int kc, int n, const float *src, int64_t ld, mml__u32a *dst,
                                                int stride) {
    for (int j0 = 0; j0 < n; j0 += 16) {
        const int nj = mml__mini(n - j0, 16);
        const __mmask16 mj = mml__vmask_avx512(nj);
        for (int k0 = 0; k0 < kc; k0 += 32) {
            const int np = mml__mini((kc - k0 + 1) / 2, 16);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < nj ? _mm512_castsi512_ps(mml__bf16_run_avx512(src + (int64_t)(j0 + i) * ld + k0, kc - k0))
                              : _mm512_setzero_ps();
            mml__transpose16_avx512(r);
            for (int p = 0; p < np; p++)
                _mm512_mask_storeu_ps((float *)(dst + (int64_t)(k0 / 2 + p) * stride + j0), mj, r[p]);
        }
    }
}
/* B[kc, nc] -> panels of 32 (or 16) columns, k-pair-major. */
MML__ATTR_avx512bf16 static void mml__pack_bn_bf16_avx512(int kc, int nc, const float *B, int64_t ldb, void *pbv) {
    mml__u32a *pb = (mml__u32a *)pbv;
    const int kp = (kc + 1) / 2;
    for (int j0 = 0; j0 < nc; j0 += 32) {
        const int w = mml__mini(nc - j0, 32), nr = w > 16 ? 32 : 16;
        for (int h = 0; h < nr; h += 16) {
            const __mmask16 m = mml__vmask_avx512(w - h);
            for (int p = 0; p < kp; p++) {
                const float *r0 = B + (int64_t)(2 * p) * ldb + j0 + h;
                const __m512 lo = _mm512_maskz_loadu_ps(m, r0);
                const __m512 hi = 2 * p + 1 < kc ? _mm512_maskz_loadu_ps(m, r0 + ldb) : _mm512_setzero_ps();
                _mm512_storeu_si512((void *)(pb + (int64_t)p * nr + h), mml__bf16_pairs_avx512(lo, hi));
            }
        }
        pb += (int64_t)kp * nr;
    }
}
/* B^T [nc, kc]: a column's k-pairs are adjacent floats already. */
MML__ATTR_avx512bf16 static void mml__pack_bt_bf16_avx512(int kc, int nc, const float *B, int64_t ldb, void *pbv) {
    mml__u32a *pb = (mml__u32a *)pbv;
    const int kp = (kc + 1) / 2;
    for (int j0 = 0; j0 < nc; j0 += 32) {
        const int w = mml__mini(nc - j0, 32), nr = w > 16 ? 32 : 16;
        mml__bf16_rows_avx512(kc, w, B + (int64_t)j0 * ldb, ldb, pb, nr);
        for (int p = 0; p < kp; p++)
            for (int j = w; j < nr; j++) pb[(int64_t)p * nr + j] = 0;
        pb += (int64_t)kp * nr;
    }
}
/* A rows (nn, nt) -> row i's pairs at pa[i*MML__BF16_ROWS_LD + kp], as they
 * are (the mode-1 micro-kernels read them there); A^T slivers (tn) ->
 * pa[kp*12 + i]. */
MML__ATTR_avx512bf16 static void mml__pack_a_rows_bf16_avx512(int kc, int mr, const float *a, int64_t lda, float *pa) {
    mml__u32a *dst = (mml__u32a *)pa;
    for (int i = 0; i < mr; i++)
        for (int k0 = 0; k0 < kc; k0 += 32)
            _mm512_mask_storeu_epi32(dst + (int64_t)i * MML__BF16_ROWS_LD + k0 / 2,
                                     mml__vmask_avx512((kc - k0 + 1) / 2),
                                     mml__bf16_run_avx512(a + (int64_t)i * lda + k0, kc - k0));
}
MML__ATTR_avx512bf16 static void mml__pack_at_bf16_avx512(int kc, int mr, const float *a, int64_t lda, float *pa) {
    const __mmask16 m = mml__vmask_avx512(mr);
    for (int p = 0; 2 * p < kc; p++) {
        const float *r0 = a + (int64_t)(2 * p) * lda;
        const __m512 lo = _mm512_maskz_loadu_ps(m, r0);
        const __m512 hi = 2 * p + 1 < kc ? _mm512_maskz_loadu_ps(m, r0 + lda) : _mm512_setzero_ps();
        _mm512_mask_storeu_epi32(pa + p * MML__MR_avx512, m, mml__bf16_pairs_avx512(lo, hi));
    }
}

#define MML__UKBF_DECL(r, S) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = c##r##0;
#define MML__UKBF_DP(r, S)                                                            \
    if (MR_ > r) {                                                                    \
        const __m512bh ar = (__m512bh)_mm512_set1_epi32((int)ap[RM_ ? r * MML__BF16_ROWS_LD : r]); \
        c##r##0 = _mm512_dpbf16_ps(c##r##0, ar, b0);                                  \
        if (NV_ > 1) c##r##1 = _mm512_dpbf16_ps(c##r##1, ar, b1);                     \
    }
/* mml__uk_fn on pairs: A always packed, MODE 0: pair (r, kp) at
 * a + kp*lda + r; 1: at a + r*MML__BF16_ROWS_LD + kp (pack_a_rows' layout;
 * lda is that constant there, and as a constant the 12 rows' addresses are
 * displacements of one register). No epilogue. */
#define MML__UKBF(S, MR, NV, MODE)                                                    \
    MML__ATTR_avx512bf16 static void mml__ukbf_##MR##_##NV##_##MODE##_avx512(         \
        int kc, const float *a, int64_t lda, const void *bp, float *c, int64_t ldc,   \
        int w, int load_c, const float *bias, int relu) {                             \
        enum { MR_ = MR, NV_ = NV, RM_ = MODE, EPI_ = 0, W_ = 16 };                   \
        const mml__u32a *ap = (const mml__u32a *)a, *b = (const mml__u32a *)bp;       \
        MML__R12(MML__UKBF_DECL, S)                                                   \
        for (int p = 0; 2 * p < kc; p++) {                                            \
            const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)b);       \
            const __m512bh b1 = NV_ > 1 ? (__m512bh)_mm512_loadu_si512((const void *)(b + 16)) : b0; \
            (void)b1;                                                                 \
            MML__R12(MML__UKBF_DP, S)                                                 \
            b += 16 * NV_;                                                            \
            ap += RM_ ? 1 : lda;                                                      \
        }                                                                             \
        const __mmask16 m0 = mml__vmask_avx512(w), m1 = mml__vmask_avx512(w - W_);    \
        const __m512 bv0 = _mm512_setzero_ps(), bv1 = bv0;                            \
        (void)bias, (void)relu, (void)bv1;                                            \
        MML__R12(MML__UK_STORE, avx512)                                               \
    }
MML__UPTO12(MML__UKBF, avx512, 1, 0) MML__UPTO12(MML__UKBF, avx512, 2, 0)
MML__UPTO12(MML__UKBF, avx512, 1, 1) MML__UPTO12(MML__UKBF, avx512, 2, 1)

/* ---- AMX-BF16: tdpbf16ps on 16 x 16 fp32 tiles (Sapphire Rapids on) ----
 * Eight tile registers of 16 rows x 64 bytes: C in four (a 32 x 32 block),
 * two A tiles (16 rows x 32 bf16 of k) and two B tiles (16 k-pairs x 16
 * columns of bf16 pairs, the vdpbf16ps lane layout). tdpbf16ps adds each
 * row-column pair sum to its fp32 C element; like vdpbf16ps it flushes
 * subnormal inputs and results (the inputs are bf16 already, flushed as
 * vcvtne2ps2bf16 does, so only a subnormal sum can differ) and rounds to
 * nearest even. Per call: the tiles are configured, the problem walked in
 * blocks of NB columns x KB of k, B's block packed once, A packed 32 rows
 * at a time, and the tiles released (their state is large, and the OS
 * saves it only while they are in use). Linux hands the tile data to a
 * process only on request (arch_prctl, >>dispatch). The instructions are
 * written as inline assembly with a memory clobber, so that the compiler
 * neither needs to know them nor moves loads and stores across them. */
#if defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define MML__AMX 1
#define MML__AMX_KB 256 /* k per block: 8 tile steps of 32 */
#define MML__AMX_NB 256 /* columns per block: 16 B tiles */
#define MML__TILE_LOAD(t, base, stride)                                                                     \
    __asm__ volatile("{tileloadd (%0,%1,1), %%tmm" #t "|tileloadd tmm" #t ", [%0+%1*1]}" ::"r"(base),       \
                     "r"((int64_t)(stride))                                                                 \
                     : "memory")
#define MML__TILE_STORE(t, base, stride)                                                                    \
    __asm__ volatile("{tilestored %%tmm" #t ", (%0,%1,1)|tilestored [%0+%1*1], tmm" #t "}" ::"r"(base),     \
                     "r"((int64_t)(stride))                                                                 \
                     : "memory")
#define MML__TILE_ZERO(t) __asm__ volatile("{tilezero %%tmm" #t "|tilezero tmm" #t "}" ::)
/* C tile c += A tile a . B tile b */
#define MML__TILE_DP(c, a, b)                                                                               \
    __asm__ volatile("{tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c "|tdpbf16ps tmm" #c ", tmm" #a         \
                     ", tmm" #b "}" ::)

/* Palette 1, every tile 16 rows of 64 bytes. */
static void mml__amx_config(void) {
    unsigned char cfg[64] MML__ALIGN64;
    memset(cfg, 0, sizeof cfg);
    cfg[0] = 1;
    for (int t = 0; t < 8; t++) {
        cfg[16 + 2 * t] = 64;
        cfg[48 + t] = 16;
    }
    __asm__ volatile("{ldtilecfg (%0)|ldtilecfg [%0]}" ::"r"(cfg) : "memory");
}
static inline void mml__amx_release(void) { __asm__ volatile("tilerelease" ::: "memory"); }

/* The 16 x 16 dwords v[r] lane c -> dst[c*16 + r]. */
MML__ATTR_avx512bf16 static void mml__amx_transpose_avx512(const __m512i v[16], mml__u32a *dst) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
    }
    /* u[4i+q], 128-bit lane L: column 4L+q, rows 4i..4i+3 */
    for (int i = 0; i < 4; i++) {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int q = 0; q < 4; q++) { /* the 4 x 4 lanes of u[q], u[4+q], u[8+q], u[12+q] */
        const __m512i x0 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0x44), x1 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0xEE);
        const __m512i x2 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0x44),
                      x3 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0xEE);
        _mm512_storeu_si512((void *)(dst + (0 + q) * 16), _mm512_shuffle_i32x4(x0, x2, 0x88));
        _mm512_storeu_si512((void *)(dst + (4 + q) * 16), _mm512_shuffle_i32x4(x0, x2, 0xDD));
        _mm512_storeu_si512((void *)(dst + (8 + q) * 16), _mm512_shuffle_i32x4(x1, x3, 0x88));
        _mm512_storeu_si512((void *)(dst + (12 + q) * 16), _mm512_shuffle_i32x4(x1, x3, 0xDD));
    }
}

/* One 16 x 16-dword tile of pairs from X (ld apart): "rows" (k contiguous
 * along each of n rows, from k0 of kn valid) or k-major (n columns of pairs
 * of rows k0, k0+1 ...). Row r of the tile: 16 k-pairs of row r (an A tile)
 * when want_rows, else k-pair r of 16 columns (a B tile). Missing rows,
 * columns and k are zero. */
MML__ATTR_avx512bf16 static void mml__amx_tile_avx512(const float *X, int64_t ld, int k_contig, int n, int kn,
                                               int want_rows, mml__u32a *dst) {
    __m512i v[16];
    const __mmask16 m = mml__vmask_avx512(n);
    for (int r = 0; r < 16; r++) {
        if (k_contig) /* v[r]: the 16 k-pairs of row/column r */
            v[r] = r < n ? mml__bf16_run_avx512(X + (int64_t)r * ld, kn) : _mm512_setzero_si512();
        else { /* v[r]: k-pair r of the n rows/columns */
            const __m512 lo = 2 * r < kn ? _mm512_maskz_loadu_ps(m, X + (int64_t)(2 * r) * ld) : _mm512_setzero_ps();
            const __m512 hi = 2 * r + 1 < kn ? _mm512_maskz_loadu_ps(m, X + (int64_t)(2 * r + 1) * ld)
                                             : _mm512_setzero_ps();
            v[r] = mml__bf16_pairs_avx512(lo, hi);
        }
    }
    /* k_contig gives rows of k: an A tile as is, a B tile transposed; k-major
     * the other way round */
    if (k_contig == want_rows)
        for (int r = 0; r < 16; r++) _mm512_storeu_si512((void *)(dst + r * 16), v[r]);
    else
        mml__amx_transpose_avx512(v, dst);
}

/* Accumulator tile T <- C[0:rows, 0:cols] (zero if !load), and back. Whole
 * tiles go straight to and from C; edge tiles through a padded copy. */
#define MML__AMX_CIN(T, c, ldc, rows, cols, load)                                                           \
    do {                                                                                                    \
        if (!(load)) MML__TILE_ZERO(T);                                                                     \
        else if ((rows) == 16 && (cols) == 16) MML__TILE_LOAD(T, c, (ldc) * 4);                             \
        else {                                                                                              \
            memset(edge, 0, sizeof edge);                                                                   \
            for (int r_ = 0; r_ < (rows); r_++) memcpy(edge + r_ * 16, (c) + r_ * (ldc), (size_t)(cols) * 4); \
            MML__TILE_LOAD(T, edge, 64);                                                                    \
        }                                                                                                   \
    } while (0)
#define MML__AMX_COUT(T, c, ldc, rows, cols)                                                                \
    do {                                                                                                    \
        if ((rows) == 16 && (cols) == 16) MML__TILE_STORE(T, c, (ldc) * 4);                                 \
        else {                                                                                              \
            MML__TILE_STORE(T, edge, 64);                                                                   \
            for (int r_ = 0; r_ < (rows); r_++) memcpy((c) + r_ * (ldc), edge + r_ * 16, (size_t)(cols) * 4); \
        }                                                                                                   \
    } while (0)

/* C[0:mr, 0:nc] (+)= the packed A rows (2 tiles of 16 rows, kt k-tiles each)
 * times the packed B block (nt column tiles of kt k-tiles). */
static void mml__amx_block(int mr, int nc, int kt, const mml__u32a *pa, const mml__u32a *pb, float *C,
                           int64_t ldc, int load) {
    float edge[256] MML__ALIGN64;
    const int two_a = mr > 16, r0 = mml__mini(mr, 16), r1 = mr - r0;
    const mml__u32a *a1 = pa + (int64_t)kt * 256;
    for (int j0 = 0; j0 < nc; j0 += 32) {
        const int c0 = mml__mini(nc - j0, 16), c1 = nc - j0 - c0 > 16 ? 16 : nc - j0 - c0, two_b = c1 > 0;
        const mml__u32a *b0 = pb + (int64_t)(j0 / 16) * kt * 256, *b1 = b0 + (int64_t)kt * 256;
        float *cp = C + j0, *cq = C + 16 * ldc + j0;
        MML__AMX_CIN(0, cp, ldc, r0, c0, load);
        if (two_b) MML__AMX_CIN(1, cp + 16, ldc, r0, c1, load);
        if (two_a) MML__AMX_CIN(2, cq, ldc, r1, c0, load);
        if (two_a && two_b) MML__AMX_CIN(3, cq + 16, ldc, r1, c1, load);
        for (int t = 0; t < kt; t++) { /* tile numbers are immediates: the edges by branches */
            MML__TILE_LOAD(4, pa + t * 256, 64);
            MML__TILE_LOAD(6, b0 + t * 256, 64);
            if (two_a) MML__TILE_LOAD(5, a1 + t * 256, 64);
            if (two_b) MML__TILE_LOAD(7, b1 + t * 256, 64);
            MML__TILE_DP(0, 4, 6);
            if (two_b) MML__TILE_DP(1, 4, 7);
            if (two_a) MML__TILE_DP(2, 5, 6);
            if (two_a && two_b) MML__TILE_DP(3, 5, 7);
        }
        MML__AMX_COUT(0, cp, ldc, r0, c0);
        if (two_b) MML__AMX_COUT(1, cp + 16, ldc, r0, c1);
        if (two_a) MML__AMX_COUT(2, cq, ldc, r1, c0);
        if (two_a && two_b) MML__AMX_COUT(3, cq + 16, ldc, r1, c1);
    }
}

/* B's block [pc, pc+kc) x [jc, jc+nc) as column tiles of kt k-tiles each
 * (b_trans: element (k, j) at B[j*ldb + k]). */
MML__ATTR_avx512bf16 static void mml__amx_pack_bblock_avx512(const float *B, int ldb, int b_trans, int N, int jc,
                                                             int nc, int pc, int kc, mml__u32a *pb) {
    const int kt = (kc + 31) / 32;
    for (int jt = 0; jt < (nc + 15) / 16; jt++)
        for (int t = 0; t < kt; t++) {
            const int j = jc + 16 * jt, k = pc + 32 * t;
            const float *b = b_trans ? B + (int64_t)j * ldb + k : B + (int64_t)k * ldb + j;
            mml__amx_tile_avx512(b, ldb, b_trans, mml__mini(N - j, 16), kc - 32 * t, 0, pb + ((int64_t)jt * kt + t) * 256);
        }
}

/* Rows [ic, ic+32) of A's k block [pc, pc+kc) as 1 or 2 row tiles of kt
 * k-tiles each (a_trans: element (i, k) at A[k*lda + i]). */
MML__ATTR_avx512bf16 static void mml__amx_pack_ablock_avx512(const float *A, int lda, int a_trans, int M, int ic,
                                                             int pc, int kc, mml__u32a *pa) {
    const int kt = (kc + 31) / 32;
    for (int it = 0; it < (M - ic > 16 ? 2 : 1); it++)
        for (int t = 0; t < kt; t++) {
            const int i = ic + 16 * it, k = pc + 32 * t;
            const float *a = a_trans ? A + (int64_t)k * lda + i : A + (int64_t)i * lda + k;
            mml__amx_tile_avx512(a, lda, !a_trans, mml__mini(M - i, 16), kc - 32 * t, 1, pa + ((int64_t)it * kt + t) * 256);
        }
}

/* C[M,N] (+)= op(A) . op(B) on bf16 inputs through the tiles (the
 * arguments of mml__gemm_run). B's block packs into mml__gemm_pack (16
 * column tiles x 8 k-tiles x 1 KB = 128 KB), 32 rows of A into
 * mml__gemm_apack (2 x 8 x 1 KB). */
MML__ATTR_avx512bf16 static void mml__gemm_amx_avx512(int M, int N, int K, const float *A, int lda, int a_trans,
                                               const float *B, int ldb, int b_trans, float *C, int ldc,
                                               int accumulate) {
    if (mml__gemm_trivial(M, N, K, C, ldc, accumulate)) return;
    mml__u32a *pb = (mml__u32a *)mml__gemm_pack, *pa = (mml__u32a *)mml__gemm_apack;
    mml__amx_config();
    for (int jc = 0; jc < N; jc += MML__AMX_NB) {
        const int nc = mml__mini(N - jc, MML__AMX_NB);
        for (int pc = 0; pc < K; pc += MML__AMX_KB) {
            const int kc = mml__mini(K - pc, MML__AMX_KB);
            mml__amx_pack_bblock_avx512(B, ldb, b_trans, N, jc, nc, pc, kc, pb);
            for (int ic = 0; ic < M; ic += 32) {
                mml__amx_pack_ablock_avx512(A, lda, a_trans, M, ic, pc, kc, pa);
                mml__amx_block(mml__mini(M - ic, 32), nc, (kc + 31) / 32, pa, pb, C + (int64_t)ic * ldc + jc, ldc,
                               accumulate || pc > 0);
            }
        }
    }
    mml__amx_release();
}

/* gemm_pair_bf16 on the tiles: for each k block both B blocks are packed
 * (2 x 128 KB of mml__gemm_pack), then each 32-row block of A is converted
 * once and multiplied into C1 and C2, in the loop order of
 * mml__gemm_amx_avx512, so each C is what the single call gives. Wider
 * products (N > MML__AMX_NB: more than one column block) run as two calls. */
MML__ATTR_avx512bf16 static void mml__gemm_amx_pair_avx512(int M, int K, const float *A, int lda, int a_trans,
                                                    int N1, const float *B1, int ldb1, float *C1, int ldc1,
                                                    int N2, const float *B2, int ldb2, float *C2, int ldc2,
                                                    int accumulate) {
    if (N1 > MML__AMX_NB || N2 > MML__AMX_NB || M <= 0 || N1 <= 0 || N2 <= 0 || K <= 0) {
        mml__gemm_amx_avx512(M, N1, K, A, lda, a_trans, B1, ldb1, 0, C1, ldc1, accumulate);
        mml__gemm_amx_avx512(M, N2, K, A, lda, a_trans, B2, ldb2, 0, C2, ldc2, accumulate);
        return;
    }
    mml__u32a *pb1 = (mml__u32a *)mml__gemm_pack, *pa = (mml__u32a *)mml__gemm_apack;
    mml__u32a *pb2 = pb1 + (MML__AMX_NB / 16) * (MML__AMX_KB / 32) * 256;
    mml__amx_config();
    for (int pc = 0; pc < K; pc += MML__AMX_KB) {
        const int kc = mml__mini(K - pc, MML__AMX_KB), kt = (kc + 31) / 32;
        mml__amx_pack_bblock_avx512(B1, ldb1, 0, N1, 0, N1, pc, kc, pb1);
        mml__amx_pack_bblock_avx512(B2, ldb2, 0, N2, 0, N2, pc, kc, pb2);
        for (int ic = 0; ic < M; ic += 32) {
            const int mr = mml__mini(M - ic, 32);
            mml__amx_pack_ablock_avx512(A, lda, a_trans, M, ic, pc, kc, pa);
            mml__amx_block(mr, N1, kt, pa, pb1, C1 + (int64_t)ic * ldc1, ldc1, accumulate || pc > 0);
            mml__amx_block(mr, N2, kt, pa, pb2, C2 + (int64_t)ic * ldc2, ldc2, accumulate || pc > 0);
        }
    }
    mml__amx_release();
}
typedef char mml__amx_pair_fits[2 * (MML__AMX_NB / 16) * (MML__AMX_KB / 32) * 256 <= MML__GEMM_KC * MML__GEMM_NC ? 1 : -1];

/* gemm_packed_bf16 on the tiles. Bp holds the B blocks of
 * mml__gemm_amx_avx512 in its loop order, packed once: ceil(N/16) column
 * tiles x ceil(K/32) k-tiles of 1 KB. */
static int64_t mml__gemm_pack_size_bf16_amx(int K, int N) {
    return K > 0 && N > 0 ? (int64_t)((N + 15) / 16) * ((K + 31) / 32) * 256 : 0;
}
MML__ATTR_avx512bf16 static void mml__gemm_pack_b_bf16_amx_avx512(int K, int N, const float *B, int ldb,
                                                                  float *Bp) {
    mml__u32a *p = (mml__u32a *)Bp;
    for (int jc = 0; jc < N; jc += MML__AMX_NB) {
        const int nc = mml__mini(N - jc, MML__AMX_NB);
        for (int pc = 0; pc < K; pc += MML__AMX_KB) {
            const int kc = mml__mini(K - pc, MML__AMX_KB);
            mml__amx_pack_bblock_avx512(B, ldb, 0, N, jc, nc, pc, kc, p);
            p += (int64_t)((nc + 15) / 16) * ((kc + 31) / 32) * 256;
        }
    }
}
MML__ATTR_avx512bf16 static void mml__gemm_packed_bf16_amx_avx512(int M, int N, int K, const float *A, int lda,
                                                                  const float *Bp, float *C, int ldc,
                                                                  const float *bias, int relu) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        mml__packed_empty(M, N, C, ldc, bias, relu);
        return;
    }
    const mml__u32a *p = (const mml__u32a *)Bp;
    mml__u32a *pa = (mml__u32a *)mml__gemm_apack;
    mml__amx_config();
    for (int jc = 0; jc < N; jc += MML__AMX_NB) {
        const int nc = mml__mini(N - jc, MML__AMX_NB);
        for (int pc = 0; pc < K; pc += MML__AMX_KB) {
            const int kc = mml__mini(K - pc, MML__AMX_KB), kt = (kc + 31) / 32;
            for (int ic = 0; ic < M; ic += 32) {
                const int mr = mml__mini(M - ic, 32);
                float *c = C + (int64_t)ic * ldc + jc;
                mml__amx_pack_ablock_avx512(A, lda, 0, M, ic, pc, kc, pa);
                mml__amx_block(mr, nc, kt, pa, p, c, ldc, pc > 0);
                if (pc + kc == K) MML__BIAS_RELU(avx512, mr, nc, bias ? bias + jc : NULL, relu, c, ldc);
            }
            p += (int64_t)((nc + 15) / 16) * kt * 256;
        }
    }
    mml__amx_release();
}
#endif /* MML__AMX */

/* The ISA's matrix tiles for gemm_*_bf16 (NULL: none compiled in). */
#ifdef MML__AMX
static const mml__gemm_tiles_fn mml__gemm_tiles_avx512 = mml__gemm_amx_avx512;
#else
static const mml__gemm_tiles_fn mml__gemm_tiles_avx512 = NULL;
#endif
#define MML__BF16_DESC_avx512 1
MML__GEMM_BF16_ISA(avx512, MML__UPTO12, 16, 1)
#else
MML__GEMM_BF16_EMUL_ALL(avx512)
#endif
/* gemm_*_bf16's packed form on AVX-512, in the layout of what gemm_nn_bf16
 * runs here (the CPU bits are fixed once detected):
 *  - AMX: the tiles' blocks (mml__gemm_packed_bf16_amx_avx512);
 *  - vdpbf16ps (MML__CPU_BF16): the bf16 pair panels of
 *    mml__gemm_isa_bf16_avx512, A rounded into pairs as the driver goes,
 *    bias and ReLU after;
 *  - else (emulation): the fp32 panels of B rounded to bf16, A rounded a
 *    block at a time (mml__gemm_packed_run's round_a).
 * B is rounded once, when packed, never per call. */
#ifdef MML__BF16_DESC_avx512
#define MML__PACKED_DOT (mml__cpu() & MML__CPU_BF16)
#else
#define MML__PACKED_DOT 0
#define mml__gemm_isa_bf16_avx512 mml__gemm_isa_avx512
#endif
#ifdef MML__AMX
#define MML__AMX_PACKED (mml__cpu() & MML__CPU_AMX)
#else
#define MML__AMX_PACKED 0
#define mml__gemm_pack_size_bf16_amx(K, N) 0
#define mml__gemm_pack_b_bf16_amx_avx512(K, N, B, ldb, Bp) ((void)0)
#define mml__gemm_packed_bf16_amx_avx512(M, N, K, A, lda, Bp, C, ldc, bias, relu) ((void)0)
#endif
MML__ATTR_avx512 static int64_t mml__gemm_pack_size_bf16_avx512(int K, int N) {
    if (MML__AMX_PACKED) return mml__gemm_pack_size_bf16_amx(K, N);
    return mml__gemm_pack_size_run(MML__PACKED_DOT ? &mml__gemm_isa_bf16_avx512 : &mml__gemm_isa_avx512, K, N);
}
MML__ATTR_avx512 static void mml__gemm_pack_b_bf16_avx512(int K, int N, const float *MML_RESTRICT B, int ldb,
                                                          float *MML_RESTRICT Bp) {
    if (MML__AMX_PACKED) {
        mml__gemm_pack_b_bf16_amx_avx512(K, N, B, ldb, Bp);
    } else if (MML__PACKED_DOT) {
        mml__gemm_pack_b_run(&mml__gemm_isa_bf16_avx512, K, N, B, ldb, Bp);
    } else {
        const int64_t n = mml__gemm_pack_b_run(&mml__gemm_isa_avx512, K, N, B, ldb, Bp);
        for (int64_t i = 0; i < n; i++) Bp[i] = mml__bf16_round(Bp[i]);
    }
}
MML__ATTR_avx512 static void mml__gemm_packed_bf16_avx512(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                                                          const float *MML_RESTRICT Bp, float *MML_RESTRICT C,
                                                          int ldc, const float *bias, int relu) {
    if (MML__AMX_PACKED) {
        mml__gemm_packed_bf16_amx_avx512(M, N, K, A, lda, Bp, C, ldc, bias, relu);
    } else if (MML__PACKED_DOT && K > 0) { /* its micro-kernels have no epilogue mode */
        mml__gemm_packed_run(&mml__gemm_isa_bf16_avx512, M, N, K, A, lda, Bp, C, ldc, NULL, 0, 0);
        if (M > 0 && N > 0) MML__BIAS_RELU(avx512, M, N, bias, relu, C, ldc);
    } else {
        mml__gemm_packed_run(&mml__gemm_isa_avx512, M, N, K, A, lda, Bp, C, ldc, bias, relu, 1);
    }
}

/* gemm_pair on AVX-512: two calls (fp32 reads A's rows in place), but for
 * bf16 A rounded once for both products: on the AMX tiles, and with
 * vdpbf16ps each sliver of A packed into pairs once (mml__gemm_pair_run). */
MML__GEMM_PAIR_CALLS(avx512, )
MML__GEMM_PAIR_BF16_AS(mml__gemm_pair_bf16_dot_avx512, avx512, MML__PACKED_DOT)
MML__ATTR_avx512 static void mml__gemm_pair_bf16_avx512(int M, int K, const float *A, int lda, int a_trans, int N1,
                                                        const float *B1, int ldb1, float *C1, int ldc1, int N2,
                                                        const float *B2, int ldb2, float *C2, int ldc2,
                                                        int accumulate) {
#ifdef MML__AMX
    if (MML__AMX_PACKED) {
        mml__gemm_amx_pair_avx512(M, K, A, lda, a_trans, N1, B1, ldb1, C1, ldc1, N2, B2, ldb2, C2, ldc2, accumulate);
        return;
    }
#endif
    mml__gemm_pair_bf16_dot_avx512(M, K, A, lda, a_trans, N1, B1, ldb1, C1, ldc1, N2, B2, ldb2, C2, ldc2, accumulate);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif /* MML__X86 */

#if defined(__aarch64__)
// >>kernels-neon ------------------------------------------------------------
/* Advanced SIMD is baseline on AArch64: no target attributes needed. */
#define MML__ATTR_neon
#define MML__W_neon 4
#define MML__MR_neon 8 /* 8 x 8 micro-kernel: 16 q accumulators */
#define MML__UK_MODES_neon 2

float32x4_t Sleef_expf4_u10advsimd(float32x4_t);
float32x4_t Sleef_log1pf4_u10advsimd(float32x4_t);

/* Width layer (see >>kernels-shared). NEON has no masked loads: a tail "mask"
 * is the count of valid lanes and tails go through a 4-float stack vector, so
 * no kernel touches memory past its extents. */
typedef float32x4_t mml__vf_neon;
typedef int64_t mml__vm_neon;
typedef uint32x4_t mml__vp_neon;
typedef uint32x4_t mml__vi_neon;
typedef float64x2_t mml__vd_neon;
static inline int64_t mml__vmask_neon(int64_t rem) { return rem; }
static inline float32x4_t mml__ldtail_neon(int64_t rem, const float *p, float fill) {
    if (rem >= 4) return vld1q_f32(p);
    float t[4] = {fill, fill, fill, fill};
    for (int64_t i = 0; i < rem; i++) t[i] = p[i];
    return vld1q_f32(t);
}
static inline void mml__sttail_neon(float *p, int64_t rem, float32x4_t v) {
    if (rem >= 4) {
        vst1q_f32(p, v);
        return;
    }
    float t[4];
    vst1q_f32(t, v);
    for (int64_t i = 0; i < rem; i++) p[i] = t[i];
}
static inline float32x4_t mml__zerotail_neon(int64_t rem, float32x4_t v) {
    if (rem >= 4) return v;
    float t[4];
    vst1q_f32(t, v);
    for (int64_t j = rem < 0 ? 0 : rem; j < 4; j++) t[j] = 0.0f;
    return vld1q_f32(t);
}
MML__WIDTH_LAYER(neon, float32x4_t, int64_t, uint32x4_t, uint32x4_t, float64x2_t)
static inline float mml__vhsum_neon(float32x4_t v) { return vaddvq_f32(v); }
static inline float mml__vhmax_neon(float32x4_t v) { return vmaxvq_f32(v); }
static inline double mml__vdhsum_neon(float64x2_t v) { return vaddvq_f64(v); }
static inline uint32x4_t mml__viota_neon(uint32_t lo) {
    const uint32_t init[4] = {0, 1, 2, 3};
    return vaddq_u32(vdupq_n_u32(lo), vld1q_u32(init));
}
static inline void mml__vkeepst_neon(uint8_t *keep, int64_t rem, uint32x4_t p) {
    uint32_t kv[4];
    vst1q_u32(kv, p);
    for (int64_t j = 0; j < rem && j < 4; j++) keep[j] = (uint8_t)(kv[j] & 1);
}

/* Two accumulators of 8 floats (a different summation order than x86's). */
static float mml__dot_neon(int64_t n, const float *x, const float *y) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(x + i), vld1q_f32(y + i));
        s1 = vfmaq_f32(s1, vld1q_f32(x + i + 4), vld1q_f32(y + i + 4));
    }
    for (; i < n; i += 4) s0 = vfmaq_f32(s0, mml__vld_neon(n - i, x + i), mml__vld_neon(n - i, y + i));
    return vaddvq_f32(vaddq_f32(s0, s1));
}

/* Shared bodies, the plain Adam and packed GEMM; tn reads A^T in place. */
MML__PACK_BT_PLAIN(neon) MML__ADAM_DENSE(neon) MML__VEC_KERNELS(neon)
MML__GEMM_ISA(neon, NULL, NULL, 0) MML__PACKED_PLAIN(neon) MML__ADAM_STEPS_PLAIN(neon)

/* ---- BF16 (FEAT_BF16, ARMv8.6; optional from 8.2): bfdot micro-kernels ----
 * The layout of the AVX512_BF16 path: a 32-bit lane holds (bf16 of k, bf16
 * of k+1) of one column of B or row of A, odd k ends with a zero half-pair;
 * bfdot adds both products of a pair to an fp32 lane. The intrinsics need
 * GCC 11+ (target attribute) or a compiler already targeting BF16. bfdot
 * ignores FPCR: subnormal inputs and results are flushed, sums rounded to
 * odd (within the fp32 GEMM's bound of the reference). */
#if !defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11
#define MML__BFDOT 1
#define MML__ATTR_bfdot __attribute__((target("arch=armv8.2-a+bf16")))
#elif defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
#define MML__BFDOT 1
#define MML__ATTR_bfdot
#endif
#ifdef MML__BFDOT
/* mml__bf16_round on four lanes, in integers so no FPCR mode can change it:
 * the bf16 in each lane's high half (the low half is not cleared). */
static inline uint32x4_t mml__bf16_hi_neon(float32x4_t x) {
    const uint32x4_t u = vreinterpretq_u32_f32(x);
    const uint32x4_t rne = vaddq_u32(u, vaddq_u32(vdupq_n_u32(0x7FFFu), vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1u))));
    const uint32x4_t nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7FFFFFFFu)), vdupq_n_u32(0x7F800000u));
    const uint32x4_t r = vbslq_u32(nan, vorrq_u32(u, vdupq_n_u32(0x00400000u)), rne);
    return vbslq_u32(vceqzq_u32(vandq_u32(u, vdupq_n_u32(0x7F800000u))), vandq_u32(u, vdupq_n_u32(0x80000000u)), r);
}
/* Lanes (lo[i], hi[i]) as bf16 pairs: bf16(lo[i]) | bf16(hi[i]) << 16. */
static inline float32x4_t mml__bf16_pairs_neon(float32x4_t lo, float32x4_t hi) {
    return vreinterpretq_f32_u32(vsriq_n_u32(mml__bf16_hi_neon(hi), mml__bf16_hi_neon(lo), 16));
}
/* Eight consecutive floats -> their four pairs in k order. */
static inline float32x4_t mml__bf16_run_neon(float32x4_t x0, float32x4_t x1) {
    const uint16x8_t h = vuzp2q_u16(vreinterpretq_u16_u32(mml__bf16_hi_neon(x0)),
                                    vreinterpretq_u16_u32(mml__bf16_hi_neon(x1)));
    return vreinterpretq_f32_u16(h);
}
/* Elements (k, j) at src[k*ld + j], j < n -> pairs at dst[kp*stride + j]
 * for j up to n rounded to 4 (zero beyond n). */
static void mml__bf16_cols_neon(int kc, int n, const float *src, int64_t ld, float *dst, int stride) {
    for (int j = 0; j < n; j += 4)
        for (int p = 0; 2 * p < kc; p++) {
            const float *r0 = src + (int64_t)(2 * p) * ld + j;
            const float32x4_t lo = mml__ldtail_neon(n - j, r0, 0.0f);
            const float32x4_t hi = 2 * p + 1 < kc ? mml__ldtail_neon(n - j, r0 + ld, 0.0f) : vdupq_n_f32(0.0f);
            vst1q_f32(dst + (int64_t)p * stride + j, mml__bf16_pairs_neon(lo, hi));
        }
}
/* Rows of k-contiguous floats (row j at src + j*ld, j < n) -> pairs at
 * dst[kp*stride + j], four rows at a time turned by a 4 x 4 transpose (rows
 * past n are zero). */
static void mml__bf16_rows_neon(int kc, int n, const float *src, int64_t ld, float *dst, int stride) {
    for (int j = 0; j < n; j += 4)
        for (int k0 = 0; k0 < kc; k0 += 8) {
            uint32x4_t q[4];
            for (int i = 0; i < 4; i++) {
                const float *r = src + (int64_t)(j + i) * ld + k0;
                q[i] = j + i < n ? vreinterpretq_u32_f32(mml__bf16_run_neon(mml__ldtail_neon(kc - k0, r, 0.0f),
                                                                            mml__ldtail_neon(kc - k0 - 4, r + 4, 0.0f)))
                                 : vdupq_n_u32(0);
            }
            const uint32x4_t t0 = vtrn1q_u32(q[0], q[1]), t1 = vtrn2q_u32(q[0], q[1]);
            const uint32x4_t t2 = vtrn1q_u32(q[2], q[3]), t3 = vtrn2q_u32(q[2], q[3]);
            uint64x2_t o[4];
            o[0] = vtrn1q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2));
            o[1] = vtrn1q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3));
            o[2] = vtrn2q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2));
            o[3] = vtrn2q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3));
            for (int p = 0; p < 4 && k0 + 2 * p < kc; p++)
                vst1q_f32(dst + (int64_t)(k0 / 2 + p) * stride + j, vreinterpretq_f32_u64(o[p]));
        }
}
/* B[kc, nc] -> panels of 8 (or 4) columns, k-pair-major (mml__pack_b_fn). */
static void mml__pack_bn_bf16_neon(int kc, int nc, const float *B, int64_t ldb, void *pbv) {
    float *pb = (float *)pbv;
    for (int j0 = 0; j0 < nc; j0 += 8) {
        const int w = mml__mini(nc - j0, 8), nr = w > 4 ? 8 : 4;
        mml__bf16_cols_neon(kc, w, B + j0, ldb, pb, nr);
        pb += (int64_t)(kc + 1) / 2 * nr;
    }
}
/* B^T [nc, kc]: each column's k run is a row of B. */
static void mml__pack_bt_bf16_neon(int kc, int nc, const float *B, int64_t ldb, void *pbv) {
    float *pb = (float *)pbv;
    for (int j0 = 0; j0 < nc; j0 += 8) {
        const int w = mml__mini(nc - j0, 8), nr = w > 4 ? 8 : 4;
        mml__bf16_rows_neon(kc, w, B + (int64_t)j0 * ldb, ldb, pb, nr);
        pb += (int64_t)(kc + 1) / 2 * nr;
    }
}
/* A rows (nn, nt) and A^T slivers (tn) -> pa[kp*8 + i]. */
static void mml__pack_a_rows_bf16_neon(int kc, int mr, const float *a, int64_t lda, float *pa) {
    mml__bf16_rows_neon(kc, mr, a, lda, pa, MML__MR_neon);
}
static void mml__pack_at_bf16_neon(int kc, int mr, const float *a, int64_t lda, float *pa) {
    mml__bf16_cols_neon(kc, mr, a, lda, pa, MML__MR_neon);
}

#define MML__UKBD_DECL(r, S) float32x4_t c##r##0 = vdupq_n_f32(0.0f), c##r##1 = c##r##0;
/* Row r's pair is lane r % 4 of a0 (rows 0-3) or a1 (rows 4-7). */
#define MML__UKBD_DOT(r, S)                                                           \
    if (MR_ > r) {                                                                    \
        c##r##0 = vbfdotq_laneq_f32(c##r##0, b0, r < 4 ? a0 : a1, r & 3);             \
        if (NV_ > 1) c##r##1 = vbfdotq_laneq_f32(c##r##1, b1, r < 4 ? a0 : a1, r & 3); \
    }
/* mml__uk_fn on pairs: A always packed (pairs at a + kp*lda), no epilogue. */
#define MML__UKBD(S, MR, NV, MODE)                                                    \
    MML__ATTR_bfdot static void mml__ukbf_##MR##_##NV##_##MODE##_neon(                \
        int kc, const float *a, int64_t lda, const void *bp, float *c, int64_t ldc,   \
        int w, int load_c, const float *bias, int relu) {                             \
        enum { MR_ = MR, NV_ = NV, EPI_ = 0, W_ = 4 };                                \
        const float *ap = a, *b = (const float *)bp;                                  \
        MML__R12(MML__UKBD_DECL, S)                                                   \
        for (int p = 0; 2 * p < kc; p++) {                                            \
            const bfloat16x8_t b0 = vreinterpretq_bf16_f32(vld1q_f32(b));             \
            const bfloat16x8_t b1 = NV_ > 1 ? vreinterpretq_bf16_f32(vld1q_f32(b + 4)) : b0; \
            const bfloat16x8_t a0 = vreinterpretq_bf16_f32(vld1q_f32(ap));            \
            const bfloat16x8_t a1 = MR_ > 4 ? vreinterpretq_bf16_f32(vld1q_f32(ap + 4)) : a0; \
            (void)b1, (void)a1;                                                       \
            MML__R12(MML__UKBD_DOT, S)                                                \
            b += 4 * NV_;                                                             \
            ap += lda;                                                                \
        }                                                                             \
        const int64_t m0 = w, m1 = w - W_;                                            \
        const float32x4_t bv0 = vdupq_n_f32(0.0f), bv1 = bv0;                         \
        (void)bias, (void)relu, (void)bv1;                                            \
        MML__R12(MML__UK_STORE, neon)                                                 \
    }
MML__UPTO8(MML__UKBD, neon, 1, 0) MML__UPTO8(MML__UKBD, neon, 2, 0)
static const mml__gemm_tiles_fn mml__gemm_tiles_neon = NULL; /* no matrix tiles */
MML__GEMM_BF16_ISA(neon, MML__UPTO8, 4, 0)
MML__GEMM_PAIR_BF16_AS(mml__gemm_pair_bf16_neon, neon, mml__cpu() & MML__CPU_BF16)
#else
MML__GEMM_BF16_EMUL_ALL(neon)
MML__GEMM_PAIR_CALLS(neon, _bf16)
#endif
MML__PACKED_BF16_PLAIN(neon)
MML__GEMM_PAIR_CALLS(neon, )
/* Kernels left scalar on NEON (data movement and a mask, memcpy-like or
 * compiler-vectorized). */
#define mml__gather_rows_neon mml__gather_rows_scalar
#define mml__block_scale_neon mml__block_scale_scalar
#define mml__mask_scale_neon mml__mask_scale_scalar
#define mml__dropout_relu_bwd_neon mml__dropout_relu_bwd_scalar
#endif /* aarch64 */

// >>crc32c ------------------------------------------------------------------
/* CRC32C (Castagnoli: reflected polynomial 0x82F63B78, initial value and final
 * xor 0xFFFFFFFF), the checksum of the checkpoint format. Every path gives the
 * same value: slice-by-8 tables (any CPU), the SSE4.2 crc32 instruction
 * (x86-64), the ARMv8 CRC32C instructions (aarch64 with the CRC extension);
 * mml_crc32c in >>dispatch picks the one this CPU runs fastest. The functions
 * work on the inverted register (crc ^ ~0) unless they take a crc. */
#define MML__CRC32C_POLY 0x82F63B78u

/* Bit by bit, no table: the fallback while another thread builds the tables. */
static uint32_t mml__crc32c_bits(uint32_t c, const unsigned char *p, size_t n) {
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (MML__CRC32C_POLY & (0u - (c & 1u)));
    }
    return c;
}

/* [k][b]: the register after byte b followed by k zero bytes. */
static uint32_t mml__crc32c_tab[8][256];
static int mml__crc32c_tab_state; /* 0 empty, 1 being built, 2 ready */

/* 1 when the tables can be read. The first caller builds them; a caller that
 * races it gets 0 (and goes bit by bit) instead of waiting. */
static int mml__crc32c_tables(void) {
#if defined(__GNUC__) || defined(__clang__)
    int s = __atomic_load_n(&mml__crc32c_tab_state, __ATOMIC_ACQUIRE);
    if (s == 2) return 1;
    if (s != 0 || !__atomic_compare_exchange_n(&mml__crc32c_tab_state, &s, 1, 0, __ATOMIC_ACQUIRE,
                                               __ATOMIC_RELAXED))
        return 0;
#else
    if (mml__crc32c_tab_state == 2) return 1;
#endif
    for (int b = 0; b < 256; b++) {
        const unsigned char byte = (unsigned char)b;
        mml__crc32c_tab[0][b] = mml__crc32c_bits(0, &byte, 1);
    }
    for (int k = 1; k < 8; k++)
        for (int b = 0; b < 256; b++) {
            const uint32_t c = mml__crc32c_tab[k - 1][b];
            mml__crc32c_tab[k][b] = (c >> 8) ^ mml__crc32c_tab[0][c & 0xFFu];
        }
#if defined(__GNUC__) || defined(__clang__)
    __atomic_store_n(&mml__crc32c_tab_state, 2, __ATOMIC_RELEASE);
#else
    mml__crc32c_tab_state = 2;
#endif
    return 1;
}

static inline uint32_t mml__le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Slice-by-8, the portable path: eight independent table look-ups per 8 bytes. */
static uint32_t mml__crc32c_sw(uint32_t crc, const void *buf, size_t n) {
    const unsigned char *p = (const unsigned char *)buf;
    uint32_t c = ~crc;
    if (!mml__crc32c_tables()) return ~mml__crc32c_bits(c, p, n);
    for (; n >= 8; n -= 8, p += 8) {
        const uint32_t lo = c ^ mml__le32(p), hi = mml__le32(p + 4);
        c = mml__crc32c_tab[7][lo & 0xFFu] ^ mml__crc32c_tab[6][(lo >> 8) & 0xFFu] ^
            mml__crc32c_tab[5][(lo >> 16) & 0xFFu] ^ mml__crc32c_tab[4][lo >> 24] ^
            mml__crc32c_tab[3][hi & 0xFFu] ^ mml__crc32c_tab[2][(hi >> 8) & 0xFFu] ^
            mml__crc32c_tab[1][(hi >> 16) & 0xFFu] ^ mml__crc32c_tab[0][hi >> 24];
    }
    while (n--) c = mml__crc32c_tab[0][(c ^ *p++) & 0xFFu] ^ (c >> 8);
    return ~c;
}

/* The CRC32C instructions: a byte step and an 8-byte step per architecture. */
#if defined(MML__X86) && (defined(__GNUC__) || defined(__clang__))
#define MML__CRC32C_HW 1
#define MML__CRC32C_ATTR __attribute__((target("sse4.2")))
#define MML__CRC32C_U8(c, b) _mm_crc32_u8(c, b)
#define MML__CRC32C_U64(c, v) (uint32_t)_mm_crc32_u64(c, v)
#elif defined(__aarch64__) && defined(__clang__)
#define MML__CRC32C_HW 1
#define MML__CRC32C_ATTR __attribute__((target("crc")))
#define MML__CRC32C_U8(c, b) __builtin_arm_crc32cb(c, b)
#define MML__CRC32C_U64(c, v) __builtin_arm_crc32cd(c, v)
#elif defined(__aarch64__) && defined(__GNUC__)
#define MML__CRC32C_HW 1
#define MML__CRC32C_ATTR __attribute__((target("+crc")))
#define MML__CRC32C_U8(c, b) __crc32cb(c, b)
#define MML__CRC32C_U64(c, v) __crc32cd(c, v)
#endif

#ifdef MML__CRC32C_HW
/* Bytes up to an 8-byte boundary, then 8 bytes per instruction. Only called
 * when >>dispatch found the instructions (mml__crc32c_have_hw). */
MML__CRC32C_ATTR static uint32_t mml__crc32c_hw(uint32_t crc, const void *buf, size_t n) {
    const unsigned char *p = (const unsigned char *)buf;
    uint32_t c = ~crc;
    for (; n && ((uintptr_t)p & 7); n--) c = MML__CRC32C_U8(c, *p++);
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = MML__CRC32C_U64(c, v);
    }
    while (n--) c = MML__CRC32C_U8(c, *p++);
    return ~c;
}
#endif

// >>dispatch ----------------------------------------------------------------

#define MML__ENTRY_SCALAR(ret, name, params) mml__##name##_scalar,
static const mml_kernels_t mml__table_scalar = {MML_KERNEL_LIST(MML__ENTRY_SCALAR)};

/* CPU features beside the ISAs (bit 1 << isa each) in mml__cpu()'s answer:
 * MML__CPU_CRC32C, MML__CPU_BF16 (defined before >>kernels-gemm). */

#ifdef MML__X86
#define MML__ENTRY_AVX2(ret, name, params) mml__##name##_avx2,
#define MML__ENTRY_AVX512(ret, name, params) mml__##name##_avx512,
static const mml_kernels_t mml__table_avx2 = {MML_KERNEL_LIST(MML__ENTRY_AVX2)};
static const mml_kernels_t mml__table_avx512 = {MML_KERNEL_LIST(MML__ENTRY_AVX512)};

static void mml__cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
#if defined(_MSC_VER) && !defined(__clang__)
    int t[4];
    __cpuidex(t, (int)leaf, (int)sub);
    for (int i = 0; i < 4; i++) r[i] = (unsigned)t[i];
#else
    r[0] = r[1] = r[2] = r[3] = 0;
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#endif
}

/* XCR0 through xgetbv; the caller checked OSXSAVE first. */
static uint64_t mml__xgetbv0(void) {
#if defined(_MSC_VER) && !defined(__clang__)
    return (uint64_t)_xgetbv(0);
#else
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
#endif
}

#ifdef MML__AMX
/* arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) as a bare system call
 * (number 158 on x86-64), so that no libc declaration or feature macro is
 * needed: 0 when Linux grants this process the tile data, else -errno. */
static long mml__amx_request(void) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "0"(158L), "D"(0x1023L), "S"(18L) : "rcx", "r11", "memory");
    return ret;
}
#endif

/* AVX2+FMA, AVX-512 F/BW/DQ/VL (each with its registers saved by the OS) and
 * SSE4.2 (crc32), as mml__cpu() bits. */
static int mml__x86_detect(void) {
    unsigned r[4];
    mml__cpuid(0, 0, r);
    const unsigned max_leaf = r[0];
    const int intel = r[1] == 0x756e6547u && r[3] == 0x49656e69u && r[2] == 0x6c65746eu; /* GenuineIntel */
    if (max_leaf < 1) return 0;
    mml__cpuid(1, 0, r);
    const unsigned ecx1 = r[2];
    int flags = (ecx1 >> 20) & 1 ? MML__CPU_CRC32C : 0;
    const int osxsave = (ecx1 >> 27) & 1, avx = (ecx1 >> 28) & 1, fma = (ecx1 >> 12) & 1;
    if (max_leaf < 7 || !osxsave || !avx) return flags;
    const uint64_t xcr0 = mml__xgetbv0();
    mml__cpuid(7, 0, r);
    const unsigned ebx7 = r[1], edx7 = r[3], max_sub7 = r[0];
    const int ymm_os = (xcr0 & 0x6) == 0x6;               /* XMM | YMM */
    const int zmm_os = (xcr0 & 0xE6) == 0xE6;             /* + opmask, ZMM_Hi256, Hi16_ZMM */
    if (ymm_os && fma && ((ebx7 >> 5) & 1)) flags |= 1 << MML_ISA_AVX2;
    const unsigned need512 = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31); /* F DQ BW VL */
    if ((flags & (1 << MML_ISA_AVX2)) && zmm_os && (ebx7 & need512) == need512) flags |= 1 << MML_ISA_AVX512;
    if ((flags & (1 << MML_ISA_AVX512)) && max_sub7 >= 1) {
        mml__cpuid(7, 1, r);
        if ((r[0] >> 5) & 1) flags |= MML__CPU_BF16_HW; /* AVX512_BF16 */
    }
    if ((flags & MML__CPU_BF16_HW) && intel) flags |= MML__CPU_BF16_SLOW;
#ifdef MML__AMX
    /* AMX-BF16 (bit 22) and AMX-TILE (24), XTILECFG and XTILEDATA in XCR0,
     * and Linux's grant of the tile data (ARCH_REQ_XCOMP_PERM, feature 18);
     * without the grant the first tile instruction would raise SIGILL. */
    if ((flags & MML__CPU_BF16_HW) && ((edx7 >> 22) & 1) && ((edx7 >> 24) & 1) &&
        (xcr0 & 0x60000) == 0x60000 && mml__amx_request() == 0)
        flags |= MML__CPU_AMX_HW;
#else
    (void)edx7;
#endif
    return flags;
}
#endif

#if defined(__aarch64__)
#define MML__ENTRY_NEON(ret, name, params) mml__##name##_neon,
static const mml_kernels_t mml__table_neon = {MML_KERNEL_LIST(MML__ENTRY_NEON)};

/* Advanced SIMD is mandatory on AArch64; the CRC32 extension (with CRC32C) is
 * not before ARMv8.1 and BF16 optional before ARMv8.6, so ask the kernel
 * (HWCAP_CRC32, HWCAP2_BF16). */
static int mml__arm_detect(void) {
    int flags = 1 << MML_ISA_NEON;
#if defined(__linux__)
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#ifndef AT_HWCAP2
#define AT_HWCAP2 26
#endif
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1 << 14)
#endif
    if (getauxval(AT_HWCAP) & HWCAP_CRC32) flags |= MML__CPU_CRC32C;
    if (getauxval(AT_HWCAP2) & HWCAP2_BF16) flags |= MML__CPU_BF16_HW;
#else
#if defined(__ARM_FEATURE_CRC32)
    flags |= MML__CPU_CRC32C;
#endif
#if defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
    flags |= MML__CPU_BF16_HW;
#endif
#endif
    return flags;
}
#endif

/* -1: not yet detected; otherwise 1 << isa for each usable ISA, MML__CPU_* bits. */
static int mml__cpu_cache = -1;

/* What this CPU and OS support; the only place that asks (once, cached). */
static int mml__cpu(void) {
#if defined(__GNUC__) || defined(__clang__)
    int m = __atomic_load_n(&mml__cpu_cache, __ATOMIC_ACQUIRE);
#else
    int m = mml__cpu_cache;
#endif
    if (m >= 0) return m;
    m = 1 << MML_ISA_SCALAR;
#ifdef MML__X86
    m |= mml__x86_detect();
#endif
#if defined(__aarch64__)
    m |= mml__arm_detect();
#endif
    const char *bf16 = getenv("MOEMLORA_BF16");
    const int want = bf16 && strcmp(bf16, "native") == 0, emulate = bf16 && strcmp(bf16, "emulate") == 0;
    if ((m & MML__CPU_AMX_HW) && !emulate && !want) m |= MML__CPU_AMX;
    if ((m & MML__CPU_BF16_HW) && !emulate && (want || !(m & MML__CPU_BF16_SLOW))) m |= MML__CPU_BF16;
#if defined(__GNUC__) || defined(__clang__)
    __atomic_store_n(&mml__cpu_cache, m, __ATOMIC_RELEASE);
#else
    mml__cpu_cache = m;
#endif
    return m;
}

/* 1 if mml__crc32c_hw is compiled in and this CPU runs it. */
MML__MAYBE_UNUSED static int mml__crc32c_have_hw(void) {
#ifdef MML__CRC32C_HW
    return (mml__cpu() & MML__CPU_CRC32C) != 0;
#else
    return 0;
#endif
}

MOEMLORA_API uint32_t mml_crc32c(uint32_t crc, const void *p, size_t n) {
#ifdef MML__CRC32C_HW
    if (mml__crc32c_have_hw()) return mml__crc32c_hw(crc, p, n);
#endif
    return mml__crc32c_sw(crc, p, n);
}

MOEMLORA_API int mml_simd_isa_supported(mml_isa isa) {
    if ((int)isa < 0 || (int)isa >= MML_ISA_COUNT) return 0;
    return (mml__cpu() >> (int)isa) & 1;
}

MOEMLORA_API mml_isa mml_simd_best(void) {
    if (mml_simd_isa_supported(MML_ISA_AVX512)) return MML_ISA_AVX512;
    if (mml_simd_isa_supported(MML_ISA_AVX2)) return MML_ISA_AVX2;
    if (mml_simd_isa_supported(MML_ISA_NEON)) return MML_ISA_NEON;
    return MML_ISA_SCALAR;
}

MOEMLORA_API const char *mml_isa_name(mml_isa isa) {
    switch (isa) {
    case MML_ISA_SCALAR: return "scalar";
    case MML_ISA_AVX2: return "avx2";
    case MML_ISA_AVX512: return "avx512";
    case MML_ISA_NEON: return "neon";
    default: return "?";
    }
}

MOEMLORA_API int mml_isa_from_name(const char *s, mml_isa *out) {
    if (!s) return -1;
    for (int i = 0; i < MML_ISA_COUNT; i++) {
        if (strcmp(s, mml_isa_name((mml_isa)i)) == 0) {
            if (out) *out = (mml_isa)i;
            return 0;
        }
    }
    return -1;
}

static const char *mml__isa_requirement(mml_isa isa) {
    switch (isa) {
    case MML_ISA_AVX2: return "AVX2 and FMA";
    case MML_ISA_AVX512: return "AVX-512 (F,BW,DQ,VL)";
    case MML_ISA_NEON: return "NEON (aarch64 builds only)";
    default: return "?";
    }
}

/* What gemm_*_bf16 of isa's table runs here: the scalar reference, the fp32
 * GEMM on rounded copies, the CPU's bf16 dot products (vdpbf16ps, bfdot) or
 * its AMX tiles. */
enum { MML__BF16_REFERENCE, MML__BF16_EMULATED, MML__BF16_DOT, MML__BF16_TILES };
static int mml__bf16_kind(mml_isa isa) {
    const int cpu = mml__cpu();
    switch (isa) {
    case MML_ISA_SCALAR: return MML__BF16_REFERENCE;
#ifdef MML__BF16_HW
    case MML_ISA_AVX512:
        return cpu & MML__CPU_AMX ? MML__BF16_TILES : cpu & MML__CPU_BF16 ? MML__BF16_DOT : MML__BF16_EMULATED;
#endif
#ifdef MML__BFDOT
    case MML_ISA_NEON: return cpu & MML__CPU_BF16 ? MML__BF16_DOT : MML__BF16_EMULATED;
#endif
    default: (void)cpu; return MML__BF16_EMULATED;
    }
}

/* The same as a name: "reference", "emulated", "vdpbf16ps" or "bfdot", "amx". */
MML__MAYBE_UNUSED static const char *mml__bf16_path(mml_isa isa) {
    switch (mml__bf16_kind(isa)) {
    case MML__BF16_REFERENCE: return "reference";
    case MML__BF16_DOT: return isa == MML_ISA_NEON ? "bfdot" : "vdpbf16ps";
    case MML__BF16_TILES: return "amx";
    default: return "emulated";
    }
}

/* MOEMLORA_BF16 (unset, empty, emulate, native or amx) for the table of isa:
 * native must get the CPU's bf16 dot products, amx its AMX tiles (never a
 * silent emulation). */
static int mml__bf16_check(mml_isa isa, char *err, size_t errlen) {
    const char *env = getenv("MOEMLORA_BF16");
    if (!env || !env[0] || strcmp(env, "emulate") == 0) return 0;
    const int amx = strcmp(env, "amx") == 0;
    if (!amx && strcmp(env, "native") != 0) {
        if (err && errlen)
            snprintf(err, errlen, "MOEMLORA_BF16=%s is not known (expected emulate, native or amx)", env);
        return -1;
    }
    const int kind = mml__bf16_kind(isa);
    if (amx ? kind != MML__BF16_TILES : kind < MML__BF16_DOT) {
        if (err && errlen)
            snprintf(err, errlen, "MOEMLORA_BF16=%s requested but the %s kernels have no %s on this CPU/OS/compiler (%s)",
                     env, mml_isa_name(isa), amx ? "AMX tiles" : "bf16 dot products",
                     amx ? "AVX-512 with AMX-TILE and AMX-BF16, Linux" : "AVX-512 with AVX512_BF16, or NEON with BF16");
        return -1;
    }
    return 0;
}

MOEMLORA_API int mml_simd_resolve(mml_isa *out, char *err, size_t errlen) {
    const char *env = getenv("MOEMLORA_ISA");
    if (err && errlen) err[0] = '\0';
    if (!env || !env[0]) {
        const mml_isa best = mml_simd_best();
        if (mml__bf16_check(best, err, errlen) != 0) return -1;
        if (out) *out = best;
        return 0;
    }
    mml_isa isa;
    if (mml_isa_from_name(env, &isa) != 0) {
        if (err && errlen)
            snprintf(err, errlen,
                     "MOEMLORA_ISA=%s is not a known ISA (expected scalar, avx2, avx512 or neon)",
                     env);
        return -1;
    }
    if (!mml_simd_isa_supported(isa)) {
        if (err && errlen)
            snprintf(err, errlen,
                     "MOEMLORA_ISA=%s requested but this CPU/OS does not support %s", env,
                     mml__isa_requirement(isa));
        return -1;
    }
    if (mml__bf16_check(isa, err, errlen) != 0) return -1;
    if (out) *out = isa;
    return 0;
}

MOEMLORA_API const mml_kernels_t *mml_simd_kernels(mml_isa isa) {
    if (!mml_simd_isa_supported(isa)) return NULL;
    switch (isa) {
    case MML_ISA_SCALAR: return &mml__table_scalar;
#ifdef MML__X86
    case MML_ISA_AVX2: return &mml__table_avx2;
    case MML_ISA_AVX512: return &mml__table_avx512;
#endif
#if defined(__aarch64__)
    case MML_ISA_NEON: return &mml__table_neon;
#endif
    default: return NULL;
    }
}

MOEMLORA_API const char *mml_simd_isa_name(void) {
    mml_isa isa;
    if (mml_simd_resolve(&isa, NULL, 0) != 0) return "?";
    return mml_isa_name(isa);
}

#ifdef __cplusplus
}
#endif
#endif /* MOEMLORA_SIMD_IMPLEMENTED */
#endif /* MOEMLORA_IMPLEMENTATION */
