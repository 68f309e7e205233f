/* mml_fit's early-stopping criterion and mml_evaluate's summaries and checks:
 *   - validation labels of one class in every domain: every stage stops on the
 *     validation log loss (val_metric "logloss"), so the training is kept: the
 *     model differs from the initial one and the test log loss is below
 *     ln 2 - 0.02;
 *   - validation labels of one class in one domain: the stages of that
 *     domain's expert stop on its log loss (the others on AUC), and the expert
 *     keeps what it learnt (its adapter block moved from the initial zeros);
 *   - 100 domains: mean and weighted AUC cover all of them (a case where the
 *     first 64 alone give another mean);
 *   - an allocation failure inside a domain's AUC is MML_ERR_NOMEM naming the
 *     domain, never a domain silently left out (an allocator that fails the
 *     n-th allocation);
 *   - bad n_domains, dom_start and missing arrays are MML_ERR_ARG.
 * MOEMLORA_TEST_QUICK=1 (valgrind) shrinks data and epochs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 0: every allocation succeeds; n > 0: the n-th allocation from now fails. */
static long fail_countdown;
static void *test_malloc(size_t sz) {
    if (fail_countdown > 0 && --fail_countdown == 0) return NULL;
    return malloc(sz);
}
#define MOEMLORA_MALLOC(sz) test_malloc(sz)
#define MOEMLORA_FREE(p) free(p)

#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

static int quick;

static void fit_config(mml_config_t *c, const mml_data_t *d, mml_adapter a) {
    mmlt_fit_config(c, d, 5);
    c->adapter = a;
    c->threads = 1;
}

static void fit_opts(mml_fit_opts_t *o) {
    mml_fit_opts_default(o);
    o->batch = 128;
    o->max_epochs = quick ? 4 : 8;
    o->patience = 2;
}

/* Sets every validation label of domain d (-1: of every domain) to y. */
static void one_class_val(mml_data_t *d, int dom, float y) {
    const mml_split_t *s = &d->split[MML_VAL];
    for (int k = 0; k < d->n_domains; k++)
        if (dom < 0 || k == dom)
            for (int64_t i = s->dom_start[k]; i < s->dom_start[k + 1]; i++) s->label[i] = y;
}

/* What the progress callback saw, per stage (0: backbone or the only stage,
 * 1..E: experts, E+1: gate). */
#define MAX_STAGES 16
typedef struct crit_rec {
    int n_experts;
    int epochs[MAX_STAGES], improved[MAX_STAGES], logloss[MAX_STAGES], auc[MAX_STAGES], finite[MAX_STAGES];
} crit_rec;

static void record_criterion(const mml_progress_t *p, void *user) {
    crit_rec *r = (crit_rec *)user;
    if (p->event != MML_EV_EPOCH_END) return;
    int s = !strcmp(p->phase_name, "expert") ? 1 + p->expert : !strcmp(p->phase_name, "gate") ? r->n_experts + 1 : 0;
    if (s >= MAX_STAGES) return;
    r->epochs[s]++;
    r->improved[s] += p->improved != 0;
    r->logloss[s] += p->val_metric && !strcmp(p->val_metric, "logloss");
    r->auc[s] += p->val_metric && !strcmp(p->val_metric, "auc");
    r->finite[s] += isfinite(p->val_score);
}

/* mml_fit of m on d with fit_opts, what each epoch reports recorded in r. */
static void fit_recording(mml_model_t *m, const mml_data_t *d, crit_rec *r, mml_metrics_t *t) {
    mml_fit_opts_t o;
    fit_opts(&o);
    memset(r, 0, sizeof *r);
    r->n_experts = mml_model_n_experts(m);
    o.progress = record_criterion;
    o.user = r;
    CHECK_OK(mml_fit(m, d, &o, t));
}

static int same_params(const mml_model_t *a, const mml_model_t *b) {
    return memcmp(a->P, b->P, (size_t)a->a.n_floats * sizeof(float)) == 0;
}

/* The block of expert e in the first layer's lora_B (zero at creation). */
static const float *expert_block(const mml_model_t *m, int e, int64_t *n) {
    for (int i = 0; i < m->a.n_params; i++)
        if (!strcmp(m->a.t[i].name, "tower.0.lora_B")) {
            *n = m->a.t[i].xblock;
            return m->P + m->a.t[i].off + (int64_t)e * m->a.t[i].xblock;
        }
    *n = 0;
    return NULL;
}

/* ---- one-class validation --------------------------------------------------- */

static void test_one_class_everywhere(void) {
    printf("validation labels all 0 in every domain: early stopping on the log loss\n");
    mmlt_ctx = "one class everywhere";
    mml_data_t d;
    mmlt_fit_data(&d, quick ? 3000 : 6000);
    one_class_val(&d, -1, 0.0f);
    mml_config_t c;
    fit_config(&c, &d, MML_ADAPTER_MOE);
    mml_model_t *m = make_model(&c), *init = make_model(&c);
    crit_rec r;
    mml_metrics_t t;
    fit_recording(m, &d, &r, &t);
    CHECK(!same_params(m, init), "the fit returned the initial parameters");
    CHECK(t.logloss_all < log(2.0) - 0.02, "test log loss %.4f, not below ln 2 - 0.02", t.logloss_all);
    for (int s = 0; s <= r.n_experts + 1; s++) {
        CHECK(r.epochs[s] > 0 && r.logloss[s] == r.epochs[s], "stage %d: %d of %d epochs report \"logloss\"", s,
              r.logloss[s], r.epochs[s]);
        CHECK(r.finite[s] == r.epochs[s], "stage %d: val_score not finite", s);
        CHECK(r.improved[s] > 0, "stage %d: no epoch counted as better", s);
    }
    printf("  test log loss %.4f (ln 2 = %.4f)\n", t.logloss_all, log(2.0));
    mml_model_free(m);
    mml_model_free(init);
    mml_data_free(&d);
    mmlt_ctx = "";
}

static void test_one_class_expert(void) {
    printf("validation labels all 1 in domain 1: its expert stops on its log loss\n");
    mmlt_ctx = "one class in one domain";
    const int dom = 1;
    mml_data_t d;
    mmlt_fit_data(&d, quick ? 3000 : 6000);
    one_class_val(&d, dom, 1.0f);
    mml_config_t c;
    fit_config(&c, &d, MML_ADAPTER_MOE);
    mml_model_t *m = make_model(&c);
    crit_rec r;
    mml_metrics_t t;
    fit_recording(m, &d, &r, &t);
    for (int s = 0; s <= r.n_experts + 1; s++) {
        int own = s >= 1 && s <= r.n_experts && (s - 1) % d.n_domains == dom;
        CHECK(r.epochs[s] > 0 && (own ? r.logloss[s] : r.auc[s]) == r.epochs[s],
              "stage %d: %d epochs, %d report \"logloss\", %d \"auc\"", s, r.epochs[s], r.logloss[s], r.auc[s]);
        CHECK(r.improved[s] > 0, "stage %d: no epoch counted as better", s);
    }
    int64_t n = 0, moved = 0;
    const float *b = expert_block(m, dom, &n);
    for (int64_t i = 0; i < n; i++) moved += b[i] != 0.0f;
    CHECK(n > 0 && moved > 0, "expert %d's adapter is still the initial zeros (%lld of %lld entries moved)", dom,
          (long long)moved, (long long)n);
    printf("  expert %d: %lld of %lld adapter entries trained; test log loss %.4f\n", dom, (long long)moved,
           (long long)n, t.logloss_all);
    mml_model_free(m);
    mml_data_free(&d);
    mmlt_ctx = "";
}

/* ---- metrics over many domains ------------------------------------------------ */

#define ND 100

static void test_hundred_domains(void) {
    printf("100 domains: mean and weighted AUC over all of them\n");
    mmlt_ctx = "100 domains";
    mml_config_t c;
    mml_config_default(&c);
    c.adapter = MML_ADAPTER_NONE;
    c.n_users = 4000;
    c.n_items = 500;
    c.n_domains = ND;
    c.emb_dim = 4;
    mmlt_tower(&c, 16, 8);
    c.dropout = 0.0f;
    c.lr = 1e-2f;
    c.max_batch = 64;
    c.threads = 1;
    mml_model_t *m = make_model(&c);
    /* a few steps on random labels spread the predictions */
    int32_t bu[64], bp[64], bd[64];
    float bl[64];
    uint64_t rng = 7;
    for (int step = 0; step < 20; step++) {
        for (int i = 0; i < 64; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            bu[i] = (int32_t)((rng >> 33) % 4000);
            bp[i] = (int32_t)((rng >> 20) % 500);
            bd[i] = (int32_t)((rng >> 45) % ND);
            bl[i] = (float)((rng >> 60) & 1);
        }
        mml_batch_t b = mml_batch_paper(64, bu, bp, bd, bl);
        CHECK_OK(mml_train_step(m, &b, NULL));
    }
    /* domain d holds 10 + 2 (d % 5) rows; the labels make its AUC 1 for the
     * first 64 domains and 0 for the others */
    int64_t start[ND + 1];
    start[0] = 0;
    for (int k = 0; k < ND; k++) start[k + 1] = start[k] + 10 + 2 * (k % 5);
    int64_t n = start[ND];
    int32_t *u = (int32_t *)malloc((size_t)n * 4), *p = (int32_t *)malloc((size_t)n * 4),
            *dm = (int32_t *)malloc((size_t)n * 4);
    float *y = (float *)malloc((size_t)n * 4), *prob = (float *)malloc((size_t)n * 4);
    for (int k = 0; k < ND; k++)
        for (int64_t i = start[k]; i < start[k + 1]; i++) {
            u[i] = (int32_t)i;
            p[i] = (int32_t)((i * 7) % 500);
            dm[i] = k;
        }
    double want_auc[ND], sum = 0.0, sum64 = 0.0, wsum = 0.0;
    for (int k = 0; k < ND; k++) {
        int64_t a = start[k], nk = start[k + 1] - a;
        mml_batch_t b = mml_batch_paper((int32_t)nk, u + a, p + a, dm + a, NULL); /* one domain per batch, as mml_evaluate does */
        CHECK_OK(mml_predict(m, &b, prob + a));
        for (int64_t i = 0; i < nk; i++) { /* rank of row i within the domain */
            int64_t below = 0;
            for (int64_t j = 0; j < nk; j++) below += prob[a + j] < prob[a + i] || (prob[a + j] == prob[a + i] && j < i);
            int top = below >= nk / 2;
            y[a + i] = (float)(k < 64 ? top : !top);
        }
        want_auc[k] = mml_auc(nk, prob + a, y + a);
        sum += want_auc[k];
        wsum += want_auc[k] * (double)nk;
        if (k < 64) sum64 += want_auc[k];
    }
    double want_mean = sum / ND, mean64 = sum64 / 64, want_w = wsum / (double)n;
    CHECK(mean64 - want_mean > 0.2, "the constructed case does not separate: mean %.4f, first 64 %.4f", want_mean,
          mean64);
    mml_split_t s = {n, u, p, dm, y, start, NULL, NULL};
    mml_metrics_t *mt = (mml_metrics_t *)malloc(sizeof *mt);
    CHECK_OK(mml_evaluate(m, &s, ND, mt));
    CHECK(fabs(mt->mean_auc - want_mean) < 1e-12, "mean AUC %.6f, over all 100 domains %.6f (first 64: %.6f)",
          mt->mean_auc, want_mean, mean64);
    CHECK(fabs(mt->weighted_auc - want_w) < 1e-12, "weighted AUC %.6f, over all 100 domains %.6f", mt->weighted_auc,
          want_w);
    CHECK(mt->n_domains == ND && mt->n_all == n, "n_domains %d, n_all %lld", mt->n_domains, (long long)mt->n_all);
    if (mt->n_domains == ND)
        CHECK(mt->auc[ND - 1] == want_auc[ND - 1] && mt->n[ND - 1] == start[ND] - start[ND - 1],
              "domain 99: AUC %.4f (want %.4f), n %lld", mt->auc[ND - 1], want_auc[ND - 1], (long long)mt->n[ND - 1]);
    printf("  mean AUC %.4f (first 64 domains alone: %.4f), weighted %.4f\n", mt->mean_auc, mean64, mt->weighted_auc);
    /* more than MML_MAX_DOMAINS: refused where data and models are made */
    mml_synth_config_t sc;
    mml_synth_default(&sc);
    sc.n_domains = MML_MAX_DOMAINS + 1;
    sc.n_users = 2 * sc.n_domains;
    sc.n_samples = 20 * sc.n_domains;
    mml_data_t big;
    mml_status st = mml_data_synthetic(&sc, &big);
    CHECK(st == MML_ERR_ARG && strstr(mml_last_error(), "MML_MAX_DOMAINS"), "synthetic data with %d domains: %d, \"%s\"",
          sc.n_domains, (int)st, mml_last_error());
    if (st == MML_OK) mml_data_free(&big);
    c.n_domains = MML_MAX_DOMAINS + 1;
    mml_model_t *m2 = NULL;
    st = mml_model_create(&c, &m2);
    CHECK(st == MML_ERR_ARG && strstr(mml_last_error(), "MML_MAX_DOMAINS"), "a config with %d domains: %d, \"%s\"",
          c.n_domains, (int)st, mml_last_error());
    mml_model_free(m2);
    free(mt);
    free(u); free(p); free(dm); free(y); free(prob);
    mml_model_free(m);
    mmlt_ctx = "";
}

/* ---- evaluate: allocation failure, bad arguments ---------------------------------- */

static void test_evaluate_nomem(mml_model_t *m, const mml_data_t *d) {
    printf("evaluate: a failing allocation inside a domain's AUC\n");
    mmlt_ctx = "evaluate nomem";
    mml_metrics_t t;
    CHECK_OK(mml_evaluate(m, &d->split[MML_TEST], d->n_domains, &t)); /* first call: workspaces settle */
    for (int k = 0; k < d->n_domains; k++) CHECK(isfinite(t.auc[k]), "domain %d has no AUC", k);
    /* allocation 1 is the prediction buffer, then one per domain's AUC */
    for (int k = 0; k < d->n_domains; k++) {
        fail_countdown = 2 + k;
        mml_status st = mml_evaluate(m, &d->split[MML_TEST], d->n_domains, &t);
        long left = fail_countdown;
        fail_countdown = 0;
        char want[64];
        snprintf(want, sizeof want, "AUC of domain %d", k);
        CHECK(left == 0, "domain %d: the failing allocation was not reached", k);
        CHECK(st == MML_ERR_NOMEM && strstr(mml_last_error(), want),
              "AUC allocation of domain %d failed: status %d, \"%s\" (mean AUC %.4f over the rest)", k, (int)st,
              mml_last_error(), t.mean_auc);
    }
    /* the public AUC keeps its contract: NaN */
    fail_countdown = 1;
    double a = mml_auc(4, (const float[]){0.1f, 0.4f, 0.35f, 0.8f}, (const float[]){0, 0, 1, 1});
    fail_countdown = 0;
    CHECK(a != a, "mml_auc without memory: %g, expected NaN", a);
    mmlt_ctx = "";
}

static void expect_arg(mml_model_t *m, const mml_split_t *s, int32_t nd, const char *what, const char *word) {
    mml_metrics_t t;
    mml_status st = mml_evaluate(m, s, nd, &t);
    CHECK(st == MML_ERR_ARG && strstr(mml_last_error(), word), "%s: status %d, \"%s\" (wanted MML_ERR_ARG naming %s)",
          what, (int)st, mml_last_error(), word);
}

static void test_evaluate_args(mml_model_t *m, const mml_data_t *d) {
    printf("evaluate: bad n_domains, dom_start and arrays\n");
    mmlt_ctx = "evaluate arguments";
    const mml_split_t *v = &d->split[MML_VAL];
    int nd = d->n_domains;
    int64_t ds[8];
    memcpy(ds, v->dom_start, sizeof(int64_t) * (size_t)(nd + 1));
    mml_split_t s = *v;
    s.dom_start = ds;
    ds[nd] = v->n - 5; /* stops short of the split's rows */
    expect_arg(m, &s, nd, "dom_start[n_domains] < n", "dom_start");
    ds[nd] = v->n;
    ds[0] = 1;
    expect_arg(m, &s, nd, "dom_start[0] = 1", "dom_start");
    ds[0] = 0;
    int64_t keep = ds[1];
    ds[1] = ds[2] + 1; /* domain 1 would end before it starts */
    expect_arg(m, &s, nd, "dom_start decreasing", "dom_start");
    ds[1] = keep;
    expect_arg(m, &s, 0, "n_domains 0", "n_domains");
    expect_arg(m, &s, nd - 1, "n_domains below the split's", "dom_start");
    expect_arg(m, &s, MML_MAX_DOMAINS + 1, "n_domains above MML_MAX_DOMAINS", "n_domains");
    s.dom_start = NULL;
    expect_arg(m, &s, nd, "dom_start NULL", "dom_start");
    s.dom_start = ds;
    s.label = NULL;
    expect_arg(m, &s, nd, "label NULL", "label");
    s.label = v->label;
    s.uid = NULL;
    expect_arg(m, &s, nd, "uid NULL", "uid");
    s = *v;
    CHECK_OK(mml_evaluate(m, &s, nd, &(mml_metrics_t){0}));
    mmlt_ctx = "";
}

int main(void) {
    quick = mmlt_quick();
    test_one_class_everywhere();
    test_one_class_expert();
    test_hundred_domains();
    mml_data_t d;
    mmlt_fit_data(&d, 3000);
    mml_config_t c;
    fit_config(&c, &d, MML_ADAPTER_MLORA);
    mml_model_t *m = make_model(&c);
    test_evaluate_nomem(m, &d);
    test_evaluate_args(m, &d);
    mml_model_free(m);
    mml_data_free(&d);
    return mmlt_finish("test_fit");
}
