/* moemlora_simd.h - compute kernels of moemlora with run-time ISA dispatch.
 *
 * One scalar reference per kernel, then AVX2+FMA, AVX-512 (F,BW,DQ,VL) and NEON
 * versions of the same kernels in this header. Per-ISA functions carry
 * __attribute__((target(...))), so users need no -m flags; the dispatcher picks
 * the best ISA from cpuid + xgetbv (OS saves the register state) and caches it.
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
 * CPU lacks is an error, never a silent fallback).
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
 *   >>kernels-avx2     x86-64 AVX2 + FMA
 *   >>kernels-avx512   x86-64 AVX-512 F/BW/DQ/VL
 *   >>kernels-neon     aarch64 Advanced SIMD
 *   >>crc32c           CRC32C: slice-by-8 tables, SSE4.2, ARMv8 CRC
 *   >>dispatch         cpuid/xgetbv/getauxval detection, tables, MOEMLORA_ISA
 * Accuracy, the dropout hash and the GEMM blocking: docs/KERNELS.md.
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
 *  gemm_pack_size  floats gemm_pack_b writes for B[K,N] (this ISA's layout)
 *  gemm_pack_b  B[K,N] (row-major, ldb) -> Bp, the layout gemm_packed reads
 *  gemm_packed  C[M,N] = A[M,K] . B (+ bias[j] if bias) (then max(., 0) if relu),
 *            B packed once by gemm_pack_b (weights reused over many calls)
 *  add_bias  C[i,j] += bias[j]
 *  colsum_add out[j] += sum_i A[i,j]
 *  relu_fwd  y = max(x, 0) (y may alias x)
 *  relu_bwd  dx = y > 0 ? dy : 0 (dx may alias dy)
 *  dropout_keep  keep[i] = 1 if element offset+i survives dropout at this rate and
 *            seed, else 0: the same mask on every ISA (hash in the dropout section)
 *  mask_scale    y[i] = keep[i] ? x[i] * scale : 0 (y may alias x); with
 *            dropout_keep and scale = 1/(1-rate) it applies dropout, in forward
 *            and again (same mask) in backward
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
    X(int64_t, gemm_pack_size, (int K, int N))                                      \
    X(void, gemm_pack_b, (int K, int N, const float *MML_RESTRICT B, int ldb,       \
                          float *MML_RESTRICT Bp))                                  \
    X(void, gemm_packed, (int M, int N, int K, const float *MML_RESTRICT A, int lda, \
                          const float *MML_RESTRICT Bp, float *MML_RESTRICT C,      \
                          int ldc, const float *bias, int relu))                    \
    X(void, add_bias, (int M, int N, const float *bias, float *C, int ldc))         \
    X(void, colsum_add, (int M, int N, const float *A, int lda, float *out))        \
    X(void, relu_fwd, (int64_t n, const float *x, float *y))                        \
    X(void, relu_bwd, (int64_t n, const float *y, const float *dy, float *dx))      \
    X(void, dropout_keep, (int64_t n, float rate, uint64_t seed, uint64_t offset,   \
                           uint8_t *keep))                                          \
    X(void, mask_scale, (int64_t n, const uint8_t *keep, const float *x, float *y,  \
                         float scale))                                              \
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
 * and writes the reason into err), else mml_simd_best(). */
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

/* Rows addressed by id (scatters, Adam over a batch's rows) land
 * anywhere in tables far larger than the caches: loops over such rows ask for
 * the lines of the row MML__ROW_AHEAD ids on while they work on this one. */
#define MML__ROW_AHEAD 4
static inline void mml__prefetch_floats(const float *x, int64_t n) {
#if defined(__GNUC__) || defined(__clang__)
    for (int64_t j = 0; j < n; j += 16) __builtin_prefetch(x + j, 1);
#else
    (void)x, (void)n;
#endif
}

// >>kernels-scalar ----------------------------------------------------------

/* adam_steps as adam_dense calls on a block of zeros (bit-identical to them). */
#define MML__ADAM_STEPS_PLAIN(SFX, ATTR)                                              \
    ATTR static void mml__adam_steps_##SFX(int64_t n, float *p, float *m, float *v,   \
                                           const mml_adam_hp *hp, int steps,          \
                                           const int32_t *first) {                    \
        static const float zeros[256] = {0.0f};                                       \
        for (int64_t o = 0; o < n;) { /* runs of one first step, <= 256 long */       \
            int64_t c = 1;                                                            \
            int s0 = first ? first[o] : 0;                                            \
            while (o + c < n && c < 256 && (!first || first[o + c] == s0)) c++;       \
            for (int s = s0 < 0 ? 0 : s0; s < steps; s++)                             \
                mml__adam_dense_##SFX(c, p + o, zeros, m + o, v + o, hp + s);         \
            o += c;                                                                   \
        }                                                                             \
    }

/* Packed GEMM where an ISA has no layout of its own: Bp is B row-major (ld N)
 * and gemm_packed is that ISA's gemm_nn, add_bias and relu_fwd in turn. */
#define MML__PACKED_PLAIN(SFX, ATTR)                                                  \
    ATTR static int64_t mml__gemm_pack_size_##SFX(int K, int N) {                      \
        return K > 0 && N > 0 ? (int64_t)K * N : 0;                                   \
    }                                                                                 \
    ATTR static void mml__gemm_pack_b_##SFX(int K, int N, const float *MML_RESTRICT B, \
                                            int ldb, float *MML_RESTRICT Bp) {         \
        for (int k = 0; k < K && N > 0; k++)                                          \
            memcpy(Bp + (int64_t)k * N, B + (int64_t)k * ldb, (size_t)N * sizeof(float)); \
    }                                                                                 \
    ATTR static void mml__gemm_packed_##SFX(int M, int N, int K, const float *MML_RESTRICT A, \
                                            int lda, const float *MML_RESTRICT Bp,     \
                                            float *MML_RESTRICT C, int ldc,            \
                                            const float *bias, int relu) {             \
        if (M <= 0 || N <= 0) return;                                                 \
        mml__gemm_nn_##SFX(M, N, K, A, lda, Bp, N, C, ldc, 0);                        \
        if (bias) mml__add_bias_##SFX(M, N, bias, C, ldc);                            \
        if (relu)                                                                     \
            for (int i = 0; i < M; i++)                                               \
                mml__relu_fwd_##SFX(N, C + (int64_t)i * ldc, C + (int64_t)i * ldc);   \
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

/* Calls run(x, y, count, lo, key1, keys) over runs where index>>32 is constant. */
#define MML__DROPOUT_RUNS(run, n, x, y, rate, seed, offset)                           \
    do {                                                                              \
        mml__drop_keys dk_ = mml__dropout_keys((seed), (rate));                       \
        int64_t done_ = 0;                                                            \
        while (done_ < (n)) {                                                         \
            uint64_t idx_ = (offset) + (uint64_t)done_;                               \
            uint32_t lo_ = (uint32_t)idx_;                                            \
            uint64_t room_ = 4294967296ULL - lo_;                                     \
            int64_t cnt_ = (n) - done_;                                               \
            if ((uint64_t)cnt_ > room_) cnt_ = (int64_t)room_;                        \
            run((x) + done_, (y) + done_, cnt_, lo_,                                  \
                mml__dropout_key1(dk_.k1, (uint32_t)(idx_ >> 32)), &dk_);             \
            done_ += cnt_;                                                            \
        }                                                                             \
    } while (0)

/* dropout_keep: the runs get keep for both pointers (x is unused). */
static void mml__keep_run_scalar(const uint8_t *unused, uint8_t *keep, int64_t n, uint32_t lo, uint32_t key1,
                                 const mml__drop_keys *dk) {
    (void)unused;
    for (int64_t i = 0; i < n; i++)
        keep[i] = (uint8_t)((mml__lowbias32(mml__lowbias32((lo + (uint32_t)i) ^ key1) ^ dk->k2) >> 8) >= dk->thr);
}

#define MML__DROPOUT_KEEP(SFX, ATTR)                                                  \
    ATTR static void mml__dropout_keep_##SFX(int64_t n, float rate, uint64_t seed,      \
                                             uint64_t offset, uint8_t *keep) {         \
        if (!(rate > 0.0f)) {                                                         \
            if (n > 0) memset(keep, 1, (size_t)n);                                    \
            return;                                                                   \
        }                                                                             \
        MML__DROPOUT_RUNS(mml__keep_run_##SFX, n, keep, keep, rate, seed, offset);    \
    }
MML__DROPOUT_KEEP(scalar, )

static void mml__mask_scale_scalar(int64_t n, const uint8_t *keep, const float *x, float *y, float scale) {
    for (int64_t i = 0; i < n; i++) y[i] = keep[i] ? x[i] * scale : 0.0f;
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

MML__PACKED_PLAIN(scalar, )
MML__ADAM_STEPS_PLAIN(scalar, )

#if defined(__x86_64__) || defined(_M_X64)
// >>kernels-avx2 ------------------------------------------------------------
#define MML__T256 __attribute__((target("avx2,fma")))

/* Adam streams four arrays that the rest of a training step has pushed out
 * of cache; the hardware prefetcher alone leaves it waiting on memory (about
 * 1 ns per float against 0.25 in cache). Asking for the lines 2 KB ahead
 * halves that. */
#define MML__ADAM_PREFETCH 512
static inline void mml__adam_prefetch(const float *p, const float *g, const float *m, const float *v, int64_t i) {
    _mm_prefetch((const char *)(p + i), _MM_HINT_T0);
    _mm_prefetch((const char *)(g + i), _MM_HINT_T0);
    _mm_prefetch((const char *)(m + i), _MM_HINT_T0);
    _mm_prefetch((const char *)(v + i), _MM_HINT_T0);
}

MML__T256 __m256 Sleef_expf8_u10avx2(__m256);
MML__T256 __m256 Sleef_log1pf8_u10avx2(__m256);

/* The GEMM pack buffers are shared by every ISA (one kernel runs at a time per
 * thread). KC: k-block limit, NC: column block. */
#define MML__GEMM_KC 384
#define MML__GEMM_NC 256
static MML__TLS float mml__gemm_pack[MML__GEMM_KC * MML__GEMM_NC] MML__ALIGN64;
static MML__TLS float mml__gemm_apack[MML__GEMM_KC * 12 + 16] MML__ALIGN64;

/* k-block size: split K evenly into blocks of at most MML__GEMM_KC. */
static inline int mml__gemm_kc(int K) {
    int nb = (K + MML__GEMM_KC - 1) / MML__GEMM_KC;
    return (K + nb - 1) / nb;
}

static const int32_t mml__mask_tbl_avx2[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                               0,  0,  0,  0,  0,  0,  0,  0};
/* Lanes [0, rem) of an 8-lane mask (rem clamped to 0..8). */
MML__T256 static inline __m256i mml__mask_avx2(int64_t rem) {
    int r = rem <= 0 ? 0 : rem >= 8 ? 8 : (int)rem;
    return _mm256_loadu_si256((const __m256i *)(mml__mask_tbl_avx2 + 8 - r));
}
MML__T256 static inline __m256 mml__ld_avx2(__m256i m, const float *p) {
    return _mm256_maskload_ps(p, m);
}
MML__T256 static inline void mml__st_avx2(float *p, __m256i m, __m256 v) {
    _mm256_maskstore_ps(p, m, v);
}
MML__T256 static inline float mml__hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
MML__T256 static inline float mml__hmax_avx2(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* GEMM: the AVX-512 scheme (see there) with ymm: micro-kernel 6 rows x 16 (or 8)
 * columns, 12 accumulators; panels of 16 columns. */
typedef void (*mml__uk256_fn)(int kc, const float *a, int64_t lda, const float *b, float *c,
                              int64_t ldc, __m256i m0, __m256i m1, int load_c);
#define MML__R6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define MML__Y_DECL(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps();
#define MML__Y_FMA(r)                                                                 \
    if (MR_ > r) {                                                                    \
        __m256 ar = _mm256_broadcast_ss(RM_ ? ap + r * lda : ap + r);                 \
        c##r##0 = _mm256_fmadd_ps(ar, b0, c##r##0);                                   \
        if (NV_ > 1) c##r##1 = _mm256_fmadd_ps(ar, b1, c##r##1);                      \
    }
#define MML__Y_STORE(r)                                                               \
    if (MR_ > r) {                                                                    \
        float *cr = c + r * ldc;                                                      \
        if (load_c) c##r##0 = _mm256_add_ps(c##r##0, _mm256_maskload_ps(cr, m0));     \
        _mm256_maskstore_ps(cr, m0, c##r##0);                                         \
        if (NV_ > 1) {                                                                \
            if (load_c) c##r##1 = _mm256_add_ps(c##r##1, _mm256_maskload_ps(cr + 8, m1)); \
            _mm256_maskstore_ps(cr + 8, m1, c##r##1);                                 \
        }                                                                             \
    }
#define MML__UK256(MR, NV, ROWMODE)                                                   \
    MML__T256 static void mml__uk_##MR##_##NV##_##ROWMODE##_avx2(                         \
        int kc, const float *a, int64_t lda, const float *b, float *c, int64_t ldc,   \
        __m256i m0, __m256i m1, int load_c) {                                         \
        enum { MR_ = MR, NV_ = NV, RM_ = ROWMODE };                                   \
        MML__R6(MML__Y_DECL)                                                          \
        const float *ap = a;                                                          \
        for (int k = 0; k < kc; k++) {                                                \
            __m256 b0 = _mm256_load_ps(b);                                            \
            __m256 b1 = NV > 1 ? _mm256_load_ps(b + 8) : b0;                          \
            (void)b1;                                                                 \
            MML__R6(MML__Y_FMA)                                                       \
            b += 8 * NV;                                                              \
            ap += ROWMODE ? 1 : lda;                                                  \
        }                                                                             \
        MML__R6(MML__Y_STORE)                                                         \
    }
#define MML__UK256_ALL(NV, RM)                                                        \
    MML__UK256(1, NV, RM) MML__UK256(2, NV, RM) MML__UK256(3, NV, RM)                 \
    MML__UK256(4, NV, RM) MML__UK256(5, NV, RM) MML__UK256(6, NV, RM)
MML__UK256_ALL(1, 0)
MML__UK256_ALL(2, 0)
MML__UK256_ALL(1, 1)
MML__UK256_ALL(2, 1)
#define MML__UK256_ROW(NV, RM)                                                        \
    {mml__uk_1_##NV##_##RM##_avx2, mml__uk_2_##NV##_##RM##_avx2, mml__uk_3_##NV##_##RM##_avx2,    \
     mml__uk_4_##NV##_##RM##_avx2, mml__uk_5_##NV##_##RM##_avx2, mml__uk_6_##NV##_##RM##_avx2}
/* [rowmode][nv-1][mr-1] */
static const mml__uk256_fn mml__uk256_tab[2][2][6] = {
    {MML__UK256_ROW(1, 0), MML__UK256_ROW(2, 0)},
    {MML__UK256_ROW(1, 1), MML__UK256_ROW(2, 1)}};

/* Packs B into zero-padded k-major panels of 16 columns (the last of 8 if 8 or
 * fewer remain); b_trans=1 reads B[j*ldb+k]. */
MML__T256 static void mml__pack_b_avx2(int kc, int nc, const float *B, int64_t ldb, int b_trans,
                                       float *pb) {
    for (int j0 = 0; j0 < nc; j0 += 16) {
        const int w = nc - j0 < 16 ? nc - j0 : 16;
        const int nr = w > 8 ? 16 : 8;
        if (!b_trans) {
            const __m256i m0 = mml__mask_avx2(w), m1 = mml__mask_avx2(w - 8);
            for (int k = 0; k < kc; k++) {
                const float *src = B + (int64_t)k * ldb + j0;
                _mm256_store_ps(pb + k * nr, _mm256_maskload_ps(src, m0));
                if (nr == 16) _mm256_store_ps(pb + k * nr + 8, _mm256_maskload_ps(src + 8, m1));
            }
        } else {
            for (int jj = 0; jj < nr; jj++) {
                float *dst = pb + jj;
                if (jj < w) {
                    const float *src = B + (int64_t)(j0 + jj) * ldb;
                    for (int k = 0; k < kc; k++) dst[k * nr] = src[k];
                } else {
                    for (int k = 0; k < kc; k++) dst[k * nr] = 0.0f;
                }
            }
        }
        pb += (int64_t)kc * nr;
    }
}

MML__T256 static void mml__gemm_avx2(int M, int N, int K, const float *A, int lda, int a_trans,
                                     const float *B, int ldb, int b_trans, float *C, int ldc,
                                     int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (int64_t)i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    const int kcb = mml__gemm_kc(K);
    const int rowmode = !a_trans;
    float *pack = mml__gemm_pack, *apack = mml__gemm_apack;
    for (int jc = 0; jc < N; jc += MML__GEMM_NC) {
        const int nc = N - jc < MML__GEMM_NC ? N - jc : MML__GEMM_NC;
        for (int pc = 0; pc < K; pc += kcb) {
            const int kc = K - pc < kcb ? K - pc : kcb;
            const float *bsrc = b_trans ? B + (int64_t)jc * ldb + pc : B + (int64_t)pc * ldb + jc;
            mml__pack_b_avx2(kc, nc, bsrc, ldb, b_trans, pack);
            const int load_c = accumulate || pc > 0;
            for (int ic = 0; ic < M; ic += 6) {
                const int mr = M - ic < 6 ? M - ic : 6;
                const float *a = rowmode ? A + (int64_t)ic * lda + pc : A + (int64_t)pc * lda + ic;
                int64_t la = lda;
                if (!rowmode) {
                    const __m256i am = mml__mask_avx2(mr);
                    for (int k = 0; k < kc; k++)
                        _mm256_maskstore_ps(apack + k * 6, am,
                                            _mm256_maskload_ps(a + (int64_t)k * lda, am));
                    a = apack;
                    la = 6;
                }
                const float *pb = pack;
                for (int j0 = 0; j0 < nc; j0 += 16) {
                    const int w = nc - j0 < 16 ? nc - j0 : 16;
                    const int nv = w > 8 ? 2 : 1;
                    mml__uk256_tab[rowmode][nv - 1][mr - 1](
                        kc, a, la, pb, C + (int64_t)ic * ldc + jc + j0, ldc, mml__mask_avx2(w),
                        mml__mask_avx2(w - 8), load_c);
                    pb += (int64_t)kc * 8 * nv;
                }
            }
        }
    }
}

MML__T256 static void mml__gemm_nn_avx2(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                                        const float *MML_RESTRICT B, int ldb,
                                        float *MML_RESTRICT C, int ldc, int accumulate) {
    mml__gemm_avx2(M, N, K, A, lda, 0, B, ldb, 0, C, ldc, accumulate);
}
MML__T256 static void mml__gemm_nt_avx2(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                                        const float *MML_RESTRICT B, int ldb,
                                        float *MML_RESTRICT C, int ldc, int accumulate) {
    mml__gemm_avx2(M, N, K, A, lda, 0, B, ldb, 1, C, ldc, accumulate);
}
MML__T256 static void mml__gemm_tn_avx2(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                                        const float *MML_RESTRICT B, int ldb,
                                        float *MML_RESTRICT C, int ldc, int accumulate) {
    mml__gemm_avx2(M, N, K, A, lda, 1, B, ldb, 0, C, ldc, accumulate);
}

MML__T256 static void mml__add_bias_avx2(int M, int N, const float *bias, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + (int64_t)i * ldc;
        for (int j = 0; j < N; j += 8) {
            __m256i m = mml__mask_avx2(N - j);
            mml__st_avx2(c + j, m, _mm256_add_ps(mml__ld_avx2(m, c + j), mml__ld_avx2(m, bias + j)));
        }
    }
}

MML__T256 static void mml__colsum_add_avx2(int M, int N, const float *A, int lda, float *out) {
    int j = 0;
    for (; j + 32 <= N; j += 32) {
        __m256 s0 = _mm256_loadu_ps(out + j), s1 = _mm256_loadu_ps(out + j + 8);
        __m256 s2 = _mm256_loadu_ps(out + j + 16), s3 = _mm256_loadu_ps(out + j + 24);
        for (int i = 0; i < M; i++) {
            const float *a = A + (int64_t)i * lda + j;
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a + 8));
            s2 = _mm256_add_ps(s2, _mm256_loadu_ps(a + 16));
            s3 = _mm256_add_ps(s3, _mm256_loadu_ps(a + 24));
        }
        _mm256_storeu_ps(out + j, s0);
        _mm256_storeu_ps(out + j + 8, s1);
        _mm256_storeu_ps(out + j + 16, s2);
        _mm256_storeu_ps(out + j + 24, s3);
    }
    for (; j < N; j += 8) {
        __m256i m = mml__mask_avx2(N - j);
        __m256 s = mml__ld_avx2(m, out + j);
        for (int i = 0; i < M; i++) s = _mm256_add_ps(s, mml__ld_avx2(m, A + (int64_t)i * lda + j));
        mml__st_avx2(out + j, m, s);
    }
}

MML__T256 static void mml__relu_fwd_avx2(int64_t n, const float *x, float *y) {
    const __m256 z = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        __m256i m = mml__mask_avx2(n - i);
        mml__st_avx2(y + i, m, _mm256_max_ps(mml__ld_avx2(m, x + i), z));
    }
}

MML__T256 static void mml__relu_bwd_avx2(int64_t n, const float *y, const float *dy, float *dx) {
    const __m256 z = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        __m256i m = mml__mask_avx2(n - i);
        __m256 pos = _mm256_cmp_ps(mml__ld_avx2(m, y + i), z, _CMP_GT_OQ);
        mml__st_avx2(dx + i, m, _mm256_and_ps(pos, mml__ld_avx2(m, dy + i)));
    }
}

MML__T256 static inline __m256i mml__lowbias32_avx2(__m256i x) {
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x846ca68bU));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    return x;
}

MML__T256 static void mml__keep_run_avx2(const uint8_t *unused, uint8_t *keep, int64_t n, uint32_t lo,
                                         uint32_t key1, const mml__drop_keys *dk) {
    (void)unused;
    const __m256i k1 = _mm256_set1_epi32((int)key1), k2 = _mm256_set1_epi32((int)dk->k2);
    const __m256i thr1 = _mm256_set1_epi32((int)dk->thr - 1), step = _mm256_set1_epi32(8);
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int)lo), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int64_t i = 0; i < n; i += 8) {
        __m256i h = mml__lowbias32_avx2(_mm256_xor_si256(idx, k1));
        h = mml__lowbias32_avx2(_mm256_xor_si256(h, k2));
        int bits = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_srli_epi32(h, 8), thr1)));
        int64_t c = n - i < 8 ? n - i : 8;
        for (int64_t j = 0; j < c; j++) keep[i + j] = (uint8_t)((bits >> j) & 1);
        idx = _mm256_add_epi32(idx, step);
    }
}
MML__DROPOUT_KEEP(avx2, MML__T256)

MML__T256 static void mml__mask_scale_avx2(int64_t n, const uint8_t *keep, const float *x, float *y,
                                           float scale) {
    const __m256 sc = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i k = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(keep + i)));
        __m256 on = _mm256_castsi256_ps(_mm256_cmpgt_epi32(k, _mm256_setzero_si256()));
        _mm256_storeu_ps(y + i, _mm256_and_ps(on, _mm256_mul_ps(_mm256_loadu_ps(x + i), sc)));
    }
    for (; i < n; i++) y[i] = keep[i] ? x[i] * scale : 0.0f;
}

MML__T256 static void mml__softmax_rows_avx2(int M, int E, const float *x, int ldx, float *y,
                                             int ldy) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int i = 0; i < M; i++) {
        const float *xi = x + (int64_t)i * ldx;
        float *yi = y + (int64_t)i * ldy;
        __m256 mx = ninf;
        for (int e = 0; e < E; e += 8) {
            __m256i m = mml__mask_avx2(E - e);
            mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, mml__ld_avx2(m, xi + e), _mm256_castsi256_ps(m)));
        }
        const __m256 vmax = _mm256_set1_ps(mml__hmax_avx2(mx));
        __m256 s = _mm256_setzero_ps();
        for (int e = 0; e < E; e += 8) {
            __m256i m = mml__mask_avx2(E - e);
            __m256 t = Sleef_expf8_u10avx2(_mm256_sub_ps(mml__ld_avx2(m, xi + e), vmax));
            t = _mm256_and_ps(t, _mm256_castsi256_ps(m));
            s = _mm256_add_ps(s, t);
            mml__st_avx2(yi + e, m, t);
        }
        const __m256 inv = _mm256_set1_ps(1.0f / mml__hsum_avx2(s));
        for (int e = 0; e < E; e += 8) {
            __m256i m = mml__mask_avx2(E - e);
            mml__st_avx2(yi + e, m, _mm256_mul_ps(mml__ld_avx2(m, yi + e), inv));
        }
    }
}

MML__T256 static inline __m256 mml__abs_avx2(__m256 v) {
    return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}
MML__T256 static inline __m256 mml__sigmoid_e_avx2(__m256 v, __m256 e) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 ge = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ);
    return _mm256_div_ps(_mm256_blendv_ps(e, one, ge), _mm256_add_ps(one, e));
}

MML__T256 static void mml__sigmoid_avx2(int64_t n, const float *x, float *y) {
    for (int64_t i = 0; i < n; i += 8) {
        __m256i m = mml__mask_avx2(n - i);
        __m256 v = mml__ld_avx2(m, x + i);
        __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_setzero_ps(), mml__abs_avx2(v)));
        mml__st_avx2(y + i, m, mml__sigmoid_e_avx2(v, e));
    }
}

MML__T256 static double mml__bce_logits_avx2(int64_t n, const float *z, const float *label,
                                             float scale, float *dz) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    const __m256 vs = _mm256_set1_ps(scale), zero = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        __m256i m = mml__mask_avx2(n - i);
        __m256 v = mml__ld_avx2(m, z + i), yv = mml__ld_avx2(m, label + i);
        __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(zero, mml__abs_avx2(v)));
        __m256 l = _mm256_sub_ps(_mm256_max_ps(v, zero), _mm256_mul_ps(v, yv));
        l = _mm256_and_ps(_mm256_add_ps(l, Sleef_log1pf8_u10avx2(e)), _mm256_castsi256_ps(m));
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(l)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(l, 1)));
        if (dz) mml__st_avx2(dz + i, m, _mm256_mul_ps(vs, _mm256_sub_ps(mml__sigmoid_e_avx2(v, e), yv)));
    }
    __m256d s = _mm256_add_pd(s0, s1);
    __m128d t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}

MML__T256 static inline void mml__copy_avx2(int64_t n, const float *src, float *dst) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(dst + j, _mm256_loadu_ps(src + j));
    if (j < n) {
        __m256i m = mml__mask_avx2(n - j);
        mml__st_avx2(dst + j, m, mml__ld_avx2(m, src + j));
    }
}

MML__T256 static void mml__gather_rows_avx2(int n, const int32_t *ids, const float *table, int dim,
                                            float *out, int ldo) {
    for (int i = 0; i < n; i++)
        mml__copy_avx2(dim, table + (int64_t)ids[i] * dim, out + (int64_t)i * ldo);
}

MML__T256 static void mml__scatter_add_rows_avx2(int n, const int32_t *ids, const float *g, int ldg,
                                                 int dim, float *table_grad) {
    for (int i = 0; i < n; i++) {
        if (i + MML__ROW_AHEAD < n) mml__prefetch_floats(table_grad + (int64_t)ids[i + MML__ROW_AHEAD] * dim, dim);
        float *t = table_grad + (int64_t)ids[i] * dim;
        const float *gi = g + (int64_t)i * ldg;
        for (int j = 0; j < dim; j += 8) {
            __m256i m = mml__mask_avx2(dim - j);
            mml__st_avx2(t + j, m, _mm256_add_ps(mml__ld_avx2(m, t + j), mml__ld_avx2(m, gi + j)));
        }
    }
}

MML__T256 static void mml__adam_dense_avx2(int64_t n, float *p, const float *g, float *m, float *v,
                                           const mml_adam_hp *hp) {
    const __m256 b1 = _mm256_set1_ps(hp->beta1), b2 = _mm256_set1_ps(hp->beta2);
    const __m256 c1 = _mm256_set1_ps(1.0f - hp->beta1), c2 = _mm256_set1_ps(1.0f - hp->beta2);
    const __m256 wd = _mm256_set1_ps(hp->weight_decay), lr = _mm256_set1_ps(hp->lr);
    const __m256 eps = _mm256_set1_ps(hp->eps);
    const __m256 ibc1 = _mm256_set1_ps(1.0f / hp->bc1), ibc2 = _mm256_set1_ps(1.0f / hp->bc2);
    for (int64_t i = 0; i < n; i += 8) {
        __m256i k = mml__mask_avx2(n - i);
        if (!(i & 15) && i + MML__ADAM_PREFETCH < n) mml__adam_prefetch(p, g, m, v, i + MML__ADAM_PREFETCH);
        __m256 pv = mml__ld_avx2(k, p + i);
        __m256 gv = _mm256_add_ps(mml__ld_avx2(k, g + i), _mm256_mul_ps(wd, pv));
        __m256 mv = _mm256_add_ps(_mm256_mul_ps(b1, mml__ld_avx2(k, m + i)), _mm256_mul_ps(c1, gv));
        __m256 vv = _mm256_add_ps(_mm256_mul_ps(b2, mml__ld_avx2(k, v + i)),
                                  _mm256_mul_ps(c2, _mm256_mul_ps(gv, gv)));
        mml__st_avx2(m + i, k, mv);
        mml__st_avx2(v + i, k, vv);
        __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vv, ibc2)), eps);
        __m256 upd = _mm256_div_ps(_mm256_mul_ps(lr, _mm256_mul_ps(mv, ibc1)), den);
        mml__st_avx2(p + i, k, _mm256_sub_ps(pv, upd));
    }
}

MML__T256 static void mml__adam_rows_avx2(int nrows, const int32_t *rows, int dim, float *p,
                                          const float *g, float *m, float *v, const mml_adam_hp *hp) {
    for (int r = 0; r < nrows; r++) {
        int64_t o = (int64_t)rows[r] * dim;
        if (r + MML__ROW_AHEAD < nrows)
            for (int64_t j = 0, q = (int64_t)rows[r + MML__ROW_AHEAD] * dim; j < dim; j += 16) mml__adam_prefetch(p, g, m, v, q + j);
        mml__adam_dense_avx2(dim, p + o, g + o, m + o, v + o, hp);
    }
}

MML__T256 static void mml__block_scale_avx2(int M, int E, int r, const float *T, int ldt,
                                            const float *w, int ldw, float *U, int ldu) {
    for (int i = 0; i < M; i++)
        for (int e = 0; e < E; e++) {
            const __m256 we = _mm256_set1_ps(w[(int64_t)i * ldw + e]);
            const float *t = T + (int64_t)i * ldt + (int64_t)e * r;
            float *u = U + (int64_t)i * ldu + (int64_t)e * r;
            for (int j = 0; j < r; j += 8) {
                __m256i m = mml__mask_avx2(r - j);
                mml__st_avx2(u + j, m, _mm256_mul_ps(we, mml__ld_avx2(m, t + j)));
            }
        }
}

MML__T256 static void mml__block_dot_avx2(int M, int E, int r, const float *dU, int ldu,
                                          const float *T, int ldt, float *dw, int ldw,
                                          int accumulate) {
    for (int i = 0; i < M; i++)
        for (int e = 0; e < E; e++) {
            const float *a = dU + (int64_t)i * ldu + (int64_t)e * r;
            const float *b = T + (int64_t)i * ldt + (int64_t)e * r;
            __m256 s = _mm256_setzero_ps();
            for (int j = 0; j < r; j += 8) {
                __m256i m = mml__mask_avx2(r - j);
                s = _mm256_fmadd_ps(mml__ld_avx2(m, a + j), mml__ld_avx2(m, b + j), s);
            }
            float d = mml__hsum_avx2(s);
            float *o = dw + (int64_t)i * ldw + e;
            *o = accumulate ? *o + d : d;
        }
}

MML__T256 static void mml__axpy_avx2(int64_t n, float a, const float *x, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    for (int64_t i = 0; i < n; i += 8) {
        __m256i m = mml__mask_avx2(n - i);
        mml__st_avx2(y + i, m, _mm256_fmadd_ps(va, mml__ld_avx2(m, x + i), mml__ld_avx2(m, y + i)));
    }
}

MML__T256 static float mml__dot_avx2(int64_t n, const float *x, const float *y) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), s3);
    }
    for (; i < n; i += 8) {
        __m256i m = mml__mask_avx2(n - i);
        s0 = _mm256_fmadd_ps(mml__ld_avx2(m, x + i), mml__ld_avx2(m, y + i), s0);
    }
    return mml__hsum_avx2(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

MML__T256 static void mml__mul_avx2(int64_t n, const float *x, const float *y, float *z) {
    for (int64_t i = 0; i < n; i += 8) {
        __m256i m = mml__mask_avx2(n - i);
        mml__st_avx2(z + i, m, _mm256_mul_ps(mml__ld_avx2(m, x + i), mml__ld_avx2(m, y + i)));
    }
}

MML__PACKED_PLAIN(avx2, MML__T256)
MML__ADAM_STEPS_PLAIN(avx2, MML__T256)

// >>kernels-avx512 ----------------------------------------------------------
#define MML__T512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
/* GCC 12 in C++ mode warns inside its own AVX-512 headers (_mm512_undefined_ps,
 * GCC bug 105593); silence that one warning for this chapter. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

MML__T512 __m512 Sleef_expf16_u10avx512f(__m512);
MML__T512 __m512 Sleef_log1pf16_u10avx512f(__m512);

/* Lanes [0, rem) of a 16-lane mask (rem <= 0 gives 0). */
MML__T512 static inline __mmask16 mml__mask_avx512(int64_t rem) {
    return rem >= 16 ? (__mmask16)0xFFFF : rem <= 0 ? (__mmask16)0 : (__mmask16)((1u << rem) - 1u);
}

/* Horizontal reductions by shuffles (GCC 12's _mm512_reduce_* warn in C++). */
MML__T512 static inline float mml__hsum_avx512(__m512 v) {
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
    return _mm512_cvtss_f32(v);
}
MML__T512 static inline float mml__hmax_avx512(__m512 v) {
    v = _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
    v = _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
    v = _mm512_max_ps(v, _mm512_permute_ps(v, 0x4E));
    v = _mm512_max_ps(v, _mm512_permute_ps(v, 0xB1));
    return _mm512_cvtss_f32(v);
}
MML__T512 static inline double mml__hsum_pd_avx512(__m512d v) {
    v = _mm512_add_pd(v, _mm512_shuffle_f64x2(v, v, 0x4E));
    v = _mm512_add_pd(v, _mm512_shuffle_f64x2(v, v, 0xB1));
    v = _mm512_add_pd(v, _mm512_permute_pd(v, 0x55));
    return _mm512_cvtsd_f64(v);
}

/* GEMM blocking (all three layouts share it):
 *   for jc (NC=256 columns): for pc (K blocks of <= 384, split evenly):
 *     pack B[pc:pc+kc, jc:jc+nc] into k-major panels of 32 (or 16) columns,
 *     zero-padded, so the micro-kernel loads whole vectors;
 *     for ic (12-row blocks, tail = one smaller kernel): for each panel:
 *       micro-kernel: mr x (16*nv) accumulators in zmm; per k one broadcast of
 *       A per row and nv FMAs; C added/stored through column masks.
 *   A is never packed: nn/nt read rows of A in place (row pointers, k stride 1),
 *   tn copies each 12 x kc sliver of A[K,M] to a k-major buffer first (rows
 *   lda apart map to one L1 set). */


typedef void (*mml__uk512_fn)(int kc, const float *a, int64_t lda, const float *b, float *c,
                              int64_t ldc, __mmask16 m0, __mmask16 m1, int load_c,
                              const float *bias, int relu);

#define MML__R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define MML__Z512_DECL(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = _mm512_setzero_ps();
/* ROWMODE 1: row r of A at a + r*lda, k stride 1. ROWMODE 0: a + k*lda + r. */
#define MML__Z512_FMA(r)                                                              \
    if (MR_ > r) {                                                                     \
        __m512 ar = _mm512_set1_ps(RM_ ? ap[r * lda] : ap[r]);                    \
        c##r##0 = _mm512_fmadd_ps(ar, b0, c##r##0);                                   \
        if (NV_ > 1) c##r##1 = _mm512_fmadd_ps(ar, b1, c##r##1);                       \
    }
#define MML__Z512_STORE(r)                                                            \
    if (MR_ > r) {                                                                     \
        float *cr = c + r * ldc;                                                      \
        if (load_c) c##r##0 = _mm512_add_ps(c##r##0, _mm512_maskz_loadu_ps(m0, cr));  \
        if (bias) c##r##0 = _mm512_add_ps(c##r##0, bv0);                              \
        if (relu) c##r##0 = _mm512_max_ps(c##r##0, zero);                             \
        _mm512_mask_storeu_ps(cr, m0, c##r##0);                                       \
        if (NV_ > 1) {                                                                 \
            if (load_c)                                                               \
                c##r##1 = _mm512_add_ps(c##r##1, _mm512_maskz_loadu_ps(m1, cr + 16)); \
            if (bias) c##r##1 = _mm512_add_ps(c##r##1, bv1);                          \
            if (relu) c##r##1 = _mm512_max_ps(c##r##1, zero);                         \
            _mm512_mask_storeu_ps(cr + 16, m1, c##r##1);                              \
        }                                                                             \
    }
#define MML__UK512(MR, NV, ROWMODE)                                                   \
    MML__T512 static void mml__uk_##MR##_##NV##_##ROWMODE##_avx512(                         \
        int kc, const float *a, int64_t lda, const float *b, float *c, int64_t ldc,   \
        __mmask16 m0, __mmask16 m1, int load_c, const float *bias, int relu) {        \
        enum { MR_ = MR, NV_ = NV, RM_ = ROWMODE };                                   \
        MML__R12(MML__Z512_DECL)                                                      \
        const float *ap = a;                                                          \
        for (int k = 0; k < kc; k++) {                                                \
            __m512 b0 = _mm512_loadu_ps(b);                                           \
            __m512 b1 = NV > 1 ? _mm512_loadu_ps(b + 16) : b0;                        \
            (void)b1;                                                                 \
            MML__R12(MML__Z512_FMA)                                                   \
            b += 16 * NV;                                                             \
            ap += ROWMODE ? 1 : lda;                                                  \
        }                                                                             \
        const __m512 zero = _mm512_setzero_ps();                                      \
        const __m512 bv0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : zero;             \
        const __m512 bv1 = bias && NV_ > 1 ? _mm512_maskz_loadu_ps(m1, bias + 16) : zero; \
        (void)bv1;                                                                    \
        MML__R12(MML__Z512_STORE)                                                     \
    }
#define MML__UK512_ALL(NV, RM)                                                        \
    MML__UK512(1, NV, RM) MML__UK512(2, NV, RM) MML__UK512(3, NV, RM)                 \
    MML__UK512(4, NV, RM) MML__UK512(5, NV, RM) MML__UK512(6, NV, RM)                 \
    MML__UK512(7, NV, RM) MML__UK512(8, NV, RM) MML__UK512(9, NV, RM)                 \
    MML__UK512(10, NV, RM) MML__UK512(11, NV, RM) MML__UK512(12, NV, RM)
MML__UK512_ALL(1, 0)
MML__UK512_ALL(2, 0)
MML__UK512_ALL(1, 1)
MML__UK512_ALL(2, 1)
#define MML__UK512_ROW(NV, RM)                                                        \
    {mml__uk_1_##NV##_##RM##_avx512, mml__uk_2_##NV##_##RM##_avx512, mml__uk_3_##NV##_##RM##_avx512,    \
     mml__uk_4_##NV##_##RM##_avx512, mml__uk_5_##NV##_##RM##_avx512, mml__uk_6_##NV##_##RM##_avx512,    \
     mml__uk_7_##NV##_##RM##_avx512, mml__uk_8_##NV##_##RM##_avx512, mml__uk_9_##NV##_##RM##_avx512,    \
     mml__uk_10_##NV##_##RM##_avx512, mml__uk_11_##NV##_##RM##_avx512, mml__uk_12_##NV##_##RM##_avx512}
/* [rowmode][nv-1][mr-1] */
static const mml__uk512_fn mml__uk512_tab[2][2][12] = {
    {MML__UK512_ROW(1, 0), MML__UK512_ROW(2, 0)},
    {MML__UK512_ROW(1, 1), MML__UK512_ROW(2, 1)}};

/* Packs B (b_trans=0: B[k*ldb+j]; 1: B[j*ldb+k]) rows [0,kc) cols [0,nc) into
 * panels of 32 columns (the last of 16 if 16 or fewer remain), zero-padded. */
/* In-register transpose of 16 x 16 floats: r[i][j] -> r[j][i]. */
MML__T512 static inline void mml__transpose16_avx512(__m512 r[16]) {
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

/* B[kc, nc] (or, transposed, B[nc, kc]) -> k-major panels of 32 columns (the
 * last one 16 when it fits), zero-padded. Transposed: 16 x 16 tiles of B's
 * rows, turned in registers (rows past nc read as zero, k tails masked). */
MML__T512 static void mml__pack_b_avx512(int kc, int nc, const float *B, int64_t ldb,
                                         int b_trans, float *pb) {
    for (int j0 = 0; j0 < nc; j0 += 32) {
        const int w = nc - j0 < 32 ? nc - j0 : 32;
        const int nr = w > 16 ? 32 : 16;
        if (!b_trans) {
            const __mmask16 m0 = mml__mask_avx512(w), m1 = mml__mask_avx512(w - 16);
            for (int k = 0; k < kc; k++) {
                const float *src = B + (int64_t)k * ldb + j0;
                _mm512_storeu_ps(pb + k * nr, _mm512_maskz_loadu_ps(m0, src));
                if (nr == 32) _mm512_storeu_ps(pb + k * nr + 16, _mm512_maskz_loadu_ps(m1, src + 16));
            }
        } else {
            for (int k0 = 0; k0 < kc; k0 += 16) {
                const int kk = kc - k0 < 16 ? kc - k0 : 16;
                const __mmask16 mk = mml__mask_avx512(kk);
                for (int h = 0; h < nr; h += 16) {
                    __m512 r[16];
                    for (int i = 0; i < 16; i++)
                        r[i] = h + i < w ? _mm512_maskz_loadu_ps(mk, B + (int64_t)(j0 + h + i) * ldb + k0)
                                         : _mm512_setzero_ps();
                    mml__transpose16_avx512(r);
                    for (int c = 0; c < kk; c++) _mm512_storeu_ps(pb + (int64_t)(k0 + c) * nr + h, r[c]);
                }
            }
        }
        pb += (int64_t)kc * nr;
    }
}

/* Few rows (batch-1 inference): stream row-major B once, no packing. */
MML__T512 static void mml__gemm_smallm_avx512(int M, int N, int K, const float *A, int lda,
                                              const float *B, int ldb, float *C, int ldc,
                                              int accumulate) {
    for (int i = 0; i < M; i++) {
        const float *a = A + (int64_t)i * lda;
        float *c = C + (int64_t)i * ldc;
        for (int j = 0; j < N; j += 64) {
            const __mmask16 m0 = mml__mask_avx512(N - j), m1 = mml__mask_avx512(N - j - 16),
                            m2 = mml__mask_avx512(N - j - 32), m3 = mml__mask_avx512(N - j - 48);
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

MML__T512 static void mml__gemm_avx512(int M, int N, int K, const float *A, int lda, int a_trans,
                                       const float *B, int ldb, int b_trans, float *C, int ldc,
                                       int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (M <= 2 && !a_trans && !b_trans && K > 0) {
        mml__gemm_smallm_avx512(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
        return;
    }
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (int64_t)i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    const int kcb = mml__gemm_kc(K);
    const int rowmode = !a_trans;
    float *pack = mml__gemm_pack, *apack = mml__gemm_apack;
    for (int jc = 0; jc < N; jc += MML__GEMM_NC) {
        const int nc = N - jc < MML__GEMM_NC ? N - jc : MML__GEMM_NC;
        for (int pc = 0; pc < K; pc += kcb) {
            const int kc = K - pc < kcb ? K - pc : kcb;
            const float *bsrc = b_trans ? B + (int64_t)jc * ldb + pc : B + (int64_t)pc * ldb + jc;
            mml__pack_b_avx512(kc, nc, bsrc, ldb, b_trans, pack);
            const int load_c = accumulate || pc > 0;
            for (int ic = 0; ic < M; ic += 12) {
                const int mr = M - ic < 12 ? M - ic : 12;
                const float *a = rowmode ? A + (int64_t)ic * lda + pc : A + (int64_t)pc * lda + ic;
                int64_t la = lda;
                if (!rowmode) { /* A^T rows are lda apart: copy the 12 x kc sliver (L1 sets) */
                    const __mmask16 am = mml__mask_avx512(mr);
                    for (int k = 0; k < kc; k++)
                        _mm512_mask_storeu_ps(apack + k * 12, am,
                                              _mm512_maskz_loadu_ps(am, a + (int64_t)k * lda));
                    a = apack;
                    la = 12;
                }
                const float *pb = pack;
                for (int j0 = 0; j0 < nc; j0 += 32) {
                    const int w = nc - j0 < 32 ? nc - j0 : 32;
                    const int nv = w > 16 ? 2 : 1;
                    mml__uk512_tab[rowmode][nv - 1][mr - 1](
                        kc, a, la, pb, C + (int64_t)ic * ldc + jc + j0, ldc,
                        mml__mask_avx512(w), mml__mask_avx512(w - 16), load_c, NULL, 0);
                    pb += (int64_t)kc * 16 * nv;
                }
            }
        }
    }
}

MML__T512 static void mml__gemm_nn_avx512(int M, int N, int K, const float *MML_RESTRICT A,
                                          int lda, const float *MML_RESTRICT B, int ldb,
                                          float *MML_RESTRICT C, int ldc, int accumulate) {
    mml__gemm_avx512(M, N, K, A, lda, 0, B, ldb, 0, C, ldc, accumulate);
}
MML__T512 static void mml__gemm_nt_avx512(int M, int N, int K, const float *MML_RESTRICT A,
                                          int lda, const float *MML_RESTRICT B, int ldb,
                                          float *MML_RESTRICT C, int ldc, int accumulate) {
    mml__gemm_avx512(M, N, K, A, lda, 0, B, ldb, 1, C, ldc, accumulate);
}
MML__T512 static void mml__gemm_tn_avx512(int M, int N, int K, const float *MML_RESTRICT A,
                                          int lda, const float *MML_RESTRICT B, int ldb,
                                          float *MML_RESTRICT C, int ldc, int accumulate) {
    mml__gemm_avx512(M, N, K, A, lda, 1, B, ldb, 0, C, ldc, accumulate);
}

/* Packed B: the panels mml__gemm_avx512 would pack, for every column block and
 * k block in its loop order, stored once. */
static inline int64_t mml__panel_width512(int nc) {
    int full = nc / 32 * 32, rem = nc - full;
    return full + (rem == 0 ? 0 : rem > 16 ? 32 : 16);
}

MML__T512 static int64_t mml__gemm_pack_size_avx512(int K, int N) {
    if (K <= 0 || N <= 0) return 0;
    int64_t s = 0;
    for (int jc = 0; jc < N; jc += MML__GEMM_NC)
        s += (int64_t)K * mml__panel_width512(N - jc < MML__GEMM_NC ? N - jc : MML__GEMM_NC);
    return s;
}

MML__T512 static void mml__gemm_pack_b_avx512(int K, int N, const float *MML_RESTRICT B, int ldb,
                                              float *MML_RESTRICT Bp) {
    if (K <= 0 || N <= 0) return;
    const int kcb = mml__gemm_kc(K);
    for (int jc = 0; jc < N; jc += MML__GEMM_NC) {
        const int nc = N - jc < MML__GEMM_NC ? N - jc : MML__GEMM_NC;
        for (int pc = 0; pc < K; pc += kcb) {
            const int kc = K - pc < kcb ? K - pc : kcb;
            mml__pack_b_avx512(kc, nc, B + (int64_t)pc * ldb + jc, ldb, 0, Bp);
            Bp += kc * mml__panel_width512(nc);
        }
    }
}

/* C = A Bp (+ bias) (relu): the blocked loop of mml__gemm_avx512 on panels
 * packed beforehand; bias and relu are applied as the last k block is stored. */
MML__T512 static void mml__gemm_packed_avx512(int M, int N, int K, const float *MML_RESTRICT A,
                                              int lda, const float *MML_RESTRICT Bp,
                                              float *MML_RESTRICT C, int ldc, const float *bias,
                                              int relu) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        const __m512 zero = _mm512_setzero_ps();
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j += 16) {
                const __mmask16 m = mml__mask_avx512(N - j);
                __m512 v = bias ? _mm512_maskz_loadu_ps(m, bias + j) : zero;
                if (relu) v = _mm512_max_ps(v, zero);
                _mm512_mask_storeu_ps(C + (int64_t)i * ldc + j, m, v);
            }
        return;
    }
    const int kcb = mml__gemm_kc(K);
    for (int jc = 0; jc < N; jc += MML__GEMM_NC) {
        const int nc = N - jc < MML__GEMM_NC ? N - jc : MML__GEMM_NC;
        const int64_t pw = mml__panel_width512(nc);
        for (int pc = 0; pc < K; pc += kcb) {
            const int kc = K - pc < kcb ? K - pc : kcb, last = pc + kc == K;
            for (int ic = 0; ic < M; ic += 12) {
                const int mr = M - ic < 12 ? M - ic : 12;
                const float *pb = Bp;
                for (int j0 = 0; j0 < nc; j0 += 32) {
                    const int w = nc - j0 < 32 ? nc - j0 : 32;
                    const int nv = w > 16 ? 2 : 1;
                    mml__uk512_tab[1][nv - 1][mr - 1](
                        kc, A + (int64_t)ic * lda + pc, lda, pb, C + (int64_t)ic * ldc + jc + j0, ldc,
                        mml__mask_avx512(w), mml__mask_avx512(w - 16), pc > 0,
                        last && bias ? bias + jc + j0 : NULL, last && relu);
                    pb += (int64_t)kc * 16 * nv;
                }
            }
            Bp += kc * pw;
        }
    }
}

MML__T512 static void mml__add_bias_avx512(int M, int N, const float *bias, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + (int64_t)i * ldc;
        for (int j = 0; j < N; j += 16) {
            __mmask16 m = mml__mask_avx512(N - j);
            _mm512_mask_storeu_ps(c + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, c + j),
                                                          _mm512_maskz_loadu_ps(m, bias + j)));
        }
    }
}

/* Same summation order as the scalar reference (out + row0 + row1 + ...). */
MML__T512 static void mml__colsum_add_avx512(int M, int N, const float *A, int lda, float *out) {
    int j = 0;
    for (; j + 64 <= N; j += 64) {
        __m512 s0 = _mm512_loadu_ps(out + j), s1 = _mm512_loadu_ps(out + j + 16);
        __m512 s2 = _mm512_loadu_ps(out + j + 32), s3 = _mm512_loadu_ps(out + j + 48);
        for (int i = 0; i < M; i++) {
            const float *a = A + (int64_t)i * lda + j;
            s0 = _mm512_add_ps(s0, _mm512_loadu_ps(a));
            s1 = _mm512_add_ps(s1, _mm512_loadu_ps(a + 16));
            s2 = _mm512_add_ps(s2, _mm512_loadu_ps(a + 32));
            s3 = _mm512_add_ps(s3, _mm512_loadu_ps(a + 48));
        }
        _mm512_storeu_ps(out + j, s0);
        _mm512_storeu_ps(out + j + 16, s1);
        _mm512_storeu_ps(out + j + 32, s2);
        _mm512_storeu_ps(out + j + 48, s3);
    }
    for (; j < N; j += 16) {
        __mmask16 m = mml__mask_avx512(N - j);
        __m512 s = _mm512_maskz_loadu_ps(m, out + j);
        for (int i = 0; i < M; i++)
            s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, A + (int64_t)i * lda + j));
        _mm512_mask_storeu_ps(out + j, m, s);
    }
}

MML__T512 static void mml__relu_fwd_avx512(int64_t n, const float *x, float *y) {
    const __m512 z = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mml__mask_avx512(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_max_ps(_mm512_maskz_loadu_ps(m, x + i), z));
    }
}

MML__T512 static void mml__relu_bwd_avx512(int64_t n, const float *y, const float *dy, float *dx) {
    const __m512 z = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mml__mask_avx512(n - i);
        __mmask16 pos = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, y + i), z, _CMP_GT_OQ);
        _mm512_mask_storeu_ps(dx + i, m, _mm512_maskz_loadu_ps(pos, dy + i));
    }
}

MML__T512 static inline __m512i mml__lowbias32_avx512(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bU));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    return x;
}

/* The dropout stream of 16 lanes: keys, thresholds and the running index. */
typedef struct mml__keep512 { __m512i k1, k2, thr, idx; } mml__keep512;

MML__T512 static inline mml__keep512 mml__keep512_init(uint32_t lo, uint32_t key1, const mml__drop_keys *dk) {
    mml__keep512 s;
    s.k1 = _mm512_set1_epi32((int)key1);
    s.k2 = _mm512_set1_epi32((int)dk->k2);
    s.thr = _mm512_set1_epi32((int)dk->thr);
    s.idx = _mm512_add_epi32(_mm512_set1_epi32((int)lo),
                             _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    return s;
}

/* Keep mask of the next 16 indices (then advances). */
MML__T512 static inline __mmask16 mml__keep512_next(mml__keep512 *s) {
    __m512i h = mml__lowbias32_avx512(_mm512_xor_si512(s->idx, s->k1));
    h = mml__lowbias32_avx512(_mm512_xor_si512(h, s->k2));
    s->idx = _mm512_add_epi32(s->idx, _mm512_set1_epi32(16));
    return _mm512_cmpge_epu32_mask(_mm512_srli_epi32(h, 8), s->thr);
}

MML__T512 static void mml__keep_run_avx512(const uint8_t *unused, uint8_t *keep, int64_t n, uint32_t lo,
                                           uint32_t key1, const mml__drop_keys *dk) {
    (void)unused;
    mml__keep512 st = mml__keep512_init(lo, key1, dk);
    for (int64_t i = 0; i < n; i += 16)
        _mm_mask_storeu_epi8(keep + i, mml__mask_avx512(n - i), _mm_maskz_set1_epi8(mml__keep512_next(&st), 1));
}
MML__DROPOUT_KEEP(avx512, MML__T512)

MML__T512 static void mml__mask_scale_avx512(int64_t n, const uint8_t *keep, const float *x, float *y,
                                             float scale) {
    const __m512 sc = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mml__mask_avx512(n - i);
        __m128i kb = _mm_maskz_loadu_epi8(m, keep + i);
        __mmask16 on = _mm_test_epi8_mask(kb, kb);
        _mm512_mask_storeu_ps(y + i, m, _mm512_maskz_mul_ps(on, _mm512_maskz_loadu_ps(m, x + i), sc));
    }
}

MML__T512 static void mml__softmax_rows_avx512(int M, int E, const float *x, int ldx, float *y,
                                               int ldy) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < M; i++) {
        const float *xi = x + (int64_t)i * ldx;
        float *yi = y + (int64_t)i * ldy;
        __m512 mx = ninf;
        for (int e = 0; e < E; e += 16)
            mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, mml__mask_avx512(E - e), xi + e));
        const __m512 vmax = _mm512_set1_ps(mml__hmax_avx512(mx));
        __m512 s = _mm512_setzero_ps();
        for (int e = 0; e < E; e += 16) {
            __mmask16 m = mml__mask_avx512(E - e);
            __m512 t = Sleef_expf16_u10avx512f(
                _mm512_sub_ps(_mm512_mask_loadu_ps(ninf, m, xi + e), vmax));
            t = _mm512_maskz_mov_ps(m, t);
            s = _mm512_add_ps(s, t);
            _mm512_mask_storeu_ps(yi + e, m, t);
        }
        const __m512 inv = _mm512_set1_ps(1.0f / mml__hsum_avx512(s));
        for (int e = 0; e < E; e += 16) {
            __mmask16 m = mml__mask_avx512(E - e);
            _mm512_mask_storeu_ps(yi + e, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, yi + e), inv));
        }
    }
}

/* e = exp(-|x|); sigmoid = (x >= 0 ? 1 : e) / (1 + e), as in the scalar code. */
MML__T512 static inline __m512 mml__sigmoid_e_avx512(__m512 v, __m512 e) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __mmask16 ge = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_div_ps(_mm512_mask_blend_ps(ge, e, one), _mm512_add_ps(one, e));
}

MML__T512 static inline __m512 mml__abs_avx512(__m512 v) {
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
}

MML__T512 static void mml__sigmoid_avx512(int64_t n, const float *x, float *y) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mml__mask_avx512(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_setzero_ps(), mml__abs_avx512(v)));
        _mm512_mask_storeu_ps(y + i, m, mml__sigmoid_e_avx512(v, e));
    }
}

MML__T512 static double mml__bce_logits_avx512(int64_t n, const float *z, const float *label,
                                               float scale, float *dz) {
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    const __m512 vs = _mm512_set1_ps(scale), zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mml__mask_avx512(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, z + i), yv = _mm512_maskz_loadu_ps(m, label + i);
        __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(zero, mml__abs_avx512(v)));
        __m512 l = _mm512_sub_ps(_mm512_max_ps(v, zero), _mm512_mul_ps(v, yv));
        l = _mm512_maskz_add_ps(m, l, Sleef_log1pf16_u10avx512f(e));
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(l)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_shuffle_f32x4(l, l, 0x4E))));
        if (dz)
            _mm512_mask_storeu_ps(dz + i, m,
                                  _mm512_mul_ps(vs, _mm512_sub_ps(mml__sigmoid_e_avx512(v, e), yv)));
    }
    return mml__hsum_pd_avx512(_mm512_add_pd(s0, s1));
}

MML__T512 static inline void mml__copy_avx512(int64_t n, const float *src, float *dst) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(dst + j, _mm512_loadu_ps(src + j));
    if (j < n) {
        __mmask16 m = mml__mask_avx512(n - j);
        _mm512_mask_storeu_ps(dst + j, m, _mm512_maskz_loadu_ps(m, src + j));
    }
}

MML__T512 static void mml__gather_rows_avx512(int n, const int32_t *ids, const float *table,
                                              int dim, float *out, int ldo) {
    for (int i = 0; i < n; i++)
        mml__copy_avx512(dim, table + (int64_t)ids[i] * dim, out + (int64_t)i * ldo);
}

MML__T512 static void mml__scatter_add_rows_avx512(int n, const int32_t *ids, const float *g,
                                                   int ldg, int dim, float *table_grad) {
    for (int i = 0; i < n; i++) {
        if (i + MML__ROW_AHEAD < n) mml__prefetch_floats(table_grad + (int64_t)ids[i + MML__ROW_AHEAD] * dim, dim);
        float *t = table_grad + (int64_t)ids[i] * dim;
        const float *gi = g + (int64_t)i * ldg;
        for (int j = 0; j < dim; j += 16) {
            __mmask16 m = mml__mask_avx512(dim - j);
            _mm512_mask_storeu_ps(t + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, t + j),
                                                          _mm512_maskz_loadu_ps(m, gi + j)));
        }
    }
}

/* One Adam update of 16 lanes (the body adam_dense and adam_steps share). */
typedef struct mml__adam512 { __m512 b1, b2, c1, c2, wd, lr, eps, ibc1, ibc2, tiny, half, one; } mml__adam512;

MML__T512 static inline mml__adam512 mml__adam512_consts(const mml_adam_hp *hp) {
    mml__adam512 c;
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

/* p, m, v of 16 lanes and the gradient g -> updated in place. sqrt and divide
 * take ~20 cycles of throughput per vector; 14-bit estimates with one Newton
 * step each are good to about 1 ulp and cost a few FMAs. sqrt(x) for x below
 * FLT_MIN (< 1.1e-19) counts as 0 next to eps. */
MML__T512 static inline void mml__adam512_apply(const mml__adam512 *c, __m512 *p, __m512 m, __m512 v);

MML__T512 static inline void mml__adam512_step(const mml__adam512 *c, __m512 g, __m512 *p, __m512 *m,
                                               __m512 *v) {
    __m512 gv = _mm512_add_ps(g, _mm512_mul_ps(c->wd, *p));
    *m = _mm512_add_ps(_mm512_mul_ps(c->b1, *m), _mm512_mul_ps(c->c1, gv));
    *v = _mm512_add_ps(_mm512_mul_ps(c->b2, *v), _mm512_mul_ps(c->c2, _mm512_mul_ps(gv, gv)));
    mml__adam512_apply(c, p, *m, *v);
}

/* mml__adam512_step with g = 0 and no weight decay: the gradient terms are
 * +0 (for a finite p), and adding +0 keeps the bits (it also turns -0 into +0,
 * as the full step does). A fifth fewer operations for the replays. */
MML__T512 static inline void mml__adam512_step_zero(const mml__adam512 *c, __m512 *p, __m512 *m, __m512 *v) {
    const __m512 zero = _mm512_setzero_ps();
    *m = _mm512_add_ps(_mm512_mul_ps(c->b1, *m), zero);
    *v = _mm512_add_ps(_mm512_mul_ps(c->b2, *v), zero);
    mml__adam512_apply(c, p, *m, *v);
}

/* p -= lr * (m / bc1) / (sqrt(v / bc2) + eps) */
MML__T512 static inline void mml__adam512_apply(const mml__adam512 *c, __m512 *p, __m512 m, __m512 v) {
    __m512 x = _mm512_mul_ps(v, c->ibc2), y = _mm512_rsqrt14_ps(x);
    __mmask16 pos = _mm512_cmp_ps_mask(x, c->tiny, _CMP_GE_OQ);
    __m512 sq = _mm512_maskz_mul_ps(pos, x, y);
    sq = _mm512_mask3_fmadd_ps(_mm512_mul_ps(c->half, y), _mm512_fnmadd_ps(sq, sq, x), sq, pos);
    __m512 den = _mm512_add_ps(sq, c->eps), rc = _mm512_rcp14_ps(den);
    rc = _mm512_fmadd_ps(rc, _mm512_fnmadd_ps(den, rc, c->one), rc);
    *p = _mm512_sub_ps(*p, _mm512_mul_ps(_mm512_mul_ps(c->lr, _mm512_mul_ps(m, c->ibc1)), rc));
}

MML__T512 static void mml__adam_dense_avx512(int64_t n, float *p, const float *g, float *m,
                                             float *v, const mml_adam_hp *hp) {
    const mml__adam512 c = mml__adam512_consts(hp);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = mml__mask_avx512(n - i);
        if (i + MML__ADAM_PREFETCH < n) mml__adam_prefetch(p, g, m, v, i + MML__ADAM_PREFETCH);
        __m512 pv = _mm512_maskz_loadu_ps(k, p + i), mv = _mm512_maskz_loadu_ps(k, m + i);
        __m512 vv = _mm512_maskz_loadu_ps(k, v + i);
        mml__adam512_step(&c, _mm512_maskz_loadu_ps(k, g + i), &pv, &mv, &vv);
        _mm512_mask_storeu_ps(m + i, k, mv);
        _mm512_mask_storeu_ps(v + i, k, vv);
        _mm512_mask_storeu_ps(p + i, k, pv);
    }
}

/* Blocks of up to 128 floats stay in registers across the steps; with
 * first, a lane keeps its values until its first step. */
MML__T512 static void mml__adam_steps_avx512(int64_t n, float *p, float *m, float *v,
                                             const mml_adam_hp *hp, int steps, const int32_t *first) {
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t o = 0; o < n; o += 128) {
        __m512 pv[8], mv[8], vv[8];
        __m512i fv[8];
        __mmask16 k[8];
        for (int j = 0; j < 8; j++) {
            int64_t i = o + 16 * j;
            k[j] = i < n ? mml__mask_avx512(n - i) : 0;
            pv[j] = _mm512_maskz_loadu_ps(k[j], p + i);
            mv[j] = _mm512_maskz_loadu_ps(k[j], m + i);
            vv[j] = _mm512_maskz_loadu_ps(k[j], v + i);
            fv[j] = first ? _mm512_maskz_loadu_epi32(k[j], first + i) : _mm512_setzero_si512();
        }
        for (int s = 0; s < steps; s++) {
            const mml__adam512 c = mml__adam512_consts(hp + s);
            const int plain = hp[s].weight_decay == 0.0f;
            if (!first) {
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

MML__T512 static void mml__adam_rows_avx512(int nrows, const int32_t *rows, int dim, float *p,
                                            const float *g, float *m, float *v,
                                            const mml_adam_hp *hp) {
    for (int r = 0; r < nrows; r++) {
        int64_t o = (int64_t)rows[r] * dim;
        if (r + MML__ROW_AHEAD < nrows)
            for (int64_t j = 0, q = (int64_t)rows[r + MML__ROW_AHEAD] * dim; j < dim; j += 16) mml__adam_prefetch(p, g, m, v, q + j);
        mml__adam_dense_avx512(dim, p + o, g + o, m + o, v + o, hp);
    }
}

MML__T512 static void mml__block_scale_avx512(int M, int E, int r, const float *T, int ldt,
                                              const float *w, int ldw, float *U, int ldu) {
    for (int i = 0; i < M; i++)
        for (int e = 0; e < E; e++) {
            const __m512 we = _mm512_set1_ps(w[(int64_t)i * ldw + e]);
            const float *t = T + (int64_t)i * ldt + (int64_t)e * r;
            float *u = U + (int64_t)i * ldu + (int64_t)e * r;
            for (int j = 0; j < r; j += 16) {
                __mmask16 m = mml__mask_avx512(r - j);
                _mm512_mask_storeu_ps(u + j, m, _mm512_mul_ps(we, _mm512_maskz_loadu_ps(m, t + j)));
            }
        }
}

MML__T512 static void mml__block_dot_avx512(int M, int E, int r, const float *dU, int ldu,
                                            const float *T, int ldt, float *dw, int ldw,
                                            int accumulate) {
    for (int i = 0; i < M; i++)
        for (int e = 0; e < E; e++) {
            const float *a = dU + (int64_t)i * ldu + (int64_t)e * r;
            const float *b = T + (int64_t)i * ldt + (int64_t)e * r;
            __m512 s = _mm512_setzero_ps();
            for (int j = 0; j < r; j += 16) {
                __mmask16 m = mml__mask_avx512(r - j);
                s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + j), _mm512_maskz_loadu_ps(m, b + j), s);
            }
            float d = mml__hsum_avx512(s);
            float *o = dw + (int64_t)i * ldw + e;
            *o = accumulate ? *o + d : d;
        }
}

MML__T512 static void mml__axpy_avx512(int64_t n, float a, const float *x, float *y) {
    const __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mml__mask_avx512(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i),
                                                        _mm512_maskz_loadu_ps(m, y + i)));
    }
}

MML__T512 static float mml__dot_avx512(int64_t n, const float *x, const float *y) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(y + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(y + i + 48), s3);
    }
    for (; i < n; i += 16) {
        __mmask16 m = mml__mask_avx512(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i), s0);
    }
    return mml__hsum_avx512(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

MML__T512 static void mml__mul_avx512(int64_t n, const float *x, const float *y, float *z) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mml__mask_avx512(n - i);
        _mm512_mask_storeu_ps(z + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i),
                                                      _mm512_maskz_loadu_ps(m, y + i)));
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif /* x86-64 */

#if defined(__aarch64__)
// >>kernels-neon ------------------------------------------------------------
/* Advanced SIMD is baseline on AArch64: no target attributes needed. Tails go
 * through a 4-float stack vector (no masked loads on NEON), so no kernel
 * touches memory past its extents. */
float32x4_t Sleef_expf4_u10advsimd(float32x4_t);
float32x4_t Sleef_log1pf4_u10advsimd(float32x4_t);

#define MML__GEMM_KC 384
#define MML__GEMM_NC 256
static MML__TLS float mml__gemm_pack[MML__GEMM_KC * MML__GEMM_NC] MML__ALIGN64;

static inline int mml__gemm_kc(int K) {
    int nb = (K + MML__GEMM_KC - 1) / MML__GEMM_KC;
    return (K + nb - 1) / nb;
}

/* Loads min(rem, 4) floats (rest = fill); stores min(rem, 4). */
static inline float32x4_t mml__ld_neon(const float *p, int64_t rem, float fillv) {
    if (rem >= 4) return vld1q_f32(p);
    float t[4] = {fillv, fillv, fillv, fillv};
    for (int64_t i = 0; i < rem; i++) t[i] = p[i];
    return vld1q_f32(t);
}
static inline void mml__st_neon(float *p, int64_t rem, float32x4_t v) {
    if (rem >= 4) { vst1q_f32(p, v); return; }
    float t[4];
    vst1q_f32(t, v);
    for (int64_t i = 0; i < rem; i++) p[i] = t[i];
}

/* GEMM: the AVX-512 scheme with q registers: 8 rows x 8 (or 4) columns,
 * 16 accumulators; B packed into zero-padded panels of 8 columns. */
typedef void (*mml__ukneon_fn)(int kc, const float *a, int64_t lda, const float *b, float *c,
                               int64_t ldc, int w, int load_c);
#define MML__R8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define MML__Q_DECL(r) float32x4_t c##r##0 = vdupq_n_f32(0.0f), c##r##1 = vdupq_n_f32(0.0f);
#define MML__Q_FMA(r)                                                                 \
    if (MR_ > r) {                                                                    \
        float32x4_t ar = vld1q_dup_f32(RM_ ? ap + r * lda : ap + r);                  \
        c##r##0 = vfmaq_f32(c##r##0, ar, b0);                                         \
        if (NV_ > 1) c##r##1 = vfmaq_f32(c##r##1, ar, b1);                            \
    }
#define MML__Q_STORE(r)                                                               \
    if (MR_ > r) {                                                                    \
        float *cr = c + r * ldc;                                                      \
        if (load_c) c##r##0 = vaddq_f32(c##r##0, mml__ld_neon(cr, w, 0.0f));          \
        mml__st_neon(cr, w, c##r##0);                                                 \
        if (NV_ > 1) {                                                                \
            if (load_c) c##r##1 = vaddq_f32(c##r##1, mml__ld_neon(cr + 4, w - 4, 0.0f)); \
            mml__st_neon(cr + 4, w - 4, c##r##1);                                     \
        }                                                                             \
    }
#define MML__UKNEON(MR, NV, ROWMODE)                                                  \
    static void mml__uk_##MR##_##NV##_##ROWMODE##_neon(int kc, const float *a, int64_t lda, \
                                                    const float *b, float *c, int64_t ldc, \
                                                    int w, int load_c) {              \
        enum { MR_ = MR, NV_ = NV, RM_ = ROWMODE };                                   \
        MML__R8(MML__Q_DECL)                                                          \
        const float *ap = a;                                                          \
        for (int k = 0; k < kc; k++) {                                                \
            float32x4_t b0 = vld1q_f32(b);                                            \
            float32x4_t b1 = NV > 1 ? vld1q_f32(b + 4) : b0;                          \
            (void)b1;                                                                 \
            MML__R8(MML__Q_FMA)                                                       \
            b += 4 * NV;                                                              \
            ap += ROWMODE ? 1 : lda;                                                  \
        }                                                                             \
        MML__R8(MML__Q_STORE)                                                         \
    }
#define MML__UKNEON_ALL(NV, RM)                                                       \
    MML__UKNEON(1, NV, RM) MML__UKNEON(2, NV, RM) MML__UKNEON(3, NV, RM)              \
    MML__UKNEON(4, NV, RM) MML__UKNEON(5, NV, RM) MML__UKNEON(6, NV, RM)              \
    MML__UKNEON(7, NV, RM) MML__UKNEON(8, NV, RM)
MML__UKNEON_ALL(1, 0)
MML__UKNEON_ALL(2, 0)
MML__UKNEON_ALL(1, 1)
MML__UKNEON_ALL(2, 1)
#define MML__UKNEON_ROW(NV, RM)                                                       \
    {mml__uk_1_##NV##_##RM##_neon, mml__uk_2_##NV##_##RM##_neon, mml__uk_3_##NV##_##RM##_neon,  \
     mml__uk_4_##NV##_##RM##_neon, mml__uk_5_##NV##_##RM##_neon, mml__uk_6_##NV##_##RM##_neon,  \
     mml__uk_7_##NV##_##RM##_neon, mml__uk_8_##NV##_##RM##_neon}
static const mml__ukneon_fn mml__ukneon_tab[2][2][8] = {
    {MML__UKNEON_ROW(1, 0), MML__UKNEON_ROW(2, 0)},
    {MML__UKNEON_ROW(1, 1), MML__UKNEON_ROW(2, 1)}};

static void mml__pack_b_neon(int kc, int nc, const float *B, int64_t ldb, int b_trans, float *pb) {
    for (int j0 = 0; j0 < nc; j0 += 8) {
        const int w = nc - j0 < 8 ? nc - j0 : 8;
        const int nr = w > 4 ? 8 : 4;
        for (int k = 0; k < kc; k++)
            for (int jj = 0; jj < nr; jj++)
                pb[k * nr + jj] = jj >= w ? 0.0f
                                  : b_trans ? B[(int64_t)(j0 + jj) * ldb + k]
                                            : B[(int64_t)k * ldb + j0 + jj];
        pb += (int64_t)kc * nr;
    }
}

static void mml__gemm_neon(int M, int N, int K, const float *A, int lda, int a_trans,
                           const float *B, int ldb, int b_trans, float *C, int ldc, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (int64_t)i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    const int kcb = mml__gemm_kc(K), rowmode = !a_trans;
    float *pack = mml__gemm_pack;
    for (int jc = 0; jc < N; jc += MML__GEMM_NC) {
        const int nc = N - jc < MML__GEMM_NC ? N - jc : MML__GEMM_NC;
        for (int pc = 0; pc < K; pc += kcb) {
            const int kc = K - pc < kcb ? K - pc : kcb;
            const float *bsrc = b_trans ? B + (int64_t)jc * ldb + pc : B + (int64_t)pc * ldb + jc;
            mml__pack_b_neon(kc, nc, bsrc, ldb, b_trans, pack);
            const int load_c = accumulate || pc > 0;
            for (int ic = 0; ic < M; ic += 8) {
                const int mr = M - ic < 8 ? M - ic : 8;
                const float *a = rowmode ? A + (int64_t)ic * lda + pc : A + (int64_t)pc * lda + ic;
                const float *pb = pack;
                for (int j0 = 0; j0 < nc; j0 += 8) {
                    const int w = nc - j0 < 8 ? nc - j0 : 8;
                    const int nv = w > 4 ? 2 : 1;
                    mml__ukneon_tab[rowmode][nv - 1][mr - 1](kc, a, lda, pb,
                                                             C + (int64_t)ic * ldc + jc + j0, ldc,
                                                             w, load_c);
                    pb += (int64_t)kc * 4 * nv;
                }
            }
        }
    }
}

static void mml__gemm_nn_neon(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                              const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C, int ldc,
                              int accumulate) {
    mml__gemm_neon(M, N, K, A, lda, 0, B, ldb, 0, C, ldc, accumulate);
}
static void mml__gemm_nt_neon(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                              const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C, int ldc,
                              int accumulate) {
    mml__gemm_neon(M, N, K, A, lda, 0, B, ldb, 1, C, ldc, accumulate);
}
static void mml__gemm_tn_neon(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                              const float *MML_RESTRICT B, int ldb, float *MML_RESTRICT C, int ldc,
                              int accumulate) {
    mml__gemm_neon(M, N, K, A, lda, 1, B, ldb, 0, C, ldc, accumulate);
}

static void mml__relu_fwd_neon(int64_t n, const float *x, float *y) {
    const float32x4_t z = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n; i += 4) {
        /* x > 0 ? x : 0 (NaN -> 0, like the scalar code) */
        float32x4_t v = mml__ld_neon(x + i, n - i, 0.0f);
        mml__st_neon(y + i, n - i, vbslq_f32(vcgtq_f32(v, z), v, z));
    }
}

static void mml__relu_bwd_neon(int64_t n, const float *y, const float *dy, float *dx) {
    const float32x4_t z = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n; i += 4) {
        uint32x4_t pos = vcgtq_f32(mml__ld_neon(y + i, n - i, 0.0f), z);
        mml__st_neon(dx + i, n - i, vbslq_f32(pos, mml__ld_neon(dy + i, n - i, 0.0f), z));
    }
}

static inline uint32x4_t mml__lowbias32_neon(uint32x4_t x) {
    x = veorq_u32(x, vshrq_n_u32(x, 16));
    x = vmulq_u32(x, vdupq_n_u32(0x7feb352dU));
    x = veorq_u32(x, vshrq_n_u32(x, 15));
    x = vmulq_u32(x, vdupq_n_u32(0x846ca68bU));
    x = veorq_u32(x, vshrq_n_u32(x, 16));
    return x;
}

static void mml__keep_run_neon(const uint8_t *unused, uint8_t *keep, int64_t n, uint32_t lo, uint32_t key1,
                               const mml__drop_keys *dk) {
    (void)unused;
    const uint32x4_t k1 = vdupq_n_u32(key1), k2 = vdupq_n_u32(dk->k2), thr = vdupq_n_u32(dk->thr);
    const uint32_t init[4] = {0, 1, 2, 3};
    uint32x4_t idx = vaddq_u32(vdupq_n_u32(lo), vld1q_u32(init));
    for (int64_t i = 0; i < n; i += 4) {
        uint32x4_t h = mml__lowbias32_neon(veorq_u32(idx, k1));
        h = mml__lowbias32_neon(veorq_u32(h, k2));
        uint32_t kv[4];
        vst1q_u32(kv, vcgeq_u32(vshrq_n_u32(h, 8), thr));
        int64_t c = n - i < 4 ? n - i : 4;
        for (int64_t j = 0; j < c; j++) keep[i + j] = (uint8_t)(kv[j] & 1);
        idx = vaddq_u32(idx, vdupq_n_u32(4));
    }
}
MML__DROPOUT_KEEP(neon, )
#define mml__mask_scale_neon mml__mask_scale_scalar

static void mml__softmax_rows_neon(int M, int E, const float *x, int ldx, float *y, int ldy) {
    for (int i = 0; i < M; i++) {
        const float *xi = x + (int64_t)i * ldx;
        float *yi = y + (int64_t)i * ldy;
        float32x4_t mx = vdupq_n_f32(-INFINITY);
        for (int e = 0; e < E; e += 4) mx = vmaxq_f32(mx, mml__ld_neon(xi + e, E - e, -INFINITY));
        const float32x4_t vmax = vdupq_n_f32(vmaxvq_f32(mx));
        float32x4_t s = vdupq_n_f32(0.0f);
        for (int e = 0; e < E; e += 4) {
            float32x4_t t = Sleef_expf4_u10advsimd(vsubq_f32(mml__ld_neon(xi + e, E - e, -INFINITY), vmax));
            s = vaddq_f32(s, t);  /* padded lanes are exp(-inf) = 0 */
            mml__st_neon(yi + e, E - e, t);
        }
        const float32x4_t inv = vdupq_n_f32(1.0f / vaddvq_f32(s));
        for (int e = 0; e < E; e += 4)
            mml__st_neon(yi + e, E - e, vmulq_f32(mml__ld_neon(yi + e, E - e, 0.0f), inv));
    }
}

static inline float32x4_t mml__sigmoid_e_neon(float32x4_t v, float32x4_t e) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    uint32x4_t ge = vcgeq_f32(v, vdupq_n_f32(0.0f));
    return vdivq_f32(vbslq_f32(ge, one, e), vaddq_f32(one, e));
}

static void mml__sigmoid_neon(int64_t n, const float *x, float *y) {
    for (int64_t i = 0; i < n; i += 4) {
        float32x4_t v = mml__ld_neon(x + i, n - i, 0.0f);
        float32x4_t e = Sleef_expf4_u10advsimd(vnegq_f32(vabsq_f32(v)));
        mml__st_neon(y + i, n - i, mml__sigmoid_e_neon(v, e));
    }
}

static double mml__bce_logits_neon(int64_t n, const float *z, const float *label, float scale,
                                   float *dz) {
    float64x2_t s0 = vdupq_n_f64(0.0), s1 = vdupq_n_f64(0.0);
    const float32x4_t vs = vdupq_n_f32(scale), zero = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n; i += 4) {
        /* padded lanes: z = 0, y = 0 contribute log(2); masked below */
        float32x4_t v = mml__ld_neon(z + i, n - i, 0.0f), yv = mml__ld_neon(label + i, n - i, 0.0f);
        float32x4_t e = Sleef_expf4_u10advsimd(vnegq_f32(vabsq_f32(v)));
        float32x4_t l = vsubq_f32(vmaxq_f32(v, zero), vmulq_f32(v, yv));
        l = vaddq_f32(l, Sleef_log1pf4_u10advsimd(e));
        if (n - i < 4) {
            float t[4];
            vst1q_f32(t, l);
            for (int64_t j = n - i; j < 4; j++) t[j] = 0.0f;
            l = vld1q_f32(t);
        }
        s0 = vaddq_f64(s0, vcvt_f64_f32(vget_low_f32(l)));
        s1 = vaddq_f64(s1, vcvt_high_f64_f32(l));
        if (dz) mml__st_neon(dz + i, n - i, vmulq_f32(vs, vsubq_f32(mml__sigmoid_e_neon(v, e), yv)));
    }
    return vaddvq_f64(vaddq_f64(s0, s1));
}

static void mml__add_bias_neon(int M, int N, const float *bias, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + (int64_t)i * ldc;
        for (int j = 0; j < N; j += 4)
            mml__st_neon(c + j, N - j, vaddq_f32(mml__ld_neon(c + j, N - j, 0.0f),
                                                 mml__ld_neon(bias + j, N - j, 0.0f)));
    }
}

static void mml__colsum_add_neon(int M, int N, const float *A, int lda, float *out) {
    for (int j = 0; j < N; j += 4) {
        float32x4_t s = mml__ld_neon(out + j, N - j, 0.0f);
        for (int i = 0; i < M; i++) s = vaddq_f32(s, mml__ld_neon(A + (int64_t)i * lda + j, N - j, 0.0f));
        mml__st_neon(out + j, N - j, s);
    }
}

static void mml__scatter_add_rows_neon(int n, const int32_t *ids, const float *g, int ldg, int dim,
                                       float *table_grad) {
    for (int i = 0; i < n; i++) {
        float *t = table_grad + (int64_t)ids[i] * dim;
        const float *gi = g + (int64_t)i * ldg;
        for (int j = 0; j < dim; j += 4)
            mml__st_neon(t + j, dim - j, vaddq_f32(mml__ld_neon(t + j, dim - j, 0.0f),
                                                   mml__ld_neon(gi + j, dim - j, 0.0f)));
    }
}

static void mml__adam_dense_neon(int64_t n, float *p, const float *g, float *m, float *v,
                                 const mml_adam_hp *hp) {
    const float32x4_t b1 = vdupq_n_f32(hp->beta1), b2 = vdupq_n_f32(hp->beta2);
    const float32x4_t c1 = vdupq_n_f32(1.0f - hp->beta1), c2 = vdupq_n_f32(1.0f - hp->beta2);
    const float32x4_t wd = vdupq_n_f32(hp->weight_decay), lr = vdupq_n_f32(hp->lr);
    const float32x4_t eps = vdupq_n_f32(hp->eps);
    const float32x4_t ibc1 = vdupq_n_f32(1.0f / hp->bc1), ibc2 = vdupq_n_f32(1.0f / hp->bc2);
    for (int64_t i = 0; i < n; i += 4) {
        int64_t r = n - i;
        float32x4_t pv = mml__ld_neon(p + i, r, 0.0f);
        float32x4_t gv = vaddq_f32(mml__ld_neon(g + i, r, 0.0f), vmulq_f32(wd, pv));
        float32x4_t mv = vaddq_f32(vmulq_f32(b1, mml__ld_neon(m + i, r, 0.0f)), vmulq_f32(c1, gv));
        float32x4_t vv = vaddq_f32(vmulq_f32(b2, mml__ld_neon(v + i, r, 0.0f)),
                                   vmulq_f32(c2, vmulq_f32(gv, gv)));
        mml__st_neon(m + i, r, mv);
        mml__st_neon(v + i, r, vv);
        float32x4_t den = vaddq_f32(vsqrtq_f32(vmulq_f32(vv, ibc2)), eps);
        mml__st_neon(p + i, r, vsubq_f32(pv, vdivq_f32(vmulq_f32(lr, vmulq_f32(mv, ibc1)), den)));
    }
}

static void mml__adam_rows_neon(int nrows, const int32_t *rows, int dim, float *p, const float *g,
                                float *m, float *v, const mml_adam_hp *hp) {
    for (int r = 0; r < nrows; r++) {
        int64_t o = (int64_t)rows[r] * dim;
        mml__adam_dense_neon(dim, p + o, g + o, m + o, v + o, hp);
    }
}

static void mml__block_dot_neon(int M, int E, int r, const float *dU, int ldu, const float *T,
                                int ldt, float *dw, int ldw, int accumulate) {
    for (int i = 0; i < M; i++)
        for (int e = 0; e < E; e++) {
            const float *a = dU + (int64_t)i * ldu + (int64_t)e * r;
            const float *b = T + (int64_t)i * ldt + (int64_t)e * r;
            float32x4_t s = vdupq_n_f32(0.0f);
            for (int j = 0; j < r; j += 4)
                s = vfmaq_f32(s, mml__ld_neon(a + j, r - j, 0.0f), mml__ld_neon(b + j, r - j, 0.0f));
            float d = vaddvq_f32(s);
            float *o = dw + (int64_t)i * ldw + e;
            *o = accumulate ? *o + d : d;
        }
}

static void mml__axpy_neon(int64_t n, float a, const float *x, float *y) {
    const float32x4_t va = vdupq_n_f32(a);
    for (int64_t i = 0; i < n; i += 4)
        mml__st_neon(y + i, n - i, vfmaq_f32(mml__ld_neon(y + i, n - i, 0.0f), va,
                                             mml__ld_neon(x + i, n - i, 0.0f)));
}

static float mml__dot_neon(int64_t n, const float *x, const float *y) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(x + i), vld1q_f32(y + i));
        s1 = vfmaq_f32(s1, vld1q_f32(x + i + 4), vld1q_f32(y + i + 4));
    }
    for (; i < n; i += 4)
        s0 = vfmaq_f32(s0, mml__ld_neon(x + i, n - i, 0.0f), mml__ld_neon(y + i, n - i, 0.0f));
    return vaddvq_f32(vaddq_f32(s0, s1));
}

static void mml__mul_neon(int64_t n, const float *x, const float *y, float *z) {
    for (int64_t i = 0; i < n; i += 4)
        mml__st_neon(z + i, n - i, vmulq_f32(mml__ld_neon(x + i, n - i, 0.0f),
                                             mml__ld_neon(y + i, n - i, 0.0f)));
}

/* Kernels left scalar on NEON (pure data movement, memcpy/compiler-vectorized). */
#define mml__gather_rows_neon mml__gather_rows_scalar
#define mml__block_scale_neon mml__block_scale_scalar
MML__PACKED_PLAIN(neon, )
MML__ADAM_STEPS_PLAIN(neon, )
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

/* CPU features beside the ISAs (bit 1 << isa each) in mml__cpu()'s answer. */
#define MML__CPU_CRC32C (1 << 8) /* the CRC32C instructions of mml__crc32c_hw */

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

/* AVX2+FMA, AVX-512 F/BW/DQ/VL (each with its registers saved by the OS) and
 * SSE4.2 (crc32), as mml__cpu() bits. */
static int mml__x86_detect(void) {
    unsigned r[4];
    mml__cpuid(0, 0, r);
    const unsigned max_leaf = r[0];
    if (max_leaf < 1) return 0;
    mml__cpuid(1, 0, r);
    const unsigned ecx1 = r[2];
    int flags = (ecx1 >> 20) & 1 ? MML__CPU_CRC32C : 0;
    const int osxsave = (ecx1 >> 27) & 1, avx = (ecx1 >> 28) & 1, fma = (ecx1 >> 12) & 1;
    if (max_leaf < 7 || !osxsave || !avx) return flags;
    const uint64_t xcr0 = mml__xgetbv0();
    mml__cpuid(7, 0, r);
    const unsigned ebx7 = r[1];
    const int ymm_os = (xcr0 & 0x6) == 0x6;               /* XMM | YMM */
    const int zmm_os = (xcr0 & 0xE6) == 0xE6;             /* + opmask, ZMM_Hi256, Hi16_ZMM */
    if (ymm_os && fma && ((ebx7 >> 5) & 1)) flags |= 1 << MML_ISA_AVX2;
    const unsigned need512 = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31); /* F DQ BW VL */
    if ((flags & (1 << MML_ISA_AVX2)) && zmm_os && (ebx7 & need512) == need512) flags |= 1 << MML_ISA_AVX512;
    return flags;
}
#endif

#if defined(__aarch64__)
#define MML__ENTRY_NEON(ret, name, params) mml__##name##_neon,
static const mml_kernels_t mml__table_neon = {MML_KERNEL_LIST(MML__ENTRY_NEON)};

/* Advanced SIMD is mandatory on AArch64; the CRC32 extension (with CRC32C) is
 * not before ARMv8.1, so ask the kernel (HWCAP_CRC32). */
static int mml__arm_detect(void) {
    int flags = 1 << MML_ISA_NEON;
#if defined(__linux__) && defined(MML__CRC32C_HW)
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
    if (getauxval(AT_HWCAP) & HWCAP_CRC32) flags |= MML__CPU_CRC32C;
#elif defined(__ARM_FEATURE_CRC32) && defined(MML__CRC32C_HW)
    flags |= MML__CPU_CRC32C;
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

MOEMLORA_API int mml_simd_resolve(mml_isa *out, char *err, size_t errlen) {
    const char *env = getenv("MOEMLORA_ISA");
    if (err && errlen) err[0] = '\0';
    if (!env || !env[0]) {
        if (out) *out = mml_simd_best();
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
