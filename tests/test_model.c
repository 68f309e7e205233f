/* The MLP model in every adapter mode, against finite differences and the
 * documented phase / metric / API semantics:
 *   - gradients of EVERY parameter tensor vs. central differences of the mean
 *     BCE (sampled entries for big tensors, all entries of the embedding rows in
 *     the batch), |fd - g| <= 1e-2 * max(|fd|,|g|) + 1e-4 (an entry that misses
 *     is retried with h/10: a ReLU kink inside +-h breaks the difference);
 *     parameters the phase does not train (and embedding rows outside the
 *     batch, expert blocks not in use) must get exactly zero gradient;
 *   - phase semantics: one train step per phase moves exactly the right
 *     parameters (down to the expert block);
 *   - exact AUC (hand cases, O(n^2) reference with ties), log loss;
 *   - determinism of mml_fit, a full three-phase MoE fit and the restore of the
 *     best gate-phase parameters;
 *   - out-of-vocabulary ids, bad labels, oversize batches, bad configs.
 * Runs on the ISA mml_simd_resolve picks (ctest forces scalar, avx2, avx512).
 * MOEMLORA_TEST_QUICK=1 (valgrind) shrinks data and epochs. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>

static int quick;

#include "mml_gradcheck.h"

/* ---- gradient-check configurations ---------------------------------------- */

#define GB 9
static const int32_t g_uid[GB] = {0, 3, 3, 6, 1, 0, 5, 3, 2};
static const int32_t g_pid[GB] = {4, 1, 1, 0, 2, 4, 3, 1, 0};
static const int32_t g_dom_mixed[GB] = {0, 1, 2, 1, 0, 2, 2, 1, 0};
static const int32_t g_dom_same[GB] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
static const int32_t g_dom_sorted[GB] = {0, 0, 0, 1, 1, 2, 2, 2, 2}; /* runs of one domain */
static const float g_lab[GB] = {1, 0, 1, 0, 0, 1, 1, 0, 1};

static void small_config(mml_config_t *c) {
    mmlt_config_paper(c, 7, 5, 3);
    c->emb_dim = 4;
    mmlt_tower(c, 16, 8);
    c->lora_r = 2;
    c->dropout = 0.0f;
    c->max_batch = 16;
}

typedef struct gcase {
    const char *name;
    mml_adapter adapter;
    mml_gate_kind gate;
    int epd;
    mml_phase phase;
    int expert;
    float dropout;
    int mixed; /* 0: one domain, 1: interleaved domains, 2: domain runs, folded */
} gcase;

/* The small model of case k with random parameters, in k's phase. */
static mml_model_t *case_model(const gcase *k, uint64_t seed) {
    mml_config_t c;
    small_config(&c);
    c.adapter = k->adapter;
    c.gate = k->gate;
    c.experts_per_domain = k->epd;
    c.dropout = k->dropout;
    c.seed = seed;
    mml_model_t *m = make_model(&c);
    randomize_params(m);
    CHECK_OK(mml_model_set_phase(m, k->phase, k->expert));
    return m;
}

static void test_gradients(void) {
    static const gcase cases[] = {
        {"none", MML_ADAPTER_NONE, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.0f, 1},
        {"none dropout0.5", MML_ADAPTER_NONE, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.5f, 1},
        {"mlora single-domain", MML_ADAPTER_MLORA, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.0f, 0},
        {"mlora mixed", MML_ADAPTER_MLORA, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.0f, 1},
        {"mlora mixed dropout0.5", MML_ADAPTER_MLORA, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.5f, 1},
        {"moe backbone", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 1, MML_PHASE_BACKBONE, 0, 0.0f, 1},
        {"moe expert1", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 1, MML_PHASE_EXPERT, 1, 0.0f, 0},
        {"moe gate", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 1, MML_PHASE_GATE, 0, 0.0f, 1},
        {"moe all", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.0f, 1},
        {"moe input-gate gate", MML_ADAPTER_MOE, MML_GATE_INPUT, 1, MML_PHASE_GATE, 0, 0.0f, 1},
        {"moe input-gate all", MML_ADAPTER_MOE, MML_GATE_INPUT, 1, MML_PHASE_ALL, 0, 0.0f, 1},
        {"moe epd2 all", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 2, MML_PHASE_ALL, 0, 0.0f, 1},
        {"moe epd2 all dropout0.5", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 2, MML_PHASE_ALL, 0, 0.5f, 1},
        {"moe epd2 expert4", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 2, MML_PHASE_EXPERT, 4, 0.0f, 1},
        {"moe epd2 gate", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 2, MML_PHASE_GATE, 0, 0.0f, 1},
        {"mlora folded", MML_ADAPTER_MLORA, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.0f, 2},
        {"mlora folded dropout0.5", MML_ADAPTER_MLORA, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.5f, 2},
        {"moe gate folded", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 1, MML_PHASE_GATE, 0, 0.0f, 2},
        {"moe all folded", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.0f, 2},
        {"moe epd2 all folded dropout0.5", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 2, MML_PHASE_ALL, 0, 0.5f, 2},
        {"moe epd2 gate folded", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 2, MML_PHASE_GATE, 0, 0.0f, 2},
    };
    printf("gradient checks (MLP, emb 4, tower 16-8, rank 2, batch %d)\n", GB);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const gcase *k = &cases[ci];
        mml_model_t *m = case_model(k, 1000 + ci);
        m->opt.steps = 3 + ci; /* any step: the masks only depend on it */
        const int32_t *dom = k->mixed == 2 ? g_dom_sorted : k->mixed ? g_dom_mixed : g_dom_same;
        mml_batch_t b = mml_batch_paper(GB, g_uid, g_pid, dom, g_lab);
        mml__knobs.tf_force = k->mixed == 2 ? 1 : 0;
        check_gradients(m, &b, k->name, 4e-3f);
        int folded = 0;
        for (int l = 0; l < m->a.n_layers; l++) folded += m->pass.tf_on[l];
        CHECK(folded == (k->mixed == 2 ? m->a.n_layers : 0), "%s: %d layers took the domain-folded path", k->name,
              folded);
        CHECK((folded && m->pass.tf_base) == (k->mixed == 2 && k->dropout == 0.0f), "%s: base weight folded: %d",
              k->name, m->pass.tf_base);
        if (k->dropout > 0.0f) {
            /* the mask really is applied: a different step draws a different
             * mask and changes the training loss; eval mode uses none */
            double l1 = loss_at(m, &b);
            m->opt.steps++;
            double l2 = loss_at(m, &b);
            CHECK(l1 != l2, "dropout masks do not change with the step (%.9g)", l1);
            mml__pass *ps = &m->pass;
            mml__pass_load(m, ps, &b, 0);
            mml__plan_for(m, ps, 0);
            mml__forward(m, ps);
            double le = m->K->bce_logits(GB, ps->logit, g_lab, 1.0f, NULL) / GB;
            CHECK(le != l1 && le != l2, "eval forward equals a training forward");
        }
        mml_model_free(m);
    }
}

/* Domain-folded training computes the same loss and gradients as the
 * low-rank path over all experts, on the same rows (same dropout masks).
 * Without dropout the folded layers carry the base weight too: the base
 * weight's gradient is then the runs' sum and dx comes from W + dW_d alone. */
static void test_folded_training(void) {
    static const gcase cases[] = {
        {"mlora", MML_ADAPTER_MLORA, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.5f, 2},
        {"mlora base", MML_ADAPTER_MLORA, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.0f, 2},
        {"moe all", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.5f, 2},
        {"moe all base", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 1, MML_PHASE_ALL, 0, 0.0f, 2},
        {"moe gate base", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 1, MML_PHASE_GATE, 0, 0.0f, 2},
        {"moe epd2 all", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 2, MML_PHASE_ALL, 0, 0.5f, 2},
        {"moe epd2 all base", MML_ADAPTER_MOE, MML_GATE_DOMAIN, 2, MML_PHASE_ALL, 0, 0.0f, 2},
    };
    printf("domain-folded training against the low-rank path\n");
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const gcase *k = &cases[ci];
        mmlt_ctx = k->name;
        mml_model_t *m = case_model(k, 77 + ci); /* every case here: the domain gate, expert 0 */
        mml_batch_t b = mml_batch_paper(GB, g_uid, g_pid, g_dom_sorted, g_lab);
        /* v = 0: per-row path; 1: domain runs (bias mixtures per run), no
         * folding (the cost model declines at 9 rows); 2: folded */
        double loss[3];
        float *g[3];
        for (int v = 0; v < 3; v++) {
            mml__knobs.tf_force = v - 1;
            zero_grads_all(m);
            mml__train_forward(m, &b);
            CHECK(m->pass.tf_on[0] == (v == 2), "variant %d: layer 0 folded: %d", v, m->pass.tf_on[0]);
            CHECK((m->pass.tf_on[0] && m->pass.tf_base) == (v == 2 && k->dropout == 0.0f),
                  "variant %d: base weight folded: %d", v, m->pass.tf_base);
            CHECK((m->pass.tf_nruns > 0) == (v > 0), "variant %d: %d domain runs", v, m->pass.tf_nruns);
            loss[v] = mml__backward(m, &m->pass, 1.0f / GB);
            g[v] = (float *)malloc((size_t)m->a.n_floats * sizeof(float));
            if (!g[v]) abort();
            memcpy(g[v], m->grads.G, (size_t)m->a.n_floats * sizeof(float));
        }
        CHECK(mmlt_close(loss[0], loss[2], 1e-6, 1e-7) && mmlt_close(loss[0], loss[1], 1e-6, 1e-7),
              "loss %.9g (per row) vs %.9g (runs) vs %.9g (folded)", loss[0], loss[1], loss[2]);
        long bad = 0, nonzero = 0, nz_w = 0, nz_emb = 0;
        for (int pi = 0; pi < m->a.n_params; pi++) {
            const mml__param *p = &m->a.t[pi];
            double mx = 0.0;
            int is_w = strstr(p->name, "tower.") == p->name && !strcmp(p->name + strlen(p->name) - 2, ".W");
            int is_emb = strstr(p->name, "emb.") == p->name;
            for (int64_t j = 0; j < p->size; j++) mx = fmax(mx, fabs(g[0][p->off + j]));
            for (int64_t j = 0; j < p->size; j++) {
                float a = g[0][p->off + j];
                nonzero += a != 0.0f;
                nz_w += is_w && a != 0.0f;
                nz_emb += is_emb && a != 0.0f; /* dx through every layer into the embeddings */
                for (int v = 1; v < 3; v++) {
                    float f = g[v][p->off + j];
                    /* 1e-7: entries such as out.b sum the rows' dlogits (up to 1/GB each)
                     * and cancel far below them, so relative to their own max they
                     * would be held to less than their terms' rounding */
                    if (fabs((double)a - f) > 2e-5 * mx + 1e-7) {
                        if (bad++ < 4) CHECK(0, "%s[%lld]: per row %.9g, variant %d %.9g", p->name, (long long)j, a, v, f);
                    }
                }
            }
        }
        CHECK(bad == 0 && nonzero > (k->phase == MML_PHASE_GATE ? 20 : 100), "%ld gradient entries differ (%ld nonzero)", bad, nonzero);
        CHECK(k->phase == MML_PHASE_GATE || (nz_w > 100 && nz_emb > 20), "tower W: %ld, embeddings: %ld nonzero gradient entries",
              nz_w, nz_emb);
        printf("  %-14s loss %.7f / %.7f / %.7f, %ld nonzero gradient entries agree\n", k->name, loss[0], loss[1], loss[2],
               nonzero);
        /* train_step sorts an interleaved batch into domain runs: without
         * dropout the loss it reports is the same */
        if (k->dropout == 0.0f) {
            mml_batch_t bm = mml_batch_paper(GB, g_uid, g_pid, g_dom_mixed, g_lab);
            float l2[2];
            float *P0 = (float *)malloc((size_t)m->a.n_floats * sizeof(float));
            if (!P0) abort();
            memcpy(P0, m->P, (size_t)m->a.n_floats * sizeof(float));
            for (int v = 0; v < 2; v++) {
                memcpy(m->P, P0, (size_t)m->a.n_floats * sizeof(float));
                mml__knobs.tf_force = v ? 1 : -1;
                CHECK_OK(mml_train_step(m, &bm, &l2[v]));
                CHECK(m->pass.tf_on[0] == v, "train_step: layer 0 folded: %d, expected %d", m->pass.tf_on[0], v);
                CHECK(v == 0 || (m->pass.loaded.ids[2][0] == 0 && m->pass.loaded.ids[2][GB - 1] == 2), "train_step did not sort the rows");
            }
            CHECK(mmlt_close(l2[0], l2[1], 1e-6, 1e-7), "train_step loss %.9g vs %.9g", l2[0], l2[1]);
            free(P0);
        }
        for (int v = 0; v < 3; v++) free(g[v]);
        mml_model_free(m);
    }
    mmlt_ctx = "";
}

/* Folded inference (mml_model_fold) predicts what the unfolded model does:
 * the base model and both adapters; models whose tower reads the embeddings
 * (MLP, DCN: the domain part moves into the bias) and ones that do not (PNN,
 * FiBiNET); interleaved domains (sorted and put back), long runs, one
 * domain, out-of-vocabulary domains, batch 1, two threads and a session. */
static void test_fold_inference(void) {
    static const mml_model_kind kinds[] = {MML_MODEL_MLP, MML_MODEL_DCN, MML_MODEL_PNN, MML_MODEL_FIBINET};
    static const struct { mml_adapter a; int epd; } ads[] = {
        {MML_ADAPTER_NONE, 1}, {MML_ADAPTER_MLORA, 1}, {MML_ADAPTER_MOE, 1}, {MML_ADAPTER_MOE, 2}};
    enum { NB = 300 };
    int32_t uid[NB], pid[NB], dom[5][NB];
    for (int i = 0; i < NB; i++) {
        uid[i] = (int32_t)((i * 7 + 3) % 9) - (i % 97 == 5); /* a few -1: OOV users */
        pid[i] = (int32_t)((i * 5 + 1) % 6);
        dom[0][i] = i % 3;                           /* interleaved */
        dom[1][i] = i * 3 / NB;                      /* three long runs */
        dom[2][i] = 2;                               /* one domain */
        dom[3][i] = i % 11 == 4 ? 3 : i % 3;         /* with the OOV domain */
        dom[4][i] = (i / 7) % 3;                     /* short runs */
    }
    printf("folded inference against the unfolded model\n");
    double worst = 0.0;
    long cmp = 0;
    for (size_t ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++)
        for (size_t ai = 0; ai < sizeof ads / sizeof ads[0]; ai++)
            for (int threads = 1; threads <= mmlt_max_threads(); threads++) {
                mml_config_t c;
                small_config(&c);
                c.n_users = 9;
                c.n_items = 6;
                c.model = kinds[ki];
                c.adapter = ads[ai].a;
                c.experts_per_domain = ads[ai].epd;
                c.max_batch = NB;
                c.threads = threads;
                c.seed = 500 + ki * 10 + ai;
                mml_model_t *m = make_model(&c);
                randomize_params(m);
                CHECK_OK(mml_model_set_phase(m, MML_PHASE_ALL, 0));
                float p0[NB], p1[NB], p2[NB];
                for (int v = 0; v < 5; v++) {
                    mmlt_ctx = mml_model_kind_name(kinds[ki]);
                    for (int n = 1; n <= NB; n += NB - 1) {
                        mml_batch_t b = mml_batch_paper(n, uid, pid, dom[v], NULL);
                        m->fold.ok = 0;
                        CHECK_OK(mml_predict(m, &b, p0));
                        CHECK_OK(mml_model_fold(m));
                        CHECK_OK(mml_predict(m, &b, p1));
                        mml_session_t *ss = NULL;
                        CHECK_OK(mml_session_create(m, &ss));
                        CHECK_OK(mml_session_predict(ss, &b, p2));
                        mml_session_free(ss);
                        int bad = 0;
                        for (int i = 0; i < n; i++) {
                            double d = fmax(fabs((double)p1[i] - p0[i]), fabs((double)p2[i] - p0[i]));
                            if (d > worst) worst = d;
                            bad += !(d <= 2e-6);
                            cmp++;
                        }
                        CHECK(bad == 0, "%s adapter %d epd %d threads %d batch %d (domains %d): %d of %d predictions differ",
                              mml_model_kind_name(kinds[ki]), (int)ads[ai].a, ads[ai].epd, threads, v, n, bad, n);
                    }
                }
                mml_model_free(m);
            }
    mmlt_ctx = "";
    printf("  %ld predictions, largest difference %.2g\n", cmp, worst);
}

/* ---- phase semantics -------------------------------------------------------- */

/* Takes one train step from snapshot P0 in the given phase and checks that
 * exactly the expected entries move: allowed(pi, j) says which may move; every
 * tensor with must_move(pi) must move somewhere. */
typedef int (*allow_fn)(const mml_model_t *m, int pi, int64_t j, const mml_batch_t *b, int arg);

static int is_expert(const mml__param *p) { return p->group == MML__G_EXPERT; }
static int is_gate(const mml__param *p) { return p->group == MML__G_GATE; }
static int is_backbone(const mml__param *p) { return !is_expert(p) && !is_gate(p); }

/* Second pass of the phase test: weight decay (L2 in the gradient) makes Adam
 * move every entry it is applied to, so a frozen block that Adam visits shows
 * up; lazy Adam then visits only the touched rows of the embedding and
 * linear-logit tables (as SparseAdam on sparse nn.Embedding tables). */
static int phase_wd;

static int row_in_batch(const mml_model_t *m, int pi, int64_t j, const mml_batch_t *b) {
    const mml__param *p = &m->a.t[pi];
    if (!p->row_table) return 1;
    if (phase_wd && p->group != MML__G_EMB && p->group != MML__G_LINEAR) return 1;
    int f = row_field(m, pi);
    for (int i = 0; i < b->n; i++)
        if (batch_row(m, b, f, i) == j / p->shape[1]) return 1;
    return 0;
}

static int allow_backbone(const mml_model_t *m, int pi, int64_t j, const mml_batch_t *b, int arg) {
    (void)arg;
    return is_backbone(&m->a.t[pi]) && row_in_batch(m, pi, j, b);
}
static int allow_expert(const mml_model_t *m, int pi, int64_t j, const mml_batch_t *b, int e) {
    (void)b;
    const mml__param *p = &m->a.t[pi];
    return is_expert(p) && expert_block_of(p, j) == e;
}
static int allow_gate(const mml_model_t *m, int pi, int64_t j, const mml_batch_t *b, int arg) {
    (void)arg;
    return is_gate(&m->a.t[pi]) && row_in_batch(m, pi, j, b);
}
static int allow_mlora(const mml_model_t *m, int pi, int64_t j, const mml_batch_t *b, int d) {
    const mml__param *p = &m->a.t[pi];
    if (is_expert(p)) return expert_block_of(p, j) == d;
    return row_in_batch(m, pi, j, b);
}

static void phase_step(mml_model_t *m, const float *P0, mml_phase ph, int expert, const mml_batch_t *b,
                       allow_fn allow, int arg, const char *tag) {
    mmlt_ctx = tag;
    size_t bytes = (size_t)m->a.n_floats * sizeof(float);
    memcpy(m->P, P0, bytes);
    CHECK_OK(mml_model_set_phase(m, ph, expert));
    float loss = -1;
    CHECK_OK(mml_train_step(m, b, &loss));
    CHECK(loss > 0 && isfinite(loss), "loss %g", (double)loss);
    long moved_bad = 0, moved_ok = 0;
    for (int pi = 0; pi < m->a.n_params; pi++) {
        const mml__param *p = &m->a.t[pi];
        long bad = 0, ok = 0, allowed = 0, stuck = 0;
        for (int64_t j = 0; j < p->size; j++) {
            int a = allow(m, pi, j, b, arg);
            int moved = m->P[p->off + j] != P0[p->off + j];
            allowed += a;
            if (moved && !a) bad++;
            if (moved && a) ok++;
            if (phase_wd && a && !moved && P0[p->off + j] != 0.0f) stuck++;
        }
        CHECK(bad == 0, "%s: %ld entries moved that this phase must not touch", p->name, bad);
        CHECK(stuck == 0, "%s: %ld nonzero entries did not move under weight decay", p->name, stuck);
        /* lora_c of an adapter gets a gradient from every row; A and B too
         * (B, c were randomised); every allowed tensor must move */
        if (allowed) CHECK(ok > 0, "%s: nothing moved (%ld entries allowed)", p->name, allowed);
        moved_bad += bad;
        moved_ok += ok;
    }
    printf("  %-28s %6ld entries moved, %ld outside the phase\n", tag, moved_ok, moved_bad);
    mmlt_ctx = "";
}

static void test_phases(void) {
    for (phase_wd = 0; phase_wd < 2; phase_wd++) {
    printf("phase semantics (one Adam step per phase%s)\n", phase_wd ? ", weight decay, lazy Adam" : "");
    mml_config_t c;
    small_config(&c);
    c.weight_decay = phase_wd ? 1e-2f : 0.0f;
    c.lazy_adam = phase_wd;
    c.model = MML_MODEL_WDL; /* the wide part's per-id tables too */
    c.adapter = MML_ADAPTER_MOE;
    c.experts_per_domain = 2;
    mml_model_t *m = make_model(&c);
    randomize_params(m);
    size_t bytes = (size_t)m->a.n_floats * sizeof(float);
    float *P0 = (float *)malloc(bytes);
    memcpy(P0, m->P, bytes);
    mml_batch_t mixed = mml_batch_paper(GB, g_uid, g_pid, g_dom_mixed, g_lab);
    mml_batch_t same = mml_batch_paper(GB, g_uid, g_pid, g_dom_same, g_lab);
    phase_step(m, P0, MML_PHASE_BACKBONE, 0, &mixed, allow_backbone, 0, "moe backbone");
    for (int e = 0; e < m->a.n_experts; e++) {
        char tag[64];
        snprintf(tag, sizeof tag, "moe expert %d", e);
        /* an expert trains on its own domain's data */
        int32_t dom[GB];
        for (int i = 0; i < GB; i++) dom[i] = e % c.n_domains;
        mml_batch_t b = mml_batch_paper(GB, g_uid, g_pid, dom, g_lab);
        phase_step(m, P0, MML_PHASE_EXPERT, e, &b, allow_expert, e, tag);
    }
    phase_step(m, P0, MML_PHASE_EXPERT, 4, &mixed, allow_expert, 4, "moe expert 4 (mixed batch)");
    phase_step(m, P0, MML_PHASE_GATE, 0, &mixed, allow_gate, 0, "moe gate");
    phase_step(m, P0, MML_PHASE_GATE, 0, &same, allow_gate, 0, "moe gate (one domain)");
    CHECK(mml_model_set_phase(m, MML_PHASE_EXPERT, 6) == MML_ERR_ARG, "expert 6 of 6 accepted");
    CHECK(mml_model_set_phase(m, MML_PHASE_EXPERT, -1) == MML_ERR_ARG, "expert -1 accepted");
    CHECK(mml_model_set_phase(m, (mml_phase)7, 0) == MML_ERR_ARG, "phase 7 accepted");
    /* trainable-parameter counts per phase */
    CHECK_OK(mml_model_set_phase(m, MML_PHASE_EXPERT, 2));
    int64_t nexp = 0, ngate = 0, nall = mml_model_param_count(m, 0);
    for (int pi = 0; pi < m->a.n_params; pi++) {
        if (is_expert(&m->a.t[pi])) nexp += m->a.t[pi].size;
        if (is_gate(&m->a.t[pi])) ngate += m->a.t[pi].size;
    }
    CHECK(mml_model_param_count(m, 1) == nexp / 6, "expert phase trains %lld, expected %lld",
          (long long)mml_model_param_count(m, 1), (long long)(nexp / 6));
    CHECK_OK(mml_model_set_phase(m, MML_PHASE_GATE, 0));
    CHECK(mml_model_param_count(m, 1) == ngate, "gate phase count");
    CHECK_OK(mml_model_set_phase(m, MML_PHASE_BACKBONE, 0));
    CHECK(mml_model_param_count(m, 1) == nall - nexp - ngate, "backbone phase count");
    mml_model_free(m);
    free(P0);

    /* MLoRA: a domain-d batch moves adapter block d only */
    small_config(&c);
    c.weight_decay = phase_wd ? 1e-2f : 0.0f;
    c.lazy_adam = phase_wd;
    c.model = MML_MODEL_WDL;
    c.adapter = MML_ADAPTER_MLORA;
    m = make_model(&c);
    randomize_params(m);
    P0 = (float *)malloc((size_t)m->a.n_floats * sizeof(float));
    memcpy(P0, m->P, (size_t)m->a.n_floats * sizeof(float));
    for (int d = 0; d < 3; d++) {
        int32_t dom[GB];
        char tag[64];
        for (int i = 0; i < GB; i++) dom[i] = d;
        snprintf(tag, sizeof tag, "mlora domain %d", d);
        mml_batch_t b = mml_batch_paper(GB, g_uid, g_pid, dom, g_lab);
        phase_step(m, P0, MML_PHASE_ALL, 0, &b, allow_mlora, d, tag);
    }
    CHECK(mml_model_set_phase(m, MML_PHASE_GATE, 0) == MML_ERR_STATE, "MLoRA accepted the gate phase");
    mml_model_free(m);
    free(P0);
    }
    phase_wd = 0;
}

/* ---- metrics ---------------------------------------------------------------- */

static double auc_ref(int n, const float *s, const float *y) {
    double num = 0.0, np = 0.0, nn = 0.0;
    for (int i = 0; i < n; i++) {
        if (y[i] > 0.5f) np++;
        else nn++;
    }
    for (int i = 0; i < n; i++) {
        if (!(y[i] > 0.5f)) continue;
        for (int j = 0; j < n; j++) {
            if (y[j] > 0.5f) continue;
            num += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
        }
    }
    return num / (np * nn);
}

static void test_metrics(void) {
    mmlt_ctx = "metrics";
    const float y4[4] = {0, 0, 1, 1};
    const float perfect[4] = {0.1f, 0.2f, 0.7f, 0.9f};
    const float reversed[4] = {0.9f, 0.7f, 0.2f, 0.1f};
    const float ties[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    /* {0.1, 0.4, 0.4, 0.8} vs {0, 0, 1, 1}: positive/negative pairs
     *   pos 0.4 vs neg 0.1 -> 1, pos 0.4 vs neg 0.4 -> 1/2,
     *   pos 0.8 vs neg 0.1 -> 1, pos 0.8 vs neg 0.4 -> 1
     * = 3.5 / 4 = 0.875 */
    const float mixed[4] = {0.1f, 0.4f, 0.4f, 0.8f};
    CHECK(mml_auc(4, perfect, y4) == 1.0, "perfect %g", mml_auc(4, perfect, y4));
    CHECK(mml_auc(4, reversed, y4) == 0.0, "reversed %g", mml_auc(4, reversed, y4));
    CHECK(mml_auc(4, ties, y4) == 0.5, "ties %g", mml_auc(4, ties, y4));
    CHECK(mml_auc(4, mixed, y4) == 0.875, "tied pair across classes %g", mml_auc(4, mixed, y4));
    /* unsorted input, labels interleaved: scores {3,1,2,2,5}, labels {1,0,1,0,0}
     * pos 3 beats 1,2 (2 of 3), pos 2 beats 1, ties 2 -> 1.5 of 3; (2+1.5)/6 */
    const float s5[5] = {3, 1, 2, 2, 5}, y5[5] = {1, 0, 1, 0, 0};
    CHECK(fabs(mml_auc(5, s5, y5) - 3.5 / 6.0) < 1e-15, "5-row case %.17g", mml_auc(5, s5, y5));
    const float one[3] = {0, 0, 0}, ones[3] = {1, 1, 1}, s3[3] = {0.1f, 0.5f, 0.9f};
    CHECK(isnan(mml_auc(3, s3, one)), "all negatives -> NaN");
    CHECK(isnan(mml_auc(3, s3, ones)), "all positives -> NaN");
    CHECK(isnan(mml_auc(0, s3, ones)), "empty -> NaN");

    int n = 2000;
    float *s = (float *)malloc((size_t)n * 4), *y = (float *)malloc((size_t)n * 4);
    for (int rep = 0; rep < 3; rep++) {
        for (int i = 0; i < n; i++) {
            y[i] = turand() < 0.3 ? 1.0f : 0.0f;
            double u = turand() + (rep ? 0.3 * y[i] : 0.0);
            s[i] = roundf((float)u * 100.0f) / 100.0f; /* many ties */
        }
        double a = mml_auc(n, s, y), r = auc_ref(n, s, y);
        CHECK(fabs(a - r) <= 1e-12, "random case %d: %.15f vs reference %.15f", rep, a, r);
    }
    free(s);
    free(y);

    /* log loss: -(ln 0.9 + ln(1 - 0.2) + ln 0.6) / 3, and the clamp at 1e-7 */
    const float p3[3] = {0.9f, 0.2f, 0.6f}, l3[3] = {1, 0, 1};
    double want = -(log((double)0.9f) + log(1.0 - (double)0.2f) + log((double)0.6f)) / 3.0;
    CHECK(fabs(mml_logloss(3, p3, l3) - want) < 1e-12, "logloss %.15g vs %.15g", mml_logloss(3, p3, l3), want);
    const float p0[2] = {0.0f, 1.0f}, l0[2] = {1, 0};
    CHECK(fabs(mml_logloss(2, p0, l0) - (-log(1e-7))) < 1e-6, "clamped logloss %.15g", mml_logloss(2, p0, l0));
    CHECK(isfinite(mml_logloss(2, p0, l0)), "logloss of 0/1 probabilities must be finite");
    mmlt_ctx = "";
}

/* ---- mml_fit ---------------------------------------------------------------- */

typedef struct fit_rec {
    double gate_best, last_val, gate_vals[64];
    int gate_epochs, backbone_epochs, expert_epochs, phase_ends, in_order;
    char last_phase[16];
    mml_metrics_t gate_test;
} fit_rec;

static void on_progress(const mml_progress_t *p, void *user) {
    fit_rec *r = (fit_rec *)user;
    if (p->event == MML_EV_EPOCH_END) {
        r->last_val = p->val_auc;
        if (strcmp(p->phase_name, "gate") == 0) {
            if (r->gate_epochs < 64) r->gate_vals[r->gate_epochs] = p->val_auc;
            r->gate_epochs++;
            if (p->val_auc == p->val_auc && p->val_auc > r->gate_best) r->gate_best = p->val_auc;
        } else if (strcmp(p->phase_name, "backbone") == 0) {
            r->backbone_epochs++;
            if (r->expert_epochs || r->gate_epochs) r->in_order = 0;
        } else if (strcmp(p->phase_name, "expert") == 0) {
            r->expert_epochs++;
            if (r->gate_epochs) r->in_order = 0;
        }
    } else if (p->event == MML_EV_PHASE_END) {
        r->phase_ends++;
        if (strcmp(p->phase_name, "gate") == 0 && p->test) r->gate_test = *p->test;
    }
}

static void test_fit(void) {
    printf("mml_fit: determinism, three-phase MoE-MLoRA, best-model restore\n");
    mmlt_ctx = "fit";
    mml_data_t d;
    mmlt_fit_data(&d, 6000);
    mml_fit_opts_t o;
    mml_fit_opts_default(&o);
    o.batch = 128;
    o.max_epochs = quick ? 6 : 40;
    o.patience = 2;
    o.progress = on_progress;
    mml_metrics_t t1, t2, t3;
    mml_model_t *m[3];
    fit_rec rec[3];
    double t0 = now_s();
    for (int r = 0; r < 3; r++) {
        mml_config_t c;
        mmlt_fit_config(&c, &d, r == 2 ? 77 : 5);
        m[r] = make_model(&c);
        memset(&rec[r], 0, sizeof rec[r]);
        rec[r].gate_best = -1.0;
        rec[r].in_order = 1;
        o.user = &rec[r];
        CHECK_OK(mml_fit(m[r], &d, &o, r == 0 ? &t1 : r == 1 ? &t2 : &t3));
    }
    double el = now_s() - t0;
    size_t bytes = (size_t)m[0]->a.n_floats * sizeof(float);
    CHECK(memcmp(m[0]->P, m[1]->P, bytes) == 0, "two fits with the same seed differ");
    CHECK(memcmp(m[0]->P, m[2]->P, bytes) != 0, "fits with different seeds are identical");
    CHECK(t1.weighted_auc == t2.weighted_auc && t1.mean_auc == t2.mean_auc && t1.logloss_all == t2.logloss_all,
          "metrics differ: %.17g vs %.17g", t1.weighted_auc, t2.weighted_auc);
    for (int k = 0; k < 3; k++)
        CHECK(t1.auc[k] == t2.auc[k] && t1.logloss[k] == t2.logloss[k] && t1.n[k] == t2.n[k], "domain %d metrics differ", k);
    CHECK(rec[0].gate_epochs == rec[1].gate_epochs && rec[0].expert_epochs == rec[1].expert_epochs,
          "epoch counts differ");
    printf("  test WAUC %.4f, mean AUC %.4f, logloss %.4f (seed 77: WAUC %.4f); 3 fits in %.2f s\n", t1.weighted_auc,
           t1.mean_auc, t1.logloss_all, t3.weighted_auc, el);
    printf("  epochs: backbone %d, experts %d, gate %d; gate-phase val AUC:", rec[0].backbone_epochs,
           rec[0].expert_epochs, rec[0].gate_epochs);
    for (int e = 0; e < rec[0].gate_epochs && e < 64; e++) printf(" %.4f", rec[0].gate_vals[e]);
    printf("\n");
    CHECK(isfinite(t1.weighted_auc) && isfinite(t1.mean_auc) && isfinite(t1.logloss_all), "test metrics not finite");
    for (int k = 0; k < 3; k++) CHECK(isfinite(t1.auc[k]) && isfinite(t1.logloss[k]), "domain %d metrics", k);
    CHECK(t1.weighted_auc > 0.55, "weighted test AUC %.4f <= 0.55", t1.weighted_auc);
    CHECK(t1.n_all == d.split[MML_TEST].n, "n_all %lld", (long long)t1.n_all);
    CHECK(rec[0].backbone_epochs >= 1 && rec[0].expert_epochs >= 3 && rec[0].gate_epochs >= 1 && rec[0].in_order,
          "phases ran out of order or not at all");
    CHECK(rec[0].phase_ends == 2, "%d PHASE_END events, expected 2 (backbone, gate)", rec[0].phase_ends);
    CHECK(rec[0].gate_test.weighted_auc == t1.weighted_auc, "PHASE_END test metrics differ from mml_fit's");
    /* the model left by mml_fit is the best gate-phase model */
    mml_metrics_t v;
    CHECK_OK(mml_evaluate(m[0], &d.split[MML_VAL], d.n_domains, &v));
    CHECK(fabs(v.mean_auc - rec[0].gate_best) <= 1e-9, "val mean AUC after fit %.12f, best gate epoch %.12f",
          v.mean_auc, rec[0].gate_best);
    CHECK(m[0]->ph.phase == MML_PHASE_GATE, "phase after fit %d", (int)m[0]->ph.phase);
    /* the check above means something only if the gate phase did not end on
     * its best epoch (with these data and seeds it peaks at epoch 1) */
    if (!quick)
        CHECK(rec[0].last_val < rec[0].gate_best, "the gate phase ended on its best epoch (%.6f): restore not exercised",
              rec[0].last_val);
    /* mean/weighted AUC are what the per-domain numbers say */
    double sw = 0, s = 0, w = 0;
    for (int k = 0; k < 3; k++) { s += t1.auc[k]; sw += t1.auc[k] * (double)t1.n[k]; w += (double)t1.n[k]; }
    CHECK(fabs(t1.mean_auc - s / 3) < 1e-12 && fabs(t1.weighted_auc - sw / w) < 1e-12, "summary metrics");

    /* base and MLoRA schedules run too and restore their best epoch */
    for (int a = 0; a < 2; a++) {
        mml_config_t c;
        mmlt_fit_config(&c, &d, 9);
        c.adapter = a ? MML_ADAPTER_MLORA : MML_ADAPTER_NONE;
        mml_model_t *mm = make_model(&c);
        fit_rec r;
        memset(&r, 0, sizeof r);
        o.user = &r;
        o.progress = on_progress;
        mml_metrics_t t;
        CHECK_OK(mml_fit(mm, &d, &o, &t));
        CHECK(t.weighted_auc > 0.55, "%s: weighted test AUC %.4f", a ? "mlora" : "base", t.weighted_auc);
        printf("  %-5s test WAUC %.4f\n", a ? "mlora" : "base", t.weighted_auc);
        mml_model_free(mm);
    }
    /* bad fit options and data */
    o.batch = 257;
    CHECK(mml_fit(m[0], &d, &o, &t3) == MML_ERR_ARG, "batch above max_batch accepted");
    o.batch = 128;
    o.max_epochs = 0;
    CHECK(mml_fit(m[0], &d, &o, &t3) == MML_ERR_ARG, "max_epochs 0 accepted");
    for (int r = 0; r < 3; r++) mml_model_free(m[r]);
    mml_data_free(&d);
    mmlt_ctx = "";
}

/* ---- out-of-vocabulary ids, bad batches ------------------------------------ */

static void test_oov_and_batches(void) {
    printf("out-of-vocabulary ids, bad labels, batch sizes\n");
    for (int variant = 0; variant < 2; variant++) {
        mmlt_ctx = variant ? "oov wdl-mlora" : "oov mlp-moe";
        mml_config_t c;
        small_config(&c);
        c.model = variant ? MML_MODEL_WDL : MML_MODEL_MLP;
        c.adapter = variant ? MML_ADAPTER_MLORA : MML_ADAPTER_MOE;
        c.max_batch = 8;
        mml_model_t *m = make_model(&c);
        randomize_params(m);
        size_t bytes = (size_t)m->a.n_floats * sizeof(float);
        /* unknown users, items, domains: all map to one row per field */
        const int32_t bu[6] = {-1, 7, 1000000, INT32_MIN, 2, 2};
        const int32_t bp[6] = {1, 1, 1, 1, -3, 5};
        const int32_t bd[6] = {0, 0, 0, 0, 0, 0};
        float pr[6];
        mml_batch_t b = mml_batch_paper(6, bu, bp, bd, NULL);
        CHECK_OK(mml_predict(m, &b, pr));
        for (int i = 0; i < 6; i++) CHECK(isfinite(pr[i]) && pr[i] > 0 && pr[i] < 1, "prob[%d] = %g", i, (double)pr[i]);
        CHECK(pr[0] == pr[1] && pr[1] == pr[2] && pr[2] == pr[3], "unknown users differ: %g %g %g %g", (double)pr[0],
              (double)pr[1], (double)pr[2], (double)pr[3]);
        CHECK(pr[4] == pr[5], "unknown items differ: %g %g", (double)pr[4], (double)pr[5]);
        /* it is the reserved row: make it a copy of user 2 / item 3 */
        int tabs[2] = {m->a.field[0].emb, m->a.kind->linear ? m->a.field[0].lin : -1};
        for (int t = 0; t < 2; t++) {
            if (tabs[t] < 0) continue;
            const mml__param *p = &m->a.t[tabs[t]];
            float *w = m->P + p->off;
            CHECK(p->shape[0] == c.n_users + 1, "%s has %lld rows", p->name, (long long)p->shape[0]);
            memcpy(w + (int64_t)c.n_users * p->shape[1], w + 2 * p->shape[1], (size_t)p->shape[1] * sizeof(float));
        }
        const int32_t ku[2] = {-1, 2}, kp[2] = {1, 1}, kd[2] = {0, 0};
        mml_batch_t kb = mml_batch_paper(2, ku, kp, kd, NULL);
        float kpr[2];
        CHECK_OK(mml_predict(m, &kb, kpr));
        CHECK(kpr[0] == kpr[1], "OOV user with user 2's row: %g vs %g", (double)kpr[0], (double)kpr[1]);
        /* an unknown domain predicts, finitely */
        const int32_t dd[2] = {-1, 3};
        mml_batch_t db = mml_batch_paper(2, kp, kp, dd, NULL);
        CHECK_OK(mml_predict(m, &db, kpr));
        CHECK(isfinite(kpr[0]) && kpr[0] == kpr[1], "unknown domains: %g %g", (double)kpr[0], (double)kpr[1]);

        /* training rejects them, with a message, and changes nothing */
        float *P0 = (float *)malloc(bytes);
        memcpy(P0, m->P, bytes);
        const float lab[6] = {1, 0, 1, 0, 1, 0};
        const int32_t ok_u[6] = {0, 1, 2, 3, 4, 5}, ok_p[6] = {0, 1, 2, 3, 4, 0}, ok_d[6] = {0, 1, 2, 0, 1, 2};
        struct { int32_t u, p, d; float y; const char *what; } bad[] = {
            {-1, 0, 0, 1, "negative user"},   {7, 0, 0, 1, "user = n_users"},  {0, 5, 0, 1, "item = n_items"},
            {0, -2, 0, 1, "negative item"},   {0, 0, 3, 1, "domain = n_domains"}, {0, 0, -1, 1, "negative domain"},
            {0, 0, 0, 0.5f, "label 0.5"},     {0, 0, 0, 2.0f, "label 2"},       {0, 0, 0, NAN, "label NaN"},
            {0, 0, 0, -1.0f, "label -1"},
        };
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            int32_t u[6], p[6], dm[6];
            float y[6];
            memcpy(u, ok_u, sizeof u); memcpy(p, ok_p, sizeof p); memcpy(dm, ok_d, sizeof dm); memcpy(y, lab, sizeof y);
            u[3] = bad[k].u; p[3] = bad[k].p; dm[3] = bad[k].d; y[3] = bad[k].y;
            mml_batch_t tb = mml_batch_paper(6, u, p, dm, y);
            mml__errbuf[0] = 0;
            float loss = 0;
            mml_status st = mml_train_step(m, &tb, &loss);
            CHECK(st == MML_ERR_ARG, "%s: status %d", bad[k].what, (int)st);
            CHECK(mml_last_error()[0] != 0, "%s: no message", bad[k].what);
        }
        CHECK(memcmp(P0, m->P, bytes) == 0, "a rejected step changed parameters");
        CHECK(mml_predict(m, NULL, pr) == MML_ERR_ARG, "NULL batch accepted");
        mml_batch_t e0 = mml_batch_paper(0, ok_u, ok_p, ok_d, lab);
        CHECK(mml_train_step(m, &e0, NULL) == MML_ERR_ARG, "empty batch accepted");
        mml_batch_t nl = mml_batch_paper(6, ok_u, ok_p, ok_d, NULL);
        CHECK(mml_train_step(m, &nl, NULL) == MML_ERR_ARG, "training batch without labels accepted");

        /* n > max_batch: train_step refuses, predict chunks */
        enum { NB = 30 };
        int32_t u[NB], p[NB], dm[NB];
        float y[NB], big[NB], sep[NB], one;
        for (int i = 0; i < NB; i++) {
            u[i] = (int32_t)(tnext() % 7); p[i] = (int32_t)(tnext() % 5); dm[i] = (int32_t)(tnext() % 3);
            y[i] = (float)(tnext() & 1);
        }
        mml_batch_t tb = mml_batch_paper(NB, u, p, dm, y);
        mml__errbuf[0] = 0;
        CHECK(mml_train_step(m, &tb, NULL) == MML_ERR_ARG, "batch of %d > max_batch 8 accepted", NB);
        CHECK(mml_last_error()[0] != 0, "no message for the oversize batch");
        CHECK(memcmp(P0, m->P, bytes) == 0, "the rejected oversize step changed parameters");
        CHECK_OK(mml_predict(m, &tb, big));
        for (int s = 0; s < NB; s += 8) {
            mml_batch_t cb = mml_batch_paper(NB - s < 8 ? NB - s : 8, u + s, p + s, dm + s, NULL);
            CHECK_OK(mml_predict(m, &cb, sep + s));
        }
        CHECK(memcmp(big, sep, sizeof big) == 0, "chunked predict differs from max_batch-sized calls");
        int far = 0;
        for (int i = 0; i < NB; i++) {
            mml_batch_t ob = mml_batch_paper(1, u + i, p + i, dm + i, NULL);
            CHECK_OK(mml_predict(m, &ob, &one));
            far += !mmlt_close(one, big[i], 1e-5, 1e-6);
        }
        CHECK(far == 0, "%d rows predicted alone differ from the batch", far);
        /* a valid step moves things and predictions stay finite */
        mml_batch_t gb = mml_batch_paper(6, ok_u, ok_p, ok_d, lab);
        float loss = 0;
        CHECK_OK(mml_train_step(m, &gb, &loss));
        CHECK(isfinite(loss) && loss > 0, "loss %g", (double)loss);
        CHECK(memcmp(P0, m->P, bytes) != 0, "a valid step changed nothing");
        /* OOV rows are never trained */
        const mml__param *pu = &m->a.t[m->a.field[0].emb];
        CHECK(memcmp(m->P + pu->off + (int64_t)c.n_users * pu->shape[1], P0 + pu->off + (int64_t)c.n_users * pu->shape[1],
                     (size_t)pu->shape[1] * sizeof(float)) == 0, "the OOV user row moved");
        free(P0);
        mml_model_free(m);
    }
    mmlt_ctx = "";
}

/* ---- config validation ------------------------------------------------------ */

static void test_bad_configs(void) {
    mmlt_ctx = "config";
    enum { NBAD = 17 };
    const char *what[NBAD] = {"n_users 0", "n_items 0", "n_domains 0", "n_users -5", "emb_dim 0", "n_hidden 0",
                              "n_hidden 9", "hidden[1] 0", "experts 300 > 256", "experts_per_domain 0", "dropout 1.0",
                              "dropout -0.1", "max_batch 0", "max_batch 2^21", "gate_dim 0", "lr 0", "adapter 7"};
    for (int k = 0; k < NBAD; k++) {
        mml_config_t c;
        small_config(&c);
        switch (k) {
        case 0: c.n_users = 0; break;
        case 1: c.n_items = 0; break;
        case 2: c.n_domains = 0; break;
        case 3: c.n_users = -5; break;
        case 4: c.emb_dim = 0; break;
        case 5: c.n_hidden = 0; break;
        case 6: c.n_hidden = 9; break;
        case 7: c.hidden[1] = 0; break;
        case 8: c.experts_per_domain = 100; break;
        case 9: c.experts_per_domain = 0; break;
        case 10: c.dropout = 1.0f; break;
        case 11: c.dropout = -0.1f; break;
        case 12: c.max_batch = 0; break;
        case 13: c.max_batch = 1 << 21; break;
        case 14: c.gate_dim = 0; break;
        case 15: c.lr = 0.0f; break;
        case 16: c.adapter = (mml_adapter)7; break;
        }
        mml__errbuf[0] = 0;
        mml_model_t *m = (mml_model_t *)(uintptr_t)1;
        mml_status st = mml_model_create(&c, &m);
        CHECK(st == MML_ERR_ARG, "%s: status %d", what[k], (int)st);
        CHECK(m == NULL, "%s: *out not NULL", what[k]);
        CHECK(mml_last_error()[0] != 0, "%s: no message", what[k]);
        if (st == MML_OK) mml_model_free(m);
    }
    /* the edges just inside are fine */
    mml_config_t c;
    small_config(&c);
    c.experts_per_domain = 85; /* 255 experts */
    c.n_hidden = 1;
    mml_model_t *m = NULL;
    CHECK_OK(mml_model_create(&c, &m));
    if (m) CHECK(mml_model_n_experts(m) == 255, "n_experts %d", mml_model_n_experts(m));
    mml_model_free(m);
    mmlt_ctx = "";
}

/* The enums' names: each value's name parses back to it, "base" is "none",
 * an unknown name fails and leaves *out alone, an out-of-range value is "?". */
static void test_enum_names(void) {
    mmlt_ctx = "names";
    for (int a = 0; a < 3; a++) {
        mml_adapter v = (mml_adapter)-1;
        CHECK(mml_adapter_from_name(mml_adapter_name((mml_adapter)a), &v) == 0 && v == (mml_adapter)a,
              "adapter %d (%s) -> %d", a, mml_adapter_name((mml_adapter)a), (int)v);
    }
    mml_adapter ad = MML_ADAPTER_MOE;
    CHECK(mml_adapter_from_name("base", &ad) == 0 && ad == MML_ADAPTER_NONE, "base -> %d", (int)ad);
    ad = MML_ADAPTER_MOE;
    CHECK(mml_adapter_from_name("Moe", &ad) == -1 && ad == MML_ADAPTER_MOE, "Moe accepted or *out changed");
    CHECK(!strcmp(mml_adapter_name((mml_adapter)3), "?"), "adapter 3: %s", mml_adapter_name((mml_adapter)3));
    CHECK(!strcmp(mml_adapter_name(MML_ADAPTER_MLORA), "mlora"), "mlora: %s", mml_adapter_name(MML_ADAPTER_MLORA));
    for (int g = 0; g < 2; g++) {
        mml_gate_kind v = (mml_gate_kind)-1;
        CHECK(mml_gate_from_name(mml_gate_name((mml_gate_kind)g), &v) == 0 && v == (mml_gate_kind)g, "gate %d", g);
    }
    mml_gate_kind gk = MML_GATE_INPUT;
    CHECK(mml_gate_from_name("base", &gk) == -1 && gk == MML_GATE_INPUT, "gate alias leaked");
    CHECK(!strcmp(mml_gate_name((mml_gate_kind)2), "?"), "gate 2: %s", mml_gate_name((mml_gate_kind)2));
    for (int q = 0; q < 2; q++) {
        mml_precision v = (mml_precision)-1;
        CHECK(mml_precision_from_name(mml_precision_name((mml_precision)q), &v) == 0 && v == (mml_precision)q,
              "precision %d", q);
    }
    mml_precision pr = MML_PRECISION_BF16;
    CHECK(mml_precision_from_name("fp16", &pr) == -1 && pr == MML_PRECISION_BF16, "fp16 accepted");
    CHECK(!strcmp(mml_precision_name(MML_PRECISION_BF16), "bf16"), "bf16: %s", mml_precision_name(MML_PRECISION_BF16));
    CHECK(!strcmp(mml_precision_name((mml_precision)-1), "?"), "precision -1");
    mmlt_ctx = "";
}

/* Dense Adam moves every embedding (and linear-logit) row every step; the library replays a
 * row's missed zero-gradient steps when the row is next read (narrow rows in
 * blocks of rows of similar age). The replay must give exactly the parameters
 * of a full pass per step: narrow, medium and wide rows, with and without
 * weight decay, a full catch-up in the middle, ages beyond the sorted range. */
static void test_deferred_dense_adam(void) {
    mmlt_ctx = "deferred dense adam";
    for (int var = 0; var < 12; var++) {
        int lazy = var == 7, dims[3] = {8, 32, 128};
        mml_config_t c;
        mml_config_default(&c);
        c.adapter = MML_ADAPTER_NONE;
        c.model = var == 0 ? MML_MODEL_MLP : MML_MODEL_WDL; /* WDL: linear-logit rows replay too */
        c.n_users = var == 6 ? 3000 : var == 11 ? 6000 : 50; c.n_items = 40; c.n_domains = 3;
        c.emb_dim = dims[var % 3];
        c.weight_decay = var >= 3 && var < 6 ? 1e-3f : 0.0f;
        if (var >= 8 && var <= 10) { /* two workers share the replays (or not: few rows to replay) */
            if (mmlt_max_threads() < 2) continue;
            c.threads = 2;
            c.n_users = var == 10 ? 50 : 3000;
        }
        mmlt_tower(&c, 16, 8);
        c.max_batch = 256;
        c.lazy_adam = lazy;
        mml_model_t *a, *b;
        CHECK_OK(mml_model_create(&c, &a));
        CHECK_OK(mml_model_create(&c, &b));
        /* b is the reference: a full pass over each table every step (the
         * knob is set around b's calls only) */
        CHECK(mml__knobs.defer_min_dim <= c.emb_dim, "emb %d should use the deferred path", c.emb_dim);
        uint64_t s = 99;
        int32_t u[256], p[256], d[256];
        float y[256];
        int nb = var == 8 || var == 9 ? 256 : 16;
        /* 3000 users: rows older than the age buckets; 6000 users over 4300
         * steps, the upper half seen only in the first 150: rows older than
         * the ring of Adam constants, and replays that run across its end */
        int steps = var == 6 ? 1300 : var == 11 ? (quick ? 0 : 4300) : var >= 8 ? 300 : 40;
        for (int step = 0; step < steps; step++) {
            if (step == 20) {
                mml__catch_up_all(a);
                CHECK(memcmp(a->P, b->P, (size_t)a->a.n_floats * sizeof(float)) == 0, "var %d: differ at step 20", var);
            }
            for (int i = 0; i < nb; i++) {
                u[i] = (int32_t)(mml__rng_next(&s) % (uint64_t)(var == 11 && step >= 150 ? c.n_users / 2 : c.n_users));
                p[i] = (int32_t)(mml__rng_next(&s) % 40);
                d[i] = (int32_t)(mml__rng_next(&s) % 3);
                y[i] = (float)(mml__rng_next(&s) & 1);
            }
            mml_batch_t bt = mml_batch_paper(nb, u, p, d, y);
            CHECK_OK(mml_train_step(a, &bt, NULL));
            mml__knobs.defer_min_dim = 1 << 30;
            CHECK_OK(mml_train_step(b, &bt, NULL));
            mml__knobs.defer_min_dim = 0;
        }
        mml__catch_up_all(a);
        CHECK(memcmp(a->P, b->P, (size_t)a->a.n_floats * sizeof(float)) == 0,
              "var %d (emb %d, lazy %d): deferred rows differ from the per-step pass", var, c.emb_dim, lazy);
        CHECK(memcmp(a->opt.M, b->opt.M, (size_t)a->a.n_floats * sizeof(float)) == 0, "var %d: moments differ", var);
        CHECK(memcmp(a->opt.V, b->opt.V, (size_t)a->a.n_floats * sizeof(float)) == 0, "var %d: second moments differ", var);
        mml_model_free(a);
        mml_model_free(b);
    }
}


/* Subnormal floats are flushed to zero while the library computes (worker
 * threads always, the caller's thread during a call, restored after it). A
 * moment of an embedding row no batch holds decays by beta1 each dense-Adam
 * step: from 2 FLT_MIN it passes below FLT_MIN after 7 steps and must then
 * be 0, whether the steps ran as a pass per step or as replays when the row
 * was next read, at 1 and 2 threads. */
static volatile float g_tiny = FLT_MIN / 4.0f, g_one = 1.0f; /* volatile: computed at run time */

/* Not inlined: a call is not moved across the changes of the flush mode. */
__attribute__((noinline)) static int flushes_here(void) {
    volatile float r = g_tiny * g_one;
    return r == 0.0f;
}

typedef struct flush_job { pthread_t caller; int on_worker, worker_flushed; } flush_job;
static void flush_part(void *arg, int w) {
    (void)w;
    flush_job *j = (flush_job *)arg;
    if (pthread_equal(pthread_self(), j->caller)) { /* long enough for a worker to claim the other part */
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
        return;
    }
    __atomic_fetch_add(&j->on_worker, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&j->worker_flushed, flushes_here(), __ATOMIC_RELAXED);
}

static int subnormals_skipped;

static void test_subnormals(void) {
    mmlt_ctx = "subnormals";
    CHECK(!flushes_here(), "the test's own thread flushes subnormals before any call");
    unsigned fp = mml__flush_begin();
    int honoured = flushes_here();
    mml__flush_end(fp);
    if (!honoured) { /* valgrind runs SSE code with FTZ and DAZ ignored */
        printf("skipped: subnormals: the flush mode is set but this CPU or emulator ignores it (valgrind)\n");
        subnormals_skipped = 1;
        mmlt_ctx = "";
        return;
    }
    for (int threads = 1; threads <= (mmlt_max_threads() < 2 ? 1 : 2); threads++)
        for (int deferred = 0; deferred < 2; deferred++) {
            mml_config_t c;
            mml_config_default(&c);
            c.adapter = MML_ADAPTER_NONE;
            c.model = MML_MODEL_WDL;
            c.n_users = 50; c.n_items = 40; c.n_domains = 3;
            c.emb_dim = 8;
            c.threads = threads;
            mmlt_tower(&c, 16, 8);
            c.max_batch = 64;
            mml_model_t *m;
            CHECK_OK(mml_model_create(&c, &m));
            int32_t u[64], p[64], d[64];
            float y[64], prob[64];
            uint64_t s = 5;
            const mml__param *ue = &m->a.t[m->a.field[0].emb];
            float *M0 = m->opt.M + ue->off; /* user 0's row */
            if (!deferred) mml__knobs.defer_min_dim = 1 << 30;
            for (int step = 0; step < 21; step++) {
                for (int i = 0; i < 64; i++) { /* user 0 only in the first step */
                    u[i] = step == 0 && i == 0 ? 0 : 1 + (int32_t)(mml__rng_next(&s) % 49);
                    p[i] = (int32_t)(mml__rng_next(&s) % 40);
                    d[i] = (int32_t)(mml__rng_next(&s) % 3);
                    y[i] = (float)(mml__rng_next(&s) & 1);
                }
                mml_batch_t b = mml_batch_paper(64, u, p, d, y);
                CHECK_OK(mml_train_step(m, &b, NULL));
                if (step == 0)
                    for (int j = 0; j < 8; j++) M0[j] = 2.0f * FLT_MIN;
            }
            mml_batch_t b = mml_batch_paper(64, u, p, d, NULL);
            CHECK_OK(mml_predict(m, &b, prob)); /* reads every row: the replays run */
            mml__knobs.defer_min_dim = 0;
            int zero = 0;
            for (int j = 0; j < 8; j++) zero += M0[j] == 0.0f;
            CHECK(zero == 8, "threads %d, %s: %d of 8 moments of an idle row flushed to 0 after 20 steps (first %g)",
                  threads, deferred ? "replayed" : "pass per step", zero, (double)M0[0]);
            CHECK(!flushes_here(), "threads %d: the caller's thread flushes subnormals after the calls", threads);
            if (threads > 1) {
                flush_job j = {pthread_self(), 0, 0};
                for (int k = 0; k < 200 && j.on_worker < 20; k++) mml__pool_run(m->rt.pool, flush_part, &j);
                CHECK(j.on_worker > 0, "no pool part ran on a worker in 200 jobs");
                CHECK(j.worker_flushed == j.on_worker, "%d of %d parts on a worker flushed subnormals",
                      j.worker_flushed, j.on_worker);
            }
            mml_model_free(m);
        }
    mmlt_ctx = "";
}

int main(void) {
    quick = mmlt_quick();
    mml_isa isa = mmlt_isa();
    printf("test_model on %s%s\n", mml_isa_name(isa), quick ? " (quick)" : "");
    double t0 = now_s();
    test_gradients();
    gc_print_total(t0);
    double t1 = now_s();
    test_folded_training();
    test_fold_inference();
    test_phases();
    test_metrics();
    test_oov_and_batches();
    test_bad_configs();
    test_enum_names();
    test_deferred_dense_adam();
    test_subnormals();
    printf("  phases/metrics/oov/configs: %.2f s\n", now_s() - t1);
    test_fit();
    printf("  total time %.2f s\n", now_s() - t0);
    int rc = mmlt_finish("test_model");
    return rc ? rc : subnormals_skipped ? MMLT_SKIP : 0;
}
