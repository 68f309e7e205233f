// >>layers -----------------------------------------------------------------
/* Feature-interaction layers of the eight base CTR models (DeepCTR semantics).
 *
 * Included inside moemlora.h's implementation half after moemlora_simd.h; needs
 * only that header and libc. Every layer is a forward/backward pair over flat,
 * batch-major float arrays with the shapes in the comment above it:
 *   - parameters are passed as pointers (the caller owns them in one arena);
 *   - backward ACCUMULATES (+=) into every gradient it is given, parameter and
 *     input gradients alike (callers zero them), so several consumers of the same
 *     embeddings add up;
 *   - forward saves what backward needs in a caller-provided activation buffer of
 *     mml__<layer>_act_floats(...) floats, and uses scratch of
 *     mml__<layer>_ws_floats(...) floats where it needs any; backward must get
 *     the same act (and, where listed, the same forward inputs and outputs);
 *   - no allocation; matmul-heavy parts run on the kernel table K.
 * Pair order everywhere: (0,1), (0,2), ..., (0,F-1), (1,2), ..., (F-2,F-1), as
 * itertools.combinations, so P = F(F-1)/2 pairs. */

#if defined(__GNUC__) || defined(__clang__)
#define MML__LAYER static __attribute__((unused))
#else
#define MML__LAYER static
#endif

#define MML__IX(a, b) ((int64_t)(a) * (int64_t)(b))

MML__LAYER int mml__n_pairs(int F) { return F * (F - 1) / 2; }

/* ---- linear (wide) logit ------------------------------------------------ */

/* ids: [B, F] int32 (ids[b*F+f] indexes field f's table)  w[f]: [vocab_f]
 * bias: [1]  -> out: [B] (the [B,1] logit, overwritten). No act, no ws. */
MML__LAYER void mml__linear_forward(int B, int F, const int32_t *ids, const float *const *w,
                                    const float *bias, float *out) {
    for (int b = 0; b < B; b++) {
        float s = bias ? bias[0] : 0.0f;
        for (int f = 0; f < F; f++) s += w[f][ids[MML__IX(b, F) + f]];
        out[b] = s;
    }
}

/* dout: [B] -> dw[f][id] += (sparse, samples in order), dbias[0] += sum dout.
 * dbias may be NULL (no bias). */
MML__LAYER void mml__linear_backward(int B, int F, const int32_t *ids, const float *dout,
                                     float *const *dw, float *dbias) {
    float db = 0.0f;
    for (int b = 0; b < B; b++) {
        for (int f = 0; f < F; f++) dw[f][ids[MML__IX(b, F) + f]] += dout[b];
        db += dout[b];
    }
    if (dbias) dbias[0] += db;
}

/* ---- FM second order and bi-interaction pooling -------------------------- */

/* s[b, :] = sum_f emb[b, f, :] */
MML__LAYER void mml__field_sum(int B, int F, int k, const float *emb, float *s) {
    for (int b = 0; b < B; b++) {
        float *sb = s + MML__IX(b, k);
        const float *e = emb + MML__IX(b, F) * k;
        for (int d = 0; d < k; d++) sb[d] = 0.0f;
        for (int f = 0; f < F; f++)
            for (int d = 0; d < k; d++) sb[d] += e[MML__IX(f, k) + d];
    }
}

MML__LAYER size_t mml__bi_act_floats(int B, int k) { return (size_t)B * (size_t)k; }
MML__LAYER size_t mml__fm_act_floats(int B, int k) { return (size_t)B * (size_t)k; }

/* Bi-interaction pooling (NFM).
 * emb: [B, F, k] -> out: [B, k], out[b,d] = 0.5*((sum_f e)^2 - sum_f e^2)
 * act: [B, k] (field sums). */
MML__LAYER void mml__bi_forward(int B, int F, int k, const float *emb, float *out, float *act) {
    mml__field_sum(B, F, k, emb, act);
    for (int b = 0; b < B; b++) {
        const float *e = emb + MML__IX(b, F) * k, *s = act + MML__IX(b, k);
        float *o = out + MML__IX(b, k);
        for (int d = 0; d < k; d++) o[d] = s[d] * s[d];
        for (int f = 0; f < F; f++)
            for (int d = 0; d < k; d++) o[d] -= e[MML__IX(f, k) + d] * e[MML__IX(f, k) + d];
        for (int d = 0; d < k; d++) o[d] *= 0.5f;
    }
}

/* dout: [B, k] -> demb: [B, F, k] +=  (d e_fd = dout_d * (s_d - e_fd)) */
MML__LAYER void mml__bi_backward(int B, int F, int k, const float *emb, const float *act,
                                 const float *dout, float *demb) {
    for (int b = 0; b < B; b++) {
        const float *s = act + MML__IX(b, k), *g = dout + MML__IX(b, k);
        for (int f = 0; f < F; f++) {
            const float *e = emb + (MML__IX(b, F) + f) * k;
            float *de = demb + (MML__IX(b, F) + f) * k;
            for (int d = 0; d < k; d++) de[d] += g[d] * (s[d] - e[d]);
        }
    }
}

/* FM second-order term (DeepFM).
 * emb: [B, F, k] -> out: [B] (the [B,1] term) = sum_d of bi-interaction
 * act: [B, k] (field sums). */
MML__LAYER void mml__fm_forward(int B, int F, int k, const float *emb, float *out, float *act) {
    mml__field_sum(B, F, k, emb, act);
    for (int b = 0; b < B; b++) {
        const float *e = emb + MML__IX(b, F) * k, *s = act + MML__IX(b, k);
        float sq = 0.0f, q = 0.0f;
        for (int d = 0; d < k; d++) sq += s[d] * s[d];
        for (int i = 0; i < F * k; i++) q += e[i] * e[i];
        out[b] = 0.5f * (sq - q);
    }
}

/* dout: [B] -> demb: [B, F, k] += */
MML__LAYER void mml__fm_backward(int B, int F, int k, const float *emb, const float *act,
                                 const float *dout, float *demb) {
    for (int b = 0; b < B; b++) {
        const float *s = act + MML__IX(b, k);
        for (int f = 0; f < F; f++) {
            const float *e = emb + (MML__IX(b, F) + f) * k;
            float *de = demb + (MML__IX(b, F) + f) * k;
            for (int d = 0; d < k; d++) de[d] += dout[b] * (s[d] - e[d]);
        }
    }
}

/* ---- inner product layer (PNN) ------------------------------------------- */

/* emb: [B, F, k] -> out: [B, P] with row stride ldo >= P (so the products can
 * land right after the flattened embeddings in the tower input).
 * out[b, p] = <e_i, e_j> for the p-th pair (i<j). No act, no ws. */
MML__LAYER void mml__inner_forward(const mml_kernels_t *K, int B, int F, int k, const float *emb,
                                   float *out, int ldo) {
    for (int b = 0; b < B; b++) {
        const float *e = emb + MML__IX(b, F) * k;
        int p = 0;
        for (int i = 0; i < F - 1; i++)
            for (int j = i + 1; j < F; j++, p++)
                out[MML__IX(b, ldo) + p] = K->dot(k, e + MML__IX(i, k), e + MML__IX(j, k));
    }
}

/* dout: [B, P] (row stride ldo) -> demb: [B, F, k] += */
MML__LAYER void mml__inner_backward(const mml_kernels_t *K, int B, int F, int k, const float *emb,
                                    const float *dout, int ldo, float *demb) {
    for (int b = 0; b < B; b++) {
        const float *e = emb + MML__IX(b, F) * k;
        float *de = demb + MML__IX(b, F) * k;
        int p = 0;
        for (int i = 0; i < F - 1; i++)
            for (int j = i + 1; j < F; j++, p++) {
                float g = dout[MML__IX(b, ldo) + p];
                K->axpy(k, g, e + MML__IX(j, k), de + MML__IX(i, k));
                K->axpy(k, g, e + MML__IX(i, k), de + MML__IX(j, k));
            }
    }
}

/* ---- cross network (DCN, vector parameterization) ------------------------ */

/* act: x_1 .. x_{L-1} [L-1, B, D], then s_l = x_l . w_l [L, B] */
MML__LAYER size_t mml__cross_act_floats(int B, int D, int L) {
    return (size_t)(L - 1) * (size_t)B * (size_t)D + (size_t)L * (size_t)B;
}
MML__LAYER size_t mml__cross_ws_floats(int B, int D) { return (size_t)B * (size_t)D; }

/* x0: [B, D]  w: [L, D]  bias: [L, D]  -> out: [B, D] = x_L, where
 * x_{l+1} = x_0 * (x_l . w_l) + bias_l + x_l. L >= 1. No ws. */
MML__LAYER void mml__cross_forward(const mml_kernels_t *K, int B, int D, int L, const float *x0,
                                   const float *w, const float *bias, float *out, float *act) {
    float *s = act + MML__IX(L - 1, B) * D;
    for (int l = 0; l < L; l++) {
        const float *xl = l == 0 ? x0 : act + MML__IX(l - 1, B) * D;
        float *xn = l == L - 1 ? out : act + MML__IX(l, B) * D;
        const float *wl = w + MML__IX(l, D), *bl = bias + MML__IX(l, D);
        for (int b = 0; b < B; b++) {
            const float *xb = xl + MML__IX(b, D), *x0b = x0 + MML__IX(b, D);
            float *xnb = xn + MML__IX(b, D);
            float sb = K->dot(D, xb, wl);
            s[MML__IX(l, B) + b] = sb;
            for (int d = 0; d < D; d++) xnb[d] = x0b[d] * sb + bl[d] + xb[d];
        }
    }
}

/* dout: [B, D] -> dx0: [B, D] +=, dw: [L, D] +=, dbias: [L, D] +=
 * ws: [B, D] (the running gradient of x_l). */
MML__LAYER void mml__cross_backward(const mml_kernels_t *K, int B, int D, int L, const float *x0,
                                    const float *w, const float *act, const float *dout,
                                    float *dx0, float *dw, float *dbias, float *ws) {
    const float *s = act + MML__IX(L - 1, B) * D;
    float *g = ws;
    memcpy(g, dout, sizeof(float) * (size_t)B * (size_t)D);
    for (int l = L - 1; l >= 0; l--) {
        const float *xl = l == 0 ? x0 : act + MML__IX(l - 1, B) * D;
        const float *wl = w + MML__IX(l, D);
        K->colsum_add(B, D, g, D, dbias + MML__IX(l, D));
        for (int b = 0; b < B; b++) {
            float *gb = g + MML__IX(b, D);
            float ds = K->dot(D, gb, x0 + MML__IX(b, D));
            K->axpy(D, s[MML__IX(l, B) + b], gb, dx0 + MML__IX(b, D));
            K->axpy(D, ds, xl + MML__IX(b, D), dw + MML__IX(l, D));
            K->axpy(D, ds, wl, gb); /* the residual path keeps gb itself */
        }
    }
    K->axpy(MML__IX(B, D), 1.0f, g, dx0);
}

/* ---- CIN (xDeepFM) ------------------------------------------------------- */
/* Feature maps are kept as [B*k, H] matrices (row b*k+d, one column per map) so
 * the 1x1 convolution over Z [B*k, H_prev*F] is one gemm. Z's column for
 * (field j of X^0, map i of X^{h-1}) is j*H_prev + i, as DeepCTR's reshape.
 * Parameters, one packed block: for each layer h, W_h [H_h, H_{h-1}*F] then
 * bias_h [H_h]; then w_out [fmap_sum] (Dense(1, use_bias=False)); H_{-1} = F.
 * split_half: every layer but the last passes maps [0, H_h/2) on and sends
 * [H_h/2, H_h) to the output (H_h must be even there); the last sends all.
 * Without split_half every layer passes all maps on and sends all. */

typedef struct mml__cin_layer {
    int hp;       /* maps coming in (H_{h-1}; F for h = 0) */
    int h;        /* maps produced */
    int n_next;   /* maps passed to the next layer: [0, n_next) */
    int d0;       /* maps sent to the output: [d0, h) */
    int64_t w_off, b_off, y_off, pool_off;
} mml__cin_layer;

/* Layer h's geometry: parameter offsets, its Y offset in act (after X0t) and
 * its first column in the pooled output. */
MML__LAYER mml__cin_layer mml__cin_geom(int B, int F, int k, int L, const int *sizes,
                                    int split_half, int h) {
    mml__cin_layer g = {F, 0, 0, 0, 0, 0, MML__IX(B, k) * F, 0};
    for (int i = 0;; i++) {
        int last = i == L - 1;
        g.h = sizes[i];
        g.n_next = last ? 0 : split_half ? sizes[i] / 2 : sizes[i];
        g.d0 = split_half && !last ? sizes[i] / 2 : 0;
        g.b_off = g.w_off + MML__IX(g.h, g.hp) * F;
        if (i == h) return g;
        g.w_off = g.b_off + g.h;
        g.y_off += MML__IX(B, k) * g.h;
        g.pool_off += g.h - g.d0;
        g.hp = g.n_next;
    }
}

/* Width of the pooled output (64 + 128 = 192 for (128,128) split half). */
MML__LAYER int mml__cin_fmap_sum(int L, const int *sizes, int split_half) {
    mml__cin_layer g = mml__cin_geom(1, 1, 1, L, sizes, split_half, L - 1);
    return (int)g.pool_off + g.h - g.d0;
}
/* Offset of W_h (bias_h follows it at + H_h*H_{h-1}*F) in the packed block;
 * h = L gives the offset of w_out. */
MML__LAYER size_t mml__cin_param_offset(int F, int L, const int *sizes, int split_half, int h) {
    if (h >= L) {
        mml__cin_layer g = mml__cin_geom(1, F, 1, L, sizes, split_half, L - 1);
        return (size_t)(g.b_off + g.h);
    }
    return (size_t)mml__cin_geom(1, F, 1, L, sizes, split_half, h).w_off;
}
MML__LAYER size_t mml__cin_param_floats(int F, int L, const int *sizes, int split_half) {
    return mml__cin_param_offset(F, L, sizes, split_half, L) +
           (size_t)mml__cin_fmap_sum(L, sizes, split_half);
}
/* act: X0t [B*k, F], Y_h [B*k, H_h] for each layer (after ReLU), pooled [B, fmap_sum] */
MML__LAYER size_t mml__cin_act_floats(int B, int F, int k, int L, const int *sizes,
                                      int split_half) {
    mml__cin_layer g = mml__cin_geom(B, F, k, L, sizes, split_half, L - 1);
    return (size_t)(g.y_off + MML__IX(B, k) * g.h) +
           (size_t)B * (size_t)mml__cin_fmap_sum(L, sizes, split_half);
}
/* ws: Z/dZ [B*k, max C], dY [B*k, max H], dH [B*k, max H], dX0t [B*k, F],
 * dpooled [B, fmap_sum] (forward uses only Z). */
MML__LAYER size_t mml__cin_ws_floats(int B, int F, int k, int L, const int *sizes,
                                     int split_half) {
    int64_t cmax = 0, hmax = 0;
    for (int h = 0; h < L; h++) {
        mml__cin_layer g = mml__cin_geom(B, F, k, L, sizes, split_half, h);
        if (MML__IX(g.hp, F) > cmax) cmax = MML__IX(g.hp, F);
        if (g.h > hmax) hmax = g.h;
    }
    return (size_t)(MML__IX(B, k) * (cmax + 2 * hmax + F) +
                    MML__IX(B, mml__cin_fmap_sum(L, sizes, split_half)));
}

/* Z[r, j*hp + i] = X0t[r, j] * Xp[r, i] for every row r of B*k. */
MML__LAYER void mml__cin_outer(int64_t rows, int F, int hp, const float *x0t, const float *xp,
                           int ldp, float *z) {
    int64_t C = MML__IX(hp, F);
    for (int64_t r = 0; r < rows; r++) {
        const float *a = x0t + r * F, *x = xp + r * ldp;
        float *zr = z + r * C;
        for (int j = 0; j < F; j++)
            for (int i = 0; i < hp; i++) zr[MML__IX(j, hp) + i] = a[j] * x[i];
    }
}

/* emb: [B, F, k]  params: packed (above) -> out: [B] (the CIN logit, [B,1])
 * act: see mml__cin_act_floats; ws: see mml__cin_ws_floats. */
MML__LAYER void mml__cin_forward(const mml_kernels_t *K, int B, int F, int k, int L,
                                 const int *sizes, int split_half, const float *emb,
                                 const float *params, float *out, float *act, float *ws) {
    int64_t rows = MML__IX(B, k);
    int fs = mml__cin_fmap_sum(L, sizes, split_half);
    float *x0t = act, *pooled = act + mml__cin_act_floats(B, F, k, L, sizes, split_half) -
                                MML__IX(B, fs);
    for (int b = 0; b < B; b++)
        for (int f = 0; f < F; f++)
            for (int d = 0; d < k; d++)
                x0t[(MML__IX(b, k) + d) * F + f] = emb[(MML__IX(b, F) + f) * k + d];
    memset(pooled, 0, sizeof(float) * (size_t)MML__IX(B, fs));
    const float *xp = x0t;
    int ldp = F;
    for (int h = 0; h < L; h++) {
        mml__cin_layer g = mml__cin_geom(B, F, k, L, sizes, split_half, h);
        int C = g.hp * F;
        float *y = act + g.y_off;
        mml__cin_outer(rows, F, g.hp, x0t, xp, ldp, ws);
        K->gemm_nt((int)rows, g.h, C, ws, C, params + g.w_off, C, y, g.h, 0);
        K->add_bias((int)rows, g.h, params + g.b_off, y, g.h);
        K->relu_fwd(rows * g.h, y, y);
        for (int b = 0; b < B; b++)
            K->colsum_add(k, g.h - g.d0, y + MML__IX(b, k) * g.h + g.d0, g.h,
                          pooled + MML__IX(b, fs) + g.pool_off);
        xp = y;
        ldp = g.h;
    }
    const float *w_out = params + mml__cin_param_offset(F, L, sizes, split_half, L);
    for (int b = 0; b < B; b++) out[b] = K->dot(fs, pooled + MML__IX(b, fs), w_out);
}

/* dY of layer h before the ReLU: dH (from layer h+1) on the passed-on maps plus
 * dpooled broadcast over k on the output maps, then masked by Y > 0. */
MML__LAYER void mml__cin_dy(const mml_kernels_t *K, int B, int k, mml__cin_layer g, int fs,
                        const float *y, const float *dh, const float *dpooled, float *dy) {
    int64_t rows = MML__IX(B, k);
    for (int64_t r = 0; r < rows; r++) {
        float *o = dy + r * g.h;
        const float *dp = dpooled + (r / k) * fs + g.pool_off; /* maps [d0, h) */
        for (int m = 0; m < g.h; m++) o[m] = m >= g.d0 ? dp[m - g.d0] : 0.0f;
        for (int m = 0; m < g.n_next; m++) o[m] += dh[r * g.n_next + m];
    }
    K->relu_bwd(rows * g.h, y, dy, dy);
}

/* dout: [B] -> demb: [B, F, k] +=, dparams (packed like params) += */
MML__LAYER void mml__cin_backward(const mml_kernels_t *K, int B, int F, int k, int L,
                                  const int *sizes, int split_half, const float *params,
                                  const float *act, const float *dout, float *demb,
                                  float *dparams, float *ws) {
    int64_t rows = MML__IX(B, k), cmax = 0, hmax = 0;
    int fs = mml__cin_fmap_sum(L, sizes, split_half);
    for (int h = 0; h < L; h++) {
        mml__cin_layer g = mml__cin_geom(B, F, k, L, sizes, split_half, h);
        if (MML__IX(g.hp, F) > cmax) cmax = MML__IX(g.hp, F);
        if (g.h > hmax) hmax = g.h;
    }
    float *z = ws, *dy = z + rows * cmax, *dh = dy + rows * hmax, *dx0t = dh + rows * hmax;
    float *dpooled = dx0t + rows * F;
    const float *x0t = act;
    const float *pooled = act + mml__cin_act_floats(B, F, k, L, sizes, split_half) - MML__IX(B, fs);
    size_t wo = mml__cin_param_offset(F, L, sizes, split_half, L);
    for (int b = 0; b < B; b++) {
        for (int m = 0; m < fs; m++) dpooled[MML__IX(b, fs) + m] = dout[b] * params[wo + m];
        K->axpy(fs, dout[b], pooled + MML__IX(b, fs), dparams + wo);
    }
    memset(dx0t, 0, sizeof(float) * (size_t)(rows * F));
    for (int h = L - 1; h >= 0; h--) {
        mml__cin_layer g = mml__cin_geom(B, F, k, L, sizes, split_half, h);
        int C = g.hp * F;
        const float *y = act + g.y_off;
        const float *xp =
            h == 0 ? x0t : act + mml__cin_geom(B, F, k, L, sizes, split_half, h - 1).y_off;
        int ldp = h == 0 ? F : sizes[h - 1];
        mml__cin_dy(K, B, k, g, fs, y, dh, dpooled, dy);
        K->colsum_add((int)rows, g.h, dy, g.h, dparams + g.b_off);
        mml__cin_outer(rows, F, g.hp, x0t, xp, ldp, z);
        K->gemm_tn(g.h, C, (int)rows, dy, g.h, z, C, dparams + g.w_off, C, 1);
        K->gemm_nn((int)rows, C, g.h, dy, g.h, params + g.w_off, C, z, C, 0); /* z := dZ */
        for (int64_t r = 0; r < rows; r++) {
            const float *dz = z + r * C, *a = x0t + r * F, *x = xp + r * ldp;
            float *da = dx0t + r * F, *dx = h == 0 ? dx0t + r * F : dh + r * g.hp;
            if (h > 0)
                for (int i = 0; i < g.hp; i++) dx[i] = 0.0f;
            for (int j = 0; j < F; j++) {
                const float *dzj = dz + MML__IX(j, g.hp);
                da[j] += K->dot(g.hp, dzj, x);
                for (int i = 0; i < g.hp; i++) dx[i] += dzj[i] * a[j];
            }
        }
    }
    for (int b = 0; b < B; b++)
        for (int f = 0; f < F; f++)
            for (int d = 0; d < k; d++)
                demb[(MML__IX(b, F) + f) * k + d] += dx0t[(MML__IX(b, k) + d) * F + f];
}

/* ---- interacting layer (AutoInt) ----------------------------------------- */
/* One layer of multi-head self-attention over the F fields, DeepCTR's
 * InteractingLayer with use_res=True, scaling=False: per head h (columns
 * [h*A, (h+1)*A) of Q, K, V), P = softmax_rows(Q_h K_h^T) over the keys,
 * O_h = P V_h; out = relu(concat_h O_h + x Wr). HA = H*A. */

/* act: Q, K, V [B*F, HA] each, then P [B, H, F, F] */
MML__LAYER size_t mml__autoint_act_floats(int B, int F, int H, int A) {
    return (size_t)(3 * MML__IX(B, F) * H * A + MML__IX(B, H) * F * F);
}
/* ws: forward: scores [B, H, F, F]; backward: dpre, dQ, dK, dV [B*F, HA], dP [F, F] */
MML__LAYER size_t mml__autoint_ws_floats(int B, int F, int H, int A) {
    int64_t fwd = MML__IX(B, H) * F * F, bwd = 4 * MML__IX(B, F) * H * A + F * F;
    return (size_t)(fwd > bwd ? fwd : bwd);
}

/* x: [B, F, d_in]  Wq, Wk, Wv, Wr: [d_in, H*A] -> out: [B, F, H*A]
 * (backward needs x and out unchanged). */
MML__LAYER void mml__autoint_forward(const mml_kernels_t *K, int B, int F, int d_in, int H,
                                     int A, const float *x, const float *Wq, const float *Wk,
                                     const float *Wv, const float *Wr, float *out, float *act,
                                     float *ws) {
    int HA = H * A, BF = B * F;
    float *q = act, *kk = q + MML__IX(BF, HA), *v = kk + MML__IX(BF, HA);
    float *p = v + MML__IX(BF, HA);
    K->gemm_nn(BF, HA, d_in, x, d_in, Wq, HA, q, HA, 0);
    K->gemm_nn(BF, HA, d_in, x, d_in, Wk, HA, kk, HA, 0);
    K->gemm_nn(BF, HA, d_in, x, d_in, Wv, HA, v, HA, 0);
    K->gemm_nn(BF, HA, d_in, x, d_in, Wr, HA, out, HA, 0);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int64_t o = MML__IX(b, F) * HA + MML__IX(h, A);
            K->gemm_nt(F, F, A, q + o, HA, kk + o, HA, ws + (MML__IX(b, H) + h) * F * F, F, 0);
        }
    K->softmax_rows(B * H * F, F, ws, F, p, F);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int64_t o = MML__IX(b, F) * HA + MML__IX(h, A);
            K->gemm_nn(F, A, F, p + (MML__IX(b, H) + h) * F * F, F, v + o, HA, out + o, HA, 1);
        }
    K->relu_fwd(MML__IX(BF, HA), out, out);
}

/* dS = P ⊙ (dP - rowsum(P ⊙ dP)), in place over dP [F, F] */
MML__LAYER void mml__softmax_rows_bwd(int F, const float *p, float *dp) {
    for (int i = 0; i < F; i++) {
        const float *pi = p + MML__IX(i, F);
        float *gi = dp + MML__IX(i, F), s = 0.0f;
        for (int j = 0; j < F; j++) s += pi[j] * gi[j];
        for (int j = 0; j < F; j++) gi[j] = pi[j] * (gi[j] - s);
    }
}

/* dout: [B, F, H*A] -> dx: [B, F, d_in] +=, dWq, dWk, dWv, dWr: [d_in, H*A] += */
MML__LAYER void mml__autoint_backward(const mml_kernels_t *K, int B, int F, int d_in, int H,
                                      int A, const float *x, const float *Wq, const float *Wk,
                                      const float *Wv, const float *Wr, const float *out,
                                      const float *act, const float *dout, float *dx,
                                      float *dWq, float *dWk, float *dWv, float *dWr,
                                      float *ws) {
    int HA = H * A, BF = B * F;
    int64_t n = MML__IX(BF, HA);
    const float *q = act, *kk = q + n, *v = kk + n, *p = v + n;
    float *dpre = ws, *dq = dpre + n, *dk = dq + n, *dv = dk + n, *dp = dv + n;
    K->relu_bwd(n, out, dout, dpre);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int64_t o = MML__IX(b, F) * HA + MML__IX(h, A);
            const float *ph = p + (MML__IX(b, H) + h) * F * F;
            K->gemm_nt(F, F, A, dpre + o, HA, v + o, HA, dp, F, 0);
            K->gemm_tn(F, A, F, ph, F, dpre + o, HA, dv + o, HA, 0);
            mml__softmax_rows_bwd(F, ph, dp);
            K->gemm_nn(F, A, F, dp, F, kk + o, HA, dq + o, HA, 0);
            K->gemm_tn(F, A, F, dp, F, q + o, HA, dk + o, HA, 0);
        }
    const float *g[4] = {dq, dk, dv, dpre}, *W[4] = {Wq, Wk, Wv, Wr};
    float *dW[4] = {dWq, dWk, dWv, dWr};
    for (int t = 0; t < 4; t++) {
        K->gemm_tn(d_in, HA, BF, x, d_in, g[t], HA, dW[t], HA, 1);
        K->gemm_nt(BF, d_in, HA, g[t], HA, W[t], HA, dx, d_in, 1);
    }
}

/* ---- SENET (FiBiNET) ----------------------------------------------------- */

/* R = max(1, F / reduction_ratio) */
MML__LAYER int mml__senet_r(int F, int ratio) {
    int r = ratio > 0 ? F / ratio : F;
    return r > 1 ? r : 1;
}
/* act: Z [B, F], A1 [B, R], A2 [B, F] */
MML__LAYER size_t mml__senet_act_floats(int B, int F, int R) {
    return (size_t)B * (size_t)(2 * F + R);
}
/* ws (backward): dA2 [B, F], dA1 [B, R], dZ [B, F] */
MML__LAYER size_t mml__senet_ws_floats(int B, int F, int R) {
    return (size_t)B * (size_t)(2 * F + R);
}

/* emb: [B, F, k]  W1: [F, R]  W2: [R, F] -> out: [B, F, k]
 * Z = mean_k(emb); A1 = relu(Z W1); A2 = relu(A1 W2); out = emb * A2 per field. */
MML__LAYER void mml__senet_forward(const mml_kernels_t *K, int B, int F, int k, int R,
                                   const float *emb, const float *W1, const float *W2,
                                   float *out, float *act) {
    float *z = act, *a1 = z + MML__IX(B, F), *a2 = a1 + MML__IX(B, R);
    float inv = 1.0f / (float)k;
    for (int64_t bf = 0; bf < MML__IX(B, F); bf++) {
        const float *e = emb + bf * k;
        float s = 0.0f;
        for (int d = 0; d < k; d++) s += e[d];
        z[bf] = s * inv;
    }
    K->gemm_nn(B, R, F, z, F, W1, R, a1, R, 0);
    K->relu_fwd(MML__IX(B, R), a1, a1);
    K->gemm_nn(B, F, R, a1, R, W2, F, a2, F, 0);
    K->relu_fwd(MML__IX(B, F), a2, a2);
    for (int64_t bf = 0; bf < MML__IX(B, F); bf++)
        for (int d = 0; d < k; d++) out[bf * k + d] = emb[bf * k + d] * a2[bf];
}

/* dout: [B, F, k] -> demb: [B, F, k] +=, dW1: [F, R] +=, dW2: [R, F] += */
MML__LAYER void mml__senet_backward(const mml_kernels_t *K, int B, int F, int k, int R,
                                    const float *emb, const float *W1, const float *W2,
                                    const float *act, const float *dout, float *demb,
                                    float *dW1, float *dW2, float *ws) {
    const float *z = act, *a1 = z + MML__IX(B, F), *a2 = a1 + MML__IX(B, R);
    float *da2 = ws, *da1 = da2 + MML__IX(B, F), *dz = da1 + MML__IX(B, R);
    for (int64_t bf = 0; bf < MML__IX(B, F); bf++) {
        da2[bf] = a2[bf] > 0.0f ? K->dot(k, dout + bf * k, emb + bf * k) : 0.0f;
        K->axpy(k, a2[bf], dout + bf * k, demb + bf * k);
    }
    K->gemm_tn(R, F, B, a1, R, da2, F, dW2, F, 1);
    K->gemm_nt(B, R, F, da2, F, W2, F, da1, R, 0);
    K->relu_bwd(MML__IX(B, R), a1, da1, da1);
    K->gemm_tn(F, R, B, z, F, da1, R, dW1, R, 1);
    K->gemm_nt(B, F, R, da1, R, W1, R, dz, F, 0);
    float inv = 1.0f / (float)k;
    for (int64_t bf = 0; bf < MML__IX(B, F); bf++)
        for (int d = 0; d < k; d++) demb[bf * k + d] += dz[bf] * inv;
}

/* ---- bilinear interaction, type "interaction" (FiBiNET) ------------------ */

/* act: T [B, P, k], T_p = e_i W_p */
MML__LAYER size_t mml__bilinear_act_floats(int B, int F, int k) {
    return (size_t)B * (size_t)mml__n_pairs(F) * (size_t)k;
}
/* ws (backward): dT [B, k] */
MML__LAYER size_t mml__bilinear_ws_floats(int B, int k) { return (size_t)B * (size_t)k; }

/* emb: [B, F, k]  W: [P, k, k] (one matrix per pair) -> out: [B, P, k] with row
 * stride ldo >= P*k (FiBiNET's two branches write into one tower input),
 * out[b, p, :] = (e_i W_p) ⊙ e_j. */
MML__LAYER void mml__bilinear_forward(const mml_kernels_t *K, int B, int F, int k,
                                      const float *emb, const float *W, float *out, int ldo,
                                      float *act) {
    int P = mml__n_pairs(F), Fk = F * k, Pk = P * k, p = 0;
    for (int i = 0; i < F - 1; i++)
        for (int j = i + 1; j < F; j++, p++) {
            float *t = act + MML__IX(p, k);
            K->gemm_nn(B, k, k, emb + MML__IX(i, k), Fk, W + MML__IX(p, k) * k, k, t, Pk, 0);
            for (int b = 0; b < B; b++)
                K->mul(k, t + MML__IX(b, Pk), emb + MML__IX(b, Fk) + MML__IX(j, k),
                       out + MML__IX(b, ldo) + MML__IX(p, k));
        }
}

/* dout: [B, P, k] (row stride ldo) -> demb: [B, F, k] +=, dW: [P, k, k] += */
MML__LAYER void mml__bilinear_backward(const mml_kernels_t *K, int B, int F, int k,
                                       const float *emb, const float *W, const float *act,
                                       const float *dout, int ldo, float *demb, float *dW,
                                       float *ws) {
    int P = mml__n_pairs(F), Fk = F * k, Pk = P * k, p = 0;
    for (int i = 0; i < F - 1; i++)
        for (int j = i + 1; j < F; j++, p++) {
            const float *t = act + MML__IX(p, k);
            for (int b = 0; b < B; b++) {
                const float *g = dout + MML__IX(b, ldo) + MML__IX(p, k);
                const float *ej = emb + MML__IX(b, Fk) + MML__IX(j, k);
                float *dej = demb + MML__IX(b, Fk) + MML__IX(j, k);
                const float *tb = t + MML__IX(b, Pk);
                K->mul(k, g, ej, ws + MML__IX(b, k));
                for (int d = 0; d < k; d++) dej[d] += g[d] * tb[d];
            }
            const float *Wp = W + MML__IX(p, k) * k;
            K->gemm_tn(k, k, B, emb + MML__IX(i, k), Fk, ws, k, dW + MML__IX(p, k) * k, k, 1);
            K->gemm_nt(B, k, k, ws, k, Wp, k, demb + MML__IX(i, k), Fk, 1);
        }
}
