/* Feature-interaction layers (the >>layers chapter of moemlora.h) against double-precision
 * reference forwards written here from the DeepCTR definitions:
 *   - forward: float layer output vs. the double reference on the same inputs,
 *     |a - b| <= 2e-4 * max(|a|,|b|) + 1e-5 * max|ref| (float accumulation error
 *     over at most a few hundred terms stays far inside that);
 *   - backward: every input and parameter gradient vs. central differences of
 *     the double reference loss L = sum(out * R) (h = 1e-5 relative, error
 *     ~1e-10), |a - n| <= 2e-3 * max(|a|,|n|) + 2e-4 * (max|grad in segment| + 1e-3);
 *   - accumulation: gradients are pre-filled with random values that must be
 *     kept (+=), and every act/ws buffer is exactly the advertised size followed
 *     by a guard zone that must stay untouched.
 * Runs on the ISA mml_simd_resolve picks (MOEMLORA_ISA forces one; ctest runs
 * scalar, avx2 and avx512). */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mml_test.h"

/* ---- small helpers ---------------------------------------------------- */

static uint64_t rng_state = 0x1234567ull;
static double urand(void) { /* [0, 1) */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}
static float frand(float a) { return (float)((2.0 * urand() - 1.0) * a); }

/* Every buffer of a case comes from here: n floats plus a guard zone. Fresh
 * buffers hold NaN, so a layer that reads scratch or act before writing it,
 * or leaves part of its output unwritten, fails the value checks. */
#define GUARD 16
#define GUARD_VAL 1234.5f
#define MAXBUF 64
static float *bufs[MAXBUF];
static size_t bufn[MAXBUF];
static int nbufs;
static float *buf(size_t n) {
    float *p = (float *)malloc((n + GUARD) * sizeof(float));
    if (!p || nbufs == MAXBUF) abort();
    for (size_t i = 0; i < n + GUARD; i++) p[i] = i < n ? NAN : GUARD_VAL;
    bufs[nbufs] = p;
    bufn[nbufs++] = n;
    return p;
}
static float *zbuf(size_t n) {
    float *p = buf(n);
    memset(p, 0, n * sizeof(float));
    return p;
}
static float *rbuf(size_t n, float a) {
    float *p = buf(n);
    for (size_t i = 0; i < n; i++) p[i] = frand(a);
    return p;
}
static float *copy(const float *x, size_t n) {
    float *p = buf(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}
/* Checks every guard zone, then frees all buffers of the case. */
static void end_case(void) {
    int bad = 0;
    for (int b = 0; b < nbufs; b++) {
        for (size_t i = 0; i < GUARD; i++) bad += !(bufs[b][bufn[b] + i] == GUARD_VAL);
        free(bufs[b]);
    }
    CHECK(bad == 0, "%d guard floats overwritten", bad);
    nbufs = 0;
}
static float glorot(int fan_in, int fan_out) { return (float)sqrt(6.0 / (fan_in + fan_out)); }

/* ---- the generic checker --------------------------------------------- */

#define MAXSEG 12
typedef struct tcase tcase;
/* Double-precision reference forward: x[s] are the segments, out gets nout values. */
typedef void (*ref_fn)(const tcase *c, double *const *x, double *out);
struct tcase {
    int nseg;
    const char *seg[MAXSEG];
    float *xf[MAXSEG];    /* values the float layer saw */
    float *gf[MAXSEG];    /* gradients the float backward accumulated */
    float *g0[MAXSEG];    /* their pre-fill */
    size_t n[MAXSEG];
    size_t nout;
    float *outf;          /* float output, dense [nout] */
    float *R;             /* loss weights = dout, dense [nout] */
    ref_fn ref;
    int maxper;           /* finite-difference checks per segment */
    /* configuration the reference needs */
    int B, F, k, D, L, H, A, d_in, r, split;
    const int *sizes;
    const int32_t *ids;
};

static void add_seg(tcase *c, const char *name, float *x, size_t n) {
    int s = c->nseg++;
    c->seg[s] = name;
    c->xf[s] = x;
    c->n[s] = n;
    c->gf[s] = rbuf(n, 1.0f);
    c->g0[s] = copy(c->gf[s], n);
}

static double ref_loss(const tcase *c, double *const *x, double *out) {
    c->ref(c, x, out);
    double l = 0.0;
    for (size_t i = 0; i < c->nout; i++) l += out[i] * (double)c->R[i];
    return l;
}

static int n_kink; /* finite differences redone with a 100x smaller step */

static void check_case(const char *name, tcase *c) {
    double *x[MAXSEG];
    for (int s = 0; s < c->nseg; s++) {
        x[s] = (double *)malloc(c->n[s] * sizeof(double) + 8);
        for (size_t i = 0; i < c->n[s]; i++) x[s][i] = c->xf[s][i];
    }
    double *out = (double *)malloc(c->nout * sizeof(double) + 8);
    ref_loss(c, x, out);
    double omax = 0.0;
    for (size_t i = 0; i < c->nout; i++) omax = fmax(omax, fabs(out[i]));
    int bad = 0;
    size_t worst = 0;
    for (size_t i = 0; i < c->nout; i++)
        if (!mmlt_close(c->outf[i], out[i], 2e-4, 1e-5 * omax)) {
            if (!bad) worst = i;
            bad++;
        }
    CHECK(bad == 0, "%s forward: %d/%zu off, first [%zu] got %g want %g", name, bad, c->nout,
          worst, bad ? c->outf[worst] : 0.0, bad ? out[worst] : 0.0);
    CHECK(omax > 0.0, "%s forward: output all zero", name);

    for (int s = 0; s < c->nseg; s++) {
        double gmax = 0.0;
        for (size_t i = 0; i < c->n[s]; i++) {
            c->gf[s][i] -= c->g0[s][i]; /* what backward added */
            gmax = fmax(gmax, fabs(c->gf[s][i]));
        }
        int nb = 0, checked = 0;
        double wa = 0, wn = 0;
        size_t wi = 0;
        size_t count = c->n[s] <= (size_t)c->maxper ? c->n[s] : (size_t)c->maxper;
        for (size_t t = 0; t < count; t++) {
            size_t i = count == c->n[s] ? t : (size_t)(urand() * (double)c->n[s]);
            double v = x[s][i], h = 1e-5 * fmax(1.0, fabs(v));
            x[s][i] = v + h;
            double lp = ref_loss(c, x, out);
            x[s][i] = v - h;
            double lm = ref_loss(c, x, out);
            x[s][i] = v;
            double gn = (lp - lm) / (2.0 * h), ga = c->gf[s][i];
            checked++;
            if (!mmlt_close(ga, gn, 2e-3, 2e-4 * (gmax + 1e-3))) {
                /* a ReLU kink within +-h of the point: a 100x smaller step excludes it */
                double h2 = h * 1e-2, gn1 = gn;
                x[s][i] = v + h2;
                lp = ref_loss(c, x, out);
                x[s][i] = v - h2;
                lm = ref_loss(c, x, out);
                x[s][i] = v;
                gn = (lp - lm) / (2.0 * h2);
                n_kink++;
                if (getenv("MMLT_VERBOSE")) fprintf(stderr, "kink %s %s [%zu] ga %g gn(h) %g gn(h/100) %g\n", name, c->seg[s], i, ga, gn1, gn);
            }
            if (!mmlt_close(ga, gn, 2e-3, 2e-4 * (gmax + 1e-3))) {
                if (!nb) { wa = ga; wn = gn; wi = i; }
                nb++;
            }
        }
        CHECK(nb == 0, "%s grad %s: %d/%d off, first [%zu] analytic %g numeric %g", name,
              c->seg[s], nb, checked, wi, wa, wn);
    }
    for (int s = 0; s < c->nseg; s++) free(x[s]);
    free(out);
}

static int n_pairs(int F) { return F * (F - 1) / 2; }

/* ---- linear ----------------------------------------------------------- */

/* Field f < F is a list of LEN ids (mean pooling when f is odd, else sum)
 * where f >= 1; field 0 is one id. Then J numeric inputs. Segments: w0..w(F-1),
 * wn, bias. */
#define LEN 3
#define J 2
static const float *ref_num;
static void ref_linear(const tcase *c, double *const *x, double *out) {
    for (int b = 0; b < c->B; b++) {
        double s = x[c->F + 1][0];
        for (int f = 0; f < c->F; f++) {
            int len = f ? LEN : 1, cnt = 0;
            double t = 0.0;
            for (int q = 0; q < len; q++) {
                int32_t id = c->ids[(f * c->B + b) * LEN + q];
                if (id >= 0) { t += x[f][id]; cnt++; }
            }
            s += (f & 1) && cnt ? t / cnt : t;
        }
        for (int j = 0; j < J; j++) s += (double)ref_num[b * J + j] * x[c->F][j];
        out[b] = s;
    }
}

static void test_linear(const mml_kernels_t *K, int B, int F) {
    (void)K;
    static const char *names[] = {"w0", "w1", "w2", "w3", "w4"};
    tcase c = {0};
    c.B = B, c.F = F, c.maxper = 1000, c.ref = ref_linear, c.nout = (size_t)B;
    static int32_t ids[5 * 17 * LEN]; /* [f][b][LEN]; field f's rows have stride len(f) in the layer */
    int32_t packed[5][17 * LEN];
    const int32_t *fp[5];
    int len[5], mean[5];
    const float *w[5];
    float *dw[5];
    for (int f = 0; f < F; f++) {
        int vocab = 2 + f * 3; /* small vocabs: duplicates in the batch */
        float *t = rbuf((size_t)vocab, 0.5f);
        add_seg(&c, names[f], t, (size_t)vocab);
        w[f] = t;
        dw[f] = c.gf[f];
        len[f] = f ? LEN : 1;
        mean[f] = f & 1;
        for (int b = 0; b < B; b++)
            for (int q = 0; q < LEN; q++) {
                /* lists: empty slots, and now and then an empty row */
                int32_t id = (int32_t)(urand() * vocab);
                if (f && (q == LEN - 1 || b % 5 == 4) && urand() < 0.6) id = -1;
                ids[(f * B + b) * LEN + q] = q < len[f] ? id : -1;
                if (q < len[f]) packed[f][b * len[f] + q] = ids[(f * B + b) * LEN + q];
            }
        fp[f] = packed[f];
    }
    c.ids = ids;
    float *num = rbuf((size_t)B * J, 1.0f), *wn = rbuf(J, 0.5f);
    ref_num = num;
    add_seg(&c, "wn", wn, J);
    float *bias = rbuf(1, 0.5f);
    add_seg(&c, "bias", bias, 1);
    c.outf = buf((size_t)B);
    c.R = rbuf((size_t)B, 1.0f);
    mml__wide in = {F, J, fp, len, mean, num};
    mml__linear_forward(B, &in, w, wn, bias, c.outf);
    mml__linear_backward(B, &in, c.R, dw, c.gf[F], c.gf[F + 1]);
    check_case("linear", &c);
    end_case();
}
#undef LEN
#undef J

/* ---- FM and bi-interaction -------------------------------------------- */

static void ref_bi(const tcase *c, double *const *x, double *out) {
    int F = c->F, k = c->k;
    for (int b = 0; b < c->B; b++) {
        double fm = 0.0;
        for (int d = 0; d < k; d++) {
            double s = 0.0, q = 0.0;
            for (int f = 0; f < F; f++) {
                double e = x[0][(b * F + f) * k + d];
                s += e;
                q += e * e;
            }
            double v = 0.5 * (s * s - q);
            if (c->nout == (size_t)c->B * k) out[b * k + d] = v;
            fm += v;
        }
        if (c->nout == (size_t)c->B) out[b] = fm;
    }
}

static void test_fm_bi(const mml_kernels_t *K, int B, int F, int k) {
    (void)K;
    for (int bi = 0; bi < 2; bi++) {
        tcase c = {0};
        c.B = B, c.F = F, c.k = k, c.maxper = 1000, c.ref = ref_bi;
        c.nout = bi ? (size_t)B * k : (size_t)B;
        float *emb = rbuf((size_t)B * F * k, 1.0f);
        add_seg(&c, "emb", emb, (size_t)B * F * k);
        c.outf = buf(c.nout);
        c.R = rbuf(c.nout, 1.0f);
        if (bi) {
            float *act = buf(mml__bi_act_floats(B, k));
            mml__bi_forward(B, F, k, emb, c.outf, k, act);
            mml__bi_backward(B, F, k, emb, act, c.R, k, c.gf[0]);
        } else {
            float *act = buf(mml__fm_act_floats(B, k));
            mml__fm_forward(B, F, k, emb, c.outf, act);
            mml__fm_backward(B, F, k, emb, act, c.R, c.gf[0]);
        }
        check_case(bi ? "bi_interaction" : "fm", &c);
        end_case();
    }
}

/* ---- inner product (PNN) ---------------------------------------------- */

static void ref_inner(const tcase *c, double *const *x, double *out) {
    int F = c->F, k = c->k, P = n_pairs(F);
    for (int b = 0; b < c->B; b++) {
        int p = 0;
        for (int i = 0; i < F - 1; i++)
            for (int j = i + 1; j < F; j++, p++) {
                double s = 0.0;
                for (int d = 0; d < k; d++) s += x[0][(b * F + i) * k + d] * x[0][(b * F + j) * k + d];
                out[b * P + p] = s;
            }
    }
}

/* Strided out/dout [B, n] at row stride ld <-> dense. */
static void pack(int B, int n, const float *src, int ld, float *dst) {
    for (int b = 0; b < B; b++) memcpy(dst + (size_t)b * n, src + (size_t)b * ld, n * sizeof(float));
}

static void test_inner(const mml_kernels_t *K, int B, int F, int k) {
    int P = n_pairs(F), ldo = P + 3;
    tcase c = {0};
    c.B = B, c.F = F, c.k = k, c.maxper = 1000, c.ref = ref_inner, c.nout = (size_t)B * P;
    float *emb = rbuf((size_t)B * F * k, 1.0f);
    add_seg(&c, "emb", emb, (size_t)B * F * k);
    float *wide = rbuf((size_t)B * ldo, 1.0f), *wide0 = copy(wide, (size_t)B * ldo);
    c.R = rbuf(c.nout, 1.0f);
    float *dwide = rbuf((size_t)B * ldo, 9.0f);
    for (int b = 0; b < B; b++) memcpy(dwide + b * ldo, c.R + b * P, P * sizeof(float));
    mml__inner_forward(K, B, F, k, emb, wide, ldo);
    mml__inner_backward(K, B, F, k, emb, dwide, ldo, c.gf[0]);
    int pad_bad = 0;
    for (int b = 0; b < B; b++)
        for (int p = P; p < ldo; p++) pad_bad += wide[b * ldo + p] != wide0[b * ldo + p];
    CHECK(pad_bad == 0, "inner: %d floats of the row padding written", pad_bad);
    c.outf = buf(c.nout);
    pack(B, P, wide, ldo, c.outf);
    check_case("inner_product", &c);
    end_case();
}

/* ---- cross network ---------------------------------------------------- */

static void ref_cross(const tcase *c, double *const *x, double *out) {
    int B = c->B, D = c->D;
    double *xl = (double *)malloc(sizeof(double) * B * D), *xn = (double *)malloc(sizeof(double) * B * D);
    memcpy(xl, x[0], sizeof(double) * B * D);
    for (int l = 0; l < c->L; l++) {
        for (int b = 0; b < B; b++) {
            double s = 0.0;
            for (int d = 0; d < D; d++) s += xl[b * D + d] * x[1][l * D + d];
            for (int d = 0; d < D; d++)
                xn[b * D + d] = x[0][b * D + d] * s + x[2][l * D + d] + xl[b * D + d];
        }
        memcpy(xl, xn, sizeof(double) * B * D);
    }
    for (int i = 0; i < B * D; i++) out[i] = xl[i];
    free(xl);
    free(xn);
}

static void test_cross(const mml_kernels_t *K, int B, int D, int L) {
    tcase c = {0};
    c.B = B, c.D = D, c.L = L, c.maxper = 200, c.ref = ref_cross, c.nout = (size_t)B * D;
    float *x0 = rbuf((size_t)B * D, 1.0f), *w = rbuf((size_t)L * D, 0.4f);
    float *bias = rbuf((size_t)L * D, 0.5f);
    add_seg(&c, "x0", x0, (size_t)B * D);
    add_seg(&c, "w", w, (size_t)L * D);
    add_seg(&c, "bias", bias, (size_t)L * D);
    c.outf = buf(c.nout);
    c.R = rbuf(c.nout, 1.0f);
    float *act = buf(mml__cross_act_floats(B, D, L)), *ws = buf(mml__cross_ws_floats(B, D));
    float *R0 = copy(c.R, c.nout);
    mml__cross_forward(K, B, D, L, x0, w, bias, c.outf, act);
    mml__cross_backward(K, B, D, L, x0, w, act, c.R, c.gf[0], c.gf[1], c.gf[2], ws);
    CHECK(memcmp(R0, c.R, c.nout * sizeof(float)) == 0, "cross: dout modified");
    check_case("cross", &c);
    end_case();
}

/* ---- CIN -------------------------------------------------------------- */

/* Segments: emb, then W_h, b_h per layer, then w_out. */
static void ref_cin(const tcase *c, double *const *x, double *out) {
    int B = c->B, F = c->F, k = c->k, L = c->L;
    int hmax = F;
    for (int h = 0; h < L; h++) hmax = c->sizes[h] > hmax ? c->sizes[h] : hmax;
    double *xp = (double *)malloc(sizeof(double) * hmax * k);
    double *y = (double *)malloc(sizeof(double) * hmax * k);
    double *pool = (double *)malloc(sizeof(double) * 4096);
    for (int b = 0; b < B; b++) {
        const double *x0 = x[0] + (size_t)b * F * k; /* [F][k] */
        memcpy(xp, x0, sizeof(double) * F * k);
        int hp = F, off = 0;
        for (int h = 0; h < L; h++) {
            int H = c->sizes[h], last = h == L - 1;
            int nn = last ? 0 : c->split ? H / 2 : H, d0 = c->split && !last ? H / 2 : 0;
            const double *W = x[1 + 2 * h], *bias = x[2 + 2 * h];
            for (int o = 0; o < H; o++)
                for (int d = 0; d < k; d++) {
                    double s = bias[o];
                    for (int j = 0; j < F; j++)
                        for (int i = 0; i < hp; i++)
                            s += W[(size_t)o * hp * F + j * hp + i] * x0[j * k + d] * xp[i * k + d];
                    y[o * k + d] = s > 0.0 ? s : 0.0;
                }
            for (int o = d0; o < H; o++) {
                double s = 0.0;
                for (int d = 0; d < k; d++) s += y[o * k + d];
                pool[off++] = s;
            }
            memcpy(xp, y, sizeof(double) * nn * k);
            hp = nn;
        }
        double s = 0.0;
        for (int m = 0; m < off; m++) s += pool[m] * x[1 + 2 * L][m];
        out[b] = s;
    }
    free(xp);
    free(y);
    free(pool);
}

static void test_cin(const mml_kernels_t *K, int B, int F, int k, int L, const int *sizes,
                     int split, int maxper) {
    static const char *names[] = {"W0", "b0", "W1", "b1", "W2", "b2", "W3", "b3"};
    tcase c = {0};
    c.B = B, c.F = F, c.k = k, c.L = L, c.sizes = sizes, c.split = split;
    c.maxper = maxper, c.ref = ref_cin, c.nout = (size_t)B;
    size_t np = mml__cin_param_floats(F, L, sizes, split);
    float *params = buf(np), *dparams = rbuf(np, 1.0f);
    float *emb = rbuf((size_t)B * F * k, 1.0f);
    add_seg(&c, "emb", emb, (size_t)B * F * k);
    /* the packed layout, recomputed here independently */
    size_t off = 0;
    int hp = F, fs = 0;
    for (int h = 0; h < L; h++) {
        int H = sizes[h], last = h == L - 1;
        size_t nw = (size_t)H * hp * F;
        CHECK(mml__cin_param_offset(F, L, sizes, split, h) == off, "cin W%d offset", h);
        for (size_t i = 0; i < nw; i++) params[off + i] = frand(glorot(hp * F, H));
        for (int i = 0; i < H; i++) params[off + nw + i] = frand(0.1f);
        add_seg(&c, names[2 * h], params + off, nw);
        add_seg(&c, names[2 * h + 1], params + off + nw, (size_t)H);
        off += nw + H;
        fs += H - (split && !last ? H / 2 : 0);
        hp = last ? 0 : split ? H / 2 : H;
    }
    CHECK(mml__cin_param_offset(F, L, sizes, split, L) == off, "cin w_out offset");
    CHECK(mml__cin_fmap_sum(L, sizes, split) == fs, "cin fmap_sum %d want %d",
          mml__cin_fmap_sum(L, sizes, split), fs);
    CHECK(np == off + (size_t)fs, "cin param_floats");
    for (int m = 0; m < fs; m++) params[off + m] = frand(glorot(fs, 1));
    add_seg(&c, "w_out", params + off, (size_t)fs);
    /* backward writes into dparams; the segments' gradient views point into it */
    for (int s = 1; s < c.nseg; s++) {
        c.gf[s] = dparams + (c.xf[s] - params);
        memcpy(c.g0[s], c.gf[s], c.n[s] * sizeof(float));
    }
    c.outf = buf(c.nout);
    c.R = rbuf(c.nout, 1.0f);
    float *act = buf(mml__cin_act_floats(B, F, k, L, sizes, split));
    float *ws = buf(mml__cin_ws_floats(B, F, k, L, sizes, split));
    mml__cin_forward(K, B, F, k, L, sizes, split, emb, params, c.outf, act, ws);
    mml__cin_backward(K, B, F, k, L, sizes, split, params, act, c.R, c.gf[0], dparams, ws);
    char name[64];
    snprintf(name, sizeof name, "cin(L=%d,%d..,split=%d)", L, sizes[0], split);
    check_case(name, &c);
    end_case();
}

/* ---- AutoInt interacting layer ---------------------------------------- */

/* Segments: x, Wq, Wk, Wv, Wr. */
static void ref_autoint(const tcase *c, double *const *x, double *out) {
    int B = c->B, F = c->F, din = c->d_in, H = c->H, A = c->A, HA = H * A;
    double *q = (double *)malloc(sizeof(double) * 4 * F * HA);
    double *kk = q + F * HA, *v = kk + F * HA, *r = v + F * HA;
    double *proj[4] = {q, kk, v, r};
    for (int b = 0; b < B; b++) {
        const double *xb = x[0] + (size_t)b * F * din;
        for (int t = 0; t < 4; t++)
            for (int f = 0; f < F; f++)
                for (int col = 0; col < HA; col++) {
                    double s = 0.0;
                    for (int i = 0; i < din; i++) s += xb[f * din + i] * x[1 + t][i * HA + col];
                    proj[t][f * HA + col] = s;
                }
        for (int h = 0; h < H; h++)
            for (int i = 0; i < F; i++) {
                double sc[64], mx = -1e300, z = 0.0;
                for (int j = 0; j < F; j++) {
                    double s = 0.0;
                    for (int a = 0; a < A; a++) s += q[i * HA + h * A + a] * kk[j * HA + h * A + a];
                    sc[j] = s;
                    mx = fmax(mx, s);
                }
                for (int j = 0; j < F; j++) z += (sc[j] = exp(sc[j] - mx));
                for (int a = 0; a < A; a++) {
                    double o = r[i * HA + h * A + a];
                    for (int j = 0; j < F; j++) o += sc[j] / z * v[j * HA + h * A + a];
                    out[((size_t)b * F + i) * HA + h * A + a] = o > 0.0 ? o : 0.0;
                }
            }
    }
    free(q);
}

static void test_autoint(const mml_kernels_t *K, int B, int F, int din, int H, int A) {
    int HA = H * A;
    tcase c = {0};
    c.B = B, c.F = F, c.d_in = din, c.H = H, c.A = A, c.maxper = 100, c.ref = ref_autoint;
    c.nout = (size_t)B * F * HA;
    float *x = rbuf((size_t)B * F * din, 1.0f);
    add_seg(&c, "x", x, (size_t)B * F * din);
    static const char *names[] = {"Wq", "Wk", "Wv", "Wr"};
    float *W[4];
    for (int t = 0; t < 4; t++) {
        W[t] = rbuf((size_t)din * HA, glorot(din, HA) * (t < 2 ? 1.5f : 1.0f));
        add_seg(&c, names[t], W[t], (size_t)din * HA);
    }
    c.outf = buf(c.nout);
    c.R = rbuf(c.nout, 1.0f);
    float *act = buf(mml__autoint_act_floats(B, F, H, A));
    float *ws = buf(mml__autoint_ws_floats(B, F, H, A));
    mml__autoint_forward(K, B, F, din, H, A, x, W[0], W[1], W[2], W[3], c.outf, act, ws);
    mml__autoint_backward(K, B, F, din, H, A, x, W[0], W[1], W[2], W[3], c.outf, act, c.R,
                          c.gf[0], c.gf[1], c.gf[2], c.gf[3], c.gf[4], ws);
    char name[64];
    snprintf(name, sizeof name, "autoint(d_in=%d,H=%d,A=%d)", din, H, A);
    check_case(name, &c);
    end_case();
}

/* ---- SENET, bilinear, FiBiNET composition ----------------------------- */

/* v: [B][F][k] -> out: [B][F][k] */
static void ref_senet_d(int B, int F, int k, int R, const double *e, const double *W1,
                        const double *W2, double *out) {
    for (int b = 0; b < B; b++) {
        double z[16], a1[16], a2[16];
        for (int f = 0; f < F; f++) {
            double s = 0.0;
            for (int d = 0; d < k; d++) s += e[(b * F + f) * k + d];
            z[f] = s / k;
        }
        for (int r = 0; r < R; r++) {
            double s = 0.0;
            for (int f = 0; f < F; f++) s += z[f] * W1[f * R + r];
            a1[r] = s > 0.0 ? s : 0.0;
        }
        for (int f = 0; f < F; f++) {
            double s = 0.0;
            for (int r = 0; r < R; r++) s += a1[r] * W2[r * F + f];
            a2[f] = s > 0.0 ? s : 0.0;
        }
        for (int f = 0; f < F; f++)
            for (int d = 0; d < k; d++) out[(b * F + f) * k + d] = e[(b * F + f) * k + d] * a2[f];
    }
}

/* e: [B][F][k]  W: [P][k][k] -> out rows [B] at stride ldo, [P][k] each */
static void ref_bilinear_d(int B, int F, int k, const double *e, const double *W, double *out,
                           int ldo) {
    for (int b = 0; b < B; b++) {
        int p = 0;
        for (int i = 0; i < F - 1; i++)
            for (int j = i + 1; j < F; j++, p++)
                for (int d = 0; d < k; d++) {
                    double s = 0.0;
                    for (int t = 0; t < k; t++) s += e[(b * F + i) * k + t] * W[((size_t)p * k + t) * k + d];
                    out[(size_t)b * ldo + p * k + d] = s * e[(b * F + j) * k + d];
                }
    }
}

static void ref_senet(const tcase *c, double *const *x, double *out) {
    ref_senet_d(c->B, c->F, c->k, c->r, x[0], x[1], x[2], out);
}
static void ref_bilinear(const tcase *c, double *const *x, double *out) {
    ref_bilinear_d(c->B, c->F, c->k, x[0], x[1], out, n_pairs(c->F) * c->k);
}
/* Segments: emb, W1, W2, Wb_senet, Wb_plain; out: [B, 2*P*k] (FiBiNET tower input). */
static void ref_fibinet(const tcase *c, double *const *x, double *out) {
    int B = c->B, F = c->F, k = c->k, Pk = n_pairs(F) * k;
    double *v = (double *)malloc(sizeof(double) * B * F * k);
    ref_senet_d(B, F, k, c->r, x[0], x[1], x[2], v);
    ref_bilinear_d(B, F, k, v, x[3], out, 2 * Pk);
    ref_bilinear_d(B, F, k, x[0], x[4], out + Pk, 2 * Pk);
    free(v);
}

/* W1 > 0 and the first row of W2 > 0 except its last field: with the shifted
 * inputs, A1 stays alive and every ReLU branch of A2 is taken. */
static void senet_weights(int F, int R, float *W1, float *W2) {
    for (int i = 0; i < F * R; i++) W1[i] = 0.1f + (float)urand();
    for (int f = 0; f < F; f++) W2[f] = f == F - 1 ? -0.5f : 0.1f + (float)urand();
}

static void test_senet(const mml_kernels_t *K, int B, int F, int k) {
    int R = mml__senet_r(F, 3);
    CHECK(R == (F / 3 > 1 ? F / 3 : 1), "senet R");
    tcase c = {0};
    c.B = B, c.F = F, c.k = k, c.r = R, c.maxper = 200, c.ref = ref_senet, c.nout = (size_t)B * F * k;
    /* inputs shifted positive so the field means (and the gates) are not all ~0 */
    float *emb = rbuf(c.nout, 1.0f);
    for (size_t i = 0; i < c.nout; i++) emb[i] += 0.5f;
    float *W1 = rbuf((size_t)F * R, 1.0f), *W2 = rbuf((size_t)R * F, 1.0f);
    senet_weights(F, R, W1, W2);
    add_seg(&c, "emb", emb, c.nout);
    add_seg(&c, "W1", W1, (size_t)F * R);
    add_seg(&c, "W2", W2, (size_t)R * F);
    c.outf = buf(c.nout);
    c.R = rbuf(c.nout, 1.0f);
    float *act = buf(mml__senet_act_floats(B, F, R)), *ws = buf(mml__senet_ws_floats(B, F, R));
    mml__senet_forward(K, B, F, k, R, emb, W1, W2, c.outf, act);
    mml__senet_backward(K, B, F, k, R, emb, W1, W2, act, c.R, c.gf[0], c.gf[1], c.gf[2], ws);
    check_case("senet", &c);
    end_case();
}

static void test_bilinear(const mml_kernels_t *K, int B, int F, int k) {
    int P = n_pairs(F);
    tcase c = {0};
    c.B = B, c.F = F, c.k = k, c.maxper = 200, c.ref = ref_bilinear, c.nout = (size_t)B * P * k;
    float *emb = rbuf((size_t)B * F * k, 1.0f), *W = rbuf((size_t)P * k * k, glorot(k, k));
    add_seg(&c, "emb", emb, (size_t)B * F * k);
    add_seg(&c, "W", W, (size_t)P * k * k);
    c.outf = buf(c.nout);
    c.R = rbuf(c.nout, 1.0f);
    float *act = buf(mml__bilinear_act_floats(B, F, k)), *ws = buf(mml__bilinear_ws_floats(B, k));
    mml__bilinear_forward(K, B, F, k, emb, W, c.outf, P * k, act);
    mml__bilinear_backward(K, B, F, k, emb, W, act, c.R, P * k, c.gf[0], c.gf[1], ws);
    check_case("bilinear", &c);
    end_case();
}

/* The FiBiNET wiring: two bilinear layers (own weights) writing halves of one
 * tower-input row (ldo = 2*P*k), SENET in front of the first; the embedding
 * gradient collects both paths. */
static void test_fibinet(const mml_kernels_t *K, int B, int F, int k) {
    int P = n_pairs(F), Pk = P * k, R = mml__senet_r(F, 3);
    size_t ne = (size_t)B * F * k;
    tcase c = {0};
    c.B = B, c.F = F, c.k = k, c.r = R, c.maxper = 100, c.ref = ref_fibinet;
    c.nout = (size_t)B * 2 * Pk;
    float *emb = rbuf(ne, 1.0f);
    for (size_t i = 0; i < ne; i++) emb[i] += 0.5f;
    add_seg(&c, "emb", emb, ne);
    add_seg(&c, "W1", rbuf((size_t)F * R, 1.0f), (size_t)F * R);
    add_seg(&c, "W2", rbuf((size_t)R * F, 1.0f), (size_t)R * F);
    senet_weights(F, R, c.xf[1], c.xf[2]);
    add_seg(&c, "Wb_senet", rbuf((size_t)P * k * k, glorot(k, k)), (size_t)P * k * k);
    add_seg(&c, "Wb_plain", rbuf((size_t)P * k * k, glorot(k, k)), (size_t)P * k * k);
    c.outf = buf(c.nout);
    c.R = rbuf(c.nout, 1.0f);
    float *sact = buf(mml__senet_act_floats(B, F, R)), *sws = buf(mml__senet_ws_floats(B, F, R));
    float *v = buf(ne), *dv = zbuf(ne);
    float *act1 = buf(mml__bilinear_act_floats(B, F, k)), *act2 = buf(mml__bilinear_act_floats(B, F, k));
    float *bws = buf(mml__bilinear_ws_floats(B, k));
    mml__senet_forward(K, B, F, k, R, emb, c.xf[1], c.xf[2], v, sact);
    mml__bilinear_forward(K, B, F, k, v, c.xf[3], c.outf, 2 * Pk, act1);
    mml__bilinear_forward(K, B, F, k, emb, c.xf[4], c.outf + Pk, 2 * Pk, act2);
    mml__bilinear_backward(K, B, F, k, v, c.xf[3], act1, c.R, 2 * Pk, dv, c.gf[3], bws);
    mml__bilinear_backward(K, B, F, k, emb, c.xf[4], act2, c.R + Pk, 2 * Pk, c.gf[0], c.gf[4], bws);
    mml__senet_backward(K, B, F, k, R, emb, c.xf[1], c.xf[2], sact, dv, c.gf[0], c.gf[1], c.gf[2], sws);
    check_case("fibinet(senet+2 bilinear)", &c);
    end_case();
}

/* ---- main ------------------------------------------------------------- */

int main(void) {
    mml_isa isa;
    char err[256];
    if (mml_simd_resolve(&isa, err, sizeof err) != 0) {
        printf("test_layers: skipped: %s\n", err);
        return MMLT_SKIP;
    }
    const mml_kernels_t *K = mml_simd_kernels(isa);
    printf("test_layers: ISA %s\n", mml_isa_name(isa));
    static const int Bs[] = {1, 3, 17}, Fs[] = {3, 4}, ks[] = {4, 8};
    static const int cin_a[] = {8, 6}, cin_b[] = {4, 6, 3}, cin_c[] = {5, 3}, cin_paper[] = {128, 128};
    for (int bi = 0; bi < 3; bi++)
        for (int fi = 0; fi < 2; fi++)
            for (int ki = 0; ki < 2; ki++) {
                int B = Bs[bi], F = Fs[fi], k = ks[ki];
                char ctx[64];
                snprintf(ctx, sizeof ctx, "%s B=%d F=%d k=%d", mml_isa_name(isa), B, F, k);
                mmlt_ctx = ctx;
                test_linear(K, B, F);
                test_fm_bi(K, B, F, k);
                test_inner(K, B, F, k);
                test_cross(K, B, F * k, 2);
                test_cross(K, B, F * k, 1 + ki * 2); /* L = 1 and 3 */
                test_cin(K, B, F, k, 2, cin_a, 1, 80);
                test_cin(K, B, F, k, 3, cin_b, 1, 80);
                test_cin(K, B, F, k, 2, cin_c, 0, 80);
                if (B <= 3) test_cin(K, B, F, k, 2, cin_paper, 1, 24);
                test_autoint(K, B, F, k, 2, 8);   /* first layer: d_in = k */
                test_autoint(K, B, F, 16, 2, 8);  /* later layers: d_in = 16 */
                test_autoint(K, B, F, 5, 3, 3);   /* odd sizes for kernel tails */
                test_senet(K, B, F, k);
                test_senet(K, B, F + 3, k); /* R = 2 */
                test_bilinear(K, B, F, k);
                test_fibinet(K, B, F, k);
            }
    printf("test_layers: %d finite differences redone with a smaller step (ReLU kinks)\n", n_kink);
    return mmlt_finish("test_layers");
}
