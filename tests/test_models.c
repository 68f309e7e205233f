/* The eight CTR models (+ MLP) x adapters (none, MLoRA, MoE-MLoRA in the
 * all-parameters and the gate phase):
 *   - gradients of every parameter tensor vs. central differences of the mean
 *     BCE (emb 4, tower 8-4, batch 5; all entries of small tensors and of the
 *     embedding / linear rows in the batch, 24 random + the 8 largest-|g|
 *     entries of big ones such as xDeepFM's CIN), the same tolerance and kink
 *     handling as test_model.c; parameters the phase does not train and rows
 *     outside the batch must get exactly zero gradient;
 *   - worker threads: the gradients of a step with 2 and 3 threads match the
 *     one-thread gradients (every tensor, within rounding of its largest
 *     entry; embedding rows bit for bit at the first step), over several
 *     steps, every model and
 *     phase, frozen pretrained embeddings, lazy Adam; the workers' own
 *     gradients and row marks are left clear, and every gradient and mark is
 *     clear after the optimizer step;
 *   - a short mml_fit (3 epochs per phase) per model, base and MoE-MLoRA, on
 *     small synthetic data with a strong signal: weighted test AUC > 0.55.
 * Runs on the ISA mml_simd_resolve picks (ctest forces scalar, avx2, avx512).
 * MOEMLORA_TEST_QUICK=1 (valgrind) shrinks the data and the models checked. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

#include <stdint.h>
#include <time.h>

static int quick;

#include "mml_gradcheck.h"

/* ---- gradient-check configurations ---------------------------------------- */

#define GB 5
static const int32_t g_uid[GB] = {0, 3, 3, 6, 1};
static const int32_t g_pid[GB] = {4, 1, 1, 0, 2};
static const int32_t g_dom[GB] = {0, 1, 2, 1, 0};
static const float g_lab[GB] = {1, 0, 1, 0, 1};

typedef struct acase { const char *name; mml_adapter adapter; mml_phase phase; } acase;
static const acase adapters[] = {
    {"none", MML_ADAPTER_NONE, MML_PHASE_ALL},
    {"mlora", MML_ADAPTER_MLORA, MML_PHASE_ALL},
    {"moe-all", MML_ADAPTER_MOE, MML_PHASE_ALL},
    {"moe-gate", MML_ADAPTER_MOE, MML_PHASE_GATE},
};

/* xDeepFM: with Glorot-initialised CIN weights and O(0.5) embeddings the
 * second CIN layer's pre-activations are ~1e-3, so almost every one of its
 * biases sits within a finite-difference step of a ReLU kink; O(1) weights
 * keep the kinks rare without changing what is computed. */
static void randomize_cin(mml_model_t *m) {
    float *w = m->P + m->a.t[m->a.part[0]].off;
    int F = m->a.F, L = MML__CIN_LAYERS;
    for (int h = 0; h < L; h++) {
        mml__cin_layer g = mml__cin_geom(1, F, 1, L, mml__cin_sizes, 1, h);
        for (int64_t j = g.w_off; j < g.b_off; j++) w[j] = tfrand(0.8f);
        for (int64_t j = g.b_off; j < g.b_off + g.h; j++) w[j] = tfrand(0.1f);
    }
    size_t o = mml__cin_param_offset(F, L, mml__cin_sizes, 1, L);
    for (int j = 0; j < mml__cin_fmap_sum(L, mml__cin_sizes, 1); j++) w[o + (size_t)j] = tfrand(0.1f);
}

static void test_gradients(void) {
    printf("gradient checks (emb 4, tower 8-4, lora_reduce 4, batch %d)\n", GB);
    for (int mk = 0; mk < MML_MODEL_COUNT; mk++) {
        for (size_t a = 0; a < sizeof adapters / sizeof adapters[0]; a++) {
            if (quick && a != 2) continue; /* valgrind: the richest case only */
            mml_config_t c;
            mmlt_config_paper(&c, 7, 5, 3);
            c.model = (mml_model_kind)mk;
            c.adapter = adapters[a].adapter;
            c.emb_dim = 4;
            mmlt_tower(&c, 8, 4);
            c.lora_reduce = 4; /* ranks 2, 1 */
            c.dropout = 0.0f;
            c.max_batch = 8;
            c.seed = 500 + (uint64_t)mk * 10 + a;
            mml_model_t *m = make_model(&c);
            randomize_params(m);
            if (c.model == MML_MODEL_XDEEPFM) randomize_cin(m);
            CHECK_OK(mml_model_set_phase(m, adapters[a].phase, 0));
            char tag[64];
            snprintf(tag, sizeof tag, "%s/%s", mml_model_kind_name(c.model), adapters[a].name);
            mml_batch_t b = mml_batch_paper(GB, g_uid, g_pid, g_dom, g_lab);
            check_gradients(m, &b, tag, 4e-3f);
            mml_model_free(m);
        }
    }
}

/* ---- a mixed schema ---------------------------------------------------------- */

/* Two categorical fields and the domain, a multi-hot list and two numeric
 * fields, interleaved (the domain in the middle): every model kind over all
 * of them. The flattening models also get a field of another dim. */
enum { SF = 6 };
static void mixed_schema(mml_schema_t *s, int other_dim) {
    static const char *const names[SF] = {"c1", "n1", "tags", "dom", "c2", "n2"};
    static const mml_field_kind kinds[SF] = {MML_FIELD_CATEGORICAL, MML_FIELD_NUMERIC, MML_FIELD_MULTI_HOT,
                                             MML_FIELD_CATEGORICAL, MML_FIELD_CATEGORICAL, MML_FIELD_NUMERIC};
    static const int vocab[SF] = {7, 0, 6, 3, 5, 0};
    mmlt_schema(s, SF, 3, names, kinds, vocab, 1.0f);
    s->field[2].max_len = 3;
    s->field[2].pooling = MML_POOL_MEAN;
    s->field[1].shift = 0.5f;
    s->field[5].scale = 0.25f;
    if (other_dim) s->field[4].dim = 6;
}

static const int32_t s_c1[GB] = {0, 3, 3, 6, 1}, s_c2[GB] = {4, 1, 1, 0, 2};
static const int32_t s_tags[GB * 3] = {1, 4, -1, 0, -1, -1, 5, 5, 2, -1, -1, -1, 3, 2, 1};
static const float s_n1[GB] = {0.1f, 1.5f, -0.7f, 0.3f, 2.0f}, s_n2[GB] = {3.0f, -1.0f, 0.5f, 8.0f, -4.0f};

static void test_schema_gradients(void) {
    printf("gradient checks, mixed schema (2 categorical + domain, 1 multi-hot, 2 numeric)\n");
    const int32_t *ids[SF] = {s_c1, NULL, s_tags, g_dom, s_c2, NULL};
    const float *vals[SF] = {NULL, s_n1, NULL, NULL, NULL, s_n2};
    mml_batch_t b = {GB, NULL, NULL, NULL, g_lab, ids, vals};
    for (int mk = 0; mk < MML_MODEL_COUNT; mk++)
        for (size_t a = 0; a < sizeof adapters / sizeof adapters[0]; a++)
            for (int od = 0; od < 2; od++) {
                if (quick && a != 2) continue;
                if (od && mml__kinds[mk].equal_dims) continue;
                mml_schema_t s;
                mixed_schema(&s, od);
                mml_config_t c;
                mml_config_default(&c);
                c.schema = &s;
                c.model = (mml_model_kind)mk;
                c.adapter = adapters[a].adapter;
                c.emb_dim = 4;
                mmlt_tower(&c, 8, 4);
                c.lora_reduce = 4;
                c.dropout = 0.0f;
                c.max_batch = 8;
                c.seed = 900 + (uint64_t)mk * 10 + a;
                mml_model_t *m = make_model(&c);
                randomize_params(m);
                if (c.model == MML_MODEL_XDEEPFM) randomize_cin(m);
                if (m->a.lin_num >= 0)
                    for (int j = 0; j < 2; j++) m->P[m->a.t[m->a.lin_num].off + j] = tfrand(0.3f);
                CHECK_OK(mml_model_set_phase(m, adapters[a].phase, 0));
                CHECK(m->a.F == 4 && m->a.n_num == 2 && m->a.field[m->a.dom_field].src == 3,
                      "%s: %d embedded, %d numeric fields", mml_model_kind_name(c.model), m->a.F, m->a.n_num);
                char tag[64];
                snprintf(tag, sizeof tag, "schema %s/%s%s", mml_model_kind_name(c.model), adapters[a].name,
                         od ? " dims 4,6" : "");
                check_gradients(m, &b, tag, 4e-3f);
                mml_model_free(m);
            }
    /* interaction models refuse fields of several dims */
    mml_schema_t s;
    mixed_schema(&s, 1);
    mml_config_t c;
    mml_config_default(&c);
    c.schema = &s;
    c.model = MML_MODEL_DEEPFM;
    mml_model_t *m = NULL;
    CHECK(mml_model_create(&c, &m) == MML_ERR_ARG && strstr(mml_last_error(), "one embedding dim"),
          "deepfm with dims 4 and 6: %s", mml_last_error());
    mml_model_free(m);
}

/* ---- worker threads ------------------------------------------------------------ */

/* Are all of g's gradients zero (of a worker: the part it uses) and its row
 * marks clear? */
static int grads_clear(const mml_model_t *m, const mml__grads *g, int worker) {
    for (int64_t j = worker ? mml__worker_grads_from(m) : 0; j < m->a.n_floats; j++)
        if (g->G[j] != 0.0f) return 0;
    for (int f = 0; f < m->a.F; f++) {
        if (g->n_touched[f]) return 0;
        for (int64_t r = 0; r < m->a.t[m->a.field[f].emb].shape[0]; r++)
            if (g->mark[f][r]) return 0;
    }
    return 1;
}

/* Tensor by tensor: |a - b| <= 1e-4 * max|a| + 1e-7 (a sum of ~100 terms of
 * 1e-3 may cancel: out.b); with exact_rows, embedding rows bit for bit. A
 * worker's lost or doubled share moves entries by their own size, 1e-3. */
static int grads_match(const mml_model_t *a, const mml_model_t *b, int exact_rows, char *why, size_t len) {
    for (int i = 0; i < a->a.n_params; i++) {
        const mml__param *p = &a->a.t[i];
        const float *ga = a->grads.G + p->off, *gb = b->grads.G + p->off;
        double top = 0.0, worst = 0.0;
        for (int64_t j = 0; j < p->size; j++) top = fmax(top, fabs(ga[j]));
        for (int64_t j = 0; j < p->size; j++) worst = fmax(worst, fabs((double)ga[j] - gb[j]));
        int exact = exact_rows && p->row_table && p->group == MML__G_EMB;
        if (exact ? worst != 0.0 : worst > 1e-4 * top + 1e-7) {
            snprintf(why, len, "%s: largest difference %.3g (largest entry %.3g)", p->name, worst, top);
            return 0;
        }
    }
    return 1;
}

static void test_thread_gradients(void) {
    if (mmlt_max_threads() < 2) return;
    printf("worker threads: gradients with 2 and 3 threads against 1\n");
    typedef struct tcase { mml_adapter a; mml_phase phase; int expert, lazy, pretrained; } tcase;
    static const tcase cases[] = {
        {MML_ADAPTER_NONE, MML_PHASE_ALL, 0, 0, 0},     {MML_ADAPTER_MLORA, MML_PHASE_ALL, 0, 0, 0},
        {MML_ADAPTER_MOE, MML_PHASE_ALL, 0, 0, 0},      {MML_ADAPTER_MOE, MML_PHASE_BACKBONE, 0, 1, 0},
        {MML_ADAPTER_MOE, MML_PHASE_EXPERT, 4, 0, 0},   {MML_ADAPTER_MOE, MML_PHASE_GATE, 0, 0, 0},
        {MML_ADAPTER_MOE, MML_PHASE_BACKBONE, 0, 0, 1},
    };
    enum { TB = 96, STEPS = 3 };
    int32_t uid[TB], pid[TB], dom[TB], tags[TB * 3];
    float lab[TB], n1[TB], n2[TB];
    int checked = 0;
    mml_schema_t sch;
    mixed_schema(&sch, 0);
    sch.field[0].vocab = 40;
    sch.field[4].vocab = 30;
    sch.field[2].vocab = 25;
    /* with the mixed schema (a list, numeric inputs, the domain in the middle) */
    const int32_t *ids[SF] = {uid, NULL, tags, dom, pid, NULL};
    const float *vals[SF] = {NULL, n1, NULL, NULL, NULL, n2};
    /* fold: no dropout, domain-folded training forced (each worker folds its
     * rows' runs, the base weight included), WDL's mixing phases */
    for (int fold = 0; fold < 2; fold++)
    for (int prec = 0; prec < 2; prec++) /* bf16: the tower's products, a few models */
    for (int schema = 0; schema < 2; schema++)
    for (int mk = 0; mk < MML_MODEL_COUNT; mk++)
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            const tcase *tc = &cases[ci];
            if (quick && (mk != MML_MODEL_WDL || tc->phase != MML_PHASE_ALL || prec)) continue;
            if (fold && (schema || mk != MML_MODEL_WDL || tc->a == MML_ADAPTER_NONE ||
                         (tc->phase != MML_PHASE_ALL && tc->phase != MML_PHASE_GATE)))
                continue;
            if (schema && (tc->pretrained || (mk != MML_MODEL_WDL && mk != MML_MODEL_DCN && mk != MML_MODEL_FIBINET)))
                continue;
            if (prec && (schema || (mk != MML_MODEL_WDL && mk != MML_MODEL_AUTOINT))) continue;
            mml_config_t c;
            mmlt_config_paper(&c, 40, 30, 3);
            c.precision = prec ? MML_PRECISION_BF16 : MML_PRECISION_FP32;
            c.schema = schema ? &sch : NULL;
            c.model = (mml_model_kind)mk;
            c.adapter = tc->a;
            c.emb_dim = mk == MML_MODEL_DCN ? 16 : 4;
            mmlt_tower(&c, 16, 8);
            c.lora_reduce = 4;
            c.experts_per_domain = 2;
            c.dropout = fold ? 0.0f : 0.2f;
            c.lazy_adam = tc->lazy;
            c.pretrained = tc->pretrained;
            c.max_batch = TB;
            c.seed = 900 + (uint64_t)mk;
            mml_model_t *m[3];
            for (int t = 0; t < 3; t++) {
                c.threads = t + 1;
                m[t] = make_model(&c);
                CHECK_OK(mml_model_set_phase(m[t], tc->phase, tc->expert));
            }
            char tag[96];
            snprintf(tag, sizeof tag, "%s%s%s%s/%s phase %d%s%s", fold ? "folded " : "", prec ? "bf16 " : "",
                     schema ? "schema " : "",
                     mml_model_kind_name(c.model),
                     mml_adapter_name(c.adapter), (int)tc->phase, tc->lazy ? " lazy" : "",
                     tc->pretrained ? " pretrained" : "");
            mmlt_ctx = tag;
            for (int step = 0; step < STEPS; step++) {
                for (int i = 0; i < TB; i++) { /* repeated ids, mixed domains */
                    uid[i] = (int32_t)(tnext() % 40);
                    pid[i] = (int32_t)(tnext() % 30);
                    dom[i] = tc->phase == MML_PHASE_EXPERT ? tc->expert % 3 : (int32_t)(tnext() % 3);
                    lab[i] = (float)(tnext() & 1);
                    n1[i] = (float)(tnext() % 100) * 0.02f;
                    n2[i] = (float)(tnext() % 100) * -0.05f;
                    for (int q = 0; q < 3; q++) tags[i * 3 + q] = q && (tnext() & 1) ? -1 : (int32_t)(tnext() % 25);
                }
                mml_batch_t b = mml_batch_paper(TB, uid, pid, dom, lab);
                if (schema) {
                    b.ids = ids;
                    b.values = vals;
                }
                double loss[3];
                mml__knobs.tf_force = fold;
                for (int t = 0; t < 3; t++) CHECK_OK(mml__step_gradients(m[t], &b, &loss[t]));
                mml__knobs.tf_force = 0;
                CHECK(!fold || (m[0]->pass.tf_on[0] && m[0]->pass.tf_base), "step %d: not folded with the base weight",
                      step);
                for (int t = 1; t < 3; t++) {
                    char why[160] = "";
                    CHECK(mmlt_close(loss[t], loss[0], 1e-5, 0.0), "step %d, %d threads: loss %.9g vs %.9g", step,
                          t + 1, loss[t], loss[0]);
                    /* one summation order for embedding rows: exact while the parameters are equal;
                     * bf16: after a step the parameters differ in their last bits, which moves
                     * some bf16 inputs by a whole bf16 step, so only the first step compares */
                    CHECK((prec && step) || grads_match(m[0], m[t], step == 0, why, sizeof why),
                          "step %d, %d threads: %s", step, t + 1, why);
                    for (int v = 0; v < t; v++)
                        CHECK(grads_clear(m[t], &m[t]->rt.workers[v].grads, 1),
                              "step %d, %d threads: worker %d kept gradients or marks",
                              step, t + 1, v + 1);
                    checked++;
                }
                for (int t = 0; t < 3; t++) {
                    mml__optimizer_step(m[t], &m[t]->pass.plan);
                    m[t]->opt.steps++;
                    CHECK(grads_clear(m[t], &m[t]->grads, 0), "step %d, %d threads: gradients or marks left after the step", step, t + 1);
                }
            }
            for (int t = 0; t < 3; t++) mml_model_free(m[t]);
        }
    mmlt_ctx = "";
    printf("  %d steps compared\n", checked);
}

/* ---- bf16 precision ------------------------------------------------------------ */

/* The small model of the bf16 checks: kind mk, adapter case a, 40 users,
 * 30 items, 3 domains, emb 16, tower 64-32, batches of tb rows. */
static void bf16_config(mml_config_t *c, int mk, size_t a, int tb, uint64_t seed) {
    mmlt_config_paper(c, 40, 30, 3);
    c->model = (mml_model_kind)mk;
    c->adapter = adapters[a].adapter;
    c->emb_dim = 16;
    mmlt_tower(c, 64, 32);
    c->lora_reduce = 4;
    c->max_batch = tb;
    c->seed = seed;
}

/* n random rows of bf16_config's vocabularies. */
static void bf16_rows(int n, int32_t *uid, int32_t *pid, int32_t *dom) {
    for (int i = 0; i < n; i++) {
        uid[i] = (int32_t)(tnext() % 40);
        pid[i] = (int32_t)(tnext() % 30);
        dom[i] = (int32_t)(tnext() % 3);
    }
}

/* cfg.precision = bf16 against fp32 from the same parameters and batch. The
 * tower's products take inputs off by <= 2^-9 relative, so the loss moves by
 * about that (1e-3 allowed). A gradient moves more: pre-activations within
 * that rounding of zero flip their ReLU, and a fraction f of flipped units
 * moves a gradient by about sqrt(f) of its norm (seen: up to 0.32 on these
 * O(1) weights, where the backward's own rounding alone gives 0.002); half
 * of a tensor's norm is allowed, a wrong product moves it by ~1 or more. Some
 * gradient must differ (the bf16 kernels ran), and inference is fp32: the
 * same probabilities bit for bit. */
#define BF16_GRAD_REL 0.5
static void test_bf16_gradients(mml_isa isa) {
    printf("bf16 precision (%s GEMMs): a step's gradients against fp32, inference unchanged\n", mml__bf16_path(isa));
    enum { TB = 64 };
    int32_t uid[TB], pid[TB], dom[TB];
    float lab[TB], prob[2][TB];
    int compared = 0;
    double worst_rel = 0.0;
    for (int mk = 0; mk < MML_MODEL_COUNT; mk++)
        for (size_t a = 0; a < sizeof adapters / sizeof adapters[0]; a++) {
            if (quick && (mk != MML_MODEL_WDL || a != 2)) continue;
            mml_config_t c;
            bf16_config(&c, mk, a, TB, 700 + (uint64_t)mk);
            c.dropout = 0.2f;
            mml_model_t *m[2];
            for (int p = 0; p < 2; p++) {
                c.precision = p ? MML_PRECISION_BF16 : MML_PRECISION_FP32;
                m[p] = make_model(&c);
                CHECK_OK(mml_model_set_phase(m[p], adapters[a].phase, 0));
            }
            randomize_params(m[0]); /* adapters at work, gradients that do not cancel to noise */
            memcpy(m[1]->P, m[0]->P, (size_t)m[0]->a.n_floats * sizeof(float));
            char tag[64];
            snprintf(tag, sizeof tag, "bf16 %s/%s", mml_model_kind_name(c.model), adapters[a].name);
            mmlt_ctx = tag;
            bf16_rows(TB, uid, pid, dom);
            for (int i = 0; i < TB; i++) lab[i] = (float)((uid[i] + pid[i] + dom[i]) % 3 == 0);
            mml_batch_t b = mml_batch_paper(TB, uid, pid, dom, lab);
            double loss[2];
            for (int p = 0; p < 2; p++) CHECK_OK(mml__step_gradients(m[p], &b, &loss[p]));
            CHECK(mmlt_close(loss[1], loss[0], 1e-3, 0.0), "loss %.9g (bf16) vs %.9g", loss[1], loss[0]);
            int differ = 0;
            for (int i = 0; i < m[0]->a.n_params; i++) {
                const mml__param *t = &m[0]->a.t[i];
                const float *g0 = m[0]->grads.G + t->off, *g1 = m[1]->grads.G + t->off;
                double n0 = 0.0, nd = 0.0;
                for (int64_t j = 0; j < t->size; j++) {
                    n0 += (double)g0[j] * g0[j];
                    nd += ((double)g0[j] - g1[j]) * ((double)g0[j] - g1[j]);
                }
                double rel = sqrt(nd) / (sqrt(n0) + 1e-30);
                worst_rel = fmax(worst_rel, n0 > 0.0 ? rel : 0.0);
                CHECK(rel <= BF16_GRAD_REL || n0 == 0.0, "%s: |g_bf16 - g_fp32| / |g_fp32| = %.3g", t->name, rel);
                differ += nd > 0.0;
            }
            CHECK(differ > 0, "no gradient differs from fp32's: the bf16 kernels did not run");
            for (int p = 0; p < 2; p++) CHECK_OK(mml_predict(m[p], &b, prob[p]));
            CHECK(memcmp(prob[0], prob[1], sizeof prob[0]) == 0, "inference of a bf16 model is not fp32's");
            compared++;
            for (int p = 0; p < 2; p++) mml_model_free(m[p]);
        }
    mmlt_ctx = "";
    printf("  %d steps compared; largest relative difference of a tensor's gradient %.3g\n", compared, worst_rel);
}

/* cfg.infer_precision = bf16 (mml_model_set_precision on a live model)
 * against fp32 predictions of the same parameters, unfolded and folded: the
 * tower's inputs move by <= 2^-9 relative, so a probability by far less
 * than 0.01 on these O(1) weights (seen: 0.001; a wrong product moves it by 0.1 or
 * more), and some must move (the bf16 kernels ran). Folding in bf16 packs
 * the folded weights for gemm_packed_bf16, and a change of precision undoes
 * a fold. */
#define BF16_PROB_ABS 0.01
static double bf16_prob_diff(const float *a, const float *b, int n, int *differ) {
    double worst = 0.0;
    *differ = 0;
    for (int i = 0; i < n; i++) { /* not fmax(): GCC 12 for aarch64 fails (ICE) vectorizing that reduction */
        const double d = fabs((double)a[i] - b[i]);
        if (d > worst || d != d) worst = d; /* a NaN stays */
        if (a[i] != b[i]) ++*differ;
    }
    return worst;
}
static void test_bf16_inference(mml_isa isa) {
    printf("bf16 inference (%s GEMMs): predictions against fp32, unfolded and folded\n", mml__bf16_path(isa));
    enum { TB = 96 };
    int32_t uid[TB], pid[TB], dom[TB];
    float prob[4][TB];
    int compared = 0;
    double worst = 0.0;
    for (int mk = 0; mk < MML_MODEL_COUNT; mk++)
        for (size_t a = 0; a < sizeof adapters / sizeof adapters[0]; a++) {
            if (quick && (mk != MML_MODEL_WDL || a == 0)) continue;
            mml_config_t c;
            bf16_config(&c, mk, a, TB, 900 + (uint64_t)mk);
            mml_model_t *m = make_model(&c);
            CHECK_OK(mml_model_set_phase(m, adapters[a].phase, 0));
            randomize_params(m);
            char tag[64];
            snprintf(tag, sizeof tag, "bf16 inference %s/%s", mml_model_kind_name(c.model), adapters[a].name);
            mmlt_ctx = tag;
            bf16_rows(TB, uid, pid, dom);
            mml_batch_t b = mml_batch_paper(TB, uid, pid, dom, NULL);
            int differ;
            CHECK_OK(mml_predict(m, &b, prob[0]));
            CHECK_OK(mml_model_set_precision(m, MML_PRECISION_FP32, MML_PRECISION_BF16));
            CHECK(mml_model_config(m)->infer_precision == MML_PRECISION_BF16, "set_precision: config not updated");
            CHECK_OK(mml_predict(m, &b, prob[1]));
            double d = bf16_prob_diff(prob[0], prob[1], TB, &differ);
            CHECK(d <= BF16_PROB_ABS, "unfolded: |p_bf16 - p_fp32| up to %.3g", d);
            CHECK(differ > 0, "unfolded: no prediction differs from fp32's: the bf16 kernels did not run");
            worst = fmax(worst, d);
            if (mml_model_fold(m) == MML_OK) { /* foldable: base, MLoRA, MoE in the gate phase */
                CHECK(m->fold.ok && mml__fold_bf16(m), "fold after set_precision(bf16): not a bf16 fold");
                CHECK_OK(mml_predict(m, &b, prob[2]));
                d = bf16_prob_diff(prob[0], prob[2], TB, &differ);
                CHECK(d <= BF16_PROB_ABS, "folded: |p_bf16 - p_fp32| up to %.3g", d);
                worst = fmax(worst, d);
                CHECK_OK(mml_model_set_precision(m, MML_PRECISION_FP32, MML_PRECISION_FP32));
                CHECK(!m->fold.ok, "set_precision kept a fold of the other precision");
                CHECK_OK(mml_model_fold(m));
                CHECK(m->fold.ok && !mml__fold_bf16(m), "fold after set_precision(fp32): not an fp32 fold");
                CHECK_OK(mml_predict(m, &b, prob[3]));
                d = bf16_prob_diff(prob[3], prob[2], TB, &differ);
                CHECK(d <= BF16_PROB_ABS && differ > 0, "folded fp32 vs bf16: %d differ, up to %.3g", differ, d);
                d = bf16_prob_diff(prob[3], prob[0], TB, &differ);
                CHECK(d <= 1e-5, "folded fp32 vs unfolded fp32: up to %.3g", d);
            } else /* every adapter here folds but MoE outside its gate phase */
                CHECK(c.adapter == MML_ADAPTER_MOE && adapters[a].phase != MML_PHASE_GATE, "fold refused: %s",
                      mml_last_error());
            CHECK(mml_model_set_precision(m, MML_PRECISION_FP32, (mml_precision)7) == MML_ERR_ARG,
                  "set_precision accepted precision 7");
            compared++;
            mml_model_free(m);
        }
    mmlt_ctx = "";
    printf("  %d models compared; largest probability difference %.3g\n", compared, worst);
}

/* ---- short training runs ------------------------------------------------------ */

static void test_training(void) {
    printf("short training runs (3 epochs per phase)\n");
    mml_synth_config_t sc;
    mmlt_synth3(&sc, 150, 60, quick ? 3000 : 6000);
    sc.noise = 0.1f;
    sc.item_zipf = 0.3f;
    sc.domain_skew = 0.3f;
    sc.ctr = 0.35f;
    mml_data_t d;
    CHECK_OK(mml_data_synthetic(&sc, &d));
    mml_fit_opts_t o;
    mml_fit_opts_default(&o);
    o.batch = 64;
    o.max_epochs = 3;
    o.patience = 3;
    for (int mk = 0; mk < MML_MODEL_COUNT; mk++) {
        double auc[2] = {0, 0}, t[2] = {0, 0};
        for (int a = 0; a < 2; a++) {
            if (quick && (mk != MML_MODEL_DEEPFM || a != 1)) continue;
            mml_config_t c;
            mmlt_fit_config(&c, &d, 31 + (uint64_t)mk);
            c.model = (mml_model_kind)mk;
            c.adapter = a ? MML_ADAPTER_MOE : MML_ADAPTER_NONE;
            c.emb_dim = mk == MML_MODEL_XDEEPFM ? 4 : 8; /* the 128-128 CIN dominates the run time */
            c.dropout = 0.1f;
            c.max_batch = 64;
            mml_model_t *m = make_model(&c);
            mml_metrics_t tm;
            double t0 = now_s();
            mmlt_ctx = mml_model_kind_name(c.model);
            CHECK_OK(mml_fit(m, &d, &o, &tm));
            t[a] = now_s() - t0;
            auc[a] = tm.weighted_auc;
            CHECK(isfinite(tm.logloss_all), "%s: logloss %g", a ? "moe" : "base", tm.logloss_all);
            CHECK(tm.weighted_auc > 0.55, "%s/%s: weighted test AUC %.4f <= 0.55", mml_model_kind_name(c.model),
                  a ? "moe" : "base", tm.weighted_auc);
            mmlt_ctx = "";
            mml_model_free(m);
        }
        printf("  %-8s test WAUC base %.4f (%.2f s), moe %.4f (%.2f s)\n", mml_model_kind_name((mml_model_kind)mk),
               auc[0], t[0], auc[1], t[1]);
    }
    mml_data_free(&d);
}

int main(void) {
    quick = mmlt_quick();
    mml_isa isa = mmlt_isa();
    printf("test_models on %s%s\n", mml_isa_name(isa), quick ? " (quick)" : "");
    double t0 = now_s();
    test_gradients();
    test_schema_gradients();
    gc_print_total(t0);
    test_thread_gradients();
    test_bf16_gradients(isa);
    test_bf16_inference(isa);
    double t1 = now_s();
    test_training();
    printf("  training: %.2f s; total %.2f s\n", now_s() - t1, now_s() - t0);
    return mmlt_finish("test_models");
}
