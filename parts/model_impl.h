// >>model ------------------------------------------------------------------

static const char *const mml__model_names[MML_MODEL_COUNT] = {
    "mlp", "wdl", "deepfm", "nfm", "pnn", "dcn", "xdeepfm", "autoint", "fibinet"};
static const char *const mml__adapter_names[3] = {"none", "mlora", "moe"};

const char *mml_model_kind_name(mml_model_kind k) {
    return (unsigned)k < MML_MODEL_COUNT ? mml__model_names[k] : "?";
}
int mml_model_kind_from_name(const char *s, mml_model_kind *out) {
    for (int i = 0; i < MML_MODEL_COUNT; i++)
        if (strcmp(s, mml__model_names[i]) == 0) { *out = (mml_model_kind)i; return 0; }
    return -1;
}
const char *mml_adapter_name(mml_adapter a) { return (unsigned)a < 3 ? mml__adapter_names[a] : "?"; }
int mml_adapter_from_name(const char *s, mml_adapter *out) {
    for (int i = 0; i < 3; i++)
        if (strcmp(s, mml__adapter_names[i]) == 0) { *out = (mml_adapter)i; return 0; }
    if (strcmp(s, "base") == 0) { *out = MML_ADAPTER_NONE; return 0; }
    return -1;
}

void mml_config_default(mml_config_t *c) {
    memset(c, 0, sizeof *c);
    c->model = MML_MODEL_MLP;
    c->adapter = MML_ADAPTER_MOE;
    c->gate = MML_GATE_DOMAIN;
    c->emb_dim = 8;
    c->n_hidden = 3;
    c->hidden[0] = 256; c->hidden[1] = 128; c->hidden[2] = 64;
    c->lora_reduce = 16;
    c->experts_per_domain = 1;
    c->gate_dim = 4;
    c->dropout = 0.5f;
    c->lr = 1e-3f; c->beta1 = 0.9f; c->beta2 = 0.999f; c->eps = 1e-7f;
    c->max_batch = 1024;
    c->threads = 1;
    c->seed = 123;
}

/* Parameter groups: freezing works on whole groups (experts also per expert). */
enum { MML__G_EMB, MML__G_LINEAR, MML__G_TOWER, MML__G_EXTRA, MML__G_OUT, MML__G_EXPERT,
       MML__G_GATE, MML__G_COUNT };

/* How an expert parameter stacks its experts: A [d_in, E*r] in column blocks,
 * B [E*r, d_out] in row blocks, C [E, d_out] in rows. */
enum { MML__XL_NONE, MML__XL_COLS, MML__XL_ROWS };

typedef struct mml__param {
    char name[48];
    int group;
    int ndim;
    int64_t shape[4];
    int64_t off, size;       /* floats, in every arena */
    int64_t fan_in, fan_out; /* Glorot init when > 0 */
    int row_table;           /* embedding-like: rows touched per batch */
    int xlayout;             /* MML__XL_*: expert stacking */
    int64_t xblock;          /* floats per expert block (ROWS) or columns (COLS) */
} mml__param;

typedef struct mml__layer {
    int d_in, d_out, r;
    int W, b, A, B, C;       /* parameter indices, -1 when absent */
} mml__layer;

/* Adapter use in one forward pass. */
enum { MML__AD_OFF, MML__AD_SINGLE, MML__AD_MIX };

#define MML__MAX_PARAMS 96
#define MML__ATT_LAYERS 3
#define MML__ATT_HEADS 2
#define MML__ATT_SIZE 8
#define MML__CROSS_LAYERS 2
#define MML__CIN_LAYERS 2
static const int mml__cin_sizes[MML__CIN_LAYERS] = {128, 128};

/* Where a running mml_fit is, so a checkpoint can resume it exactly. */
typedef struct mml__fit_state {
    int32_t active;          /* a fit is in progress */
    int32_t stage;           /* 0: first phase; 1..E: expert stage-1; E+1: gate */
    int32_t epoch;           /* epochs completed in this stage */
    int32_t bad;             /* epochs without improvement */
    double best;             /* best validation score of this stage */
    uint64_t rng;            /* epoch shuffle generator */
} mml__fit_state;

struct mml_model_t {
    mml_config_t cfg;
    const mml_kernels_t *K;
    mml_isa isa;
    int F, k, d0, n_experts, n_layers, max_r, max_d;
    mml__layer layer[MML_MAX_HIDDEN];
    int p_emb[3], p_gate_emb, p_gate_W, p_gate_b, p_out, p_out_b;
    /* model-specific parts (-1 when absent) */
    int has_linear, p_lin[3];
    int p_cross_w, p_cross_b;          /* DCN */
    int p_cin;                         /* xDeepFM, packed */
    int p_att[MML__ATT_LAYERS][4];     /* AutoInt: Wq, Wk, Wv, Wres per layer */
    int p_se1, p_se2, p_bil_se, p_bil; /* FiBiNET */
    int n_pairs, se_r, de;             /* pairs, SENET width, extra final inputs */
    mml__param params[MML__MAX_PARAMS];
    int n_params;
    int64_t n_floats;
    float *P, *G, *M, *V, *best;
    /* training state */
    mml_phase phase;
    int expert;
    int trainable[MML__G_COUNT];
    int64_t adam_t;
    uint64_t steps;
    mml__fit_state fs;
    /* per-pass state */
    int ad_mode, ad_expert;
    int row0;                /* first batch row of this pass (dropout masks) */
    int force_mix;           /* MLoRA: treat the rows as a mixed-domain batch */
    struct mml__pool *pool;  /* worker threads (threads > 1) */
    float *fold;             /* folded per-domain inference weights (mml_model_fold) */
    int fold_ok;             /* fold matches the parameters */
    struct mml_model_t *views; /* per-worker views: own activations and gradients */
    /* activations, sized for max_batch rows */
    int32_t *ids[3];
    float *E, *dE;                     /* field embeddings [B, F*k] (may alias x0) */
    float *x0, *z[MML_MAX_HIDDEN], *T[MML_MAX_HIDDEN], *U[MML_MAX_HIDDEN];
    int32_t *ids_bf;                   /* [B, F] interleaved, for the linear part */
    int32_t *ids_perm, *dom_count;     /* grouping rows by domain (folded inference) */
    float *lin_out, *fm_out, *cin_out, *part_act[4], *att_out[MML__ATT_LAYERS], *datt[2];
    float *att_act[MML__ATT_LAYERS], *se_out, *dV, *extra, *dextra, *ws;
    float *gw, *gin, *logit, *prob;
    float *dz, *dx, *dT, *dU, *dw, *dx0, *dlogit;
    int32_t *touched[3];
    int n_touched[3];
    int64_t *last[3];        /* step each embedding row was last updated at */
    int64_t synced_t;        /* every row is up to date at this step */
    int defer_min_dim;       /* deferred dense Adam from this row width on (32) */
    float *zero_row;         /* a zero gradient row, emb_dim floats */
    uint8_t *mark[3];
    void *act_block;
};

static float *mml__p(const mml_model_t *m, int i) { return m->P + m->params[i].off; }
static float *mml__g(const mml_model_t *m, int i) { return m->G + m->params[i].off; }

static int mml__add_param(mml_model_t *m, const char *name, int group, int ndim, int64_t d0,
                          int64_t d1) {
    mml__param *p = &m->params[m->n_params];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->group = group;
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim > 1 ? d1 : 1;
    p->size = d0 * p->shape[1];
    p->off = m->n_floats;
    m->n_floats += (p->size + 15) & ~(int64_t)15; /* 64-byte aligned tensors */
    return m->n_params++;
}

/* Rank of the adapter on a layer with d_out units. */
static int mml__rank(const mml_config_t *c, int d_out) {
    if (c->lora_r > 0) return c->lora_r;
    int r = d_out / (c->lora_reduce > 0 ? c->lora_reduce : 1);
    return r < 1 ? 1 : r;
}

static mml_status mml__check_config(const mml_config_t *c) {
    if (c->n_users <= 0 || c->n_items <= 0 || c->n_domains <= 0)
        return mml__fail(MML_ERR_ARG, "config: vocab sizes must be positive (users %d, items %d, domains %d)",
                         c->n_users, c->n_items, c->n_domains);
    if (c->n_users > (1 << 30) || c->n_items > (1 << 30) || c->n_domains > 4096)
        return mml__fail(MML_ERR_ARG, "config: vocab size too large");
    if (c->emb_dim < 1 || c->emb_dim > 1024)
        return mml__fail(MML_ERR_ARG, "config: emb_dim %d outside 1..1024", c->emb_dim);
    if (c->n_hidden < 1 || c->n_hidden > MML_MAX_HIDDEN)
        return mml__fail(MML_ERR_ARG, "config: n_hidden %d outside 1..%d", c->n_hidden, MML_MAX_HIDDEN);
    for (int i = 0; i < c->n_hidden; i++)
        if (c->hidden[i] < 1 || c->hidden[i] > 8192)
            return mml__fail(MML_ERR_ARG, "config: hidden[%d] = %d outside 1..8192", i, c->hidden[i]);
    if ((unsigned)c->model >= MML_MODEL_COUNT) return mml__fail(MML_ERR_ARG, "config: unknown model %d", (int)c->model);
    if ((unsigned)c->adapter > MML_ADAPTER_MOE) return mml__fail(MML_ERR_ARG, "config: unknown adapter %d", (int)c->adapter);
    if ((unsigned)c->gate > MML_GATE_INPUT) return mml__fail(MML_ERR_ARG, "config: unknown gate %d", (int)c->gate);
    if (c->experts_per_domain < 1 || (int64_t)c->experts_per_domain * c->n_domains > 256)
        return mml__fail(MML_ERR_ARG, "config: experts (%d per domain x %d domains) must be 1..256",
                         c->experts_per_domain, c->n_domains);
    if (c->lora_r < 0 || c->lora_r > 1024 || c->lora_reduce < 0)
        return mml__fail(MML_ERR_ARG, "config: bad lora_r %d / lora_reduce %d", c->lora_r, c->lora_reduce);
    if (c->gate_dim < 1 || c->gate_dim > 256) return mml__fail(MML_ERR_ARG, "config: gate_dim %d outside 1..256", c->gate_dim);
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f)) return mml__fail(MML_ERR_ARG, "config: dropout must be in [0,1)");
    if (!(c->lr > 0.0f) || !(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1) || !(c->eps > 0))
        return mml__fail(MML_ERR_ARG, "config: bad Adam hyper-parameters");
    if (c->max_batch < 1 || c->max_batch > (1 << 20)) return mml__fail(MML_ERR_ARG, "config: max_batch %d outside 1..2^20", c->max_batch);
    if (c->threads < 1 || c->threads > 256) return mml__fail(MML_ERR_ARG, "config: threads %d outside 1..256", c->threads);
    return MML_OK;
}

/* Glorot uniform: the Keras default for dense kernels. */
static void mml__init_glorot(float *w, int64_t n, int64_t fan_in, int64_t fan_out, uint64_t *rng) {
    double lim = sqrt(6.0 / (double)(fan_in + fan_out));
    for (int64_t i = 0; i < n; i++) w[i] = (float)((2.0 * mml__rng_uniform(rng) - 1.0) * lim);
}

static int mml__add_glorot(mml_model_t *m, const char *name, int group, int64_t d0, int64_t d1,
                           int64_t fan_in, int64_t fan_out) {
    int i = mml__add_param(m, name, group, 2, d0, d1);
    m->params[i].fan_in = fan_in;
    m->params[i].fan_out = fan_out;
    return i;
}

/* Tower input width and the model-specific parameters around the tower. */
static void mml__layout_parts(mml_model_t *m) {
    const mml_config_t *c = &m->cfg;
    int F = m->F, k = m->k, D = F * k;
    mml_model_kind mk = c->model;
    m->n_pairs = F * (F - 1) / 2;
    m->p_cross_w = m->p_cross_b = m->p_cin = m->p_se1 = m->p_se2 = m->p_bil_se = m->p_bil = -1;
    for (int l = 0; l < MML__ATT_LAYERS; l++)
        for (int j = 0; j < 4; j++) m->p_att[l][j] = -1;
    m->de = 0;
    m->d0 = mk == MML_MODEL_NFM ? k : mk == MML_MODEL_PNN ? D + m->n_pairs : mk == MML_MODEL_FIBINET ? 2 * m->n_pairs * k : D;
    m->has_linear = mk != MML_MODEL_MLP && mk != MML_MODEL_PNN;
    static const char *const ln[3] = {"linear.user", "linear.item", "linear.domain"};
    const int32_t vocab[3] = {c->n_users, c->n_items, c->n_domains};
    for (int f = 0; f < 3; f++) {
        m->p_lin[f] = -1;
        if (!m->has_linear) continue;
        m->p_lin[f] = mml__add_param(m, ln[f], MML__G_LINEAR, 2, vocab[f] + 1, 1);
        m->params[m->p_lin[f]].row_table = 1;
    }
    if (mk == MML_MODEL_DCN) {
        m->p_cross_w = mml__add_glorot(m, "cross.w", MML__G_EXTRA, MML__CROSS_LAYERS, D, D, 1);
        m->p_cross_b = mml__add_param(m, "cross.b", MML__G_EXTRA, 2, MML__CROSS_LAYERS, D);
        m->de = D;
    } else if (mk == MML_MODEL_XDEEPFM) {
        m->p_cin = mml__add_param(m, "cin.params", MML__G_EXTRA, 1,
                                  (int64_t)mml__cin_param_floats(F, MML__CIN_LAYERS, mml__cin_sizes, 1), 1);
    } else if (mk == MML_MODEL_AUTOINT) {
        static const char *const an[4] = {"Wq", "Wk", "Wv", "Wres"};
        int HA = MML__ATT_HEADS * MML__ATT_SIZE, din = k;
        for (int l = 0; l < MML__ATT_LAYERS; l++) {
            for (int j = 0; j < 4; j++) {
                char nm[48];
                snprintf(nm, sizeof nm, "att.%d.%s", l, an[j]);
                m->p_att[l][j] = mml__add_glorot(m, nm, MML__G_EXTRA, din, HA, din, HA);
            }
            din = HA;
        }
        m->de = F * HA;
    } else if (mk == MML_MODEL_FIBINET) {
        m->se_r = mml__senet_r(F, 3);
        m->p_se1 = mml__add_glorot(m, "senet.W1", MML__G_EXTRA, F, m->se_r, F, m->se_r);
        m->p_se2 = mml__add_glorot(m, "senet.W2", MML__G_EXTRA, m->se_r, F, m->se_r, F);
        m->p_bil_se = mml__add_glorot(m, "bilinear.senet", MML__G_EXTRA, (int64_t)m->n_pairs * k, k, k, k);
        m->p_bil = mml__add_glorot(m, "bilinear.plain", MML__G_EXTRA, (int64_t)m->n_pairs * k, k, k, k);
    }
}

static void mml__build_layout(mml_model_t *m) {
    const mml_config_t *c = &m->cfg;
    int vocab[3] = {c->n_users, c->n_items, c->n_domains};
    static const char *const en[3] = {"emb.user", "emb.item", "emb.domain"};
    m->F = 3;
    m->k = c->emb_dim;
    for (int f = 0; f < 3; f++) {
        /* one extra row: the out-of-vocabulary id */
        m->p_emb[f] = mml__add_param(m, en[f], MML__G_EMB, 2, vocab[f] + 1, m->k);
        m->params[m->p_emb[f]].row_table = 1;
    }
    mml__layout_parts(m);
    m->n_experts = c->adapter == MML_ADAPTER_MLORA ? c->n_domains
                 : c->adapter == MML_ADAPTER_MOE ? c->n_domains * c->experts_per_domain : 0;
    int E = m->n_experts, d_in = m->d0;
    m->n_layers = c->n_hidden;
    m->max_r = 1;
    m->max_d = m->d0;
    for (int l = 0; l < c->n_hidden; l++) {
        mml__layer *L = &m->layer[l];
        char nm[48];
        L->d_in = d_in;
        L->d_out = c->hidden[l];
        L->r = E ? mml__rank(c, L->d_out) : 0;
        snprintf(nm, sizeof nm, "tower.%d.W", l);
        L->W = mml__add_glorot(m, nm, MML__G_TOWER, d_in, L->d_out, d_in, L->d_out);
        snprintf(nm, sizeof nm, "tower.%d.b", l);
        L->b = mml__add_param(m, nm, MML__G_TOWER, 1, L->d_out, 1);
        L->A = L->B = L->C = -1;
        if (E) {
            snprintf(nm, sizeof nm, "tower.%d.lora_A", l);
            L->A = mml__add_glorot(m, nm, MML__G_EXPERT, d_in, (int64_t)E * L->r, d_in, L->r);
            m->params[L->A].xlayout = MML__XL_COLS;
            m->params[L->A].xblock = L->r;
            snprintf(nm, sizeof nm, "tower.%d.lora_B", l);
            L->B = mml__add_param(m, nm, MML__G_EXPERT, 2, (int64_t)E * L->r, L->d_out);
            m->params[L->B].xlayout = MML__XL_ROWS;
            m->params[L->B].xblock = (int64_t)L->r * L->d_out;
            snprintf(nm, sizeof nm, "tower.%d.lora_c", l);
            L->C = mml__add_param(m, nm, MML__G_EXPERT, 2, E, L->d_out);
            m->params[L->C].xlayout = MML__XL_ROWS;
            m->params[L->C].xblock = L->d_out;
            if (E * L->r > m->max_r) m->max_r = E * L->r;
        }
        if (L->d_out > m->max_d) m->max_d = L->d_out;
        d_in = L->d_out;
    }
    m->p_gate_emb = m->p_gate_W = m->p_gate_b = -1;
    if (c->adapter == MML_ADAPTER_MOE) {
        int gin = c->gate == MML_GATE_DOMAIN ? c->gate_dim : m->d0;
        if (c->gate == MML_GATE_DOMAIN) {
            m->p_gate_emb = mml__add_param(m, "gate.emb", MML__G_GATE, 2, c->n_domains + 1, c->gate_dim);
            m->params[m->p_gate_emb].row_table = 1;
        }
        m->p_gate_W = mml__add_glorot(m, "gate.W", MML__G_GATE, gin, E, gin, E);
        m->p_gate_b = mml__add_param(m, "gate.b", MML__G_GATE, 1, E, 1);
    }
    m->p_out = mml__add_glorot(m, "out.W", MML__G_OUT, d_in + m->de, 1, d_in + m->de, 1);
    m->p_out_b = mml__add_param(m, "out.b", MML__G_OUT, 1, 1, 1);
}

static void mml__init_params(mml_model_t *m) {
    uint64_t rng = m->cfg.seed ^ 0x6D6F656D6C6F7261ull;
    for (int i = 0; i < m->n_params; i++) {
        mml__param *p = &m->params[i];
        float *w = m->P + p->off;
        if (p->row_table && p->group != MML__G_GATE) {
            /* DeepCTR's embedding init: N(0, 1e-4); the OOV row stays zero */
            for (int64_t j = 0; j < (p->shape[0] - 1) * p->shape[1]; j++) w[j] = 1e-4f * mml__rng_normal(&rng);
        } else if (p->row_table) {
            for (int64_t j = 0; j < (p->shape[0] - 1) * p->shape[1]; j++)
                w[j] = (float)(0.1 * mml__rng_uniform(&rng) - 0.05); /* Keras Embedding default */
        } else if (p->fan_in > 0) {
            mml__init_glorot(w, p->size, p->fan_in, p->fan_out, &rng);
        } else if (i == m->p_cin) {
            int F = m->F, L = MML__CIN_LAYERS, hp = F;
            const int *sz = mml__cin_sizes;
            for (int h = 0; h < L; h++) {
                size_t o = mml__cin_param_offset(F, L, sz, 1, h);
                mml__init_glorot(w + o, (int64_t)sz[h] * hp * F, (int64_t)hp * F, sz[h], &rng);
                hp = h < L - 1 ? sz[h] / 2 : 0;
            }
            size_t o = mml__cin_param_offset(F, L, sz, 1, L);
            int fs = mml__cin_fmap_sum(L, sz, 1);
            mml__init_glorot(w + o, fs, fs, 1, &rng);
        }
        /* everything else (biases, adapters' B and c) starts at zero */
    }
}

/* Carves the activation block; a first pass with base == NULL only sizes it. */
typedef struct mml__carve { float *base; int64_t used; } mml__carve;

static float *mml__take(mml__carve *c, int64_t n) {
    float *p = c->base ? c->base + c->used : NULL;
    c->used += (n + 15) & ~(int64_t)15;
    return p;
}

static void mml__carve_acts(mml_model_t *m, mml__carve *c) {
    int64_t B = m->cfg.max_batch, E = m->n_experts > 0 ? m->n_experts : 1;
    int F = m->F, k = m->k, D = F * k, HA = MML__ATT_HEADS * MML__ATT_SIZE;
    mml_model_kind mk = m->cfg.model;
    int alias = m->d0 == D && mk != MML_MODEL_PNN && mk != MML_MODEL_NFM && mk != MML_MODEL_FIBINET;
    m->x0 = mml__take(c, B * m->d0);
    m->dx0 = mml__take(c, B * m->d0);
    m->E = alias ? m->x0 : mml__take(c, B * D);
    m->dE = alias ? m->dx0 : mml__take(c, B * D);
    for (int l = 0; l < m->n_layers; l++) {
        int64_t er = m->layer[l].r ? (int64_t)m->n_experts * m->layer[l].r : 1;
        m->z[l] = mml__take(c, B * m->layer[l].d_out);
        m->T[l] = mml__take(c, B * er);
        m->U[l] = mml__take(c, B * er);
    }
    m->gw = mml__take(c, B * E);
    m->dw = mml__take(c, B * E);
    m->gin = mml__take(c, B * (m->cfg.gate == MML_GATE_INPUT ? 1 : m->cfg.gate_dim));
    m->logit = mml__take(c, B);
    m->prob = mml__take(c, B);
    m->dlogit = mml__take(c, B);
    m->lin_out = mml__take(c, B);
    m->fm_out = mml__take(c, B);
    m->cin_out = mml__take(c, B);
    m->dz = mml__take(c, B * m->max_d);
    m->dx = mml__take(c, B * m->max_d);
    m->dT = mml__take(c, B * m->max_r);
    m->dU = mml__take(c, B * (m->max_r > m->cfg.gate_dim ? m->max_r : m->cfg.gate_dim));
    m->ids_bf = (int32_t *)(void *)mml__take(c, B * F);
    m->ids_perm = (int32_t *)(void *)mml__take(c, B);
    m->dom_count = (int32_t *)(void *)mml__take(c, (int64_t)m->cfg.n_domains + 2);
    size_t ws = 0, w;
    switch (mk) {
    case MML_MODEL_NFM: m->part_act[0] = mml__take(c, (int64_t)mml__bi_act_floats((int)B, k)); break;
    case MML_MODEL_DEEPFM: m->part_act[0] = mml__take(c, (int64_t)mml__fm_act_floats((int)B, k)); break;
    case MML_MODEL_DCN:
        m->part_act[0] = mml__take(c, (int64_t)mml__cross_act_floats((int)B, D, MML__CROSS_LAYERS));
        ws = mml__cross_ws_floats((int)B, D);
        m->extra = mml__take(c, B * m->de);
        m->dextra = mml__take(c, B * m->de);
        break;
    case MML_MODEL_XDEEPFM:
        m->part_act[0] = mml__take(c, (int64_t)mml__cin_act_floats((int)B, F, k, MML__CIN_LAYERS, mml__cin_sizes, 1));
        ws = mml__cin_ws_floats((int)B, F, k, MML__CIN_LAYERS, mml__cin_sizes, 1);
        break;
    case MML_MODEL_AUTOINT:
        for (int l = 0; l < MML__ATT_LAYERS; l++) {
            m->att_act[l] = mml__take(c, (int64_t)mml__autoint_act_floats((int)B, F, MML__ATT_HEADS, MML__ATT_SIZE));
            m->att_out[l] = mml__take(c, B * F * HA);
        }
        m->datt[0] = mml__take(c, B * F * HA);
        m->datt[1] = mml__take(c, B * F * HA);
        ws = mml__autoint_ws_floats((int)B, F, MML__ATT_HEADS, MML__ATT_SIZE);
        m->extra = m->att_out[MML__ATT_LAYERS - 1];
        m->dextra = mml__take(c, B * m->de);
        break;
    case MML_MODEL_FIBINET:
        m->part_act[0] = mml__take(c, (int64_t)mml__senet_act_floats((int)B, F, m->se_r));
        m->part_act[1] = mml__take(c, (int64_t)mml__bilinear_act_floats((int)B, F, k));
        m->part_act[2] = mml__take(c, (int64_t)mml__bilinear_act_floats((int)B, F, k));
        m->se_out = mml__take(c, B * D);
        m->dV = mml__take(c, B * D);
        ws = mml__senet_ws_floats((int)B, F, m->se_r);
        w = mml__bilinear_ws_floats((int)B, k);
        if (w > ws) ws = w;
        break;
    default: break;
    }
    m->ws = mml__take(c, (int64_t)ws + 16);
}

static mml_status mml__alloc_acts(mml_model_t *m) {
    mml__carve c = {NULL, 0};
    mml__carve_acts(m, &c);
    uint64_t bytes;
    if (!mml__mul_ok((uint64_t)c.used, sizeof(float), (uint64_t)1 << 40, &bytes))
        return mml__fail(MML_ERR_ARG, "config: activation size overflows");
    float *a = (float *)mml__alloc((size_t)bytes);
    if (!a) return mml__fail(MML_ERR_NOMEM, "cannot allocate %llu bytes of activations", (unsigned long long)bytes);
    m->act_block = a;
    c.base = a;
    c.used = 0;
    mml__carve_acts(m, &c);
    int64_t B = m->cfg.max_batch;
    for (int f = 0; f < 3; f++) {
        int64_t rows = m->params[m->p_emb[f]].shape[0];
        m->ids[f] = (int32_t *)mml__alloc((size_t)B * sizeof(int32_t));
        m->touched[f] = (int32_t *)mml__alloc((size_t)(B < rows ? B : rows) * sizeof(int32_t) + 4);
        m->mark[f] = (uint8_t *)mml__alloc((size_t)rows);
        if (!m->ids[f] || !m->touched[f] || !m->mark[f]) return mml__fail(MML_ERR_NOMEM, "cannot allocate id buffers");
    }
    return MML_OK;
}

/* Per-model (not per-view) optimizer bookkeeping. */
static mml_status mml__alloc_rows_state(mml_model_t *m) {
    for (int f = 0; f < 3; f++) {
        int64_t rows = m->params[m->p_emb[f]].shape[0];
        m->last[f] = (int64_t *)mml__alloc((size_t)rows * sizeof(int64_t));
        if (!m->last[f]) return mml__fail(MML_ERR_NOMEM, "cannot allocate optimizer row state");
    }
    return MML_OK;
}

static void mml__threads_free(mml_model_t *m);
static void mml__catch_up_all(mml_model_t *m);
static void mml__rows_current(mml_model_t *m);
static mml_status mml__threads_init(mml_model_t *m);

void mml_model_free(mml_model_t *m) {
    if (!m) return;
    mml__threads_free(m);
    mml__free(m->P); mml__free(m->G); mml__free(m->M); mml__free(m->V); mml__free(m->best);
    mml__free(m->act_block);
    mml__free(m->fold);
    mml__free(m->zero_row);
    for (int f = 0; f < 3; f++) mml__free(m->last[f]);
    for (int f = 0; f < 3; f++) { mml__free(m->ids[f]); mml__free(m->touched[f]); mml__free(m->mark[f]); }
    MOEMLORA_FREE(m);
}

mml_status mml_model_create(const mml_config_t *c, mml_model_t **out) {
    *out = NULL;
    mml_status st = mml__check_config(c);
    if (st) return st;
    char err[256];
    mml_isa isa;
    if (mml_simd_resolve(&isa, err, sizeof err) != 0) return mml__fail(MML_ERR_ISA, "%s", err);
    mml_model_t *m = (mml_model_t *)MOEMLORA_MALLOC(sizeof *m);
    if (!m) return mml__fail(MML_ERR_NOMEM, "cannot allocate the model");
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->isa = isa;
    m->defer_min_dim = 32;
    m->K = mml_simd_kernels(isa);
    mml__build_layout(m);
    uint64_t bytes;
    if (!mml__mul_ok((uint64_t)m->n_floats, sizeof(float), (uint64_t)1 << 40, &bytes)) {
        mml_model_free(m);
        return mml__fail(MML_ERR_ARG, "config: parameter size overflows");
    }
    m->P = (float *)mml__alloc((size_t)bytes);
    m->G = (float *)mml__alloc((size_t)bytes);
    m->M = (float *)mml__alloc((size_t)bytes);
    m->V = (float *)mml__alloc((size_t)bytes);
    m->best = (float *)mml__alloc((size_t)bytes);
    if (!m->P || !m->G || !m->M || !m->V || !m->best) {
        mml_model_free(m);
        return mml__fail(MML_ERR_NOMEM, "cannot allocate %llu bytes of parameters", (unsigned long long)bytes * 5);
    }
    st = mml__alloc_acts(m);
    if (!st) st = mml__alloc_rows_state(m);
    if (!st && !(m->zero_row = (float *)mml__alloc((size_t)m->k * sizeof(float))))
        st = mml__fail(MML_ERR_NOMEM, "cannot allocate the model");
    if (st) { mml_model_free(m); return st; }
    mml__init_params(m);
    mml_model_set_phase(m, c->adapter == MML_ADAPTER_MOE ? MML_PHASE_GATE : MML_PHASE_ALL, 0);
    st = mml__threads_init(m);
    if (st) { mml_model_free(m); return st; }
    *out = m;
    return MML_OK;
}

const mml_config_t *mml_model_config(const mml_model_t *m) { return &m->cfg; }
const char *mml_model_isa(const mml_model_t *m) { return mml_isa_name(m->isa); }
int32_t mml_model_n_experts(const mml_model_t *m) { return m->n_experts; }

static int mml__param_trainable(const mml_model_t *m, int i) {
    const mml__param *p = &m->params[i];
    if (!m->trainable[p->group]) return 0;
    if (p->group == MML__G_EMB && m->cfg.pretrained && i != m->p_emb[2]) return 0;
    return 1;
}

int64_t mml_model_param_count(const mml_model_t *m, int trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) {
        const mml__param *p = &m->params[i];
        if (!trainable_only) { n += p->size; continue; }
        if (!mml__param_trainable(m, i)) continue;
        /* phase 2 trains one expert's block only */
        n += (p->group == MML__G_EXPERT && m->phase == MML_PHASE_EXPERT) ? p->size / m->n_experts : p->size;
    }
    return n;
}

mml_status mml_model_set_pretrained(mml_model_t *m, const float *user_emb, const float *item_emb, int32_t dim) {
    if (dim != m->k) return mml__fail(MML_ERR_ARG, "pretrained dim %d != model emb_dim %d", dim, m->k);
    memcpy(mml__p(m, m->p_emb[0]), user_emb, (size_t)m->cfg.n_users * dim * sizeof(float));
    memcpy(mml__p(m, m->p_emb[1]), item_emb, (size_t)m->cfg.n_items * dim * sizeof(float));
    return MML_OK;
}

static void mml__phase_flags(mml_model_t *m, mml_phase p, int32_t expert) {
    m->fold_ok = 0;
    m->phase = p;
    m->expert = p == MML_PHASE_EXPERT ? expert : -1;
    int backbone = p == MML_PHASE_ALL || p == MML_PHASE_BACKBONE;
    m->trainable[MML__G_EMB] = m->trainable[MML__G_LINEAR] = m->trainable[MML__G_TOWER] = backbone;
    m->trainable[MML__G_EXTRA] = m->trainable[MML__G_OUT] = backbone;
    m->trainable[MML__G_EXPERT] = p == MML_PHASE_ALL || p == MML_PHASE_EXPERT;
    m->trainable[MML__G_GATE] = p == MML_PHASE_ALL || p == MML_PHASE_GATE;
}

mml_status mml_model_set_phase(mml_model_t *m, mml_phase p, int32_t expert) {
    int moe = m->cfg.adapter == MML_ADAPTER_MOE;
    if ((unsigned)p > MML_PHASE_GATE) return mml__fail(MML_ERR_ARG, "unknown phase %d", (int)p);
    if (!moe && p != MML_PHASE_ALL)
        return mml__fail(MML_ERR_STATE, "phase %d needs the MoE adapter", (int)p);
    if (p == MML_PHASE_EXPERT && (expert < 0 || expert >= m->n_experts))
        return mml__fail(MML_ERR_ARG, "expert %d outside 0..%d", expert, m->n_experts - 1);
    mml__catch_up_all(m); /* finish the old optimizer's steps first */
    mml__phase_flags(m, p, expert);
    /* a fresh optimizer for every phase */
    memset(m->M, 0, (size_t)m->n_floats * sizeof(float));
    memset(m->V, 0, (size_t)m->n_floats * sizeof(float));
    memset(m->G, 0, (size_t)m->n_floats * sizeof(float));
    m->adam_t = 0;
    mml__rows_current(m);
    return MML_OK;
}
