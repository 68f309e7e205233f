/* Reliability of checkpoints and the allocation-free hot paths:
 *   (a) exact resume: a fit resumed from the checkpoint written after epoch k
 *       (loaded into a fresh model, as after a crash) ends with the same
 *       parameter arena, bit for bit, as an uninterrupted fit; k covers the
 *       backbone, expert and gate stages of MoE-MLoRA, stage boundaries, and
 *       the base and MLoRA schedules; fp32 and bf16 precision;
 *   (b) a training checkpoint saved in any phase loads with the same arenas,
 *       phase and counters, predicts the same bits and trains on identically;
 *   (c) an exported model predicts the same bits (mml_predict and sessions);
 *   (d) corrupt files (wrong magic, truncations, a wrong tensor shape, CONF
 *       with an unknown / missing / duplicated key or a bad value, non-finite
 *       weights) fail with MML_ERR_FORMAT or MML_ERR_ARG naming the file;
 *   (e) a full disk (write hook failing after N bytes): MML_ERR_IO, the
 *       previous checkpoint still loads and predicts the same, no temporary
 *       file is left behind;
 *   (f) mml_train_step (1 and 2 threads), mml_predict (1 and 1024 rows) and
 *       mml_session_predict allocate nothing after their first call;
 *   (g) a checkpoint resumes only its own run: mml_model_fit_state tells a
 *       stopped fit (with its options), a finished one, an export and a new
 *       model apart; mml_fit refuses other data (rows differ, sizes differ),
 *       another batch or seed, and a finished fit ("already finished", also
 *       in the process that ran it); max_epochs and patience may change; a
 *       checkpoint without the fingerprint (before 0.4) resumes unchecked.
 * MOEMLORA_TEST_QUICK=1 (valgrind) shrinks data, tower and the k covered. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Every allocation of the library goes through these two. */
static long long n_allocs;
static void *counting_malloc(size_t sz) {
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    return malloc(sz);
}
static void counting_free(void *p) { free(p); }
#define MOEMLORA_MALLOC(sz) counting_malloc(sz)
#define MOEMLORA_FREE(p) counting_free(p)

#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

static int quick;
static char tmpdir[512];
static mml_data_t data;

/* ---- helpers -------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void tpath(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

static int copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    char buf[1 << 15];
    size_t k;
    int ok = in && out;
    while (ok && (k = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, k, out) == k;
    if (in) fclose(in);
    if (out && fclose(out)) ok = 0;
    return ok ? 0 : -1;
}

static int write_all(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(b, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Files in tmpdir whose name holds ".tmp." (the atomic writer's temporaries). */
static int count_temporaries(void) {
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static void base_config(mml_config_t *c, mml_adapter a) {
    mml_config_default(c);
    c->adapter = a;
    c->n_users = data.n_users;
    c->n_items = data.n_items;
    c->n_domains = data.n_domains;
    c->threads = 1;
    if (quick) mmlt_tower(c, 32, 16);
}

static void base_opts(mml_fit_opts_t *o) {
    mml_fit_opts_default(o);
    o->batch = 256;
    o->max_epochs = quick ? 2 : 4;
    o->patience = 2;
    o->seed = 99;
}

/* The test split plus rows with unknown users, items and domains. */
typedef struct rows { int n; int32_t *u, *p, *d; } rows;
static rows eval_rows;

static void make_eval_rows(void) {
    const mml_split_t *s = &data.split[MML_TEST];
    int n = (int)s->n + 6;
    eval_rows.n = n;
    eval_rows.u = (int32_t *)malloc((size_t)n * 4);
    eval_rows.p = (int32_t *)malloc((size_t)n * 4);
    eval_rows.d = (int32_t *)malloc((size_t)n * 4);
    for (int i = 0; i < (int)s->n; i++) { eval_rows.u[i] = s->uid[i]; eval_rows.p[i] = s->pid[i]; eval_rows.d[i] = s->dom[i]; }
    for (int j = 0; j < 6; j++) {
        int i = (int)s->n + j;
        eval_rows.u[i] = j & 1 ? data.n_users + j : j;
        eval_rows.p[i] = j & 2 ? -1 - j : j;
        eval_rows.d[i] = j >= 4 ? data.n_domains + 3 : j % data.n_domains;
    }
}

static float *predict_all(mml_model_t *m) {
    float *p = (float *)malloc((size_t)eval_rows.n * sizeof(float));
    mml_batch_t b = mml_batch_paper(eval_rows.n, eval_rows.u, eval_rows.p, eval_rows.d, NULL);
    CHECK_OK(mml_predict(m, &b, p));
    return p;
}

static float *session_predict_all(mml_model_t *m) {
    float *p = (float *)malloc((size_t)eval_rows.n * sizeof(float));
    mml_session_t *s = NULL;
    CHECK_OK(mml_session_create(m, &s));
    mml_batch_t b = mml_batch_paper(eval_rows.n, eval_rows.u, eval_rows.p, eval_rows.d, NULL);
    if (s) CHECK_OK(mml_session_predict(s, &b, p));
    mml_session_free(s);
    return p;
}

static int same_predictions(mml_model_t *a, mml_model_t *b) {
    float *pa = predict_all(a), *pb = predict_all(b);
    int same = memcmp(pa, pb, (size_t)eval_rows.n * sizeof(float)) == 0;
    for (int i = 0; i < eval_rows.n; i++) same &= pa[i] == pa[i];
    free(pa);
    free(pb);
    return same;
}

static int same_arena(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

/* ---- (a) exact resume ----------------------------------------------------- */

#define MAX_EPOCHS_TOTAL 256

/* Copies the checkpoint aside at every EPOCH_END: the file on disk then holds
 * the state after the previous epoch (the library saves right after the
 * event), exactly what a process killed at that moment leaves behind. */
typedef struct recorder {
    const char *ckpt;
    int n_epochs;
    const char *stage_of[MAX_EPOCHS_TOTAL + 1]; /* phase name of epoch k (1-based) */
    int expert_of[MAX_EPOCHS_TOTAL + 1];
    int copy_failed;
} recorder;

static void saved_name(char *buf, size_t n, const char *tag, int k) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s_ep%d.mml", tag, k);
    tpath(buf, n, nm);
}

static const char *rec_tag;

static void record_epochs(const mml_progress_t *p, void *user) {
    recorder *r = (recorder *)user;
    if (p->event != MML_EV_EPOCH_END) return;
    if (r->n_epochs >= 1) {
        char dst[1024];
        saved_name(dst, sizeof dst, rec_tag, r->n_epochs);
        if (copy_file(r->ckpt, dst)) r->copy_failed++;
    }
    if (r->n_epochs < MAX_EPOCHS_TOTAL) {
        r->n_epochs++;
        r->stage_of[r->n_epochs] = p->phase_name;
        r->expert_of[r->n_epochs] = p->expert;
    }
}

/* The epochs to resume from: all of them (quick: the first, the last of the
 * backbone, the first expert and the gate stage, and the very last). */
static int pick_epochs(const recorder *r, int *ks) {
    int n = 0;
    for (int k = 1; k <= r->n_epochs; k++) {
        int last = k == r->n_epochs || r->stage_of[k] != r->stage_of[k + 1] || r->expert_of[k] != r->expert_of[k + 1];
        int take = quick ? (k == 1 || (last && r->expert_of[k] <= 0) || k == r->n_epochs) : 1;
        if (take) ks[n++] = k;
    }
    return n;
}

static void test_resume_adapter(mml_adapter a, int threads, mml_precision prec, const char *tag) {
    mmlt_ctx = tag;
    mml_config_t c;
    base_config(&c, a);
    c.threads = threads;
    c.precision = prec;
    mml_fit_opts_t o;
    base_opts(&o);
    mml_metrics_t t_straight, t;
    double t0 = now_s();

    mml_model_t *ref = make_model(&c);
    CHECK_OK(mml_fit(ref, &data, &o, &t_straight));
    double t_fit = now_s() - t0;

    /* the same fit writing checkpoints must not change a single bit */
    char ck[1024];
    tpath(ck, sizeof ck, "run.mml");
    recorder r;
    memset(&r, 0, sizeof r);
    r.ckpt = ck;
    rec_tag = tag;
    mml_fit_opts_t oc = o;
    oc.checkpoint_path = ck;
    oc.progress = record_epochs;
    oc.user = &r;
    mml_model_t *rec = make_model(&c);
    CHECK_OK(mml_fit(rec, &data, &oc, &t));
    CHECK(same_arena(ref->P, rec->P, ref->a.n_floats), "checkpointing changed the fit");
    CHECK(r.copy_failed == 0, "%d checkpoint copies failed", r.copy_failed);
    CHECK(r.n_epochs >= 2 && r.n_epochs < MAX_EPOCHS_TOTAL, "%d epochs", r.n_epochs);
    char last[1024];
    saved_name(last, sizeof last, tag, r.n_epochs);
    CHECK(copy_file(ck, last) == 0, "copy %s", ck);
    mml_model_free(rec);

    int ks[MAX_EPOCHS_TOTAL], nk = pick_epochs(&r, ks), n_same = 0;
    for (int i = 0; i < nk; i++) {
        int k = ks[i];
        char path[1024];
        saved_name(path, sizeof path, tag, k);
        mml_model_t *m = NULL;
        mml_status st = mml_model_load(path, &m);
        CHECK(st == MML_OK, "load %s: %s", path, mml_last_error());
        if (st) continue;
        CHECK(m->fit.active == 1, "epoch %d: checkpoint is not marked mid-fit", k);
        CHECK(m->cfg.precision == prec, "epoch %d: the checkpoint lost the precision", k);
        /* resuming with checkpointing on, as the trainer does */
        mml_fit_opts_t orr = o;
        char ck2[1024];
        tpath(ck2, sizeof ck2, "resumed.mml");
        orr.checkpoint_path = ck2;
        CHECK_OK(mml_fit(m, &data, &orr, &t));
        int same = same_arena(ref->P, m->P, ref->a.n_floats);
        CHECK(same, "%s: resume after epoch %d (%s%s%d) differs from the straight run", tag, k, r.stage_of[k],
              r.expert_of[k] >= 0 ? " expert " : "", r.expert_of[k] >= 0 ? r.expert_of[k] : 0);
        CHECK(memcmp(&t, &t_straight, sizeof t) == 0, "%s: epoch %d: test metrics differ", tag, k);
        n_same += same;
        mml_model_free(m);
    }
    printf("resume %-6s: %d epochs in the fit (%.2f s), %d resume points, %d bit-identical:", tag, r.n_epochs, t_fit,
           nk, n_same);
    for (int i = 0; i < nk; i++) {
        printf(" %d(%s", ks[i], r.stage_of[ks[i]]);
        if (r.expert_of[ks[i]] >= 0) printf(" %d", r.expert_of[ks[i]]);
        printf(")");
    }
    printf("\n");
    if (a == MML_ADAPTER_MOE) {
        int stages_seen[3] = {0, 0, 0};
        for (int i = 0; i < nk; i++) {
            const char *s = r.stage_of[ks[i]];
            stages_seen[0] |= !strcmp(s, "backbone");
            stages_seen[1] |= !strcmp(s, "expert");
            stages_seen[2] |= !strcmp(s, "gate");
        }
        CHECK(stages_seen[0] && stages_seen[1] && stages_seen[2], "resume points miss a stage");
    }
    mml_model_free(ref);
}

/* ---- (b) training checkpoints, (c) exports ------------------------------- */

static void train_steps(mml_model_t *m, int steps, uint64_t seed) {
    const mml_split_t *s = &data.split[MML_TRAIN];
    int32_t u[64], p[64], d[64];
    float l[64];
    for (int k = 0; k < steps; k++) {
        int dom = (int)((seed + (uint64_t)k) % (uint64_t)data.n_domains);
        int64_t a = s->dom_start[dom], n = s->dom_start[dom + 1] - a;
        for (int i = 0; i < 64; i++) {
            int64_t r = a + (int64_t)((seed * 7919 + (uint64_t)k * 131 + (uint64_t)i * 17) % (uint64_t)n);
            u[i] = s->uid[r]; p[i] = s->pid[r]; d[i] = s->dom[r]; l[i] = s->label[r];
        }
        mml_batch_t b = mml_batch_paper(64, u, p, d, l);
        CHECK_OK(mml_train_step(m, &b, NULL));
    }
}

static void check_saved_state(mml_model_t *m, const char *what) {
    char path[1024];
    tpath(path, sizeof path, "state.mml");
    CHECK_OK(mml_model_save(m, path));
    mml_model_t *l = NULL;
    mml_status st = mml_model_load(path, &l);
    CHECK(st == MML_OK, "%s: load: %s", what, mml_last_error());
    if (st) return;
    int64_t nf = m->a.n_floats;
    CHECK(same_arena(m->P, l->P, nf) && same_arena(m->opt.M, l->opt.M, nf) && same_arena(m->opt.V, l->opt.V, nf) &&
              same_arena(m->snapshot, l->snapshot, nf), "%s: arenas differ after load", what);
    CHECK(l->ph.phase == m->ph.phase && l->ph.expert == m->ph.expert && l->opt.t == m->opt.t && l->opt.steps == m->opt.steps,
          "%s: phase %d/%d expert %d/%d adam_t %lld/%lld steps %llu/%llu", what, (int)l->ph.phase, (int)m->ph.phase,
          l->ph.expert, m->ph.expert, (long long)l->opt.t, (long long)m->opt.t, (unsigned long long)l->opt.steps,
          (unsigned long long)m->opt.steps);
    CHECK(same_predictions(m, l), "%s: the loaded checkpoint predicts differently", what);
    /* the optimizer state came along: the next steps agree too */
    train_steps(m, 3, 5);
    train_steps(l, 3, 5);
    CHECK(same_arena(m->P, l->P, nf), "%s: training after load diverges", what);
    mml_model_free(l);
}

static void test_checkpoint_and_export(void) {
    mmlt_ctx = "checkpoint";
    mml_config_t c;
    base_config(&c, MML_ADAPTER_MOE);
    mml_model_t *m = make_model(&c);
    int E = mml_model_n_experts(m);
    CHECK_OK(mml_model_set_phase(m, MML_PHASE_BACKBONE, -1));
    train_steps(m, 4, 1);
    check_saved_state(m, "moe backbone");
    CHECK_OK(mml_model_set_phase(m, MML_PHASE_EXPERT, E - 1));
    train_steps(m, 4, 2);
    check_saved_state(m, "moe expert");
    CHECK_OK(mml_model_set_phase(m, MML_PHASE_GATE, -1));
    train_steps(m, 4, 3);
    check_saved_state(m, "moe gate");

    mmlt_ctx = "export";
    char path[1024];
    tpath(path, sizeof path, "export.mml");
    CHECK_OK(mml_model_export(m, path));
    mml_model_t *l = NULL;
    CHECK_OK(mml_model_load(path, &l));
    if (l) {
        CHECK(same_arena(m->P, l->P, m->a.n_floats), "export: parameters differ");
        CHECK(same_predictions(m, l), "export: predictions differ");
        float *a = predict_all(m), *b = session_predict_all(l);
        CHECK(memcmp(a, b, (size_t)eval_rows.n * 4) == 0, "export: session predictions differ from mml_predict");
        free(a);
        free(b);
        CHECK(l->fit.active == 0, "an export must not resume a fit");
        mml_model_free(l);
    }
    mml_model_free(m);

    for (int ad = MML_ADAPTER_NONE; ad <= MML_ADAPTER_MLORA; ad++) {
        mmlt_ctx = ad ? "checkpoint mlora" : "checkpoint none";
        base_config(&c, (mml_adapter)ad);
        m = make_model(&c);
        train_steps(m, 4, 7);
        check_saved_state(m, mmlt_ctx);
        CHECK_OK(mml_model_export(m, path));
        CHECK_OK(mml_model_load(path, &l));
        if (l) {
            CHECK(same_predictions(m, l), "%s: export predictions differ", mmlt_ctx);
            mml_model_free(l);
        }
        mml_model_free(m);
    }
}

/* ---- (g) what a checkpoint resumes ---------------------------------------- */

static void expect_load_fails_why(const char *path, mml_status want, const char *what, const char *reason);

/* Copies the checkpoint aside at the second EPOCH_END: the file then holds
 * the state after the first epoch, a fit stopped midway. */
typedef struct first_epoch { const char *ckpt, *copy; int seen; } first_epoch;

static void copy_after_first_epoch(const mml_progress_t *p, void *user) {
    first_epoch *f = (first_epoch *)user;
    if (p->event == MML_EV_EPOCH_END && ++f->seen == 2) CHECK(copy_file(f->ckpt, f->copy) == 0, "copy %s", f->ckpt);
}

/* mml_fit on the model in path must fail with want and a message holding
 * each of words (NULL-terminated). */
static void expect_fit_refused(const char *path, const mml_data_t *d, const mml_fit_opts_t *o, mml_status want,
                               const char *what, const char *const *words) {
    mml_model_t *m = NULL;
    CHECK_OK(mml_model_load(path, &m));
    if (!m) return;
    mml_metrics_t t;
    mml_status st = mml_fit(m, d, o, &t);
    int named = st != MML_OK;
    for (int i = 0; words[i]; i++) named &= strstr(mml_last_error(), words[i]) != NULL;
    CHECK(st == want && named, "%s: status %d, \"%s\" (wanted %d naming %s...)", what, (int)st,
          st ? mml_last_error() : "", (int)want, words[0]);
    mml_model_free(m);
}

/* The fit's state and recorded options as saved in checkpoints. */
static void check_states(const char *mid, const char *fin, const char *exp, const mml_fit_opts_t *o) {
    mml_model_t *l = NULL;
    mml_fit_opts_t so;
    CHECK_OK(mml_model_load(mid, &l));
    if (l) {
        CHECK(mml_model_fit_state(l, &so) == MML_FIT_STOPPED, "stopped checkpoint: state %d",
              (int)mml_model_fit_state(l, NULL));
        CHECK(so.batch == o->batch && so.max_epochs == o->max_epochs && so.patience == o->patience && so.seed == o->seed,
              "recorded options: batch %d, max_epochs %d, patience %d, seed %llu", so.batch, so.max_epochs,
              so.patience, (unsigned long long)so.seed);
        mml_model_free(l);
    }
    CHECK_OK(mml_model_load(fin, &l));
    if (l) {
        CHECK(mml_model_fit_state(l, NULL) == MML_FIT_FINISHED, "final checkpoint: state %d",
              (int)mml_model_fit_state(l, NULL));
        mml_model_free(l);
    }
    CHECK_OK(mml_model_load(exp, &l));
    if (l) {
        CHECK(mml_model_fit_state(l, NULL) == MML_FIT_EXPORT, "export: state %d", (int)mml_model_fit_state(l, NULL));
        mml_model_free(l);
    }
}

static void test_resume_checks(void) {
    mmlt_ctx = "resume checks";
    char ck[1024], mid[1024], fin[1024], exp[1024], old[1024];
    tpath(ck, sizeof ck, "checks.mml");
    tpath(mid, sizeof mid, "checks_mid.mml");
    tpath(fin, sizeof fin, "checks_final.mml");
    tpath(exp, sizeof exp, "checks_export.mml");
    tpath(old, sizeof old, "checks_old.mml");
    mml_config_t c;
    base_config(&c, MML_ADAPTER_MLORA);
    mml_fit_opts_t o;
    base_opts(&o);
    o.max_epochs = 3;
    o.patience = 3;
    mml_metrics_t t;
    mml_model_t *m = make_model(&c);
    CHECK(mml_model_fit_state(m, NULL) == MML_FIT_NONE, "a new model holds a fit");
    first_epoch fe = {ck, mid, 0};
    mml_fit_opts_t oc = o;
    oc.checkpoint_path = ck;
    oc.progress = copy_after_first_epoch;
    oc.user = &fe;
    CHECK_OK(mml_fit(m, &data, &oc, &t));
    CHECK(fe.seen >= 2, "%d epochs: no checkpoint of a stopped fit", fe.seen);
    CHECK(mml_model_fit_state(m, NULL) == MML_FIT_FINISHED, "after mml_fit: state %d",
          (int)mml_model_fit_state(m, NULL));
    mml_status st = mml_fit(m, &data, &o, &t);
    CHECK(st == MML_ERR_FINISHED && strstr(mml_last_error(), "already finished"),
          "mml_fit again in the same process: status %d", (int)st);
    CHECK_OK(mml_model_save(m, fin));
    CHECK_OK(mml_model_export(m, exp));
    mml_model_free(m);
    check_states(mid, fin, exp, &o);

    /* other data: the same sizes with other rows, or fewer users */
    mml_synth_config_t sc;
    mml_synth_default(&sc);
    sc.n_domains = data.n_domains;
    sc.n_users = data.n_users;
    sc.n_items = data.n_items;
    sc.n_samples = data.split[0].n + data.split[1].n + data.split[2].n;
    sc.seed = 99;
    mml_data_t other, fewer;
    CHECK_OK(mml_data_synthetic(&sc, &other));
    sc.n_users = data.n_users - 50;
    CHECK_OK(mml_data_synthetic(&sc, &fewer));
    expect_fit_refused(mid, &other, &o, MML_ERR_STATE, "other rows", (const char *[]){"other data", "differ", NULL});
    expect_fit_refused(mid, &fewer, &o, MML_ERR_STATE, "fewer users",
                       (const char *[]){"other data", "sizes differ", NULL});
    expect_fit_refused(fin, &other, &o, MML_ERR_STATE, "finished, other rows",
                       (const char *[]){"other data", "differ", NULL});
    expect_fit_refused(fin, &data, &o, MML_ERR_FINISHED, "finished", (const char *[]){"already finished", NULL});
    /* the rows alone: the same data with one label flipped */
    float *y = &data.split[MML_TEST].label[data.split[MML_TEST].n / 2];
    *y = 1.0f - *y;
    expect_fit_refused(mid, &data, &o, MML_ERR_STATE, "one label flipped",
                       (const char *[]){"other data", "rows differ", NULL});
    *y = 1.0f - *y;
    /* other run options: batch and seed are refused, naming both values */
    mml_fit_opts_t ob = o;
    ob.batch = o.batch / 2;
    expect_fit_refused(mid, &data, &ob, MML_ERR_STATE, "other batch", (const char *[]){"batch 256", "128", NULL});
    ob = o;
    ob.seed = o.seed + 1;
    expect_fit_refused(mid, &data, &ob, MML_ERR_STATE, "other seed", (const char *[]){"seed 99", "100", NULL});
    /* max_epochs and patience may change: the stage ends by the new ones */
    ob = o;
    ob.max_epochs = 2;
    mml_model_t *l = NULL;
    mml_fit_opts_t so;
    CHECK_OK(mml_model_load(mid, &l));
    if (l) {
        CHECK_OK(mml_fit(l, &data, &ob, &t));
        CHECK(mml_model_fit_state(l, &so) == MML_FIT_FINISHED && so.max_epochs == 2, "state %d, max_epochs %d",
              (int)mml_model_fit_state(l, NULL), so.max_epochs);
        mml_model_free(l);
    }
    /* a checkpoint without the fingerprint (as before 0.4) resumes unchecked */
    CHECK_OK(mml_model_load(mid, &l));
    if (l) {
        l->fit.has_data = l->fit.has_opts = 0;
        CHECK_OK(mml_model_save(l, old));
        mml_model_free(l);
        l = NULL;
        size_t len = 0;
        unsigned char *bytes = mmlt_read_file(old, &len);
        int found = 0;
        for (size_t i = 0; bytes && i + 9 <= len; i++) found |= !memcmp(bytes + i, "data_hash", 9);
        CHECK(bytes && !found, "the fingerprint was written anyway");
        free(bytes);
        CHECK_OK(mml_model_load(old, &l));
        CHECK(l && mml_model_fit_state(l, &so) == MML_FIT_STOPPED && so.batch == 0, "old checkpoint: batch %d",
              so.batch);
        if (l) CHECK_OK(mml_fit(l, &other, &o, &t));
        mml_model_free(l);
    }
    /* a file that says the fit runs and has finished is refused */
    CHECK_OK(mml_model_load(mid, &l));
    if (l) {
        l->fit.done = 1;
        CHECK_OK(mml_model_save(l, old));
        mml_model_free(l);
        expect_load_fails_why(old, MML_ERR_FORMAT, "running and finished", "runs and has finished");
    }
    mml_data_free(&other);
    mml_data_free(&fewer);
    mmlt_ctx = "";
}

/* ---- (d) corrupt files --------------------------------------------------- */

static int n_corrupt_cases;

/* The load must fail with status want, leave *out NULL, and say so naming the
 * file once and (when given) the reason, e.g. the offending key. */
static void expect_load_fails_why(const char *path, mml_status want, const char *what, const char *reason) {
    mml_model_t *m = (mml_model_t *)&m; /* must be reset to NULL */
    mml_status st = mml_model_load(path, &m);
    n_corrupt_cases++;
    CHECK(st == want, "%s: load returned %d (want %d): %s", what, (int)st, (int)want, mml_last_error());
    CHECK(m == NULL, "%s: *out not NULL on failure", what);
    const char *msg = mml_last_error(), *at = strstr(msg, path);
    CHECK(at != NULL, "%s: message does not name the file: %s", what, msg);
    CHECK(!at || !strstr(at + 1, path), "%s: message names the file twice (garbled?): %s", what, msg);
    CHECK(!reason || (at && strstr(at + strlen(path), reason)), "%s: message lacks \"%s\": %s", what, reason, msg);
    if (getenv("MMLT_VERBOSE")) printf("  %-40s -> %s\n", what, msg);
    if (st == MML_OK) mml_model_free(m);
}
static void expect_load_fails(const char *path, mml_status want, const char *what) {
    expect_load_fails_why(path, want, what, NULL);
}

typedef void (*tweak_fn)(mml__ckpt_tensor *parm, int np, char *conf, size_t cap, void *ctx);

/* Writes m as a training checkpoint with the PARM tensors and CONF text
 * passed through tweak first. */
static void save_tweaked(const mml_model_t *m, const char *path, tweak_fn tweak, void *ctx) {
    char conf[MML__TEXT_MAX];
    CHECK(mml__conf_text(&m->cfg, conf, sizeof conf) > 0, "conf text");
    int np = m->a.n_params;
    mml__ckpt_tensor *t = (mml__ckpt_tensor *)calloc((size_t)np * 4, sizeof *t);
    char(*names)[MML__NAME_VIEW] = (char(*)[MML__NAME_VIEW])calloc((size_t)np * 4, MML__NAME_VIEW);
    mml__tensor_views(m, m->P, t, names, "");
    mml__tensor_views(m, m->opt.M, t + np, names + np, "m.");
    mml__tensor_views(m, m->opt.V, t + 2 * np, names + 2 * np, "v.");
    mml__tensor_views(m, m->snapshot, t + 3 * np, names + 3 * np, "");
    tweak(t, np, conf, sizeof conf, ctx);
    const char *prog = "phase=3\nexpert=0\nadam_t=0\nsteps=0\nfit_active=0\nstage=0\nepoch=0\nbad=0\nbest=0x0p+0\nrng=0\n";
    mml__ckpt_section secs[5];
    memset(secs, 0, sizeof secs);
    memcpy(secs[0].tag, "CONF", 4); secs[0].bytes = conf; secs[0].nbytes = strlen(conf);
    memcpy(secs[1].tag, "PARM", 4); secs[1].tensors = t; secs[1].ntensors = np;
    memcpy(secs[2].tag, "PROG", 4); secs[2].bytes = prog; secs[2].nbytes = strlen(prog);
    memcpy(secs[3].tag, "ADAM", 4); secs[3].tensors = t + np; secs[3].ntensors = 2 * np;
    memcpy(secs[4].tag, "BEST", 4); secs[4].tensors = t + 3 * np; secs[4].ntensors = np;
    CHECK_OK(mml__ckpt_save(path, secs, 5));
    free(t);
    free(names);
}

static void tw_none(mml__ckpt_tensor *t, int np, char *conf, size_t cap, void *ctx) {
    (void)t; (void)np; (void)conf; (void)cap; (void)ctx;
}

/* ctx: index of the PARM tensor whose shape changes */
static void tw_shape(mml__ckpt_tensor *t, int np, char *conf, size_t cap, void *ctx) {
    (void)np; (void)conf; (void)cap;
    mml__ckpt_tensor *x = &t[*(int *)ctx];
    if (x->ndim == 2 && x->shape[0] != x->shape[1]) {
        int64_t s = x->shape[0]; x->shape[0] = x->shape[1]; x->shape[1] = s; /* same size, transposed */
    } else if (x->shape[0] > 1) {
        x->shape[0]--;
    } else {
        x->ndim = 2; /* [1] -> [1, 1] */
        x->shape[0] = 1;
        x->shape[1] = 1;
    }
}

/* ctx: {old line prefix, replacement line or "" to delete} */
static void tw_conf(mml__ckpt_tensor *t, int np, char *conf, size_t cap, void *ctx) {
    (void)t; (void)np;
    const char *const *sub = (const char *const *)ctx;
    char out[MML__TEXT_MAX];
    size_t n = 0, plen = strlen(sub[0]);
    for (char *line = conf; *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) + 1 : strlen(line);
        const char *src = line;
        size_t slen = len;
        if (!strncmp(line, sub[0], plen)) { src = sub[1]; slen = strlen(sub[1]); }
        if (n + slen < sizeof out) { memcpy(out + n, src, slen); n += slen; }
        line += len;
    }
    out[n] = 0;
    snprintf(conf, cap, "%s", out);
}

/* ctx: {tensor index, element, value bits} */
typedef struct poison { int tensor, section; int64_t elem; float value; float *copy; } poison;
static void tw_poison(mml__ckpt_tensor *t, int np, char *conf, size_t cap, void *ctx) {
    (void)conf; (void)cap;
    poison *p = (poison *)ctx;
    mml__ckpt_tensor *x = &t[p->section * np + p->tensor];
    int64_t n = 1;
    for (int j = 0; j < x->ndim; j++) n *= x->shape[j];
    p->copy = (float *)malloc((size_t)n * sizeof(float));
    memcpy(p->copy, x->data, (size_t)n * sizeof(float));
    p->copy[p->elem % n] = p->value;
    x->data = p->copy;
}

static void test_corrupt_files(void) {
    mmlt_ctx = "corrupt";
    mml_config_t c;
    base_config(&c, MML_ADAPTER_MOE);
    mml_model_t *m = make_model(&c);
    train_steps(m, 2, 11);
    char good[1024], bad[1024];
    tpath(good, sizeof good, "good.mml");
    tpath(bad, sizeof bad, "bad.mml");
    CHECK_OK(mml_model_save(m, good));

    /* control: the hand-written container with nothing changed loads */
    save_tweaked(m, bad, tw_none, NULL);
    mml_model_t *l = NULL;
    CHECK_OK(mml_model_load(bad, &l));
    mml_model_free(l);

    size_t len = 0;
    unsigned char *img = mmlt_read_file(good, &len);
    CHECK(img && len > 1000, "read %s", good);
    if (!img) return;

    /* wrong magic, and a foreign text file */
    img[0] ^= 0x20;
    write_all(bad, img, len);
    expect_load_fails(bad, MML_ERR_FORMAT, "wrong magic");
    img[0] ^= 0x20;
    write_all(bad, "model=mlp\n", 10);
    expect_load_fails(bad, MML_ERR_FORMAT, "text file");
    write_all(bad, "", 0);
    expect_load_fails(bad, MML_ERR_FORMAT, "empty file");

    /* truncations: inside the header, at every section boundary's
     * neighbourhood (sampled) and spread over the file */
    size_t cuts[64];
    int nc = 0;
    size_t fixed[] = {1, 7, 8, 12, 23, 24, 25, 40, 41, 100, 4096};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) cuts[nc++] = fixed[i];
    for (int i = 1; i <= (quick ? 6 : 20); i++) cuts[nc++] = len * (size_t)i / (quick ? 7 : 21) + (size_t)i;
    cuts[nc++] = len - 4;
    cuts[nc++] = len - 1;
    for (int i = 0; i < nc; i++) {
        if (cuts[i] >= len) continue;
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu of %zu bytes", cuts[i], len);
        write_all(bad, img, cuts[i]);
        expect_load_fails(bad, MML_ERR_FORMAT, what);
    }
    /* a flipped bit in the middle (CRC) and trailing garbage */
    img[len / 2] ^= 1;
    write_all(bad, img, len);
    expect_load_fails(bad, MML_ERR_FORMAT, "flipped bit");
    img[len / 2] ^= 1;
    unsigned char *longer = (unsigned char *)malloc(len + 16);
    memcpy(longer, img, len);
    memset(longer + len, 0xAB, 16);
    write_all(bad, longer, len + 16);
    expect_load_fails(bad, MML_ERR_FORMAT, "trailing bytes");
    free(longer);
    free(img);

    /* a PARM tensor of the wrong shape: first, one in the middle, last */
    int which[3] = {0, m->a.n_params / 2, m->a.n_params - 1};
    for (int i = 0; i < 3; i++) {
        char what[96];
        snprintf(what, sizeof what, "wrong shape of %s", m->a.t[which[i]].name);
        save_tweaked(m, bad, tw_shape, &which[i]);
        expect_load_fails(bad, MML_ERR_FORMAT, what);
    }

    /* CONF: unknown key, missing keys, duplicated key standing in for a
     * missing one, bad values */
    static const char *const conf_cases[][4] = {
        {"model=", "model=mlp\ncolour=blue\n", "unknown key", "colour"},
        {"seed=", "", "missing seed", "seed"},
        {"hidden=", "", "missing hidden", "hidden"},
        {"lr=", "", "missing lr", "lr"},
        {"threads=", "lr=0x1p-10\n", "duplicated lr replacing threads", "lr"},
        {"seed=", "seed=1\nseed=2\n", "seed given twice", "seed"},
        {"emb_dim=", "emb_dim=abc\n", "emb_dim not a number", "emb_dim=abc"},
        {"model=", "model=transformer\n", "unknown model", "transformer"},
        {"adapter=", "adapter=gpt\n", "unknown adapter", "gpt"},
        {"hidden=", "hidden=64,,32\n", "bad hidden", "64,,32"},
        {"dropout=", "dropout=nan\n", "dropout nan", "dropout"},
        {"model=", "model\n", "line without =", "key=value"},
        {"seed=", "seed=x\n", "bad line named by section and line", "(section CONF):22: "},
        {"seed=", "seed=1\nprecision=fp16\n", "unknown precision", "fp16"},
    };
    for (size_t i = 0; i < sizeof conf_cases / sizeof *conf_cases; i++) {
        save_tweaked(m, bad, tw_conf, (void *)conf_cases[i]);
        expect_load_fails_why(bad, MML_ERR_FORMAT, conf_cases[i][2], conf_cases[i][3]);
    }
    /* values that parse but the model rejects */
    static const char *const arg_cases[][4] = {
        {"emb_dim=", "emb_dim=0\n", "emb_dim=0", "emb_dim"},
        {"n_users=", "n_users=-5\n", "n_users=-5", "users -5"},
        {"dropout=", "dropout=0x1p+0\n", "dropout=1", "dropout"},
        {"threads=", "threads=0\n", "threads=0", "threads"},
        {"max_batch=", "max_batch=0\n", "max_batch=0", "max_batch"},
    };
    for (size_t i = 0; i < sizeof arg_cases / sizeof *arg_cases; i++) {
        save_tweaked(m, bad, tw_conf, (void *)arg_cases[i]);
        expect_load_fails_why(bad, MML_ERR_ARG, arg_cases[i][2], arg_cases[i][3]);
    }
    /* a config that differs from the tensors: the shapes catch it */
    static const char *const mismatch[3] = {"emb_dim=", "emb_dim=9\n", "emb_dim differs from the tensors"};
    save_tweaked(m, bad, tw_conf, (void *)mismatch);
    expect_load_fails(bad, MML_ERR_FORMAT, mismatch[2]);

    /* non-finite values in every arena */
    const float nonfinite[3] = {NAN, INFINITY, -INFINITY};
    const char *secname[4] = {"PARM", "ADAM m", "ADAM v", "BEST"};
    for (int s = 0; s < 4; s++)
        for (int v = 0; v < 3; v++) {
            poison p = {(s * 3 + v * 7) % m->a.n_params, s, 5 + 13 * v, nonfinite[v], NULL};
            save_tweaked(m, bad, tw_poison, &p);
            free(p.copy);
            char what[96];
            snprintf(what, sizeof what, "%g in %s %s", (double)nonfinite[v], secname[s], m->a.t[p.tensor].name);
            expect_load_fails(bad, MML_ERR_FORMAT, what);
        }

    /* a missing file */
    tpath(bad, sizeof bad, "does-not-exist.mml");
    expect_load_fails(bad, MML_ERR_IO, "missing file");
    printf("corrupt files: %d cases rejected\n", n_corrupt_cases);
    mml_model_free(m);
}

/* ---- (e) full disk --------------------------------------------------------- */

typedef struct disk { size_t limit, written; int calls; } disk;

/* write(2) until limit bytes went into this file, then ENOSPC. */
static size_t full_disk_write(const void *buf, size_t size, void *file, void *user) {
    disk *dk = (disk *)user;
    int fd = *(int *)file;
    size_t want = size, room = dk->limit > dk->written ? dk->limit - dk->written : 0;
    dk->calls++;
    if (want > room) want = room;
    size_t done = 0;
    while (done < want) {
        ssize_t k = write(fd, (const char *)buf + done, want - done);
        if (k <= 0) break;
        done += (size_t)k;
    }
    dk->written += done;
    if (done < size) errno = ENOSPC;
    return done;
}

static void test_full_disk(void) {
    mmlt_ctx = "enospc";
    mml_config_t c;
    base_config(&c, MML_ADAPTER_MOE);
    mml_model_t *m = make_model(&c);
    train_steps(m, 2, 21);
    char path[1024];
    tpath(path, sizeof path, "disk.mml");
    CHECK_OK(mml_model_save(m, path));
    mml_model_t *saved = NULL;
    CHECK_OK(mml_model_load(path, &saved));
    if (!saved) return;
    struct stat sb;
    CHECK(stat(path, &sb) == 0, "stat");
    size_t size = (size_t)sb.st_size;
    train_steps(m, 2, 22); /* the model moves on; the file must not */

    int n_cases = quick ? 10 : 30, n_ok = 0;
    disk dk;
    for (int i = 0; i <= n_cases; i++) {
        /* 0, a few bytes, then spread over the file up to one byte short */
        size_t limit = i == 0 ? 0 : i == 1 ? 10 : i == n_cases ? size - 1 : size * (size_t)(i - 1) / (size_t)(n_cases - 1) + 17;
        if (limit >= size) limit = size - 1;
        memset(&dk, 0, sizeof dk);
        dk.limit = limit;
        mml_set_write_hook(full_disk_write, &dk);
        mml_status st = mml_model_save(m, path);
        mml_set_write_hook(NULL, NULL);
        const char *msg = mml_last_error();
        CHECK(st == MML_ERR_IO, "limit %zu: save returned %d: %s", limit, (int)st, msg);
        CHECK(strstr(msg, path) && strstr(msg, "No space left on device"), "limit %zu: unclear message: %s", limit,
              msg);
        CHECK(count_temporaries() == 0, "limit %zu: a temporary file was left", limit);
        mml_model_t *l = NULL;
        st = mml_model_load(path, &l);
        CHECK(st == MML_OK, "limit %zu: the previous checkpoint no longer loads: %s", limit, mml_last_error());
        if (l) {
            int same = same_predictions(saved, l) && same_arena(saved->P, l->P, l->a.n_floats);
            CHECK(same, "limit %zu: the previous checkpoint changed", limit);
            n_ok += same;
            mml_model_free(l);
        }
    }
    /* control: a disk with exactly enough room */
    memset(&dk, 0, sizeof dk);
    dk.limit = size;
    mml_set_write_hook(full_disk_write, &dk);
    CHECK_OK(mml_model_save(m, path));
    mml_set_write_hook(NULL, NULL);
    CHECK(dk.written == size, "wrote %zu of %zu", dk.written, size);
    mml_model_t *l = NULL;
    CHECK_OK(mml_model_load(path, &l));
    if (l) { CHECK(same_predictions(m, l), "the new checkpoint predicts differently"); mml_model_free(l); }
    /* mml_write_atomic reports the same way */
    memset(&dk, 0, sizeof dk);
    dk.limit = 3;
    mml_set_write_hook(full_disk_write, &dk);
    char txt[1024];
    tpath(txt, sizeof txt, "note.txt");
    CHECK(mml_write_atomic(txt, "hello world\n", 12) == MML_ERR_IO, "write_atomic on a full disk");
    mml_set_write_hook(NULL, NULL);
    CHECK(access(txt, F_OK) != 0 && count_temporaries() == 0, "write_atomic left a file");
    printf("full disk: %d of %d failing saves kept the previous checkpoint (file %zu bytes)\n", n_ok, n_cases + 1,
           size);
    mml_model_free(saved);
    mml_model_free(m);
}

/* ---- (f) no allocation in the hot paths ------------------------------------ */

static long long allocs_during(void (*fn)(void *), void *ctx, int reps) {
    fn(ctx); /* the first call may set things up */
    long long a0 = __atomic_load_n(&n_allocs, __ATOMIC_RELAXED);
    for (int i = 0; i < reps; i++) fn(ctx);
    return __atomic_load_n(&n_allocs, __ATOMIC_RELAXED) - a0;
}

typedef struct hot { mml_model_t *m; mml_session_t *s; mml_batch_t b; float *out; } hot;
static void hot_train(void *p) { hot *h = (hot *)p; CHECK_OK(mml_train_step(h->m, &h->b, NULL)); }
static void hot_predict(void *p) { hot *h = (hot *)p; CHECK_OK(mml_predict(h->m, &h->b, h->out)); }
static void hot_session(void *p) { hot *h = (hot *)p; CHECK_OK(mml_session_predict(h->s, &h->b, h->out)); }
/* validation inside a fit: predictions between steps (the weights moved) */
static void hot_train_predict(void *p) {
    hot *h = (hot *)p;
    mml_batch_t b = h->b;
    b.n = 256;
    CHECK_OK(mml_train_step(h->m, &b, NULL));
    b.label = NULL;
    for (int n = 1; n <= 1024; n *= 32) {
        b.n = n;
        CHECK_OK(mml_predict(h->m, &b, h->out));
    }
}

static void test_allocations(void) {
    mmlt_ctx = "allocations";
    enum { N = 1024 };
    static int32_t u[N], p[N], d[N];
    static float lab[N], out[N];
    const mml_split_t *s = &data.split[MML_TRAIN];
    for (int i = 0; i < N; i++) {
        int64_t r = (int64_t)i * 7 % s->n;
        u[i] = s->uid[r]; p[i] = s->pid[r]; d[i] = s->dom[r]; lab[i] = s->label[r];
    }
    int reps = quick ? 2 : 5;
    long long total = 0;
    for (int ad = MML_ADAPTER_MLORA; ad <= MML_ADAPTER_MOE; ad++)
        for (int threads = 1; threads <= 2; threads++) {
            mml_config_t c;
            base_config(&c, (mml_adapter)ad);
            c.threads = threads;
            mml_model_t *m = make_model(&c);
            hot h = {m, NULL, mml_batch_paper(256, u, p, d, lab), out};
            long long a;
            if (ad == MML_ADAPTER_MOE) CHECK_OK(mml_model_set_phase(m, MML_PHASE_BACKBONE, -1));
            a = allocs_during(hot_train, &h, reps);
            CHECK(a == 0, "%s threads %d: train step (backbone/all): %lld allocations", mml_adapter_name(c.adapter), threads, a);
            total += a;
            if (ad == MML_ADAPTER_MOE) {
                CHECK_OK(mml_model_set_phase(m, MML_PHASE_EXPERT, 1));
                a = allocs_during(hot_train, &h, reps);
                CHECK(a == 0, "moe threads %d: train step (expert): %lld allocations", threads, a);
                total += a;
                CHECK_OK(mml_model_set_phase(m, MML_PHASE_GATE, -1));
                a = allocs_during(hot_train, &h, reps);
                CHECK(a == 0, "moe threads %d: train step (gate): %lld allocations", threads, a);
                total += a;
            }
            a = allocs_during(hot_train_predict, &h, reps);
            CHECK(a == 0, "%s threads %d: train steps between predictions: %lld allocations", mml_adapter_name(c.adapter), threads, a);
            total += a;
            u[3] = data.n_users + 100; /* predicting: an unknown id too */
            for (int bn = 1; bn <= N; bn = bn == 1 ? 100 : bn == 100 ? N : N + 1) {
                h.b.n = bn;
                h.b.label = NULL;
                a = allocs_during(hot_predict, &h, reps);
                CHECK(a == 0, "%s threads %d: predict %d rows: %lld allocations", mml_adapter_name(c.adapter), threads, bn, a);
                total += a;
            }
            CHECK_OK(mml_session_create(m, &h.s));
            for (int bn = 1; h.s && bn <= N; bn = bn == 1 ? N : N + 1) {
                h.b.n = bn;
                a = allocs_during(hot_session, &h, reps);
                CHECK(a == 0, "%s: session predict %d rows: %lld allocations", mml_adapter_name(c.adapter), bn, a);
                total += a;
            }
            mml_session_free(h.s);
            mml_model_free(m);
            u[3] = s->uid[3];
        }
    printf("allocations after the first call: %lld (train step 1/2 threads, predict 1/100/1024 rows, both interleaved, sessions)\n",
           total);
}

/* An inference export keeps the phase: a MoE model exported while one expert
 * is in use reloads with that expert in use and predicts the same. */
static void test_export_keeps_phase(void) {
    mmlt_ctx = "export phase";
    mml_config_t c;
    base_config(&c, MML_ADAPTER_MOE);
    mml_model_t *m = make_model(&c);
    /* give expert 1 something to say, then select it alone */
    for (int i = 0; i < m->a.n_params; i++)
        if (m->a.t[i].group == MML__G_EXPERT)
            for (int64_t j = 0; j < m->a.t[i].size; j++) m->P[m->a.t[i].off + j] = 0.01f * (float)((j * 7) % 13);
    CHECK_OK(mml_model_set_phase(m, MML_PHASE_EXPERT, 1));
    char path[1200];
    snprintf(path, sizeof path, "%s/phase.mml", tmpdir);
    CHECK_OK(mml_model_export(m, path));
    mml_model_t *l = NULL;
    CHECK_OK(mml_model_load(path, &l));
    if (l) {
        CHECK(l->ph.phase == MML_PHASE_EXPERT && l->ph.expert == 1, "reloaded phase %d expert %d", (int)l->ph.phase, l->ph.expert);
        float a[8], b[8];
        mml_batch_t bt = mml_batch_paper(8, eval_rows.u, eval_rows.p, eval_rows.d, NULL);
        CHECK_OK(mml_predict(m, &bt, a));
        CHECK_OK(mml_predict(l, &bt, b));
        CHECK(memcmp(a, b, sizeof a) == 0, "export in the expert phase predicts differently after reload");
        mml_model_free(l);
    }
    mml_model_free(m);
}

int main(void) {
    quick = mmlt_quick();
    const char *td = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/mml_resume_XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "test_resume: mkdtemp %s: %s\n", tmpdir, strerror(errno));
        return 1;
    }
    mml_synth_config_t sc;
    mmlt_synth3(&sc, 300, 100, quick ? 2000 : 8000);
    mml_status st = mml_data_synthetic(&sc, &data);
    if (st == MML_ERR_ISA) { printf("skipped: %s\n", mml_last_error()); mmlt_rm_tree(tmpdir); return MMLT_SKIP; }
    CHECK_OK(st);
    if (st) { mmlt_rm_tree(tmpdir); return mmlt_finish("test_resume"); }
    make_eval_rows();

    double t0 = now_s();
    test_resume_adapter(MML_ADAPTER_MOE, 1, MML_PRECISION_FP32, "moe");
    test_resume_adapter(MML_ADAPTER_NONE, 1, MML_PRECISION_FP32, "none");
    test_resume_adapter(MML_ADAPTER_MLORA, 1, MML_PRECISION_FP32, "mlora");
    if (!quick) test_resume_adapter(MML_ADAPTER_MOE, 2, MML_PRECISION_FP32, "moe-t2"); /* workers: same bits after a resume */
    test_resume_adapter(MML_ADAPTER_MOE, quick ? 1 : 2, MML_PRECISION_BF16, "moe-bf16"); /* resumes in bf16 */
    double t1 = now_s();
    test_checkpoint_and_export();
    test_export_keeps_phase();
    test_corrupt_files();
    test_resume_checks();
    double t2 = now_s();
    test_full_disk();
    double t3 = now_s();
    test_allocations();
    printf("times: resume %.2f s, checkpoints+corrupt %.2f s, full disk %.2f s, allocations %.2f s\n", t1 - t0,
           t2 - t1, t3 - t2, now_s() - t3);

    free(eval_rows.u);
    free(eval_rows.p);
    free(eval_rows.d);
    mml_data_free(&data);
    mmlt_rm_tree(tmpdir);
    return mmlt_finish("test_resume");
}
