/* Data-parallel training across processes (mml_model_set_distributed),
 * with threads standing in for the processes and a sum in rank order
 * standing in for MPI_Allreduce:
 *   - train steps with 2 and 3 processes: after every step all replicas hold
 *     the same bits (parameters and both Adam moments) and stay within 2e-5
 *     (2% of the learning rate) of one process trained on the same batches;
 *     every step's summed gradients and, at the end, both Adam moments match
 *     the one process's within 2e-3 of each tensor's largest entry;
 *     every model, every phase, MLoRA on mixed and one-domain batches, lazy
 *     Adam, frozen pretrained embeddings, worker threads inside a process,
 *     and batches with fewer rows than processes (empty shares);
 *   - mml_evaluate and mml_fit: the same metrics in every process, close to
 *     one process; the checkpoint is written by rank 0 only; processes given
 *     different data stop at the start of the fit;
 *   - errors: processes given different batches, a failing transport, bad
 *     arguments; the models are left as before the step. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

#include <pthread.h>
#include <unistd.h>

static int quick;

/* ---- an in-process transport: one slot per rank, summed in rank order ----- */

typedef struct transport {
    int world;
    pthread_barrier_t bar;
    float **slot;
    int64_t cap;
    int fail_at;             /* > 0: the call with this number fails on rank 0 */
    int calls;
} transport;

typedef struct endpoint { transport *t; int rank; } endpoint;

static mml_status sum_floats(float *buf, int64_t n, void *user) {
    endpoint *e = (endpoint *)user;
    transport *t = e->t;
    if (n > t->cap) abort(); /* the test sizes its slots for every call */
    memcpy(t->slot[e->rank], buf, (size_t)n * sizeof(float));
    pthread_barrier_wait(&t->bar);
    int fail = e->rank == 0 && ++t->calls == t->fail_at;
    for (int64_t i = 0; i < n; i++) {
        float s = 0.0f;
        for (int r = 0; r < t->world; r++) s += t->slot[r][i];
        buf[i] = s;
    }
    pthread_barrier_wait(&t->bar);
    return fail ? MML_ERR_IO : MML_OK;
}

static void transport_init(transport *t, int world, int64_t cap) {
    memset(t, 0, sizeof *t);
    t->world = world;
    t->cap = cap;
    pthread_barrier_init(&t->bar, NULL, (unsigned)world);
    t->slot = (float **)calloc((size_t)world, sizeof(float *));
    for (int r = 0; r < world; r++) t->slot[r] = (float *)calloc((size_t)cap, sizeof(float));
}

static void transport_free(transport *t) {
    for (int r = 0; r < t->world; r++) free(t->slot[r]);
    free(t->slot);
    pthread_barrier_destroy(&t->bar);
}

/* Runs fn(arg, rank) on `world` threads and waits. */
typedef void (*rank_fn)(void *arg, int rank);
typedef struct rank_arg { rank_fn fn; void *arg; int rank; } rank_arg;
static void *rank_main(void *p) {
    rank_arg *a = (rank_arg *)p;
    a->fn(a->arg, a->rank);
    return NULL;
}
static void run_ranks(int world, rank_fn fn, void *arg) {
    pthread_t th[8];
    rank_arg a[8];
    for (int r = 0; r < world; r++) {
        a[r] = (rank_arg){fn, arg, r};
        pthread_create(&th[r], NULL, rank_main, &a[r]);
    }
    for (int r = 0; r < world; r++) pthread_join(th[r], NULL);
}

static float max_diff(const float *a, const float *b, int64_t n) {
    float w = 0.0f;
    for (int64_t i = 0; i < n; i++) w = fmaxf(w, fabsf(a[i] - b[i]));
    return w;
}

/* ---- train steps ----------------------------------------------------------- */

enum { TB = 64, STEPS = 4, MAXW = 3 };

typedef struct step_case {
    const char *name;
    mml_model_kind model;
    mml_adapter adapter;
    mml_phase phase;
    int expert, lazy, pretrained, threads, one_domain, rows;
} step_case;

typedef struct step_run {
    const step_case *tc;
    transport t;
    endpoint ep[MAXW];
    mml_model_t *m[MAXW];
    int32_t uid[STEPS][TB], pid[STEPS][TB], dom[STEPS][TB];
    float lab[STEPS][TB], loss[MAXW][STEPS];
    mml_status st[MAXW][STEPS], gst[MAXW][STEPS];
    float *grad[MAXW]; /* each step's summed gradients [STEPS][n_floats] */
} step_run;

/* The summed gradients of batch b as a step sees them before Adam, into g,
 * then cleared: the step proper follows (the only trace is that the batch's
 * embedding rows are already brought up to date, which the step does first). */
static mml_status step_grads(mml_model_t *m, const mml_batch_t *b, float *g) {
    double l;
    mml_status st = mml__step_gradients(m, b, &l);
    memcpy(g, m->grads.G, (size_t)m->a.n_floats * sizeof(float));
    mml__zero_grads(m, NULL);
    return st;
}

static void steps_rank(void *arg, int r) {
    step_run *s = (step_run *)arg;
    mml_model_t *m = s->m[r];
    for (int k = 0; k < STEPS; k++) {
        mml_batch_t b = mml_batch_paper(s->tc->rows, s->uid[k], s->pid[k], s->dom[k], s->lab[k]);
        s->gst[r][k] = step_grads(m, &b, s->grad[r] + (int64_t)k * m->a.n_floats);
        s->st[r][k] = mml_train_step(m, &b, &s->loss[r][k]);
    }
}

/* Adam's update hardly changes when every gradient is scaled by a constant,
 * so the parameters alone would not show a wrong sum: the summed gradients
 * of every step and both moments are compared too, per tensor, relative to
 * the tensor's largest entry. Measured (scalar, AVX2, AVX-512 alike): at most
 * 3.1e-4 for the gradients (out.b, a sum of 64 rows that mostly cancel),
 * 0.9e-4 for m and 1.4e-4 for v (out.W with worker threads). */
#define GAP_TOL 2e-3

/* Largest |a - b| of a tensor over the largest |b| in it (0 when both are
 * all zero, infinite when only b is); the worst tensor's name in *worst. */
static double tensor_gap(const mml_model_t *m, const float *a, const float *b, const char **worst) {
    double w = 0.0;
    *worst = "";
    for (int i = 0; i < m->a.n_params; i++) {
        const mml__param *p = &m->a.t[i];
        double d = 0.0, s = 0.0;
        for (int64_t j = p->off; j < p->off + p->size; j++) {
            d = fmax(d, fabs((double)a[j] - (double)b[j]));
            s = fmax(s, fabs((double)b[j]));
        }
        double g = d == 0.0 ? 0.0 : d / s;
        if (g > w) { w = g; *worst = p->name; }
    }
    return w;
}

static void config_for(const step_case *tc, mml_config_t *c) {
    mmlt_config_paper(c, 50, 40, 3);
    c->model = tc->model;
    c->adapter = tc->adapter;
    c->emb_dim = 8;
    mmlt_tower(c, 32, 16);
    c->lora_reduce = 4;
    c->experts_per_domain = 2;
    c->dropout = 0.2f;
    c->lazy_adam = tc->lazy;
    c->pretrained = tc->pretrained;
    c->threads = tc->threads;
    c->max_batch = TB;
    c->seed = 31;
}

static void test_steps(void) {
    static const step_case cases[] = {
        {"mlp/moe all", MML_MODEL_MLP, MML_ADAPTER_MOE, MML_PHASE_ALL, 0, 0, 0, 1, 0, TB},
        {"wdl/moe backbone", MML_MODEL_WDL, MML_ADAPTER_MOE, MML_PHASE_BACKBONE, 0, 0, 0, 1, 0, TB},
        {"wdl/moe expert 4", MML_MODEL_WDL, MML_ADAPTER_MOE, MML_PHASE_EXPERT, 4, 0, 0, 1, 1, TB},
        {"deepfm/moe gate", MML_MODEL_DEEPFM, MML_ADAPTER_MOE, MML_PHASE_GATE, 0, 0, 0, 1, 0, TB},
        {"dcn/mlora mixed", MML_MODEL_DCN, MML_ADAPTER_MLORA, MML_PHASE_ALL, 0, 0, 0, 1, 0, TB},
        {"nfm/mlora one domain", MML_MODEL_NFM, MML_ADAPTER_MLORA, MML_PHASE_ALL, 0, 0, 0, 1, 1, TB},
        {"pnn/none lazy", MML_MODEL_PNN, MML_ADAPTER_NONE, MML_PHASE_ALL, 0, 1, 0, 1, 0, TB},
        {"xdeepfm/moe all", MML_MODEL_XDEEPFM, MML_ADAPTER_MOE, MML_PHASE_ALL, 0, 0, 0, 1, 0, TB},
        {"autoint/moe all", MML_MODEL_AUTOINT, MML_ADAPTER_MOE, MML_PHASE_ALL, 0, 0, 0, 1, 0, TB},
        {"fibinet/mlora mixed", MML_MODEL_FIBINET, MML_ADAPTER_MLORA, MML_PHASE_ALL, 0, 0, 0, 1, 0, TB},
        {"wdl/moe all pretrained", MML_MODEL_WDL, MML_ADAPTER_MOE, MML_PHASE_BACKBONE, 0, 0, 1, 1, 0, TB},
        {"mlp/moe all 2 threads", MML_MODEL_MLP, MML_ADAPTER_MOE, MML_PHASE_ALL, 0, 0, 0, 2, 0, TB},
        {"wdl/moe all 2 rows", MML_MODEL_WDL, MML_ADAPTER_MOE, MML_PHASE_ALL, 0, 0, 0, 1, 0, 2},
        {"dcn/mlora mixed 3 rows", MML_MODEL_DCN, MML_ADAPTER_MLORA, MML_PHASE_ALL, 0, 0, 0, 1, 0, 3},
    };
    printf("train steps: 2 and 3 processes against one\n");
    int compared = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const step_case *tc = &cases[ci];
        if (quick && ci % 4) continue;
        if (tc->threads > mmlt_max_threads()) continue;
        for (int world = 2; world <= MAXW; world++) {
            char tag[96];
            snprintf(tag, sizeof tag, "%s, %d processes", tc->name, world);
            mmlt_ctx = tag;
            step_run *s = (step_run *)calloc(1, sizeof *s);
            s->tc = tc;
            mml_config_t c;
            config_for(tc, &c);
            mml_model_t *ref = make_model(&c);
            CHECK_OK(mml_model_set_phase(ref, tc->phase, tc->expert));
            transport_init(&s->t, world, mml__dist_capacity(ref) + 16);
            size_t gbytes = (size_t)STEPS * (size_t)ref->a.n_floats * sizeof(float);
            float *gref = (float *)malloc((size_t)ref->a.n_floats * sizeof(float));
            for (int r = 0; r < world; r++) {
                s->grad[r] = (float *)malloc(gbytes);
                if (!s->grad[r] || !gref) abort();
                s->m[r] = make_model(&c);
                s->ep[r] = (endpoint){&s->t, r};
                CHECK_OK(mml_model_set_phase(s->m[r], tc->phase, tc->expert));
                CHECK_OK(mml_model_set_distributed(s->m[r], r, world, sum_floats, &s->ep[r]));
            }
            uint64_t g = 1000 + ci;
            for (int k = 0; k < STEPS; k++)
                for (int i = 0; i < TB; i++) { /* repeated ids, domains mixed unless one_domain */
                    s->uid[k][i] = (int32_t)(mml__rng_next(&g) % 50);
                    s->pid[k][i] = (int32_t)(mml__rng_next(&g) % 40);
                    s->dom[k][i] = tc->one_domain ? (tc->phase == MML_PHASE_EXPERT ? tc->expert % 3 : 1)
                                                  : (int32_t)(mml__rng_next(&g) % 3);
                    s->lab[k][i] = (float)(mml__rng_next(&g) & 1);
                }
            run_ranks(world, steps_rank, s);
            for (int k = 0; k < STEPS; k++) {
                mml_batch_t b = mml_batch_paper(tc->rows, s->uid[k], s->pid[k], s->dom[k], s->lab[k]);
                float lref = 0.0f;
                CHECK_OK(step_grads(ref, &b, gref));
                CHECK_OK(mml_train_step(ref, &b, &lref));
                for (int r = 0; r < world; r++) {
                    CHECK(s->st[r][k] == MML_OK && s->gst[r][k] == MML_OK, "rank %d step %d: status %d, %d", r, k,
                          (int)s->st[r][k], (int)s->gst[r][k]);
                    CHECK(mmlt_close(s->loss[r][k], lref, 1e-5, 1e-7), "rank %d step %d: loss %.8g, one process %.8g",
                          r, k, s->loss[r][k], lref);
                    const char *what;
                    double gap = tensor_gap(ref, s->grad[r] + (int64_t)k * ref->a.n_floats, gref, &what);
                    CHECK(gap <= GAP_TOL, "rank %d step %d: summed gradient of %s %.3g (of its largest entry) from "
                          "one process", r, k, what, gap);
                }
            }
            for (int r = 0; r < world; r++) {
                mml__catch_up_all(s->m[r]);
                mml__catch_up_all(ref);
                size_t bytes = (size_t)ref->a.n_floats * sizeof(float);
                if (r > 0)
                    CHECK(!memcmp(s->m[r]->P, s->m[0]->P, bytes) && !memcmp(s->m[r]->opt.M, s->m[0]->opt.M, bytes) &&
                              !memcmp(s->m[r]->opt.V, s->m[0]->opt.V, bytes),
                          "rank %d differs from rank 0", r);
                float d = max_diff(s->m[r]->P, ref->P, ref->a.n_floats);
                CHECK(d <= 2e-5f, "rank %d: parameters %.3g from one process", r, (double)d);
                const char *wm, *wv;
                double gm = tensor_gap(ref, s->m[r]->opt.M, ref->opt.M, &wm), gv = tensor_gap(ref, s->m[r]->opt.V, ref->opt.V, &wv);
                CHECK(gm <= GAP_TOL, "rank %d: Adam's m of %s %.3g (of its largest entry) from one process", r, wm, gm);
                CHECK(gv <= GAP_TOL, "rank %d: Adam's v of %s %.3g (of its largest entry) from one process", r, wv, gv);
            }
            free(gref);
            for (int r = 0; r < world; r++) free(s->grad[r]);
            compared++;
            for (int r = 0; r < world; r++) mml_model_free(s->m[r]);
            mml_model_free(ref);
            transport_free(&s->t);
            free(s);
        }
    }
    mmlt_ctx = "";
    printf("  %d configurations compared over %d steps\n", compared, STEPS);
}

/* ---- errors ------------------------------------------------------------------ */

typedef struct err_run {
    transport t;
    endpoint ep[2];
    mml_model_t *m[2];
    float *P0[2];
    int32_t uid[2][TB], pid[TB], dom[TB];
    float lab[TB];
    mml_status st[2];
    char msg[2][512];
} err_run;

static void err_rank(void *arg, int r) {
    err_run *s = (err_run *)arg;
    mml_batch_t b = mml_batch_paper(TB, s->uid[r], s->pid, s->dom, s->lab);
    s->st[r] = mml_train_step(s->m[r], &b, NULL);
    snprintf(s->msg[r], sizeof s->msg[r], "%s", mml_last_error());
}

static void test_errors(void) {
    mmlt_ctx = "errors";
    printf("errors: different batches, a failing transport, bad arguments\n");
    step_case tc = {"", MML_MODEL_WDL, MML_ADAPTER_MOE, MML_PHASE_ALL, 0, 0, 0, 1, 0, TB};
    mml_config_t c;
    config_for(&tc, &c);
    for (int what = 0; what < 2; what++) {
        err_run *s = (err_run *)calloc(1, sizeof *s);
        for (int r = 0; r < 2; r++) {
            s->m[r] = make_model(&c);
            s->ep[r] = (endpoint){&s->t, r};
            s->P0[r] = (float *)malloc((size_t)s->m[r]->a.n_floats * sizeof(float));
            memcpy(s->P0[r], s->m[r]->P, (size_t)s->m[r]->a.n_floats * sizeof(float));
        }
        transport_init(&s->t, 2, mml__dist_capacity(s->m[0]) + 16);
        for (int r = 0; r < 2; r++) CHECK_OK(mml_model_set_distributed(s->m[r], r, 2, sum_floats, &s->ep[r]));
        uint64_t g = 5;
        for (int i = 0; i < TB; i++) {
            s->uid[0][i] = s->uid[1][i] = (int32_t)(mml__rng_next(&g) % 50);
            s->pid[i] = (int32_t)(mml__rng_next(&g) % 40);
            s->dom[i] = (int32_t)(mml__rng_next(&g) % 3);
            s->lab[i] = (float)(mml__rng_next(&g) & 1);
        }
        if (what == 0) s->uid[1][17] = (s->uid[1][17] + 1) % 50; /* rank 1's batch differs in one id */
        else s->t.fail_at = 1;                                     /* the first sum fails on rank 0 */
        run_ranks(2, err_rank, s);
        if (what == 0) {
            for (int r = 0; r < 2; r++)
                CHECK(s->st[r] == MML_ERR_STATE && strstr(s->msg[r], "differ"), "rank %d: status %d, \"%s\"", r,
                      (int)s->st[r], s->msg[r]);
        } else {
            CHECK(s->st[0] == MML_ERR_IO && strstr(s->msg[0], "sum of the gradients failed"), "failing sum: %d \"%s\"",
                  (int)s->st[0], s->msg[0]);
        }
        for (int r = 0; r < 2; r++) {
            if (s->st[r] == MML_OK) continue;
            CHECK(!memcmp(s->m[r]->P, s->P0[r], (size_t)s->m[r]->a.n_floats * sizeof(float)),
                  "rank %d: a failed step changed the parameters", r);
            int64_t nz = 0;
            for (int64_t j = 0; j < s->m[r]->a.n_floats; j++) nz += s->m[r]->grads.G[j] != 0.0f;
            CHECK(nz == 0, "rank %d: a failed step left %lld gradient entries", r, (long long)nz);
        }
        if (what == 0) printf("  different batches: \"%s\"\n", s->msg[0]);
        else printf("  failing transport: \"%s\"\n", s->msg[0]);
        for (int r = 0; r < 2; r++) {
            mml_model_free(s->m[r]);
            free(s->P0[r]);
        }
        transport_free(&s->t);
        free(s);
    }
    mml_model_t *m = make_model(&c);
    CHECK(mml_model_set_distributed(m, 0, 0, sum_floats, NULL) == MML_ERR_ARG, "world 0 accepted");
    CHECK(mml_model_set_distributed(m, 2, 2, sum_floats, NULL) == MML_ERR_ARG, "rank 2 of 2 accepted");
    CHECK(mml_model_set_distributed(m, -1, 2, sum_floats, NULL) == MML_ERR_ARG, "rank -1 accepted");
    CHECK(mml_model_set_distributed(m, 0, 2, NULL, NULL) == MML_ERR_ARG, "no sum function accepted");
    CHECK(mml_model_set_distributed(m, 0, 5000, sum_floats, NULL) == MML_ERR_ARG, "world 5000 accepted");
    CHECK_OK(mml_model_set_distributed(m, 0, 1, NULL, NULL)); /* off */
    mml_model_free(m);
    mmlt_ctx = "";
}

/* ---- evaluate and fit --------------------------------------------------------- */

typedef struct fit_run {
    transport t;
    endpoint ep[2];
    mml_model_t *m[2];
    const mml_data_t *d, *d1; /* d1: rank 1's data when it differs */
    mml_fit_opts_t o[2];
    mml_metrics_t test[2], val[2];
    mml_status st[2];
    char ckpt[2][600];
} fit_run;

static void fit_rank(void *arg, int r) {
    fit_run *s = (fit_run *)arg;
    if (s->d1) { /* processes given different data must stop, not wait on each other */
        s->st[r] = mml_fit(s->m[r], r ? s->d1 : s->d, &s->o[r], &s->test[r]);
        return;
    }
    s->st[r] = mml_evaluate(s->m[r], &s->d->split[MML_VAL], s->d->n_domains, &s->val[r]);
    if (!s->st[r]) s->st[r] = mml_fit(s->m[r], s->d, &s->o[r], &s->test[r]);
}

static void test_fit(void) {
    mmlt_ctx = "fit";
    printf("mml_evaluate and mml_fit with 2 processes\n");
    mml_synth_config_t sc;
    mmlt_synth3(&sc, 300, 120, quick ? 6000 : 20000);
    mml_data_t d;
    CHECK_OK(mml_data_synthetic(&sc, &d));
    mml_config_t c;
    mmlt_config_paper(&c, d.n_users, d.n_items, d.n_domains);
    c.model = MML_MODEL_WDL;
    mmlt_tower(&c, 32, 16);
    c.max_batch = 256;
    mml_fit_opts_t o;
    mml_fit_opts_default(&o);
    o.batch = 256;
    o.max_epochs = 3;
    fit_run *s = (fit_run *)calloc(1, sizeof *s);
    s->d = &d;
    const char *td = getenv("TMPDIR");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/mml_dist_XXXXXX", td && *td ? td : "/tmp");
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    int64_t cap = 0;
    for (int r = 0; r < 2; r++) {
        s->m[r] = make_model(&c);
        s->ep[r] = (endpoint){&s->t, r};
        s->o[r] = o;
        snprintf(s->ckpt[r], sizeof s->ckpt[r], "%s/rank%d.mml", dir, r);
        s->o[r].checkpoint_path = s->ckpt[r];
    }
    cap = mml__dist_capacity(s->m[0]);
    for (int k = 0; k < 3; k++) cap = d.split[k].n > cap ? d.split[k].n : cap;
    transport_init(&s->t, 2, cap + 16);
    for (int r = 0; r < 2; r++) CHECK_OK(mml_model_set_distributed(s->m[r], r, 2, sum_floats, &s->ep[r]));
    run_ranks(2, fit_rank, s);
    mml_model_t *ref = make_model(&c);
    mml_metrics_t val_ref, test_ref;
    CHECK_OK(mml_evaluate(ref, &d.split[MML_VAL], d.n_domains, &val_ref));
    CHECK_OK(mml_fit(ref, &d, &o, &test_ref));
    for (int r = 0; r < 2; r++) CHECK(s->st[r] == MML_OK, "rank %d: %d", r, (int)s->st[r]);
    CHECK(s->val[0].weighted_auc == s->val[1].weighted_auc && s->val[0].logloss_all == s->val[1].logloss_all,
          "evaluate: ranks differ (%.9f, %.9f)", s->val[0].weighted_auc, s->val[1].weighted_auc);
    CHECK(fabs(s->val[0].weighted_auc - val_ref.weighted_auc) < 1e-6, "evaluate: %.7f, one process %.7f",
          s->val[0].weighted_auc, val_ref.weighted_auc);
    CHECK(!memcmp(&s->test[0], &s->test[1], sizeof s->test[0]), "fit: the ranks' test metrics differ");
    CHECK(!memcmp(s->m[0]->P, s->m[1]->P, (size_t)ref->a.n_floats * sizeof(float)), "fit: the replicas differ");
    CHECK(fabs(s->test[0].weighted_auc - test_ref.weighted_auc) < 5e-3, "fit: weighted AUC %.4f, one process %.4f",
          s->test[0].weighted_auc, test_ref.weighted_auc);
    CHECK(access(s->ckpt[0], R_OK) == 0, "rank 0 wrote no checkpoint");
    CHECK(access(s->ckpt[1], F_OK) != 0, "rank 1 wrote a checkpoint");
    printf("  weighted test AUC: 2 processes %.4f, one process %.4f\n", s->test[0].weighted_auc,
           test_ref.weighted_auc);
    /* rank 1 given other data: both stop at the start of the fit */
    mml_data_t d1;
    sc.seed++;
    CHECK_OK(mml_data_synthetic(&sc, &d1));
    s->d1 = &d1;
    run_ranks(2, fit_rank, s);
    for (int r = 0; r < 2; r++)
        CHECK(s->st[r] == MML_ERR_STATE, "different data, rank %d: status %d", r, (int)s->st[r]);
    mml_data_free(&d1);
    unlink(s->ckpt[0]);
    rmdir(dir);
    for (int r = 0; r < 2; r++) mml_model_free(s->m[r]);
    mml_model_free(ref);
    transport_free(&s->t);
    free(s);
    mml_data_free(&d);
    mmlt_ctx = "";
}

int main(void) {
    quick = mmlt_quick();
    mml_isa isa = mmlt_isa();
    if (mmlt_max_threads() < 2) {
        printf("skipped: the processes are simulated by threads (MOEMLORA_TEST_ONE_THREAD)\n");
        return MMLT_SKIP;
    }
    printf("test_dist on %s%s\n", mml_isa_name(isa), quick ? " (quick)" : "");
    test_steps();
    test_errors();
    test_fit();
    return mmlt_finish("test_dist");
}
