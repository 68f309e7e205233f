// >>folding ----------------------------------------------------------------

/* The paper's gate sees only the domain, so at inference each domain's mixture
 * is a constant and its adapters fold into one dense layer:
 *   W_d = W + sum_e w_e(d) A_e B_e,   b_d = b + sum_e w_e(d) c_e.
 * One block per domain plus one for the out-of-vocabulary domain. */

static int mml__can_fold(const mml_model_t *m) {
    if (m->cfg.adapter == MML_ADAPTER_MLORA) return m->phase == MML_PHASE_ALL;
    if (m->cfg.adapter == MML_ADAPTER_MOE)
        return m->cfg.gate == MML_GATE_DOMAIN && (m->phase == MML_PHASE_GATE || m->phase == MML_PHASE_ALL);
    return 0;
}

static int64_t mml__fold_stride(const mml_model_t *m) {
    int64_t s = 0;
    for (int l = 0; l < m->n_layers; l++) s += ((int64_t)(m->layer[l].d_in + 1) * m->layer[l].d_out + 15) & ~(int64_t)15;
    return s;
}

/* Mixture weights of domain d (d == n_domains: the OOV domain). */
static void mml__domain_mixture(const mml_model_t *m, int d, float *w) {
    int E = m->n_experts;
    if (m->cfg.adapter == MML_ADAPTER_MLORA) {
        for (int e = 0; e < E; e++) w[e] = e == d ? 1.0f : 0.0f;
        return;
    }
    int gd = m->cfg.gate_dim;
    const float *g = mml__p(m, m->p_gate_emb) + (int64_t)d * gd, *G = mml__p(m, m->p_gate_W), *b = mml__p(m, m->p_gate_b);
    float lg[256];
    for (int e = 0; e < E; e++) {
        double s = b[e];
        for (int j = 0; j < gd; j++) s += (double)g[j] * G[(int64_t)j * E + e];
        lg[e] = (float)s;
    }
    m->K->softmax_rows(1, E, lg, E, w, E);
}

mml_status mml_model_fold(mml_model_t *m) {
    if (!mml__can_fold(m))
        return mml__fail(MML_ERR_STATE, "fold: needs MLoRA, or MoE-MLoRA with the domain gate in the gate phase");
    const mml_kernels_t *K = m->K;
    int D = m->cfg.n_domains, E = m->n_experts;
    int64_t stride = mml__fold_stride(m);
    if (!m->fold) {
        uint64_t bytes;
        if (!mml__mul_ok((uint64_t)stride * (uint64_t)(D + 1), sizeof(float), (uint64_t)1 << 40, &bytes))
            return mml__fail(MML_ERR_ARG, "fold: size overflows");
        m->fold = (float *)mml__alloc((size_t)bytes);
        if (!m->fold) return mml__fail(MML_ERR_NOMEM, "fold: cannot allocate %llu bytes", (unsigned long long)bytes);
    }
    int64_t maxu = 0;
    for (int l = 0; l < m->n_layers; l++) {
        int64_t u = (int64_t)m->layer[l].d_in * E * m->layer[l].r;
        if (u > maxu) maxu = u;
    }
    float *U = (float *)mml__alloc((size_t)maxu * sizeof(float)), w[256];
    if (!U) return mml__fail(MML_ERR_NOMEM, "fold: out of memory");
    for (int d = 0; d <= D; d++) {
        mml__domain_mixture(m, d, w);
        float *blk = m->fold + (int64_t)d * stride;
        for (int l = 0; l < m->n_layers; l++) {
            const mml__layer *L = &m->layer[l];
            int di = L->d_in, dout = L->d_out, Er = E * L->r;
            float *Wd = blk, *bd = blk + (int64_t)di * dout;
            memcpy(Wd, mml__p(m, L->W), (size_t)di * dout * sizeof(float));
            memcpy(bd, mml__p(m, L->b), (size_t)dout * sizeof(float));
            /* U = A with expert block e scaled by w_e; W_d += U B; b_d += w C */
            const float *A = mml__p(m, L->A);
            for (int i = 0; i < di; i++) K->block_scale(1, E, L->r, A + (int64_t)i * Er, Er, w, E, U + (int64_t)i * Er, Er);
            K->gemm_nn(di, dout, Er, U, Er, mml__p(m, L->B), dout, Wd, dout, 1);
            K->gemm_nn(1, dout, E, w, E, mml__p(m, L->C), dout, bd, dout, 1);
            blk += ((int64_t)(di + 1) * dout + 15) & ~(int64_t)15;
        }
    }
    mml__free(U);
    m->fold_ok = 1;
    return MML_OK;
}

/* Inference tower on folded weights for rows [a, b) that share domain d. */
static void mml__folded_tower(mml_model_t *m, int a, int n, int d) {
    const mml_kernels_t *K = m->K;
    const float *blk = m->fold + (int64_t)d * mml__fold_stride(m);
    const float *x = m->x0 + (int64_t)a * m->d0;
    for (int l = 0; l < m->n_layers; l++) {
        const mml__layer *L = &m->layer[l];
        float *z = m->z[l] + (int64_t)a * L->d_out;
        K->gemm_nn(n, L->d_out, L->d_in, x, L->d_in, blk, L->d_out, z, L->d_out, 0);
        K->add_bias(n, L->d_out, blk + (int64_t)L->d_in * L->d_out, z, L->d_out);
        K->relu_fwd((int64_t)n * L->d_out, z, z);
        blk += ((int64_t)(L->d_in + 1) * L->d_out + 15) & ~(int64_t)15;
        x = z;
    }
}

/* Rows go through their domain's folded weights: in place for long runs of
 * one domain, else grouped by domain (counting sort) and scattered back. */
static void mml__folded_forward_tower(mml_model_t *m, int n) {
    const int32_t *dom = m->ids[2];
    int runs = 1;
    for (int i = 1; i < n; i++) runs += dom[i] != dom[i - 1];
    if (runs * 8 <= n || runs <= 2) {
        for (int a = 0; a < n;) {
            int b = a + 1;
            while (b < n && dom[b] == dom[a]) b++;
            mml__folded_tower(m, a, b - a, dom[a]);
            a = b;
        }
        return;
    }
    int D = m->cfg.n_domains, d0 = m->d0, dl = m->layer[m->n_layers - 1].d_out;
    int32_t *order = m->ids_perm, *start = m->dom_count;
    memset(start, 0, sizeof(int32_t) * (size_t)(D + 2));
    for (int i = 0; i < n; i++) start[dom[i] + 1]++;
    for (int d = 0; d <= D; d++) start[d + 1] += start[d];
    for (int i = 0; i < n; i++) order[start[dom[i]]++] = i;
    for (int d = D; d > 0; d--) start[d] = start[d - 1];
    start[0] = 0;
    /* x0 rows in domain order into the (inference-idle) gradient buffer */
    float *x0 = m->x0, *xs = m->dx0;
    for (int i = 0; i < n; i++) memcpy(xs + (int64_t)i * d0, x0 + (int64_t)order[i] * d0, (size_t)d0 * sizeof(float));
    m->x0 = xs;
    for (int d = 0; d <= D; d++)
        if (start[d + 1] > start[d]) mml__folded_tower(m, start[d], start[d + 1] - start[d], d);
    m->x0 = x0;
    float *zl = m->z[m->n_layers - 1], *tmp = m->dz;
    memcpy(tmp, zl, (size_t)n * dl * sizeof(float));
    for (int i = 0; i < n; i++) memcpy(zl + (int64_t)order[i] * dl, tmp + (int64_t)i * dl, (size_t)dl * sizeof(float));
}
