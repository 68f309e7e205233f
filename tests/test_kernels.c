/* Every SIMD kernel against the scalar reference, for every ISA this CPU runs:
 * odd sizes, pointers off 64-byte alignment by one float, leading dimensions
 * larger than the widths, accumulate on/off, and guard zones that must stay
 * untouched. Tolerances come from error bounds (docs/KERNELS.md); data movement
 * and the dropout mask must match bit for bit (against a reference written
 * here from the documented hash). Also tests ISA dispatch and every CRC32C
 * path. */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora_simd.h"
#include "mml_test.h"

#include <float.h>
#include <stdint.h>

#define GUARD 37
#define SENT (-7777.25f)

/* A buffer of n floats that starts one float after a 64-byte boundary, with
 * sentinel guard zones on both sides. */
typedef struct { float *base, *p; int64_t n; } gbuf;

static gbuf gb_new(int64_t n) {
    gbuf b;
    size_t total = (size_t)(n + 2 * GUARD + 16);
    b.base = (float *)aligned_alloc(64, ((total * sizeof(float) + 63) / 64) * 64);
    for (size_t i = 0; i < total; i++) b.base[i] = SENT;
    b.p = b.base + 16 + 1;  /* 16 floats of front guard, then off by one float */
    b.n = n;
    return b;
}
static void gb_free(gbuf *b) { free(b->base); }
static int gb_guard_ok(const gbuf *b) {
    for (float *q = b->base; q < b->p; q++)
        if (memcmp(q, &(float){SENT}, sizeof(float)) != 0) return 0;
    for (int64_t i = 0; i < GUARD; i++)
        if (b->p[b->n + i] != SENT) return 0;
    return 1;
}
static gbuf gb_copy(const gbuf *src) {
    gbuf b = gb_new(src->n);
    for (int64_t i = 0; i < src->n; i++) b.p[i] = src->p[i];
    return b;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static double urand(void) { /* splitmix64 -> [0,1) */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (double)((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
}
static void fill(float *x, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * urand());
}

/* Distance in units in the last place between two finite floats. */
static double ulp_diff(float a, float b) {
    if (a == b) return 0.0;
    if (isnan(a) || isnan(b)) return 1e30;
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return fabs((double)ia - (double)ib);
}

static const mml_kernels_t *REF;
static double max_ulp[32];  /* per elementwise transcendental kernel, for the docs */
enum { U_SOFTMAX, U_SIGMOID, U_BCE_DZ, U_ADAM, U_BCE_SUM };
static const char *ulp_names[] = {"softmax_rows", "sigmoid", "bce_logits dz", "adam |dp|/lr",
                                  "bce_logits sum (rel)"};

/* ---- gemm -------------------------------------------------------------- */
typedef void (*gemm_fn)(int, int, int, const float *, int, const float *, int, float *, int, int);

/* What differs between the fp32 and the bf16 GEMM checks: the kernels, their
 * names and the slack on the fp32 summation bound. */
typedef struct {
    const char *name[3];
    int bf16;
    double slack;
} gemm_prec;
static const gemm_prec GEMM_FP32 = {{"gemm_nn", "gemm_nt", "gemm_tn"}, 0, 1.0};
/* Both sides round the same inputs to the same bf16 values and their products
 * are exact, so only the fp32 summation order differs: the fp32 bound, on
 * |bf16(x)| <= |x|(1+2^-8). */
static const gemm_prec GEMM_BF16 = {{"gemm_nn_bf16", "gemm_nt_bf16", "gemm_tn_bf16"}, 1, 1.01};

static gemm_fn gemm_op(const mml_kernels_t *k, int bf16, int op) {
    if (bf16) return op == 0 ? k->gemm_nn_bf16 : op == 1 ? k->gemm_nt_bf16 : k->gemm_tn_bf16;
    return op == 0 ? k->gemm_nn : op == 1 ? k->gemm_nt : k->gemm_tn;
}

/* mag + sum |a_ik b_kj| over k, the scale of C[i,j]'s rounding error. */
static double gemm_mag(double mag, int op, const gbuf *A, int lda, const gbuf *B, int ldb, int i, int j, int K) {
    for (int kk = 0; kk < K; kk++) {
        double a = op == 2 ? A->p[(int64_t)kk * lda + i] : A->p[(int64_t)i * lda + kk];
        double b = op == 1 ? B->p[(int64_t)j * ldb + kk] : B->p[(int64_t)kk * ldb + j];
        mag += fabs(a * b);
    }
    return mag;
}

static void test_gemm_one(const mml_kernels_t *k, const gemm_prec *p, int op, int M, int N, int K, int acc) {
    gemm_fn f = gemm_op(k, p->bf16, op), g = gemm_op(REF, p->bf16, op);
    /* A: nn/nt [M,K] lda>=K; tn [K,M] lda>=M.  B: nn/tn [K,N] ldb>=N; nt [N,K]. */
    int lda = (op == 2 ? M : K) + 3, ldb = (op == 1 ? K : N) + 5, ldc = N + 2;
    int64_t arows = op == 2 ? K : M, brows = op == 1 ? N : K;
    gbuf A = gb_new(arows * lda > 0 ? arows * lda : 1), B = gb_new(brows * ldb > 0 ? brows * ldb : 1);
    fill(A.p, A.n, -1, 1);
    fill(B.p, B.n, -1, 1);
    gbuf C = gb_new((int64_t)M * ldc);
    for (int64_t i = 0; i < C.n; i++) C.p[i] = (i % ldc) < N ? (float)(urand() * 2 - 1) : SENT;
    gbuf R = gb_copy(&C), C0 = gb_copy(&C);
    f(M, N, K, A.p, lda, B.p, ldb, C.p, ldc, acc);
    g(M, N, K, A.p, lda, B.p, ldb, R.p, ldc, acc);
    int bad = 0, badpad = 0;
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++) {
            int64_t o = (int64_t)i * ldc + j;
            if (j >= N) { badpad += C.p[o] != SENT; continue; }
            double mag = gemm_mag(acc ? fabs(C0.p[o]) : 0.0, op, &A, lda, &B, ldb, i, j, K);
            double tol = 2.0 * (K + 1) * FLT_EPSILON * p->slack * mag + 1e-30;
            double d = fabs((double)C.p[o] - (double)R.p[o]);
            if (d > tol || isnan(C.p[o])) bad++;
            if (mag > 0 && d / (mag * FLT_EPSILON) > worst) worst = d / (mag * FLT_EPSILON);
        }
    CHECK(bad == 0, "%s M=%d N=%d K=%d acc=%d: %d elements off (worst %.2f eps*sum|ab|)",
          p->name[op], M, N, K, acc, bad, worst);
    CHECK(badpad == 0 && gb_guard_ok(&C), "%s M=%d N=%d K=%d: wrote outside C", p->name[op], M, N, K);
    CHECK(gb_guard_ok(&A) && gb_guard_ok(&B), "%s: inputs' guards touched", p->name[op]);
    gb_free(&A); gb_free(&B); gb_free(&C); gb_free(&R); gb_free(&C0);
}

/* Every op, shape {M, N, K} and accumulate flag, against the scalar kernel. */
static void test_gemm_shapes(const mml_kernels_t *k, const gemm_prec *p, const int (*shapes)[3], size_t n) {
    for (int op = 0; op < 3; op++)
        for (size_t s = 0; s < n; s++)
            for (int acc = 0; acc < 2; acc++) test_gemm_one(k, p, op, shapes[s][0], shapes[s][1], shapes[s][2], acc);
}

/* Packed GEMM: pack B once, then C = A B (+ bias) (relu), against the scalar
 * gemm_nn (bf16: gemm_nn_bf16), add_bias and relu_fwd; the packed buffer's
 * size is what the ISA reports (guarded), A is read with an lda past K. */
static void test_packed_one(const mml_kernels_t *k, const gemm_prec *p, int M, int N, int K, int use_bias,
                            int relu) {
    int lda = K + 3, ldb = N + 5, ldc = N + 2;
    gbuf A = gb_new(M * (int64_t)lda > 0 ? M * (int64_t)lda : 1), B = gb_new(K * (int64_t)ldb > 0 ? K * (int64_t)ldb : 1);
    fill(A.p, A.n, -1, 1);
    fill(B.p, B.n, -1, 1);
    gbuf bias = gb_new(N);
    fill(bias.p, bias.n, -1, 1);
    /* bf16 layouts may hold two values per float */
    int64_t ps = p->bf16 ? k->gemm_pack_size_bf16(K, N) : k->gemm_pack_size(K, N);
    CHECK(ps >= (int64_t)K * N / (p->bf16 ? 2 : 1), "%s: pack size(%d, %d) = %lld, too small", p->name[0], K, N,
          (long long)ps);
    gbuf Bp = gb_new(ps > 0 ? ps : 1);
    (p->bf16 ? k->gemm_pack_b_bf16 : k->gemm_pack_b)(K, N, B.p, ldb, Bp.p);
    gbuf C = gb_new((int64_t)M * ldc);
    for (int64_t i = 0; i < C.n; i++) C.p[i] = (i % ldc) < N ? 1e30f : SENT; /* overwritten, never read */
    gbuf R = gb_copy(&C);
    (p->bf16 ? k->gemm_packed_bf16 : k->gemm_packed)(M, N, K, A.p, lda, Bp.p, C.p, ldc, use_bias ? bias.p : NULL,
                                                     relu);
    gemm_op(REF, p->bf16, 0)(M, N, K, A.p, lda, B.p, ldb, R.p, ldc, 0);
    if (use_bias) REF->add_bias(M, N, bias.p, R.p, ldc);
    if (relu)
        for (int i = 0; i < M; i++) REF->relu_fwd(N, R.p + (int64_t)i * ldc, R.p + (int64_t)i * ldc);
    int bad = 0, badpad = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++) {
            int64_t o = (int64_t)i * ldc + j;
            if (j >= N) { badpad += C.p[o] != SENT; continue; }
            double mag = use_bias ? fabs(bias.p[j]) : 0.0;
            for (int kk = 0; kk < K; kk++) mag += fabs((double)A.p[(int64_t)i * lda + kk] * B.p[(int64_t)kk * ldb + j]);
            double d = fabs((double)C.p[o] - (double)R.p[o]);
            if (d > 2.0 * (K + 2) * FLT_EPSILON * p->slack * mag + 1e-30 || isnan(C.p[o]) || (relu && C.p[o] < 0))
                bad++;
        }
    const char *name = p->bf16 ? "gemm_packed_bf16" : "gemm_packed";
    CHECK(bad == 0, "%s M=%d N=%d K=%d bias=%d relu=%d: %d elements off", name, M, N, K, use_bias, relu, bad);
    CHECK(badpad == 0 && gb_guard_ok(&C) && gb_guard_ok(&Bp), "%s M=%d N=%d K=%d: wrote outside C or Bp", name, M,
          N, K);
    gb_free(&A); gb_free(&B); gb_free(&bias); gb_free(&Bp); gb_free(&C); gb_free(&R);
}

/* One product (K = 1, so no summation order): the result must be the
 * reference's bits, so the rounding itself is checked: ties to even both
 * ways, the carry into the exponent, overflow to inf, denormals to zero
 * (the largest too, which would round up to a normal bf16). */
static void test_gemm_bf16_rounding(const mml_kernels_t *k) {
    static const uint32_t a_bits[] = {0x3F808000u, 0x3F818000u, 0x3F807FFFu, 0x3F808001u, 0x3FFFFFFFu,
                                      0x7F7FFFFFu, 0x00400000u, 0x80000001u, 0xBF80C000u, 0x3F800000u,
                                      0x007FFFFFu};
    static const float b_vals[] = {1.0f, -1.0f, 3.0f, 0.5f, 1.0f, 1.0f, 1e30f, 1e30f, 2.0f, 1.00390625f, 1e30f};
    int bad = 0;
    for (size_t t = 0; t < sizeof a_bits / sizeof a_bits[0]; t++) {
        float a, c = SENT, r = SENT;
        memcpy(&a, &a_bits[t], 4);
        for (int op = 0; op < 3; op++) {
            gemm_op(k, 1, op)(1, 1, 1, &a, 1, &b_vals[t], 1, &c, 1, 0);
            REF->gemm_nn_bf16(1, 1, 1, &a, 1, &b_vals[t], 1, &r, 1, 0);
            bad += memcmp(&c, &r, 4) != 0;
        }
    }
    float one = 1.0f, r = 0.0f, x;
    memcpy(&x, &a_bits[0], 4); /* 1 + 2^-8: a tie, to even = 1 */
    REF->gemm_nn_bf16(1, 1, 1, &x, 1, &one, 1, &r, 1, 0);
    CHECK(r == 1.0f, "bf16 reference: 1+2^-8 rounds to %.9g, not 1", r);
    CHECK(bad == 0, "gemm_*_bf16 K=1: %d products differ from the reference's rounding", bad);
}

/* The rounding really happens: gemm_nn_bf16 differs from gemm_nn, by at most
 * the bf16 bound (each input off by <= 2^-9 relative, so each product by
 * <= 2^-8 + 2^-18) plus the two summation errors. */
static void test_gemm_bf16_vs_fp32(const mml_kernels_t *k) {
    const int M = 17, N = 33, K = 255;
    gbuf A = gb_new((int64_t)M * K), B = gb_new((int64_t)K * N), C = gb_new((int64_t)M * N),
         F = gb_new((int64_t)M * N);
    fill(A.p, A.n, -1, 1);
    fill(B.p, B.n, -1, 1);
    k->gemm_nn_bf16(M, N, K, A.p, K, B.p, N, C.p, N, 0);
    k->gemm_nn(M, N, K, A.p, K, B.p, N, F.p, N, 0);
    int bad = 0, differ = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double mag = 0;
            for (int kk = 0; kk < K; kk++) mag += fabs((double)A.p[i * K + kk] * B.p[kk * N + j]);
            double d = fabs((double)C.p[i * N + j] - F.p[i * N + j]);
            bad += d > (ldexp(1, -8) * 1.001 + 4.0 * (K + 1) * FLT_EPSILON) * mag;
            differ += d > 64.0 * FLT_EPSILON * mag; /* fp32 order alone: ~sqrt(K) eps */
        }
    CHECK(bad == 0, "gemm_nn_bf16 vs gemm_nn: %d elements beyond the bf16 bound", bad);
    CHECK(differ > M * N * 9 / 10, "gemm_nn_bf16 vs gemm_nn: only %d of %d elements differ beyond fp32 rounding",
          differ, M * N);
    gb_free(&A); gb_free(&B); gb_free(&C); gb_free(&F);
}

static void test_gemm_bf16(const mml_kernels_t *k) {
    static const int shapes[][3] = {
        {1, 1, 1}, {3, 3, 3}, {3, 7, 17}, {17, 3, 7}, {7, 17, 255}, {255, 17, 3}, {17, 255, 7},
        {255, 255, 255}, {13, 300, 401}, {17, 17, 1023}, {25, 16, 24}, {1, 1023, 17}, {129, 33, 385},
        {5, 4, 0}, {32, 32, 32}, {16, 16, 16}, {33, 17, 31}, {48, 272, 513}, {64, 512, 256}};
    test_gemm_shapes(k, &GEMM_BF16, shapes, sizeof shapes / sizeof shapes[0]);
    test_gemm_bf16_rounding(k);
    test_gemm_bf16_vs_fp32(k);
}

static void test_packed(const mml_kernels_t *k, const gemm_prec *p) {
    static const int shapes[][3] = {{1, 1, 1},     {3, 7, 17},    {17, 3, 7},     {7, 17, 255}, {255, 17, 3},
                                    {17, 255, 7},  {13, 300, 400}, {102, 128, 256}, {1, 64, 128}, {2, 257, 24},
                                    {25, 16, 24},  {12, 33, 385}, {5, 4, 0},      {11, 48, 16}, {33, 272, 513},
                                    {64, 256, 288}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int e = 0; e < 4; e++) test_packed_one(k, p, shapes[s][0], shapes[s][1], shapes[s][2], e & 1, e >> 1);
}

/* gemm_pair: C1 (+)= op(A) B1 and C2 (+)= op(A) B2 must be, bit for bit,
 * what the ISA's two single calls give (which test_gemm_one checks against
 * the scalar reference), nothing written outside C1 and C2. Shapes cover one
 * and several k blocks, products wider than one column block (two calls on
 * the tiles) and K = 0. */
static void test_pair_one(const mml_kernels_t *k, int bf16, int a_trans, int M, int K, int N1, int N2, int acc) {
    const char *name = bf16 ? "gemm_pair_bf16" : "gemm_pair";
    int lda = (a_trans ? M : K) + 3, ldb1 = N1 + 5, ldb2 = N2 + 1, ldc1 = N1 + 2, ldc2 = N2 + 7;
    int64_t arows = a_trans ? K : M;
    gbuf A = gb_new(arows * lda > 0 ? arows * lda : 1), B1 = gb_new(K * (int64_t)ldb1 > 0 ? K * (int64_t)ldb1 : 1),
         B2 = gb_new(K * (int64_t)ldb2 > 0 ? K * (int64_t)ldb2 : 1);
    fill(A.p, A.n, -1, 1);
    fill(B1.p, B1.n, -1, 1);
    fill(B2.p, B2.n, -1, 1);
    gbuf C1 = gb_new((int64_t)M * ldc1), C2 = gb_new((int64_t)M * ldc2);
    for (int64_t i = 0; i < C1.n; i++) C1.p[i] = (i % ldc1) < N1 ? (float)(urand() * 2 - 1) : SENT;
    for (int64_t i = 0; i < C2.n; i++) C2.p[i] = (i % ldc2) < N2 ? (float)(urand() * 2 - 1) : SENT;
    gbuf R1 = gb_copy(&C1), R2 = gb_copy(&C2);
    (bf16 ? k->gemm_pair_bf16 : k->gemm_pair)(M, K, A.p, lda, a_trans, N1, B1.p, ldb1, C1.p, ldc1, N2, B2.p, ldb2,
                                             C2.p, ldc2, acc);
    gemm_fn f = gemm_op(k, bf16, a_trans ? 2 : 0);
    f(M, N1, K, A.p, lda, B1.p, ldb1, R1.p, ldc1, acc);
    f(M, N2, K, A.p, lda, B2.p, ldb2, R2.p, ldc2, acc);
    CHECK(memcmp(C1.p, R1.p, (size_t)C1.n * sizeof(float)) == 0 && memcmp(C2.p, R2.p, (size_t)C2.n * sizeof(float)) == 0,
          "%s a_trans=%d M=%d K=%d N1=%d N2=%d acc=%d: not the single calls' bits", name, a_trans, M, K, N1, N2, acc);
    CHECK(gb_guard_ok(&C1) && gb_guard_ok(&C2) && gb_guard_ok(&A) && gb_guard_ok(&B1) && gb_guard_ok(&B2),
          "%s M=%d K=%d N1=%d N2=%d: a guard zone was written", name, M, K, N1, N2);
    gb_free(&A); gb_free(&B1); gb_free(&B2); gb_free(&C1); gb_free(&C2); gb_free(&R1); gb_free(&R2);
}

static void test_pair(const mml_kernels_t *k) {
    /* small enough for qemu's emulation in tests/emulated_x86.sh */
    static const int shapes[][4] = {{1, 1, 1, 1},     {3, 17, 7, 5},     {17, 3, 255, 1}, {33, 40, 256, 160},
                                    {255, 17, 16, 33}, {40, 513, 48, 17}, {40, 33, 257, 16}, {5, 0, 4, 3},
                                    {31, 24, 256, 256}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int v = 0; v < 8; v++)
            test_pair_one(k, v & 1, (v >> 1) & 1, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], v >> 2);
}

static void test_gemm(const mml_kernels_t *k) {
    static const int shapes[][3] = {
        {1, 1, 1}, {3, 7, 17}, {17, 3, 7}, {7, 17, 255}, {255, 17, 3}, {17, 255, 7},
        {1023, 33, 17}, {13, 1023, 3}, {1023, 7, 1}, {255, 255, 255}, {17, 17, 1023},
        {3, 300, 400}, {25, 16, 24}, {31, 8, 16}, {7, 1, 1023}, {1, 1023, 17}, {5, 4, 0}};
    test_gemm_shapes(k, &GEMM_FP32, shapes, sizeof shapes / sizeof shapes[0]);
}

/* ---- elementwise ---------------------------------------------------------- */
static const int64_t LENS[] = {1, 3, 7, 17, 255, 1023, 4099};
#define NLENS (sizeof LENS / sizeof LENS[0])

static int bits_equal(const float *a, const float *b, int64_t n) {
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static void test_relu(const mml_kernels_t *k) {
    for (size_t l = 0; l < NLENS; l++) {
        int64_t n = LENS[l];
        gbuf x = gb_new(n), y = gb_new(n), r = gb_new(n), dy = gb_new(n), dx = gb_new(n), dr = gb_new(n);
        fill(x.p, n, -1, 1);
        fill(dy.p, n, -1, 1);
        k->relu_fwd(n, x.p, y.p);
        REF->relu_fwd(n, x.p, r.p);
        CHECK(bits_equal(y.p, r.p, n) && gb_guard_ok(&y), "relu_fwd n=%lld", (long long)n);
        k->relu_bwd(n, y.p, dy.p, dx.p);
        REF->relu_bwd(n, r.p, dy.p, dr.p);
        CHECK(bits_equal(dx.p, dr.p, n) && gb_guard_ok(&dx), "relu_bwd n=%lld", (long long)n);
        gbuf xa = gb_copy(&x);  /* in place */
        k->relu_fwd(n, xa.p, xa.p);
        CHECK(bits_equal(xa.p, r.p, n) && gb_guard_ok(&xa), "relu_fwd in place n=%lld", (long long)n);
        k->relu_bwd(n, r.p, dy.p, dy.p);
        CHECK(bits_equal(dy.p, dr.p, n) && gb_guard_ok(&dy), "relu_bwd in place n=%lld", (long long)n);
        gb_free(&x); gb_free(&y); gb_free(&r); gb_free(&dy); gb_free(&dx); gb_free(&dr); gb_free(&xa);
    }
}

/* ---- dropout ------------------------------------------------------------- */
/* The dropout of docs/KERNELS.md, written out: y = keep ? x / (1 - rate) : 0,
 * keep from a hash of (seed, offset + i). Every ISA's dropout_keep followed by
 * mask_scale must give these bits. */
static uint32_t ref_lowbias32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}
static int ref_keep(uint64_t seed, uint64_t idx, float rate) {
    uint32_t k1 = ref_lowbias32((uint32_t)seed ^ ref_lowbias32((uint32_t)(seed >> 32) + 0x9e3779b9U));
    uint32_t k2 = ref_lowbias32(k1 + 0x632be5abU);
    uint32_t key1 = ref_lowbias32(k1 ^ ((uint32_t)(idx >> 32) * 0x85ebca6bU));
    uint32_t h = ref_lowbias32(ref_lowbias32((uint32_t)idx ^ key1) ^ k2);
    double t = (double)rate * 16777216.0 + 0.5;
    uint32_t thr = t >= 16777216.0 ? 16777216U : (uint32_t)t;
    return (h >> 8) >= thr;
}
static void ref_dropout(int64_t n, const float *x, float *y, float rate, uint64_t seed, uint64_t offset) {
    float scale = 1.0f / (1.0f - rate);
    for (int64_t i = 0; i < n; i++) y[i] = ref_keep(seed, offset + (uint64_t)i, rate) ? x[i] * scale : 0.0f;
}

/* keep[] from dropout_keep, with a guard byte after it; 0 if the guard or a
 * value other than 0/1 shows up. */
static int keep_bytes(const mml_kernels_t *k, int64_t n, float rate, uint64_t seed, uint64_t offset, uint8_t *kp) {
    memset(kp, 0xAB, (size_t)n + 1);
    k->dropout_keep(n, rate, seed, offset, kp);
    int ok = kp[n] == 0xAB;
    for (int64_t i = 0; i < n; i++) ok &= kp[i] <= 1;
    return ok;
}

static void test_dropout(const mml_kernels_t *k) {
    /* the last offsets put the index across 2^32 (the key of the high half changes) */
    static const uint64_t offsets[] = {0, 5, 4294967296ULL - 9, 4294967296ULL - 1, 0x123456789ULL};
    static const float rates[] = {0.1f, 0.5f, 0.9f};
    for (size_t l = 0; l < NLENS; l++)
        for (size_t o = 0; o < sizeof offsets / sizeof offsets[0]; o++)
            for (size_t q = 0; q < sizeof rates / sizeof rates[0]; q++) {
                int64_t n = LENS[l];
                uint64_t seed = 0xC0FFEEULL + l * 977 + o;
                uint8_t *kp = (uint8_t *)malloc((size_t)n + 1);
                if (!kp) abort();
                int kok = keep_bytes(k, n, rates[q], seed, offsets[o], kp);
                for (int64_t i = 0; i < n; i++) kok &= kp[i] == ref_keep(seed, offsets[o] + (uint64_t)i, rates[q]);
                CHECK(kok, "dropout_keep n=%lld off=%llu rate=%g", (long long)n, (unsigned long long)offsets[o], rates[q]);
                /* applied by mask_scale, also in place: the reference's bits */
                gbuf x = gb_new(n), r = gb_new(n), z = gb_new(n);
                fill(x.p, n, -1, 1);
                gbuf zi = gb_copy(&x);
                ref_dropout(n, x.p, r.p, rates[q], seed, offsets[o]);
                float sc = 1.0f / (1.0f - rates[q]);
                k->mask_scale(n, kp, x.p, z.p, sc);
                k->mask_scale(n, kp, zi.p, zi.p, sc);
                CHECK(bits_equal(z.p, r.p, n) && bits_equal(zi.p, r.p, n) && gb_guard_ok(&z) && gb_guard_ok(&zi),
                      "mask_scale(dropout_keep) differs from dropout n=%lld rate=%g", (long long)n, rates[q]);
                free(kp);
                gb_free(&x); gb_free(&r); gb_free(&z); gb_free(&zi);
            }
    /* rate <= 0 keeps everything, rate >= 1 nothing */
    uint8_t kb[300];
    int all = keep_bytes(k, 299, 0.0f, 1, 0, kb);
    for (int i = 0; i < 299; i++) all &= kb[i] == 1;
    int none = keep_bytes(k, 299, 1.0f, 1, 0, kb);
    for (int i = 0; i < 299; i++) none &= kb[i] == 0;
    CHECK(all && none, "dropout_keep at rate 0 / 1");
    /* offset semantics: a call at offset 100 equals the tail of a call at 0, across 2^32 */
    int64_t n = 1000;
    uint8_t *a = (uint8_t *)malloc((size_t)n + 1), *b = (uint8_t *)malloc((size_t)n + 1);
    if (!a || !b) abort();
    keep_bytes(k, n, 0.5f, 42, 4294967296ULL - 500, a);
    keep_bytes(k, n - 100, 0.5f, 42, 4294967296ULL - 400, b);
    CHECK(memcmp(a + 100, b, (size_t)(n - 100)) == 0, "dropout offset is a pure index shift");
    free(a); free(b);
    /* keep rate, scale, and two seeds agreeing no more than chance */
    int64_t big = 200000, kept = 0, same = 0;
    uint8_t *k1 = (uint8_t *)malloc((size_t)big + 1), *k2 = (uint8_t *)malloc((size_t)big + 1);
    if (!k1 || !k2) abort();
    keep_bytes(k, big, 0.3f, 7, 0, k1);
    keep_bytes(k, big, 0.3f, 8, 0, k2);
    for (int64_t i = 0; i < big; i++) {
        kept += k1[i];
        same += k1[i] == k2[i];
    }
    CHECK(fabs((double)kept / big - 0.7) < 0.005, "dropout keep fraction %.4f", (double)kept / big);
    CHECK(fabs((double)same / big - (0.7 * 0.7 + 0.3 * 0.3)) < 0.005,
          "dropout masks of two seeds look correlated (%.4f agree)", (double)same / big);
    gbuf ones = gb_new(big), d1 = gb_new(big);
    for (int64_t i = 0; i < big; i++) ones.p[i] = 1.0f;
    k->mask_scale(big, k1, ones.p, d1.p, 1.0f / 0.7f);
    int scale_ok = 1;
    for (int64_t i = 0; i < big; i++) scale_ok &= k1[i] ? d1.p[i] == 1.0f / 0.7f : d1.p[i] == 0.0f;
    CHECK(scale_ok, "dropout kept values must be x/(1-rate)");
    free(k1); free(k2);
    gb_free(&ones); gb_free(&d1);
}

/* bias_dropout_relu and dropout_relu_bwd: the bits of the kernels they fuse,
 * called in turn on this ISA, and of the scalar table's fused kernels; rows
 * that cross 2^32 in the dropout index; keep and colsum left out. */
static void test_fused_dropout(const mml_kernels_t *k) {
    static const int MS[] = {1, 3, 17}, NS[] = {1, 3, 7, 16, 17, 33, 64, 255};
    static const uint64_t offsets[] = {0, 5, 4294967296ULL - 9, 4294967296ULL - 40, 0x123456789ULL};
    static const float rates[] = {0.0f, 0.5f, 0.9f};
    for (size_t a = 0; a < sizeof MS / sizeof MS[0]; a++)
        for (size_t b = 0; b < sizeof NS / sizeof NS[0]; b++) {
            const int M = MS[a], N = NS[b];
            const int64_t n = (int64_t)M * N;
            gbuf C = gb_new(n), bias = gb_new(N);
            fill(C.p, n, -1, 1);
            fill(bias.p, N, -0.5, 0.5);
            uint8_t *kr = (uint8_t *)malloc((size_t)n + 1), *kf = (uint8_t *)malloc((size_t)n + 1),
                    *ks = (uint8_t *)malloc((size_t)n + 1);
            if (!kr || !kf || !ks) abort();
            for (size_t o = 0; o < sizeof offsets / sizeof offsets[0]; o++)
                for (size_t q = 0; q < sizeof rates / sizeof rates[0]; q++)
                    for (int relu = 0; relu < 2; relu++)
                        for (int with_keep = 0; with_keep < 2; with_keep++) {
                            const float rate = rates[q];
                            const uint64_t seed = 0xD00DULL + a * 31 + b * 7 + o;
                            gbuf r = gb_copy(&C), f = gb_copy(&C), sref = gb_copy(&C);
                            k->add_bias(M, N, bias.p, r.p, N);
                            if (rate > 0.0f) {
                                k->dropout_keep(n, rate, seed, offsets[o], kr);
                                k->mask_scale(n, kr, r.p, r.p, 1.0f / (1.0f - rate));
                            }
                            if (relu) k->relu_fwd(n, r.p, r.p);
                            memset(kf, 0xAB, (size_t)n + 1);
                            memset(ks, 0xAB, (size_t)n + 1);
                            k->bias_dropout_relu(M, N, bias.p, f.p, rate, seed, offsets[o], with_keep ? kf : NULL, relu);
                            REF->bias_dropout_relu(M, N, bias.p, sref.p, rate, seed, offsets[o], with_keep ? ks : NULL, relu);
                            int ok = bits_equal(f.p, r.p, n) && bits_equal(sref.p, r.p, n) && gb_guard_ok(&f) &&
                                     kf[n] == 0xAB && ks[n] == 0xAB;
                            if (with_keep && rate > 0.0f) ok &= !memcmp(kf, kr, (size_t)n) && !memcmp(ks, kr, (size_t)n);
                            else
                                for (int64_t i = 0; i < n; i++) ok &= kf[i] == 0xAB && ks[i] == 0xAB;
                            CHECK(ok, "bias_dropout_relu M=%d N=%d off=%llu rate=%g relu=%d keep=%d", M, N,
                                  (unsigned long long)offsets[o], rate, relu, with_keep);
                            gb_free(&r); gb_free(&f); gb_free(&sref);
                        }
            /* backward: y (about half positive), a random mask, scale 1 or 1/(1-0.3) */
            gbuf y = gb_new(n), dz = gb_new(n), cs = gb_new(N);
            fill(y.p, n, -1, 1);
            fill(dz.p, n, -2, 2);
            fill(cs.p, N, -1, 1);
            for (int64_t i = 0; i < n; i++) kr[i] = urand() < 0.6;
            for (int use = 0; use < 8; use++)
                for (int sc_i = 0; sc_i < 2; sc_i++) {
                    const int use_y = use & 1, use_keep = use & 2, use_cs = use & 4;
                    const float sc = sc_i ? 1.0f / (1.0f - 0.3f) : 1.0f;
                    gbuf r = gb_copy(&dz), f = gb_copy(&dz), sref = gb_copy(&dz);
                    gbuf cr = gb_copy(&cs), cf = gb_copy(&cs), csr = gb_copy(&cs);
                    if (use_y) k->relu_bwd(n, y.p, r.p, r.p);
                    if (use_keep) k->mask_scale(n, kr, r.p, r.p, sc);
                    else
                        for (int64_t i = 0; i < n; i++) r.p[i] *= sc;
                    if (use_cs) k->colsum_add(M, N, r.p, N, cr.p);
                    k->dropout_relu_bwd(M, N, use_y ? y.p : NULL, use_keep ? kr : NULL, sc, f.p, use_cs ? cf.p : NULL);
                    REF->dropout_relu_bwd(M, N, use_y ? y.p : NULL, use_keep ? kr : NULL, sc, sref.p,
                                          use_cs ? csr.p : NULL);
                    int ok = bits_equal(f.p, r.p, n) && bits_equal(sref.p, r.p, n) && bits_equal(cf.p, cr.p, N) &&
                             bits_equal(csr.p, cr.p, N) && gb_guard_ok(&f) && gb_guard_ok(&cf);
                    CHECK(ok, "dropout_relu_bwd M=%d N=%d y=%d keep=%d colsum=%d scale=%g", M, N, use_y, !!use_keep,
                          !!use_cs, sc);
                    gb_free(&r); gb_free(&f); gb_free(&sref); gb_free(&cr); gb_free(&cf); gb_free(&csr);
                }
            free(kr); free(kf); free(ks);
            gb_free(&C); gb_free(&bias); gb_free(&y); gb_free(&dz); gb_free(&cs);
        }
}

static void track_ulp(int which, const float *a, const float *b, int64_t n, double *worst_out) {
    double w = 0;
    for (int64_t i = 0; i < n; i++) {
        double u = ulp_diff(a[i], b[i]);
        if (u > w) w = u;
    }
    if (w > max_ulp[which]) max_ulp[which] = w;
    *worst_out = w;
}

static void test_transcendental(const mml_kernels_t *k) {
    /* softmax: rows of E in 1..256 with lde > E */
    static const int Es[] = {1, 2, 3, 7, 17, 64, 255, 256};
    for (size_t e = 0; e < sizeof Es / sizeof Es[0]; e++) {
        int E = Es[e], M = 37, ld = E + 3;
        gbuf x = gb_new((int64_t)M * ld), y = gb_new((int64_t)M * ld), r = gb_new((int64_t)M * ld);
        fill(x.p, x.n, -40, 40);
        for (int64_t i = 0; i < y.n; i++) y.p[i] = r.p[i] = SENT;
        k->softmax_rows(M, E, x.p, ld, y.p, ld);
        REF->softmax_rows(M, E, x.p, ld, r.p, ld);
        int ok = gb_guard_ok(&y);
        double worst = 0, w;
        for (int i = 0; i < M; i++) {
            /* values below 2^-100 are flushed by exp's relative error budget; compare absolutely */
            for (int j = 0; j < ld; j++) {
                float a = y.p[(int64_t)i * ld + j], b = r.p[(int64_t)i * ld + j];
                if (j >= E) { ok &= a == SENT; continue; }
                if (fabsf(b) < 1e-30f) { ok &= fabsf(a - b) < 1e-36f; continue; }
                track_ulp(U_SOFTMAX, &a, &b, 1, &w);
                if (w > worst) worst = w;
            }
        }
        /* 2 ulp per exp + the normalizer sum, whose rounding grows with E */
        CHECK(ok && worst <= 4 + E / 4, "softmax_rows E=%d: %.0f ulp, guards %d", E, worst, ok);
        gb_free(&x); gb_free(&y); gb_free(&r);
    }
    for (size_t l = 0; l < NLENS; l++) {
        int64_t n = LENS[l];
        gbuf x = gb_new(n), y = gb_new(n), r = gb_new(n), lab = gb_new(n), dz = gb_new(n), dr = gb_new(n);
        double w;
        fill(x.p, n, -30, 30);
        for (int64_t i = 0; i < n; i++) lab.p[i] = urand() < 0.3 ? 1.0f : 0.0f;
        k->sigmoid(n, x.p, y.p);
        REF->sigmoid(n, x.p, r.p);
        track_ulp(U_SIGMOID, y.p, r.p, n, &w);
        CHECK(w <= 4 && gb_guard_ok(&y), "sigmoid n=%lld: %.0f ulp", (long long)n, w);

        double s = k->bce_logits(n, x.p, lab.p, 0.25f, dz.p);
        double sr = REF->bce_logits(n, x.p, lab.p, 0.25f, dr.p);
        double rel = fabs(s - sr) / fmax(fabs(sr), 1e-30);
        if (rel > max_ulp[U_BCE_SUM]) max_ulp[U_BCE_SUM] = rel;
        CHECK(rel < 4e-6, "bce_logits n=%lld: sum %.9g vs %.9g", (long long)n, s, sr);
        /* dz = scale*(sigmoid - y): cancellation near sigmoid ~ y, so absolute */
        int dz_ok = gb_guard_ok(&dz);
        for (int64_t i = 0; i < n; i++) dz_ok &= fabsf(dz.p[i] - dr.p[i]) <= 2e-7f;
        track_ulp(U_BCE_DZ, dz.p, dr.p, n, &w);
        CHECK(dz_ok, "bce_logits dz n=%lld", (long long)n);
        CHECK(fabs(k->bce_logits(n, x.p, lab.p, 1.0f, NULL) - s) <= 1e-9 * fabs(s) + 1e-12,
              "bce_logits without dz gives the same loss");

        gb_free(&x); gb_free(&y); gb_free(&r); gb_free(&lab); gb_free(&dz); gb_free(&dr);
    }
}

/* Adam: compilers may contract b*m + c*g into an FMA (GNU C modes do), which
 * changes m and v by a few ulp of their terms; p may then move by a small
 * fraction of the step lr. */
static int adam_close(float p, float pr, float m, float mr, float v, float vr, float lr) {
    return mmlt_close(p, pr, 4 * FLT_EPSILON, 1e-4 * lr) && mmlt_close(m, mr, 1e-5, 1e-6) &&
           mmlt_close(v, vr, 1e-5, 1e-9);
}

static void test_rows(const mml_kernels_t *k) {
    static const int dims[] = {1, 3, 7, 8, 16, 17, 33, 128};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        int dim = dims[d], rows = 50, n = 255, ldo = dim + 3;
        gbuf table = gb_new((int64_t)rows * dim);
        fill(table.p, table.n, -1, 1);
        int32_t ids[255];
        for (int i = 0; i < n; i++) ids[i] = (int32_t)(urand() * rows); /* many repeats */
        gbuf out = gb_new((int64_t)n * ldo), ref = gb_new((int64_t)n * ldo);
        k->gather_rows(n, ids, table.p, dim, out.p, ldo);
        REF->gather_rows(n, ids, table.p, dim, ref.p, ldo);
        CHECK(bits_equal(out.p, ref.p, out.n) && gb_guard_ok(&out), "gather_rows dim=%d", dim);

        gbuf g = gb_new((int64_t)n * ldo), tg = gb_new((int64_t)rows * dim);
        fill(g.p, g.n, -1, 1);
        fill(tg.p, tg.n, -1, 1);
        gbuf tr = gb_copy(&tg);
        k->scatter_add_rows(n, ids, g.p, ldo, dim, tg.p);
        REF->scatter_add_rows(n, ids, g.p, ldo, dim, tr.p);
        CHECK(bits_equal(tg.p, tr.p, tg.n) && gb_guard_ok(&tg), "scatter_add_rows dim=%d", dim);

        /* lazy Adam on unique rows */
        int32_t uniq[20];
        for (int i = 0; i < 20; i++) uniq[i] = (int32_t)((i * 7 + 3) % rows);
        gbuf p = gb_copy(&table), m = gb_new(table.n), v = gb_new(table.n);
        fill(m.p, m.n, -0.1, 0.1);
        fill(v.p, v.n, 0, 0.01);
        gbuf p2 = gb_copy(&p), m2 = gb_copy(&m), v2 = gb_copy(&v);
        mml_adam_hp hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 1 - 0.9f * 0.9f, 1 - 0.999f * 0.999f, 0.01f};
        k->adam_rows(20, uniq, dim, p.p, tr.p, m.p, v.p, &hp);
        REF->adam_rows(20, uniq, dim, p2.p, tr.p, m2.p, v2.p, &hp);
        int ok = gb_guard_ok(&p) && gb_guard_ok(&m) && gb_guard_ok(&v);
        for (int64_t i = 0; i < p.n; i++) {
            ok &= adam_close(p.p[i], p2.p[i], m.p[i], m2.p[i], v.p[i], v2.p[i], hp.lr);
        }
        CHECK(ok, "adam_rows dim=%d", dim);
        gb_free(&table); gb_free(&out); gb_free(&ref); gb_free(&g); gb_free(&tg); gb_free(&tr);
        gb_free(&p); gb_free(&m); gb_free(&v); gb_free(&p2); gb_free(&m2); gb_free(&v2);
    }
}

static void test_blocks(const mml_kernels_t *k) {
    static const int cfg[][3] = {{1, 1, 1}, {17, 3, 4}, {255, 2, 16}, {7, 21, 8}, {33, 4, 17}, {3, 1, 64}};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        int M = cfg[c][0], E = cfg[c][1], r = cfg[c][2];
        int ldt = E * r + 3, ldw = E + 2, ldu = E * r + 1;
        gbuf T = gb_new((int64_t)M * ldt), w = gb_new((int64_t)M * ldw);
        fill(T.p, T.n, -1, 1);
        fill(w.p, w.n, 0, 1);
        gbuf U = gb_new((int64_t)M * ldu), R = gb_new((int64_t)M * ldu);
        for (int64_t i = 0; i < U.n; i++) U.p[i] = R.p[i] = SENT;
        k->block_scale(M, E, r, T.p, ldt, w.p, ldw, U.p, ldu);
        REF->block_scale(M, E, r, T.p, ldt, w.p, ldw, R.p, ldu);
        CHECK(bits_equal(U.p, R.p, U.n) && gb_guard_ok(&U), "block_scale M=%d E=%d r=%d", M, E, r);
        for (int acc = 0; acc < 2; acc++) {
            gbuf dw = gb_new((int64_t)M * ldw), dr;
            fill(dw.p, dw.n, -1, 1);
            dr = gb_copy(&dw);
            gbuf d0 = gb_copy(&dw);
            k->block_dot(M, E, r, U.p, ldu, T.p, ldt, dw.p, ldw, acc);
            REF->block_dot(M, E, r, U.p, ldu, T.p, ldt, dr.p, ldw, acc);
            int ok = gb_guard_ok(&dw);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < ldw; j++) {
                    int64_t o = (int64_t)i * ldw + j;
                    if (j >= E) { ok &= dw.p[o] == d0.p[o]; continue; }
                    double mag = acc ? fabs(d0.p[o]) : 0;
                    for (int q = 0; q < r; q++)
                        mag += fabs((double)U.p[o / ldw * ldu + (int64_t)j * r + q] *
                                    T.p[o / ldw * ldt + (int64_t)j * r + q]);
                    ok &= fabs(dw.p[o] - dr.p[o]) <= 2.0 * (r + 1) * FLT_EPSILON * mag + 1e-30;
                }
            CHECK(ok, "block_dot M=%d E=%d r=%d acc=%d", M, E, r, acc);
            gb_free(&dw); gb_free(&dr); gb_free(&d0);
        }
        gb_free(&T); gb_free(&w); gb_free(&U); gb_free(&R);
    }
}

static void test_vec(const mml_kernels_t *k) {
    for (size_t l = 0; l < NLENS; l++) {
        int64_t n = LENS[l];
        gbuf x = gb_new(n), y = gb_new(n);
        fill(x.p, n, -1, 1);
        fill(y.p, n, -1, 1);
        gbuf y1 = gb_copy(&y), y2 = gb_copy(&y);
        k->axpy(n, 0.37f, x.p, y1.p);
        REF->axpy(n, 0.37f, x.p, y2.p);
        int ok = gb_guard_ok(&y1);
        for (int64_t i = 0; i < n; i++)
            ok &= fabs(y1.p[i] - y2.p[i]) <= 2 * FLT_EPSILON * (fabs(y.p[i]) + fabs(0.37 * x.p[i]));
        CHECK(ok, "axpy n=%lld", (long long)n);

        double mag = 0;
        for (int64_t i = 0; i < n; i++) mag += fabs((double)x.p[i] * y.p[i]);
        float d1 = k->dot(n, x.p, y.p), d2 = REF->dot(n, x.p, y.p);
        CHECK(fabs(d1 - d2) <= 2.0 * n * FLT_EPSILON * mag + 1e-30, "dot n=%lld: %g vs %g",
              (long long)n, d1, d2);

        gbuf z1 = gb_new(n), z2 = gb_new(n);
        k->mul(n, x.p, y.p, z1.p);
        REF->mul(n, x.p, y.p, z2.p);
        CHECK(bits_equal(z1.p, z2.p, n) && gb_guard_ok(&z1), "mul n=%lld", (long long)n);
        gbuf xa = gb_copy(&x);
        k->mul(n, xa.p, y.p, xa.p);
        CHECK(bits_equal(xa.p, z2.p, n), "mul in place n=%lld", (long long)n);

        /* Adam dense, a few steps */
        gbuf p1 = gb_copy(&x), m1 = gb_new(n), v1 = gb_new(n);
        for (int64_t i = 0; i < n; i++) m1.p[i] = v1.p[i] = 0.0f;
        gbuf p2 = gb_copy(&p1), m2 = gb_copy(&m1), v2 = gb_copy(&v1);
        double worst = 0;
        for (int t = 1; t <= 3; t++) {
            mml_adam_hp hp = {1e-2f, 0.9f, 0.999f, 1e-8f, 1 - powf(0.9f, (float)t),
                              1 - powf(0.999f, (float)t), t == 2 ? 0.1f : 0.0f};
            k->adam_dense(n, p1.p, y.p, m1.p, v1.p, &hp);
            REF->adam_dense(n, p2.p, y.p, m2.p, v2.p, &hp);
        }
        ok = gb_guard_ok(&p1) && gb_guard_ok(&m1) && gb_guard_ok(&v1);
        for (int64_t i = 0; i < n; i++) {
            double rel = fabs(p1.p[i] - p2.p[i]) / 1e-2; /* in units of lr */
            if (rel > worst) worst = rel;
            ok &= adam_close(p1.p[i], p2.p[i], m1.p[i], m2.p[i], v1.p[i], v2.p[i], 1e-2f);
        }
        if (worst > max_ulp[U_ADAM]) max_ulp[U_ADAM] = worst;
        CHECK(ok, "adam_dense n=%lld (worst rel %.2g)", (long long)n, worst);

        /* adam_steps: several zero-gradient steps, bit for bit what as many
         * adam_dense calls on zeros give (the deferred replays rely on it),
         * and close to the scalar reference */
        {
            mml_adam_hp hs[5];
            for (int t = 0; t < 5; t++) {
                hs[t] = (mml_adam_hp){1e-2f, 0.9f, 0.999f, 1e-8f, 1 - powf(0.9f, (float)(t + 4)),
                                      1 - powf(0.999f, (float)(t + 4)), t == 3 ? 0.05f : 0.0f};
            }
            gbuf z = gb_new(n), p3 = gb_copy(&p1), m3 = gb_copy(&m1), v3 = gb_copy(&v1);
            gbuf p4 = gb_copy(&p1), m4 = gb_copy(&m1), v4 = gb_copy(&v1);
            for (int64_t i = 0; i < n; i++) z.p[i] = 0.0f;
            k->adam_steps(n, p3.p, m3.p, v3.p, hs, 5, NULL);
            for (int t = 0; t < 5; t++) {
                k->adam_dense(n, p1.p, z.p, m1.p, v1.p, &hs[t]);
                REF->adam_dense(n, p4.p, z.p, m4.p, v4.p, &hs[t]);
            }
            CHECK(bits_equal(p3.p, p1.p, n) && bits_equal(m3.p, m1.p, n) && bits_equal(v3.p, v1.p, n),
                  "adam_steps n=%lld differs from adam_dense on zeros", (long long)n);
            CHECK(gb_guard_ok(&p3) && gb_guard_ok(&m3) && gb_guard_ok(&v3), "adam_steps n=%lld: guards", (long long)n);
            int close = 1;
            for (int64_t i = 0; i < n; i++) close &= adam_close(p3.p[i], p4.p[i], m3.p[i], m4.p[i], v3.p[i], v4.p[i], 1e-2f);
            CHECK(close, "adam_steps n=%lld against the scalar reference", (long long)n);
            /* per-element first steps (rows of 3 joining at steps 0..4, some never) */
            int32_t *first = (int32_t *)malloc((size_t)n * sizeof(int32_t));
            if (!first) abort();
            for (int64_t i = 0; i < n; i++) first[i] = (int32_t)((i / 3) % 7) - 1; /* -1..5 */
            gbuf p5 = gb_copy(&p4), m5 = gb_copy(&m4), v5 = gb_copy(&v4);
            gbuf p6 = gb_copy(&p4), m6 = gb_copy(&m4), v6 = gb_copy(&v4);
            k->adam_steps(n, p5.p, m5.p, v5.p, hs, 5, first);
            for (int64_t i = 0; i < n; i++)
                for (int t = first[i] < 0 ? 0 : first[i]; t < 5; t++)
                    k->adam_dense(1, p6.p + i, z.p, m6.p + i, v6.p + i, &hs[t]);
            CHECK(bits_equal(p5.p, p6.p, n) && bits_equal(m5.p, m6.p, n) && bits_equal(v5.p, v6.p, n),
                  "adam_steps n=%lld with first steps differs from adam_dense per element", (long long)n);
            CHECK(gb_guard_ok(&p5) && gb_guard_ok(&m5) && gb_guard_ok(&v5), "adam_steps first n=%lld: guards", (long long)n);
            free(first);
            gb_free(&p5); gb_free(&m5); gb_free(&v5); gb_free(&p6); gb_free(&m6); gb_free(&v6);
            gb_free(&z); gb_free(&p3); gb_free(&m3); gb_free(&v3); gb_free(&p4); gb_free(&m4); gb_free(&v4);
        }

        /* add_bias / colsum_add on [M, N] with ld > N */
        int M = 13, N = (int)(n > 300 ? 300 : n), ld = N + 4;
        gbuf C = gb_new((int64_t)M * ld), bias = gb_new(N);
        fill(C.p, C.n, -1, 1);
        fill(bias.p, N, -1, 1);
        gbuf C2 = gb_copy(&C);
        k->add_bias(M, N, bias.p, C.p, ld);
        REF->add_bias(M, N, bias.p, C2.p, ld);
        CHECK(bits_equal(C.p, C2.p, C.n) && gb_guard_ok(&C), "add_bias N=%d", N);
        gbuf o1 = gb_new(N);
        fill(o1.p, N, -1, 1);
        gbuf o2 = gb_copy(&o1);
        k->colsum_add(M, N, C.p, ld, o1.p);
        REF->colsum_add(M, N, C.p, ld, o2.p);
        ok = gb_guard_ok(&o1);
        for (int j = 0; j < N; j++) {
            double mg = fabs(o2.p[j]);
            for (int i = 0; i < M; i++) mg += fabs(C.p[(int64_t)i * ld + j]);
            ok &= fabs(o1.p[j] - o2.p[j]) <= 2.0 * (M + 1) * FLT_EPSILON * mg;
        }
        CHECK(ok, "colsum_add N=%d", N);
        gb_free(&x); gb_free(&y); gb_free(&y1); gb_free(&y2);
        gb_free(&z1); gb_free(&z2); gb_free(&xa); gb_free(&p1); gb_free(&m1); gb_free(&v1);
        gb_free(&p2); gb_free(&m2); gb_free(&v2); gb_free(&C); gb_free(&bias); gb_free(&C2);
        gb_free(&o1); gb_free(&o2);
    }
}

/* MOEMLORA_BF16: unknown values fail, native fails unless the ISA's bf16
 * GEMMs run the CPU's dot products, amx unless they run its AMX tiles (never
 * on the scalar reference). */
static void test_dispatch_bf16(void) {
    const char *saved_bf16 = getenv("MOEMLORA_BF16"), *saved_isa = getenv("MOEMLORA_ISA");
    char keep_bf16[64] = "", keep_isa[64] = "", err[256];
    if (saved_bf16) snprintf(keep_bf16, sizeof keep_bf16, "%s", saved_bf16);
    if (saved_isa) snprintf(keep_isa, sizeof keep_isa, "%s", saved_isa);
    mml_isa isa;
    unsetenv("MOEMLORA_ISA");
    setenv("MOEMLORA_BF16", "fast", 1);
    CHECK(mml_simd_resolve(&isa, err, sizeof err) == -1 && strstr(err, "MOEMLORA_BF16=fast") != NULL,
          "unknown MOEMLORA_BF16 must fail with a message (got '%s')", err);
    setenv("MOEMLORA_BF16", "emulate", 1);
    CHECK(mml_simd_resolve(&isa, err, sizeof err) == 0, "MOEMLORA_BF16=emulate: %s", err);
    setenv("MOEMLORA_BF16", "native", 1);
    setenv("MOEMLORA_ISA", "scalar", 1);
    CHECK(mml_simd_resolve(&isa, err, sizeof err) == -1 && strstr(err, "bf16") != NULL,
          "MOEMLORA_BF16=native on the scalar reference must fail (got '%s')", err);
    setenv("MOEMLORA_BF16", "amx", 1);
    CHECK(mml_simd_resolve(&isa, err, sizeof err) == -1 && strstr(err, "AMX") != NULL,
          "MOEMLORA_BF16=amx on the scalar reference must fail (got '%s')", err);
    for (int i = 1; i < MML_ISA_COUNT; i++) {
        if (!mml_simd_isa_supported((mml_isa)i)) continue;
        setenv("MOEMLORA_ISA", mml_isa_name((mml_isa)i), 1);
        const char *path = mml__bf16_path((mml_isa)i);
        const int native = strcmp(path, "emulated") != 0, amx = strcmp(path, "amx") == 0;
        setenv("MOEMLORA_BF16", "native", 1);
        CHECK((mml_simd_resolve(&isa, err, sizeof err) == 0) == native,
              "MOEMLORA_BF16=native on %s (bf16 path %s): resolve %s", mml_isa_name((mml_isa)i), path,
              native ? "failed" : "succeeded");
        setenv("MOEMLORA_BF16", "amx", 1);
        CHECK((mml_simd_resolve(&isa, err, sizeof err) == 0) == amx,
              "MOEMLORA_BF16=amx on %s (bf16 path %s): resolve %s", mml_isa_name((mml_isa)i), path,
              amx ? "failed" : "succeeded");
    }
    if (saved_bf16) setenv("MOEMLORA_BF16", keep_bf16, 1);
    else unsetenv("MOEMLORA_BF16");
    if (saved_isa) setenv("MOEMLORA_ISA", keep_isa, 1);
    else unsetenv("MOEMLORA_ISA");
}

static void test_dispatch(void) {
    mmlt_ctx = "dispatch";
    mml_isa isa;
    char err[256];
    CHECK(mml_isa_from_name("avx512", &isa) == 0 && isa == MML_ISA_AVX512, "from_name avx512");
    CHECK(mml_isa_from_name("scalar", &isa) == 0 && isa == MML_ISA_SCALAR, "from_name scalar");
    CHECK(mml_isa_from_name("neon", &isa) == 0 && isa == MML_ISA_NEON, "from_name neon");
    CHECK(mml_isa_from_name("AVX9", &isa) == -1, "from_name unknown");
    CHECK(mml_isa_from_name(NULL, &isa) == -1, "from_name NULL");
    CHECK(strcmp(mml_isa_name(MML_ISA_AVX2), "avx2") == 0, "isa_name");
    CHECK(mml_simd_isa_supported(MML_ISA_SCALAR), "scalar always supported");
    CHECK(mml_simd_kernels(MML_ISA_SCALAR) != NULL, "scalar table");
    CHECK(mml_simd_isa_supported(mml_simd_best()), "best is supported");
    CHECK(!mml_simd_isa_supported(MML_ISA_COUNT) && mml_simd_kernels(MML_ISA_COUNT) == NULL, "bad isa");

    const char *saved = getenv("MOEMLORA_ISA"), *saved_bf16 = getenv("MOEMLORA_BF16");
    char keep[64] = "", keep_bf16[64] = "";
    if (saved) snprintf(keep, sizeof keep, "%s", saved);
    if (saved_bf16) snprintf(keep_bf16, sizeof keep_bf16, "%s", saved_bf16);
    unsetenv("MOEMLORA_BF16"); /* native would fail the tables without bf16 dot products */
    setenv("MOEMLORA_ISA", "bogus", 1);
    CHECK(mml_simd_resolve(&isa, err, sizeof err) == -1 && strstr(err, "bogus") != NULL,
          "unknown name must fail with a message (got '%s')", err);
    CHECK(strcmp(mml_simd_isa_name(), "?") == 0, "isa_name on error");
    for (int i = 0; i < MML_ISA_COUNT; i++) {
        setenv("MOEMLORA_ISA", mml_isa_name((mml_isa)i), 1);
        int rc = mml_simd_resolve(&isa, err, sizeof err);
        if (mml_simd_isa_supported((mml_isa)i)) {
            CHECK(rc == 0 && isa == (mml_isa)i, "forcing %s", mml_isa_name((mml_isa)i));
            CHECK(strcmp(mml_simd_isa_name(), mml_isa_name((mml_isa)i)) == 0, "isa_name %d", i);
        } else {
            CHECK(rc == -1 && strstr(err, "does not support") != NULL,
                  "forcing unsupported %s must fail (got '%s')", mml_isa_name((mml_isa)i), err);
            CHECK(mml_simd_kernels((mml_isa)i) == NULL, "no table for unsupported");
        }
    }
    unsetenv("MOEMLORA_ISA");
    CHECK(mml_simd_resolve(&isa, err, sizeof err) == 0 && isa == mml_simd_best(), "unset -> best");
    if (saved) setenv("MOEMLORA_ISA", keep, 1);
    if (saved_bf16) setenv("MOEMLORA_BF16", keep_bf16, 1);
    test_dispatch_bf16();
}

/* ---- CRC32C --------------------------------------------------------------- */
/* Bit at a time from the definition: reflected 0x82F63B78, ~0 in and out. */
static uint32_t ref_crc32c(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);
static uint32_t crc_bits(uint32_t crc, const void *p, size_t n) {
    return ~mml__crc32c_bits(~crc, (const unsigned char *)p, n);
}

/* Every path (the public function, slice-by-8, the table-less fallback, the
 * CPU's instructions where it has them) against the definition: known
 * values, every length 0..4096 at every start modulo 16, chaining. */
static void test_crc(void) {
    mmlt_ctx = "crc32c";
    crc_fn fn[4] = {mml_crc32c, mml__crc32c_sw, crc_bits, NULL};
    const char *names[4] = {"mml_crc32c", "slice-by-8", "bitwise", "instructions"};
    int nf = 3;
#ifdef MML__CRC32C_HW
    if (mml__crc32c_have_hw()) fn[nf++] = mml__crc32c_hw;
#endif
    unsigned char z[32], o[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) z[i] = 0, o[i] = 0xFF, inc[i] = (unsigned char)i, dec[i] = (unsigned char)(31 - i);
    static unsigned char buf[4096 + 16];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(urand() * 256);
    for (int f = 0; f < nf; f++) {
        /* RFC 3720 B.4 and the usual check value */
        CHECK(fn[f](0, "123456789", 9) == 0xE3069283u, "%s: check value", names[f]);
        CHECK(fn[f](0, "", 0) == 0 && fn[f](0x12345678u, "", 0) == 0x12345678u, "%s: empty", names[f]);
        CHECK(fn[f](0, z, 32) == 0x8A9136AAu && fn[f](0, o, 32) == 0x62A8AB43u, "%s: zeros, ones", names[f]);
        CHECK(fn[f](0, inc, 32) == 0x46DD794Eu && fn[f](0, dec, 32) == 0x113FDB5Cu, "%s: ramps", names[f]);
        int bad = 0, chain_bad = 0;
        for (size_t len = 0; len <= 4096; len++) {
            const size_t off = len % 16;
            const uint32_t seed = (uint32_t)(urand() * 4294967296.0), want = ref_crc32c(seed, buf + off, len);
            bad += fn[f](seed, buf + off, len) != want;
            const size_t cut = (size_t)(urand() * (double)(len + 1));
            chain_bad += fn[f](fn[f](seed, buf + off, cut), buf + off + cut, len - cut) != want;
        }
        CHECK(bad == 0, "%s: %d of 4097 lengths differ from the definition", names[f], bad);
        CHECK(chain_bad == 0, "%s: chaining differs %d times", names[f], chain_bad);
    }
    printf("crc32c: %d paths checked (CPU instructions %s)\n", nf, nf == 4 ? "included" : "not available here");
}

int main(void) {
    const char *bf16 = getenv("MOEMLORA_BF16");
    if (bf16 && strcmp(bf16, "native") == 0 && !(mml__cpu() & MML__CPU_BF16_HW)) {
        printf("test_kernels: skipped (MOEMLORA_BF16=native: this CPU has no bf16 dot products)\n");
        return MMLT_SKIP;
    }
    if (bf16 && strcmp(bf16, "amx") == 0 && !(mml__cpu() & MML__CPU_AMX_HW)) {
        printf("test_kernels: skipped (MOEMLORA_BF16=amx: no AMX-BF16 tiles on this CPU/OS/compiler)\n");
        return MMLT_SKIP;
    }
    REF = mml_simd_kernels(MML_ISA_SCALAR);
    const int cpu = mml__cpu();
    if (!bf16 || !bf16[0])
        CHECK(!(cpu & MML__CPU_BF16) == !((cpu & MML__CPU_BF16_HW) && !(cpu & MML__CPU_BF16_SLOW)),
              "bf16 dot products in use %d: the CPU has them %d, slower than the emulation %d", !!(cpu & MML__CPU_BF16),
              !!(cpu & MML__CPU_BF16_HW), !!(cpu & MML__CPU_BF16_SLOW));
    if (!bf16 || !bf16[0] || strcmp(bf16, "amx") == 0)
        CHECK(!(cpu & MML__CPU_AMX) == !(cpu & MML__CPU_AMX_HW), "AMX tiles in use %d, on this CPU %d",
              !!(cpu & MML__CPU_AMX), !!(cpu & MML__CPU_AMX_HW));
    else
        CHECK(!(cpu & MML__CPU_AMX), "AMX tiles in use although MOEMLORA_BF16=%s", bf16);
    printf("AMX tiles: %s\n", !(cpu & MML__CPU_AMX_HW) ? "none on this CPU/OS"
                               : cpu & MML__CPU_AMX  ? "in use"
                                                     : "on this CPU, not in use (MOEMLORA_BF16=emulate or native)");
    printf("bf16 dot products: %s\n", !(cpu & MML__CPU_BF16_HW) ? "none on this CPU"
                                        : cpu & MML__CPU_BF16 ? "in use"
                                                              : "on this CPU, not in use (slower than the emulation, or MOEMLORA_BF16=emulate)");
    test_dispatch();
    test_crc();
    printf("best ISA: %s\n", mml_isa_name(mml_simd_best()));
    for (int i = 0; i < MML_ISA_COUNT; i++) {
        const mml_kernels_t *k = mml_simd_kernels((mml_isa)i);
        if (!k) continue;
        mmlt_ctx = mml_isa_name((mml_isa)i);
        printf("bf16 gemm (%s): %s\n", mmlt_ctx, mml__bf16_path((mml_isa)i));
        memset(max_ulp, 0, sizeof max_ulp);
        int before = mmlt_fail;
        test_gemm(k);
        test_gemm_bf16(k);
        test_packed(k, &GEMM_FP32);
        test_packed(k, &GEMM_BF16);
        test_pair(k);
        test_relu(k);
        test_dropout(k);
        test_fused_dropout(k);
        test_transcendental(k);
        test_rows(k);
        test_blocks(k);
        test_vec(k);
        printf("%-7s %s; max error vs scalar:", mmlt_ctx, mmlt_fail == before ? "ok" : "FAILED");
        for (int u = 0; u <= U_BCE_SUM; u++)
            printf(u >= U_ADAM ? " %s %.2g" : " %s %.0f ulp", ulp_names[u], max_ulp[u]);
        printf("\n");
    }
    return mmlt_finish("test_kernels");
}
