// >>layers -----------------------------------------------------------------

static double mml__parallel_train(mml_model_t *m, const mml_batch_t *b);
static void mml__folded_forward_tower(mml_model_t *m, int n);
static void mml__parallel_predict(mml_model_t *m, const mml_batch_t *b, float *prob);

/* ids -> table rows; anything outside the vocab maps to the reserved OOV row. */
static void mml__embed(mml_model_t *m, int n, const mml_batch_t *b) {
    const int32_t *src[3] = {b->uid, b->pid, b->dom};
    const int32_t vocab[3] = {m->cfg.n_users, m->cfg.n_items, m->cfg.n_domains};
    for (int f = 0; f < 3; f++) {
        int32_t *dst = m->ids[f];
        for (int i = 0; i < n; i++) {
            int32_t id = src[f][i];
            dst[i] = (id >= 0 && id < vocab[f]) ? id : vocab[f];
        }
        m->K->gather_rows(n, dst, mml__p(m, m->p_emb[f]), m->k, m->E + f * m->k, m->F * m->k);
    }
    if (m->has_linear)
        for (int i = 0; i < n; i++)
            for (int f = 0; f < 3; f++) m->ids_bf[i * 3 + f] = m->ids[f][i];
}

/* E: [n, F, k] -> x0: [n, d0], the tower input of the model (identity for most). */
static void mml__input_forward(mml_model_t *m, int n) {
    const mml_kernels_t *K = m->K;
    int F = m->F, k = m->k, D = F * k, Pk = m->n_pairs * k;
    switch (m->cfg.model) {
    case MML_MODEL_NFM: mml__bi_forward(n, F, k, m->E, m->x0, m->part_act[0]); break;
    case MML_MODEL_PNN:
        for (int i = 0; i < n; i++) memcpy(m->x0 + (int64_t)i * m->d0, m->E + (int64_t)i * D, (size_t)D * sizeof(float));
        mml__inner_forward(K, n, F, k, m->E, m->x0 + D, m->d0);
        break;
    case MML_MODEL_FIBINET:
        mml__senet_forward(K, n, F, k, m->se_r, m->E, mml__p(m, m->p_se1), mml__p(m, m->p_se2), m->se_out, m->part_act[0]);
        mml__bilinear_forward(K, n, F, k, m->se_out, mml__p(m, m->p_bil_se), m->x0, 2 * Pk, m->part_act[1]);
        mml__bilinear_forward(K, n, F, k, m->E, mml__p(m, m->p_bil), m->x0 + Pk, 2 * Pk, m->part_act[2]);
        break;
    default: break;
    }
}

/* dx0: [n, d0] -> dE: [n, F, k] += (dE is zeroed here unless it aliases dx0). */
static void mml__input_backward(mml_model_t *m, int n, int have_dx0) {
    const mml_kernels_t *K = m->K;
    int F = m->F, k = m->k, D = F * k, Pk = m->n_pairs * k;
    if (m->dE == m->dx0) {
        if (!have_dx0) memset(m->dE, 0, (size_t)n * D * sizeof(float));
        return;
    }
    memset(m->dE, 0, (size_t)n * D * sizeof(float));
    if (!have_dx0) return;
    switch (m->cfg.model) {
    case MML_MODEL_NFM: mml__bi_backward(n, F, k, m->E, m->part_act[0], m->dx0, m->dE); break;
    case MML_MODEL_PNN:
        for (int i = 0; i < n; i++) K->axpy(D, 1.0f, m->dx0 + (int64_t)i * m->d0, m->dE + (int64_t)i * D);
        mml__inner_backward(K, n, F, k, m->E, m->dx0 + D, m->d0, m->dE);
        break;
    case MML_MODEL_FIBINET:
        memset(m->dV, 0, (size_t)n * D * sizeof(float));
        mml__bilinear_backward(K, n, F, k, m->se_out, mml__p(m, m->p_bil_se), m->part_act[1], m->dx0, 2 * Pk, m->dV,
                               mml__g(m, m->p_bil_se), m->ws);
        mml__bilinear_backward(K, n, F, k, m->E, mml__p(m, m->p_bil), m->part_act[2], m->dx0 + Pk, 2 * Pk, m->dE,
                               mml__g(m, m->p_bil), m->ws);
        mml__senet_backward(K, n, F, k, m->se_r, m->E, mml__p(m, m->p_se1), mml__p(m, m->p_se2), m->part_act[0], m->dV,
                            m->dE, mml__g(m, m->p_se1), mml__g(m, m->p_se2), m->ws);
        break;
    default: break;
    }
}

/* Parts beside the tower: logit terms (linear, FM, CIN) into lin_out/fm_out/cin_out
 * and the extra final-dense inputs (cross network, attention) into m->extra. */
static void mml__side_forward(mml_model_t *m, int n) {
    const mml_kernels_t *K = m->K;
    int F = m->F, k = m->k, D = F * k, HA = MML__ATT_HEADS * MML__ATT_SIZE;
    if (m->has_linear) {
        const float *w[3] = {mml__p(m, m->p_lin[0]), mml__p(m, m->p_lin[1]), mml__p(m, m->p_lin[2])};
        mml__linear_forward(n, 3, m->ids_bf, w, NULL, m->lin_out);
    }
    switch (m->cfg.model) {
    case MML_MODEL_DEEPFM: mml__fm_forward(n, F, k, m->E, m->fm_out, m->part_act[0]); break;
    case MML_MODEL_DCN:
        mml__cross_forward(K, n, D, MML__CROSS_LAYERS, m->E, mml__p(m, m->p_cross_w), mml__p(m, m->p_cross_b), m->extra,
                           m->part_act[0]);
        break;
    case MML_MODEL_XDEEPFM:
        mml__cin_forward(K, n, F, k, MML__CIN_LAYERS, mml__cin_sizes, 1, m->E, mml__p(m, m->p_cin), m->cin_out,
                         m->part_act[0], m->ws);
        break;
    case MML_MODEL_AUTOINT: {
        const float *x = m->E;
        int din = k;
        for (int l = 0; l < MML__ATT_LAYERS; l++) {
            const int *pa = m->p_att[l];
            mml__autoint_forward(K, n, F, din, MML__ATT_HEADS, MML__ATT_SIZE, x, mml__p(m, pa[0]), mml__p(m, pa[1]),
                                 mml__p(m, pa[2]), mml__p(m, pa[3]), m->att_out[l], m->att_act[l], m->ws);
            x = m->att_out[l];
            din = HA;
        }
        break;
    }
    default: break;
    }
}

/* Backward of the side parts: dlogit -> their parameters and dE. */
static void mml__side_backward(mml_model_t *m, int n) {
    const mml_kernels_t *K = m->K;
    int F = m->F, k = m->k, D = F * k, HA = MML__ATT_HEADS * MML__ATT_SIZE;
    if (m->has_linear && m->trainable[MML__G_LINEAR]) {
        float *dw[3] = {mml__g(m, m->p_lin[0]), mml__g(m, m->p_lin[1]), mml__g(m, m->p_lin[2])};
        mml__linear_backward(n, 3, m->ids_bf, m->dlogit, dw, NULL);
    }
    if (!m->trainable[MML__G_EXTRA] && !m->trainable[MML__G_EMB]) return;
    switch (m->cfg.model) {
    case MML_MODEL_DEEPFM: mml__fm_backward(n, F, k, m->E, m->part_act[0], m->dlogit, m->dE); break;
    case MML_MODEL_DCN:
        mml__cross_backward(K, n, D, MML__CROSS_LAYERS, m->E, mml__p(m, m->p_cross_w), m->part_act[0], m->dextra, m->dE,
                            mml__g(m, m->p_cross_w), mml__g(m, m->p_cross_b), m->ws);
        break;
    case MML_MODEL_XDEEPFM:
        mml__cin_backward(K, n, F, k, MML__CIN_LAYERS, mml__cin_sizes, 1, mml__p(m, m->p_cin), m->part_act[0], m->dlogit,
                          m->dE, mml__g(m, m->p_cin), m->ws);
        break;
    case MML_MODEL_AUTOINT: {
        const float *dout = m->dextra;
        for (int l = MML__ATT_LAYERS - 1; l >= 0; l--) {
            const int *pa = m->p_att[l];
            const float *x = l ? m->att_out[l - 1] : m->E;
            float *dxl = l ? m->datt[(l - 1) & 1] : m->dE;
            if (l) memset(dxl, 0, (size_t)n * F * HA * sizeof(float));
            mml__autoint_backward(K, n, F, l ? HA : k, MML__ATT_HEADS, MML__ATT_SIZE, x, mml__p(m, pa[0]),
                                  mml__p(m, pa[1]), mml__p(m, pa[2]), mml__p(m, pa[3]), m->att_out[l], m->att_act[l],
                                  dout, dxl, mml__g(m, pa[0]), mml__g(m, pa[1]), mml__g(m, pa[2]), mml__g(m, pa[3]),
                                  m->ws);
            dout = dxl;
        }
        break;
    }
    default: break;
    }
}

/* Which adapters this pass uses: none, one (MLoRA's batch domain, or the
 * expert being trained), or all experts mixed by per-row weights in gw. */
static void mml__choose_adapter(mml_model_t *m, int n) {
    int E = m->n_experts;
    const int32_t *dom = m->ids[2];
    m->ad_mode = MML__AD_OFF;
    if (!E) return;
    if (m->cfg.adapter == MML_ADAPTER_MLORA) {
        int same = !m->force_mix;
        for (int i = 1; i < n && same; i++) same = dom[i] == dom[0];
        if (same) {
            if (dom[0] < m->cfg.n_domains) { m->ad_mode = MML__AD_SINGLE; m->ad_expert = dom[0]; }
            return;
        }
        /* mixed batch: one-hot weights select each row's own domain adapter */
        memset(m->gw, 0, (size_t)n * E * sizeof(float));
        for (int i = 0; i < n; i++)
            if (dom[i] < m->cfg.n_domains) m->gw[(int64_t)i * E + dom[i]] = 1.0f;
        m->ad_mode = MML__AD_MIX;
        return;
    }
    if (m->phase == MML_PHASE_BACKBONE) return;
    if (m->phase == MML_PHASE_EXPERT) { m->ad_mode = MML__AD_SINGLE; m->ad_expert = m->expert; return; }
    m->ad_mode = MML__AD_MIX;
}

/* gin: [n, gdim] (domain-gate embeddings or x0)  G: [gdim, E]  -> gw = softmax(gin G + b): [n, E] */
static void mml__gate_forward(mml_model_t *m, int n) {
    const mml_kernels_t *K = m->K;
    int E = m->n_experts, gd;
    const float *gin;
    if (m->cfg.gate == MML_GATE_DOMAIN) {
        gd = m->cfg.gate_dim;
        K->gather_rows(n, m->ids[2], mml__p(m, m->p_gate_emb), gd, m->gin, gd);
        gin = m->gin;
    } else {
        gd = m->d0;
        gin = m->x0;
    }
    float *lg = m->dw; /* scratch: dw is rebuilt in backward */
    K->gemm_nn(n, E, gd, gin, gd, mml__p(m, m->p_gate_W), E, lg, E, 0);
    K->add_bias(n, E, mml__p(m, m->p_gate_b), lg, E);
    K->softmax_rows(n, E, lg, E, m->gw, E);
}

static uint64_t mml__dropout_seed(const mml_model_t *m, int layer) {
    uint64_t s = m->cfg.seed * 0x9E3779B97F4A7C15ull + m->steps * 0x100000001B3ull + (uint64_t)layer;
    return mml__rng_next(&s);
}

/* x: [n, d_in]  W: [d_in, d_out]  A: [d_in, E*r]  B: [E*r, d_out]  C: [E, d_out]
 * -> z = relu(dropout(x W + b) + adapter(x)): [n, d_out]; T = x A_active, U = T * w */
static void mml__layer_forward(mml_model_t *m, int l, int n, const float *x, int train) {
    const mml_kernels_t *K = m->K;
    const mml__layer *L = &m->layer[l];
    int di = L->d_in, dout = L->d_out, r = L->r, E = m->n_experts, Er = E * r;
    float *z = m->z[l];
    K->gemm_nn(n, dout, di, x, di, mml__p(m, L->W), dout, z, dout, 0);
    K->add_bias(n, dout, mml__p(m, L->b), z, dout);
    if (train && m->cfg.dropout > 0.0f)
        K->dropout((int64_t)n * dout, z, z, m->cfg.dropout, mml__dropout_seed(m, l), (uint64_t)m->row0 * dout);
    if (m->ad_mode == MML__AD_SINGLE) {
        int e = m->ad_expert;
        K->gemm_nn(n, r, di, x, di, mml__p(m, L->A) + (int64_t)e * r, Er, m->T[l], r, 0);
        K->gemm_nn(n, dout, r, m->T[l], r, mml__p(m, L->B) + (int64_t)e * r * dout, dout, z, dout, 1);
        K->add_bias(n, dout, mml__p(m, L->C) + (int64_t)e * dout, z, dout);
    } else if (m->ad_mode == MML__AD_MIX) {
        K->gemm_nn(n, Er, di, x, di, mml__p(m, L->A), Er, m->T[l], Er, 0);
        K->block_scale(n, E, r, m->T[l], Er, m->gw, E, m->U[l], Er);
        K->gemm_nn(n, dout, Er, m->U[l], Er, mml__p(m, L->B), dout, z, dout, 1);
        K->gemm_nn(n, dout, E, m->gw, E, mml__p(m, L->C), dout, z, dout, 1);
    }
    K->relu_fwd((int64_t)n * dout, z, z);
}

/* Full forward: logits and probabilities for n rows. */
static void mml__forward(mml_model_t *m, int n, const mml_batch_t *b, int train) {
    const mml_kernels_t *K = m->K;
    mml__embed(m, n, b);
    mml__input_forward(m, n);
    if (!train && m->fold_ok) {
        mml__folded_forward_tower(m, n);
    } else {
        mml__choose_adapter(m, n);
        if (m->ad_mode == MML__AD_MIX && m->cfg.adapter == MML_ADAPTER_MOE) mml__gate_forward(m, n);
        const float *x = m->x0;
        for (int l = 0; l < m->n_layers; l++) {
            mml__layer_forward(m, l, n, x, train);
            x = m->z[l];
        }
    }
    const float *x = m->z[m->n_layers - 1];
    mml__side_forward(m, n);
    int dl = m->layer[m->n_layers - 1].d_out;
    const float *w = mml__p(m, m->p_out), bias = *mml__p(m, m->p_out_b);
    K->gemm_nn(n, 1, dl, x, dl, w, 1, m->logit, 1, 0);
    if (m->de) K->gemm_nn(n, 1, m->de, m->extra, m->de, w + dl, 1, m->logit, 1, 1);
    for (int i = 0; i < n; i++) {
        float z = m->logit[i] + bias;
        if (m->has_linear) z += m->lin_out[i];
        if (m->cfg.model == MML_MODEL_DEEPFM) z += m->fm_out[i];
        if (m->cfg.model == MML_MODEL_XDEEPFM) z += m->cin_out[i];
        m->logit[i] = z;
    }
    K->sigmoid(n, m->logit, m->prob);
}

/* Does anything below layer l need the gradient of its input? */
static int mml__need_dx(const mml_model_t *m, int l) {
    if (l > 0)
        return m->trainable[MML__G_TOWER] || (m->trainable[MML__G_EXPERT] && m->ad_mode != MML__AD_OFF) ||
               (m->trainable[MML__G_GATE] && m->ad_mode == MML__AD_MIX);
    int emb = m->trainable[MML__G_EMB] || (m->cfg.model == MML_MODEL_FIBINET && m->trainable[MML__G_EXTRA]);
    int gate_in = m->cfg.gate == MML_GATE_INPUT && m->trainable[MML__G_GATE] && m->ad_mode == MML__AD_MIX &&
                  m->cfg.adapter == MML_ADAPTER_MOE;
    return emb || gate_in;
}

/* dz: [n, d_out] gradient at the adapter's output (before dropout of the base part)
 * -> adapter parameter gradients, dw (mixture weights) and, if dx, dx = dz-part: [n, d_in].
 * Returns 1 if it wrote dx. */
static int mml__adapter_backward(mml_model_t *m, int l, int n, const float *x, const float *dz, float *dx,
                                 int need_dx) {
    const mml_kernels_t *K = m->K;
    const mml__layer *L = &m->layer[l];
    int di = L->d_in, dout = L->d_out, r = L->r, E = m->n_experts, Er = E * r;
    int gx = m->trainable[MML__G_EXPERT];
    if (m->ad_mode == MML__AD_SINGLE) {
        if (!gx && !need_dx) return 0;
        int e = m->ad_expert;
        const float *Ae = mml__p(m, L->A) + (int64_t)e * r;
        const float *Be = mml__p(m, L->B) + (int64_t)e * r * dout;
        K->gemm_nt(n, r, dout, dz, dout, Be, dout, m->dT, r, 0);
        if (gx) {
            K->gemm_tn(r, dout, n, m->T[l], r, dz, dout, mml__g(m, L->B) + (int64_t)e * r * dout, dout, 1);
            K->colsum_add(n, dout, dz, dout, mml__g(m, L->C) + (int64_t)e * dout);
            K->gemm_tn(di, r, n, x, di, m->dT, r, mml__g(m, L->A) + (int64_t)e * r, Er, 1);
        }
        if (need_dx) K->gemm_nt(n, di, r, m->dT, r, Ae, Er, dx, di, 0);
        return need_dx;
    }
    if (m->ad_mode != MML__AD_MIX) return 0;
    int gg = m->trainable[MML__G_GATE] && m->cfg.adapter == MML_ADAPTER_MOE;
    if (!gx && !need_dx && !gg) return 0;
    K->gemm_nt(n, Er, dout, dz, dout, mml__p(m, L->B), dout, m->dU, Er, 0);
    if (gg) {
        K->gemm_nt(n, E, dout, dz, dout, mml__p(m, L->C), dout, m->dw, E, 1);
        K->block_dot(n, E, r, m->dU, Er, m->T[l], Er, m->dw, E, 1);
    }
    if (gx) {
        K->gemm_tn(Er, dout, n, m->U[l], Er, dz, dout, mml__g(m, L->B), dout, 1);
        K->gemm_tn(E, dout, n, m->gw, E, dz, dout, mml__g(m, L->C), dout, 1);
    }
    if (!gx && !need_dx) return 0;
    K->block_scale(n, E, r, m->dU, Er, m->gw, E, m->dT, Er);
    if (gx) K->gemm_tn(di, Er, n, x, di, m->dT, Er, mml__g(m, L->A), Er, 1);
    if (need_dx) K->gemm_nt(n, di, Er, m->dT, Er, mml__p(m, L->A), Er, dx, di, 0);
    return need_dx;
}

/* Softmax backward into the gate's parameters (and x0 for the input gate). */
static void mml__gate_backward(mml_model_t *m, int n) {
    const mml_kernels_t *K = m->K;
    int E = m->n_experts;
    float *dw = m->dw;
    for (int i = 0; i < n; i++) {
        const float *w = m->gw + (int64_t)i * E;
        float *d = dw + (int64_t)i * E;
        float s = K->dot(E, w, d);
        for (int e = 0; e < E; e++) d[e] = w[e] * (d[e] - s);
    }
    int gd = m->cfg.gate == MML_GATE_DOMAIN ? m->cfg.gate_dim : m->d0;
    const float *gin = m->cfg.gate == MML_GATE_DOMAIN ? m->gin : m->x0;
    K->gemm_tn(gd, E, n, gin, gd, dw, E, mml__g(m, m->p_gate_W), E, 1);
    K->colsum_add(n, E, dw, E, mml__g(m, m->p_gate_b));
    if (m->cfg.gate == MML_GATE_DOMAIN) {
        float *dg = m->dU; /* scratch [n, gate_dim] */
        K->gemm_nt(n, gd, E, dw, E, mml__p(m, m->p_gate_W), E, dg, gd, 0);
        K->scatter_add_rows(n, m->ids[2], dg, gd, gd, mml__g(m, m->p_gate_emb));
    } else {
        K->gemm_nt(n, m->d0, E, dw, E, mml__p(m, m->p_gate_W), E, m->dx0, m->d0, 1);
    }
}

static void mml__embed_backward(mml_model_t *m, int n) {
    for (int f = 0; f < 3; f++) {
        int pi = m->p_emb[f];
        if (!mml__param_trainable(m, pi)) continue;
        m->K->scatter_add_rows(n, m->ids[f], m->dE + f * m->k, m->F * m->k, m->k, mml__g(m, pi));
        for (int i = 0; i < n; i++) {
            int32_t id = m->ids[f][i];
            if (!m->mark[f][id]) { m->mark[f][id] = 1; m->touched[f][m->n_touched[f]++] = id; }
        }
    }
}

/* Mean BCE over n rows; gradients accumulate into m->G. Needs a forward(train). */
/* Gradients of scale * (summed BCE of these n rows); returns the summed BCE. */
static double mml__backward_scaled(mml_model_t *m, int n, const float *label, float scale) {
    const mml_kernels_t *K = m->K;
    double loss = K->bce_logits(n, m->logit, label, scale, m->dlogit);
    int nl = m->n_layers, dl = m->layer[nl - 1].d_out;
    if (m->trainable[MML__G_OUT]) {
        K->gemm_tn(dl, 1, n, m->z[nl - 1], dl, m->dlogit, 1, mml__g(m, m->p_out), 1, 1);
        if (m->de) K->gemm_tn(m->de, 1, n, m->extra, m->de, m->dlogit, 1, mml__g(m, m->p_out) + dl, 1, 1);
        float s = 0.0f;
        for (int i = 0; i < n; i++) s += m->dlogit[i];
        *mml__g(m, m->p_out_b) += s;
    }
    if (m->de && (m->trainable[MML__G_EXTRA] || m->trainable[MML__G_EMB]))
        K->gemm_nn(n, m->de, 1, m->dlogit, 1, mml__p(m, m->p_out) + dl, m->de, m->dextra, m->de, 0);
    int mix_gate = m->ad_mode == MML__AD_MIX && m->cfg.adapter == MML_ADAPTER_MOE && m->trainable[MML__G_GATE];
    if (mix_gate) memset(m->dw, 0, (size_t)n * m->n_experts * sizeof(float));
    float *dz = m->dz, *dx = m->dx;
    K->gemm_nn(n, dl, 1, m->dlogit, 1, mml__p(m, m->p_out), dl, dz, dl, 0);
    int have_dx0 = 0;
    for (int l = nl - 1; l >= 0; l--) {
        const mml__layer *L = &m->layer[l];
        const float *x = l ? m->z[l - 1] : m->x0;
        float *dxl = l ? dx : m->dx0;
        int need = mml__need_dx(m, l);
        K->relu_bwd((int64_t)n * L->d_out, m->z[l], dz, dz);
        int wrote = mml__adapter_backward(m, l, n, x, dz, dxl, need);
        if (m->cfg.dropout > 0.0f)
            K->dropout((int64_t)n * L->d_out, dz, dz, m->cfg.dropout, mml__dropout_seed(m, l),
                       (uint64_t)m->row0 * L->d_out);
        if (m->trainable[MML__G_TOWER]) {
            K->gemm_tn(L->d_in, L->d_out, n, x, L->d_in, dz, L->d_out, mml__g(m, L->W), L->d_out, 1);
            K->colsum_add(n, L->d_out, dz, L->d_out, mml__g(m, L->b));
        }
        if (!need) break;
        K->gemm_nt(n, L->d_in, L->d_out, dz, L->d_out, mml__p(m, L->W), L->d_out, dxl, L->d_in, wrote);
        if (l == 0) have_dx0 = 1;
        float *t = dz; dz = dx; dx = t;
    }
    if (mix_gate) {
        if (!have_dx0) memset(m->dx0, 0, (size_t)n * m->d0 * sizeof(float));
        mml__gate_backward(m, n);
        have_dx0 = 1;
    }
    if (m->trainable[MML__G_EMB] || m->trainable[MML__G_EXTRA] || m->trainable[MML__G_LINEAR]) {
        mml__input_backward(m, n, have_dx0);
        mml__side_backward(m, n);
    }
    if (m->trainable[MML__G_EMB]) mml__embed_backward(m, n);
    return loss;
}

/* Mean BCE over n rows; gradients accumulate into m->G. Needs a forward(train). */
static double mml__backward(mml_model_t *m, int n, const float *label) {
    return mml__backward_scaled(m, n, label, 1.0f / (float)n);
}

// >>optimizer --------------------------------------------------------------

/* Adam's hyper-parameters at step t (bias corrections of that step). */
static void mml__adam_hp_at(const mml_model_t *m, int64_t t, mml_adam_hp *hp) {
    const mml_config_t *c = &m->cfg;
    hp->lr = c->lr;
    hp->beta1 = c->beta1;
    hp->beta2 = c->beta2;
    hp->eps = c->eps;
    hp->bc1 = (float)(1.0 - pow((double)c->beta1, (double)t));
    hp->bc2 = (float)(1.0 - pow((double)c->beta2, (double)t));
    hp->weight_decay = c->weight_decay;
}

/* Dense Adam (PyTorch semantics) moves every embedding row at every step,
 * even rows whose gradient is zero. Doing that for a whole table costs a pass
 * over it per step; instead a row records the last step it was updated at and
 * replays the zero-gradient steps it missed, with the same kernel and the same
 * per-step constants, just before anything reads it. The result is the same,
 * bit for bit, as updating every row every step. */
static int mml__deferred_rows(const mml_model_t *m, int f) {
    /* short rows: one streaming pass per step is cheaper than replays */
    return !m->cfg.lazy_adam && m->k >= m->defer_min_dim && mml__param_trainable(m, m->p_emb[f]);
}

static void mml__catch_up_row(mml_model_t *m, int f, int32_t row) {
    int64_t from = m->last[f][row];
    if (from >= m->adam_t) return;
    const mml__param *p = &m->params[m->p_emb[f]];
    int64_t d = p->shape[1], o = p->off + (int64_t)row * d;
    /* never moved since the optimizer started: zero moments, nothing to replay */
    int moved = 0;
    for (int64_t j = 0; j < d && !moved; j++) moved = m->M[o + j] != 0.0f || m->V[o + j] != 0.0f;
    if (moved || m->cfg.weight_decay != 0.0f) {
        mml_adam_hp hp;
        for (int64_t t = from + 1; t <= m->adam_t; t++) {
            mml__adam_hp_at(m, t, &hp);
            m->K->adam_dense(d, m->P + o, m->zero_row, m->M + o, m->V + o, &hp);
        }
    }
    m->last[f][row] = m->adam_t;
}

/* Before a step: the rows this batch reads are brought up to date. */
static void mml__catch_up_batch(mml_model_t *m, const mml_batch_t *b) {
    const int32_t *src[3] = {b->uid, b->pid, b->dom};
    for (int f = 0; f < 3; f++) {
        if (!mml__deferred_rows(m, f)) continue;
        for (int i = 0; i < b->n; i++) mml__catch_up_row(m, f, src[f][i]);
    }
}

/* Before anything reads whole tables (predict, evaluate, save, snapshots). */
static void mml__catch_up_all(mml_model_t *m) {
    if (m->synced_t == m->adam_t) return;
    m->synced_t = m->adam_t;
    for (int f = 0; f < 3; f++) {
        if (!mml__deferred_rows(m, f)) continue;
        int64_t rows = m->params[m->p_emb[f]].shape[0];
        for (int64_t r = 0; r < rows; r++) mml__catch_up_row(m, f, (int32_t)r);
    }
}

/* After parameters were replaced wholesale (restore, load): nothing to replay. */
static void mml__rows_current(mml_model_t *m) {
    m->synced_t = m->adam_t;
    for (int f = 0; f < 3; f++) {
        int64_t rows = m->params[m->p_emb[f]].shape[0];
        for (int64_t r = 0; r < rows; r++) m->last[f][r] = m->adam_t;
    }
}

static void mml__adam_param(mml_model_t *m, int i, const mml_adam_hp *hp) {
    const mml_kernels_t *K = m->K;
    mml__param *p = &m->params[i];
    float *P = m->P + p->off, *G = m->G + p->off, *M = m->M + p->off, *V = m->V + p->off;
    if (p->group == MML__G_EXPERT && m->ad_mode == MML__AD_SINGLE) {
        int64_t e = m->ad_expert;
        if (p->xlayout == MML__XL_COLS) {
            int64_t w = p->shape[1], r = p->xblock;
            for (int64_t row = 0; row < p->shape[0]; row++) {
                int64_t o = row * w + e * r;
                K->adam_dense(r, P + o, G + o, M + o, V + o, hp);
            }
        } else {
            int64_t o = e * p->xblock;
            K->adam_dense(p->xblock, P + o, G + o, M + o, V + o, hp);
        }
        return;
    }
    int f = i == m->p_emb[0] ? 0 : i == m->p_emb[1] ? 1 : i == m->p_emb[2] ? 2 : -1;
    if (f >= 0 && (m->cfg.lazy_adam || mml__deferred_rows(m, f))) {
        /* touched rows now; with dense semantics the others catch up when read */
        K->adam_rows(m->n_touched[f], m->touched[f], (int)p->shape[1], P, G, M, V, hp);
        if (!m->cfg.lazy_adam)
            for (int j = 0; j < m->n_touched[f]; j++) m->last[f][m->touched[f][j]] = m->adam_t;
        return;
    }
    K->adam_dense(p->size, P, G, M, V, hp);
}

static void mml__zero_grads(mml_model_t *m) {
    for (int i = 0; i < m->n_params; i++) {
        mml__param *p = &m->params[i];
        if (p->row_table && p->group == MML__G_EMB) continue;
        memset(m->G + p->off, 0, (size_t)p->size * sizeof(float));
    }
    for (int f = 0; f < 3; f++) {
        mml__param *p = &m->params[m->p_emb[f]];
        int64_t w = p->shape[1];
        for (int j = 0; j < m->n_touched[f]; j++) {
            int32_t id = m->touched[f][j];
            memset(m->G + p->off + (int64_t)id * w, 0, (size_t)w * sizeof(float));
            m->mark[f][id] = 0;
        }
        m->n_touched[f] = 0;
    }
}

static void mml__optimizer_step(mml_model_t *m) {
    const mml_config_t *c = &m->cfg;
    m->adam_t++;
    mml_adam_hp hp;
    mml__adam_hp_at(m, m->adam_t, &hp);
    for (int i = 0; i < m->n_params; i++) {
        if (!mml__param_trainable(m, i)) continue;
        if (m->params[i].group == MML__G_EXPERT && m->ad_mode == MML__AD_OFF) continue;
        if (m->params[i].group == MML__G_GATE && !(m->ad_mode == MML__AD_MIX && c->adapter == MML_ADAPTER_MOE)) continue;
        mml__adam_param(m, i, &hp);
    }
    mml__zero_grads(m);
}

static mml_status mml__check_batch(const mml_model_t *m, const mml_batch_t *b, int need_label) {
    if (!b || b->n < 1 || !b->uid || !b->pid || !b->dom || (need_label && !b->label))
        return mml__fail(MML_ERR_ARG, "batch: empty or missing arrays");
    if (need_label) {
        if (b->n > m->cfg.max_batch)
            return mml__fail(MML_ERR_ARG, "batch: %d rows exceed max_batch %d", b->n, m->cfg.max_batch);
        for (int i = 0; i < b->n; i++) {
            if (b->uid[i] < 0 || b->uid[i] >= m->cfg.n_users || b->pid[i] < 0 || b->pid[i] >= m->cfg.n_items ||
                b->dom[i] < 0 || b->dom[i] >= m->cfg.n_domains)
                return mml__fail(MML_ERR_ARG, "batch row %d: id out of range (uid %d, pid %d, domain %d)", i,
                                 b->uid[i], b->pid[i], b->dom[i]);
            if (b->label[i] != 0.0f && b->label[i] != 1.0f)
                return mml__fail(MML_ERR_ARG, "batch row %d: label %g is not 0 or 1", i, (double)b->label[i]);
        }
    }
    return MML_OK;
}

mml_status mml_train_step(mml_model_t *m, const mml_batch_t *b, float *loss) {
    mml_status st = mml__check_batch(m, b, 1);
    if (st) return st;
    double l;
    m->fold_ok = 0;
    mml__catch_up_batch(m, b);
    if (m->pool && b->n >= 2 * m->cfg.threads) {
        l = mml__parallel_train(m, b);
    } else {
        mml__forward(m, b->n, b, 1);
        l = mml__backward(m, b->n, b->label);
    }
    mml__optimizer_step(m);
    m->steps++;
    if (loss) *loss = (float)(l / b->n);
    return MML_OK;
}

mml_status mml_predict(mml_model_t *m, const mml_batch_t *b, float *prob) {
    mml_status st = mml__check_batch(m, b, 0);
    if (st) return st;
    mml__catch_up_all(m);
    for (int s = 0; s < b->n; s += m->cfg.max_batch) {
        int n = b->n - s < m->cfg.max_batch ? b->n - s : m->cfg.max_batch;
        mml_batch_t c = {n, b->uid + s, b->pid + s, b->dom + s, NULL};
        if (m->pool && n >= 64 * m->cfg.threads) {
            mml__parallel_predict(m, &c, prob + s);
            continue;
        }
        mml__forward(m, n, &c, 0);
        memcpy(prob + s, m->prob, (size_t)n * sizeof(float));
    }
    return MML_OK;
}
