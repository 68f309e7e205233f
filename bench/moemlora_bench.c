/* moemlora-bench: end-to-end training and inference throughput of the model
 * configurations of the PyTorch peer (../shared/peers/torch_moemlora.py bench):
 * 100k users, 50k items, 10 domains, tower 256-128-64, batch 1024, ids and
 * domains drawn uniformly per sample (mixed-domain batches, as the peer).
 *
 *   moemlora-bench [--seconds S] [--windows W] [--threads-list 1,2]
 *                  [--emb-list 8,128] [--adapters none,mlora,moe] [--json]
 *                  [--schema aliccp] [--precision-list fp32,bf16]
 *                  [--only dense|lazy|infer] [--dropout P]
 *                  [--hog]
 *
 * --hog: the busy-machine rows instead: training samples/s at 1 and 2
 * threads without and with a process spinning on one CPU (the last this
 * process may use; nothing pins the trainer), and the ratio 2 threads / 1
 * thread of each. Another program on a core must not make 2 threads slower
 * than 1 (ratio >= 1 with the hog); without it the ratio is the scaling. The
 * two thread counts take turns window by window, and each ratio is the median
 * over the windows of the two rates taken side by side (busy_rows).
 *
 * --schema aliccp: an Ali-CCP-like schema instead: 20 categorical fields,
 * the domain (10 values) and 19 others with vocabularies from 19 to 1M
 * (log-spaced), ids skewed towards the small ones (id = V u^3), every field
 * embedded in emb floats (default list 16); bench/torch_schema_peer.py is the
 * PyTorch peer of this row.
 *
 * --precision-list: each configuration in these precisions (default fp32;
 * bf16: training steps and predictions run the tower's GEMMs on bf16 inputs,
 * cfg.precision and cfg.infer_precision).
 * %peak is always against the fp32 FMA peak, so bf16 rows may pass 100%.
 *
 * --dropout: the tower's dropout rate in training (default the config's,
 * 0.5, as the peer). At 0 domain-folded training folds the base weight into
 * each domain run's matrix (MoE-MLoRA at about the base model's FLOPs); the
 * dropout mask on the base part alone keeps the base products separate.
 *
 * --only: measure just that rate (the others print 0): a profiler run of
 * one kind of work (perf record -g -- moemlora-bench --only lazy ...).
 *
 * Each rate is the best of W windows of S/W seconds (default 3: a shared
 * machine's noise only ever slows a window down); run_peers.sh runs one
 * window, as the peer measures, and repeats both. A dense-Adam window ends by
 * bringing every deferred embedding row up to date, so its rate pays for all
 * the Adam steps of its batches (the catch-up's share of the window is
 * reported). GFLOP/s are executed FLOPs: an untimed pass counts the
 * multiply-adds the kernels run (see "Executed FLOPs" below). Prints a table
 * and, with --json, one JSON line per configuration. */
#define _GNU_SOURCE /* sched_setaffinity: the hog of --hog */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct run {
    const char *adapter;
    int emb, threads;
    mml_precision precision;
    double train_sps, train_lazy_sps, infer_sps, lat_med_us, lat_p99_us, rss_mb;
    double train_flops, infer_flops; /* executed, per sample */
    double catch_share;              /* of the dense-Adam window: the final catch-up */
    long rows_owed;                  /* after the dense-Adam rate: 0 */
} run;

/* Resident memory of this process in MiB (Linux; 0 elsewhere). */
static double rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0.0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atof(line + 6);
    if (f) fclose(f);
    return kb / 1024.0;
}

enum { USERS = 100000, ITEMS = 50000, DOMAINS = 10, BATCH = 1024, NB = 64 };

static int32_t g_uid[BATCH * NB], g_pid[BATCH * NB], g_dom[BATCH * NB];
static float g_lab[BATCH * NB];

/* --schema aliccp: the fields, field-major ids of NB batches */
enum { SF = 20 };
static mml_schema_t g_schema;
static int g_use_schema;
static int32_t *g_ids[SF];

/* Field 0 is the domain; field f > 0 has round(10^(1 + 5 f / 19)) ids. */
static void make_schema(void) {
    memset(&g_schema, 0, sizeof g_schema);
    g_schema.n_fields = SF;
    g_schema.domain = 0;
    for (int f = 0; f < SF; f++) {
        mml_field_t *fd = &g_schema.field[f];
        snprintf(fd->name, sizeof fd->name, f ? "c%d" : "domain", f);
        fd->kind = MML_FIELD_CATEGORICAL;
        fd->vocab = f ? (int32_t)(pow(10.0, 1.0 + 5.0 * f / (SF - 1)) + 0.5) : DOMAINS;
    }
    uint64_t s = 4242;
    for (int f = 0; f < SF; f++) {
        g_ids[f] = (int32_t *)malloc(sizeof(int32_t) * BATCH * NB);
        if (!g_ids[f]) exit(1);
        for (int i = 0; i < BATCH * NB; i++) {
            double u = mml__rng_uniform(&s);
            g_ids[f][i] = f ? (int32_t)(g_schema.field[f].vocab * u * u * u) : (int32_t)(u * DOMAINS);
        }
    }
}

static void make_data(void) {
    uint64_t s = 42;
    for (int i = 0; i < BATCH * NB; i++) {
        g_uid[i] = (int32_t)(mml__rng_next(&s) % USERS);
        g_pid[i] = (int32_t)(mml__rng_next(&s) % ITEMS);
        g_dom[i] = (int32_t)(mml__rng_next(&s) % DOMAINS);
        g_lab[i] = mml__rng_uniform(&s) < 0.3 ? 1.0f : 0.0f;
    }
}

/* ---- Executed FLOPs ------------------------------------------------------
 * Counted, not derived from a formula: a copy of the kernel table whose
 * matrix kernels add what they compute to a counter, then call the real
 * kernel, is swapped into the model (its workers use the model's) for a few
 * untimed steps or predictions. Counted: the matrix products (gemm_nn,
 * gemm_nt, gemm_tn, gemm_packed: 2 M N K, 2 FLOPs per multiply-add) and the
 * MoE mixing (block_dot: 2 per multiply-add, block_scale: 1 per multiply).
 * Left out: bias adds and column sums, ReLU, dropout, softmax, sigmoid and
 * the loss, the gate's per-row dot, the adds (axpy with a = 1) that sum the
 * workers' gradients and scatter embedding rows, gathers, and Adam (the
 * batch's rows, the dense parameters, the replays of deferred rows): that
 * work streams memory, and its cost shows in the rates, not in the count. */
static const mml_kernels_t *g_real, *g_real_tower, *g_real_infer;
static mml_kernels_t g_counting, g_counting_tower, g_counting_infer;
static atomic_llong g_flops;

static void add_flops(long long f) { atomic_fetch_add_explicit(&g_flops, f, memory_order_relaxed); }

/* A counting wrapper NAME of TABLE's gemm entry OP: the fp32 table's, or the
 * table of the tower's GEMMs in training (m->KT) or inference (m->KI: fp32
 * or bf16 entries). */
#define COUNT_GEMM(NAME, TABLE, OP)                                                                            \
    static void NAME(int M, int N, int K, const float *MML_RESTRICT A, int lda, const float *MML_RESTRICT B,    \
                     int ldb, float *MML_RESTRICT C, int ldc, int accumulate) {                                \
        add_flops(2LL * M * N * K);                                                                            \
        TABLE->OP(M, N, K, A, lda, B, ldb, C, ldc, accumulate);                                                \
    }
COUNT_GEMM(count_gemm_nn, g_real, gemm_nn)
COUNT_GEMM(count_gemm_nt, g_real, gemm_nt)
COUNT_GEMM(count_gemm_tn, g_real, gemm_tn)
COUNT_GEMM(count_tgemm_nn, g_real_tower, gemm_nn)
COUNT_GEMM(count_tgemm_nt, g_real_tower, gemm_nt)
COUNT_GEMM(count_tgemm_tn, g_real_tower, gemm_tn)
COUNT_GEMM(count_igemm_nn, g_real_infer, gemm_nn)
COUNT_GEMM(count_igemm_nt, g_real_infer, gemm_nt)
COUNT_GEMM(count_igemm_tn, g_real_infer, gemm_tn)

/* The same for gemm_pair (both products on one A). */
#define COUNT_PAIR(NAME, TABLE)                                                                                \
    static void NAME(int M, int K, const float *A, int lda, int a_trans, int N1, const float *B1, int ldb1,    \
                     float *C1, int ldc1, int N2, const float *B2, int ldb2, float *C2, int ldc2, int acc) {   \
        add_flops(2LL * M * K * ((long long)N1 + N2));                                                         \
        TABLE->gemm_pair(M, K, A, lda, a_trans, N1, B1, ldb1, C1, ldc1, N2, B2, ldb2, C2, ldc2, acc);          \
    }
COUNT_PAIR(count_gemm_pair, g_real)
COUNT_PAIR(count_tgemm_pair, g_real_tower)
COUNT_PAIR(count_igemm_pair, g_real_infer)

static void count_gemm_packed(int M, int N, int K, const float *MML_RESTRICT A, int lda, const float *MML_RESTRICT Bp,
                              float *MML_RESTRICT C, int ldc, const float *bias, int relu) {
    add_flops(2LL * M * N * K);
    g_real->gemm_packed(M, N, K, A, lda, Bp, C, ldc, bias, relu);
}

static void count_gemm_packed_bf16(int M, int N, int K, const float *MML_RESTRICT A, int lda,
                                   const float *MML_RESTRICT Bp, float *MML_RESTRICT C, int ldc, const float *bias,
                                   int relu) {
    add_flops(2LL * M * N * K);
    g_real->gemm_packed_bf16(M, N, K, A, lda, Bp, C, ldc, bias, relu);
}

static void count_block_scale(int M, int E, int r, const float *T, int ldt, const float *w, int ldw, float *U,
                              int ldu) {
    add_flops((long long)M * E * r);
    g_real->block_scale(M, E, r, T, ldt, w, ldw, U, ldu);
}

static void count_block_dot(int M, int E, int r, const float *dU, int ldu, const float *T, int ldt, float *dw, int ldw,
                            int accumulate) {
    add_flops(2LL * M * E * r);
    g_real->block_dot(M, E, r, dU, ldu, T, ldt, dw, ldw, accumulate);
}

/* Every worker of m runs with kernel tables K and, for the tower's GEMMs,
 * KT in training and KI in inference (workers use the model's). */
static void use_kernels(mml_model_t *m, const mml_kernels_t *K, const mml_kernels_t *KT, const mml_kernels_t *KI) {
    m->K = K;
    m->KT = KT;
    m->KI = KI;
}

static void count_begin(mml_model_t *m) {
    g_real = m->K;
    g_real_tower = m->KT;
    g_real_infer = m->KI;
    g_counting_tower = *g_real_tower;
    g_counting_tower.gemm_nn = count_tgemm_nn;
    g_counting_tower.gemm_nt = count_tgemm_nt;
    g_counting_tower.gemm_tn = count_tgemm_tn;
    g_counting_tower.gemm_pair = count_tgemm_pair;
    g_counting_infer = *g_real_infer;
    g_counting_infer.gemm_nn = count_igemm_nn;
    g_counting_infer.gemm_nt = count_igemm_nt;
    g_counting_infer.gemm_tn = count_igemm_tn;
    g_counting_infer.gemm_pair = count_igemm_pair;
    g_counting = *g_real;
    g_counting.gemm_nn = count_gemm_nn;
    g_counting.gemm_nt = count_gemm_nt;
    g_counting.gemm_tn = count_gemm_tn;
    g_counting.gemm_pair = count_gemm_pair;
    g_counting.gemm_packed = count_gemm_packed;
    g_counting.gemm_packed_bf16 = count_gemm_packed_bf16;
    g_counting.block_scale = count_block_scale;
    g_counting.block_dot = count_block_dot;
    atomic_store(&g_flops, 0);
    use_kernels(m, &g_counting, &g_counting_tower, &g_counting_infer);
}

/* FLOPs counted since count_begin, per sample of `samples`. */
static double count_end(mml_model_t *m, long samples) {
    use_kernels(m, g_real, g_real_tower, g_real_infer);
    return (double)atomic_load(&g_flops) / (double)samples;
}

static mml_precision g_precision; /* of the models make_model creates */
static float g_dropout = -1.0f;   /* --dropout; < 0: the config's default (the peer's 0.5) */

static mml_model_t *make_model(const char *adapter, int emb, int threads, int lazy) {
    mml_config_t c;
    mml_config_default(&c);
    c.model = MML_MODEL_WDL; /* the peer's model: tower + linear logit */
    mml_adapter_from_name(adapter, &c.adapter);
    if (g_use_schema) {
        c.schema = &g_schema;
    } else {
        c.n_users = USERS;
        c.n_items = ITEMS;
        c.n_domains = DOMAINS;
    }
    c.emb_dim = emb;
    c.threads = threads;
    c.lazy_adam = lazy;
    c.precision = c.infer_precision = g_precision;
    if (g_dropout >= 0.0f) c.dropout = g_dropout;
    c.eps = 1e-8f; /* PyTorch's default */
    mml_model_t *m;
    if (mml_model_create(&c, &m)) {
        fprintf(stderr, "moemlora-bench: %s\n", mml_last_error());
        exit(1);
    }
    /* train every parameter jointly, as the peer does */
    mml_model_set_phase(m, MML_PHASE_ALL, 0);
    return m;
}

static int g_windows = 3;

enum { COUNT_BATCHES = 4 }; /* batches of a counting pass */

/* n rows from sample k on, in either layout (ids[] is the caller's, SF long). */
static mml_batch_t rows_at(int k, int n, int labels, const int32_t **ids) {
    const float *lab = labels ? g_lab + k : NULL;
    if (!g_use_schema) return mml_batch_paper(n, g_uid + k, g_pid + k, g_dom + k, lab);
    for (int f = 0; f < SF; f++) ids[f] = g_ids[f] + k;
    mml_batch_t b = {n, NULL, NULL, NULL, lab, ids, NULL};
    return b;
}

static mml_batch_t batch_at(long n, int labels) {
    static const int32_t *ids[NB][SF];
    int k = (int)(n % NB);
    return rows_at(k * BATCH, BATCH, labels, ids[k]);
}

static void predict(mml_model_t *m, const mml_batch_t *b, float *prob) {
    if (mml_predict(m, b, prob)) {
        fprintf(stderr, "moemlora-bench: %s\n", mml_last_error());
        exit(1);
    }
}

static void train_batch(mml_model_t *m, long n) {
    mml_batch_t b = batch_at(n, 1);
    if (mml_train_step(m, &b, NULL)) {
        fprintf(stderr, "moemlora-bench: %s\n", mml_last_error());
        exit(1);
    }
}

/* Executed training FLOPs per sample, over a few untimed steps. */
static double train_flops(mml_model_t *m) {
    count_begin(m);
    for (int k = 0; k < COUNT_BATCHES; k++) train_batch(m, k);
    return count_end(m, (long)COUNT_BATCHES * BATCH);
}

/* Executed inference FLOPs per sample, over a few untimed batches. */
static double infer_flops(mml_model_t *m) {
    static float prob[BATCH];
    count_begin(m);
    for (int k = 0; k < COUNT_BATCHES; k++) {
        mml_batch_t b = batch_at(k, 0);
        predict(m, &b, prob);
    }
    return count_end(m, (long)COUNT_BATCHES * BATCH);
}

/* Embedding rows still owed dense-Adam steps (replayed when next read). */
static long rows_owed(const mml_model_t *m) {
    long n = 0;
    for (int f = 0; f < m->a.F; f++) {
        if (!mml__deferred_rows(m, f)) continue;
        int64_t rows = m->a.t[m->a.field[f].emb].shape[0];
        for (int64_t r = 0; r < rows; r++) n += m->opt.last[f][r] < m->opt.t;
    }
    return n;
}

/* Samples/s of one window of `seconds`, from batch *n on; *catch_share: the
 * window's share spent bringing deferred rows up to date after its last step.
 * With dense Adam (PyTorch's semantics) every row takes every step's update;
 * the rows a batch does not touch are replayed when next read, so a window
 * that ended with rows owed would leave part of its steps' work to whoever
 * reads next. */
static double train_window(mml_model_t *m, double seconds, long *n, double *catch_share) {
    mml__catch_up_all(m); /* untimed: a window pays for its own steps only */
    double t0 = now_s();
    long n0 = *n;
    do train_batch(m, (*n)++);
    while (now_s() - t0 < seconds);
    double t1 = now_s();
    mml__catch_up_all(m);
    double t = now_s() - t0;
    *catch_share = (t - (t1 - t0)) / t;
    return (double)(*n - n0) * BATCH / t;
}

/* Samples/s of the best of g_windows windows (and that window's catch-up share). */
static double train_rate(mml_model_t *m, double seconds, double *catch_share) {
    double best = 0.0, share;
    long n = 0;
    *catch_share = 0.0;
    for (int w = 0; w < g_windows; w++) {
        double rate = train_window(m, seconds / g_windows, &n, &share);
        if (rate > best) best = rate, *catch_share = share;
    }
    return best;
}

static void warm_up(mml_model_t *m) {
    for (int k = 0; k < 3; k++) train_batch(m, k);
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void infer_rates(mml_model_t *m, double seconds, run *r) {
    static float prob[BATCH];
    mml_batch_t b;
    long n = 0;
    r->infer_sps = 0.0;
    for (int w = 0; w < g_windows; w++) {
        double t0 = now_s(), t;
        long n0 = n;
        do {
            b = batch_at(n, 0);
            predict(m, &b, prob);
            n++;
            t = now_s() - t0;
        } while (t < seconds / g_windows);
        double rate = (double)(n - n0) * BATCH / t;
        if (rate > r->infer_sps) r->infer_sps = rate;
    }
    enum { NL = 20000 };
    static double lat[NL];
    for (int i = 0; i < NL; i++) {
        const int32_t *ids[SF];
        b = rows_at(i % (BATCH * NB), 1, 0, ids);
        double a = now_s();
        predict(m, &b, prob);
        lat[i] = (now_s() - a) * 1e6;
    }
    qsort(lat, NL, sizeof *lat, cmp_dbl);
    r->lat_med_us = lat[NL / 2];
    r->lat_p99_us = lat[NL * 99 / 100];
}

__attribute__((target("avx512f"))) static double peak_avx512(void) {
#if defined(__x86_64__)
    __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f), a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
    long it = 30000000;
    double t = now_s();
    for (long k = 0; k < it; k++) {
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
        __asm__ volatile("" : "+v"(a[0]), "+v"(a[1]), "+v"(a[2]), "+v"(a[3]), "+v"(a[4]), "+v"(a[5]));
        __asm__ volatile("" : "+v"(a[6]), "+v"(a[7]), "+v"(a[8]), "+v"(a[9]), "+v"(a[10]), "+v"(a[11]));
    }
    t = now_s() - t;
    float o[16];
    _mm512_storeu_ps(o, a[0]);
    if (o[0] == 123.f) puts("");
    return it * 12.0 * 16 * 2 / t / 1e9;
#else
    return 0;
#endif
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

/* One configuration: dense-Adam training (its FLOPs counted first), then
 * inference on the folded model, then lazy-Adam training on a fresh model. */
static const char *g_only = ""; /* --only: "dense", "lazy", "infer" or all of them */

static int measured(const char *what) { return !*g_only || !strcmp(g_only, what); }

static void measure(run *r, double seconds) {
    mml_model_t *m;
    double unused;
    if (measured("dense") || measured("infer")) {
        m = make_model(r->adapter, r->emb, r->threads, 0);
        warm_up(m);
        if (measured("dense")) {
            r->train_flops = train_flops(m);
            r->train_sps = train_rate(m, seconds, &r->catch_share);
            r->rows_owed = rows_owed(m);
            r->rss_mb = rss_mb(); /* one model, trained: the only one alive */
        }
        if (measured("infer")) {
            if (mml_model_fold(m)) fprintf(stderr, "moemlora-bench: %s (unfolded inference)\n", mml_last_error());
            r->infer_flops = infer_flops(m);
            infer_rates(m, seconds, r);
        }
        mml_model_free(m);
    }
    if (measured("lazy")) {
        m = make_model(r->adapter, r->emb, r->threads, 1);
        warm_up(m);
        r->train_lazy_sps = train_rate(m, seconds, &unused);
        mml_model_free(m);
    }
}

/* What the bf16 GEMMs run on here: "amx", "vdpbf16ps", "bfdot", "emulated"
 * (fp32 kernels on rounded copies) or "reference" (run_peers.sh takes the
 * rate of the bf16 rows' arithmetic from it). */
static const char *bf16_path(void) {
    mml_isa isa;
    char err[256];
    return mml_simd_resolve(&isa, err, sizeof err) ? "?" : mml__bf16_path(isa);
}

static void print_run(const run *r, double peak, int json) {
    double gf = r->train_flops * r->train_sps / 1e9, gfl = r->train_flops * r->train_lazy_sps / 1e9;
    double gfi = r->infer_flops * r->infer_sps / 1e9, pk = peak * r->threads;
    printf("%-7s %4s %4d %3d | %12.0f %5.1f%% %12.0f %12.0f | %9.2f %9.2f | %8.0f %8.1f %5.1f%% | %8.0f %8.1f %5.1f%% | %7.0f\n",
           r->adapter, mml_precision_name(r->precision), r->emb, r->threads, r->train_sps, 100.0 * r->catch_share, r->train_lazy_sps, r->infer_sps,
           r->lat_med_us, r->lat_p99_us, r->train_flops, gf, pk > 0 ? 100.0 * gf / pk : 0.0, r->infer_flops, gfi,
           pk > 0 ? 100.0 * gfi / pk : 0.0, r->rss_mb);
    if (json)
        printf("{\"schema\":\"%s\",\"adapter\":\"%s\",\"precision\":\"%s\",\"emb\":%d,\"threads\":%d,\"train_samples_per_s\":%.0f,"
               "\"train_catchup_share\":%.4f,\"train_rows_owed\":%ld,\"train_lazy_samples_per_s\":%.0f,"
               "\"infer_samples_per_s\":%.0f,\"batch1_latency_us\":%.2f,\"batch1_p99_us\":%.2f,"
               "\"train_flops_per_sample\":%.1f,\"infer_flops_per_sample\":%.1f,\"train_gflops\":%.3f,"
               "\"train_lazy_gflops\":%.3f,\"infer_gflops\":%.3f,\"peak_gflops\":%.1f,\"rss_mb\":%.1f,"
               "\"bf16_path\":\"%s\"}\n",
               g_use_schema ? "aliccp" : "paper", r->adapter, mml_precision_name(r->precision), r->emb, r->threads, r->train_sps, r->catch_share, r->rows_owed, r->train_lazy_sps,
               r->infer_sps, r->lat_med_us, r->lat_p99_us, r->train_flops, r->infer_flops, gf, gfl, gfi, peak,
               r->rss_mb, bf16_path());
    fflush(stdout);
}

/* ---- a busy machine (--hog) ---- */

/* A child process spinning on the last CPU this process may use, until
 * stop_hog: another busy program on one core. -1 when it cannot start. */
static pid_t start_hog(int *cpu) {
    cpu_set_t set, one;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    *cpu = -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) *cpu = c;
    pid_t pid = fork();
    if (pid != 0) return pid;
    CPU_ZERO(&one);
    CPU_SET(*cpu, &one);
    sched_setaffinity(0, sizeof one, &one);
    for (volatile unsigned long x = 0;; x++) {}
}

static void stop_hog(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Training rate at 1 and 2 threads, without and with the hog. A shared
 * machine's speed drifts by tens of percent within seconds, so the two thread
 * counts take turns: both models are built first, then each of the W windows
 * runs both, in the order 1 2, 2 1, 1 2 ... (a steady drift favours each
 * order in turn, never one thread count). A rate is the best of its windows; the
 * ratio 2/1 is the median over the windows of the two rates taken side by
 * side, never the ratio of rates from different moments. */
static void busy_rows(const char *adapter, int emb, double seconds, int json) {
    double rate[2][2] = {{0.0}}, ratio[2];
    double *pair = (double *)malloc(sizeof *pair * (size_t)g_windows), catch_share;
    int cpu = -1;
    if (!pair) {
        fprintf(stderr, "moemlora-bench: out of memory\n");
        exit(1);
    }
    for (int h = 0; h < 2; h++) {
        pid_t hog = h ? start_hog(&cpu) : 0;
        if (hog < 0) {
            printf("busy machine: cannot start the hog\n");
            free(pair);
            return;
        }
        mml_model_t *m[2];
        long n[2] = {0, 0};
        for (int t = 0; t < 2; t++) {
            m[t] = make_model(adapter, emb, t + 1, 0);
            warm_up(m[t]);
        }
        for (int w = 0; w < g_windows; w++) {
            double r[2];
            for (int k = 0; k < 2; k++) {
                const int t = (w & 1) ? 1 - k : k;
                r[t] = train_window(m[t], seconds / g_windows, &n[t], &catch_share);
                if (r[t] > rate[h][t]) rate[h][t] = r[t];
            }
            pair[w] = r[1] / r[0];
        }
        qsort(pair, (size_t)g_windows, sizeof *pair, cmp_dbl);
        const int mid = g_windows / 2;
        ratio[h] = g_windows & 1 ? pair[mid] : 0.5 * (pair[mid - 1] + pair[mid]);
        for (int t = 0; t < 2; t++) mml_model_free(m[t]);
        if (hog > 0) stop_hog(hog);
    }
    free(pair);
    if (json)
        printf("{\"row\":\"busy\",\"adapter\":\"%s\",\"emb\":%d,\"train_1thr\":%.0f,\"train_2thr\":%.0f,"
               "\"ratio\":%.3f,\"hog_cpu\":%d,\"hog_train_1thr\":%.0f,\"hog_train_2thr\":%.0f,\"hog_ratio\":%.3f}\n",
               adapter, emb, rate[0][0], rate[0][1], ratio[0], cpu, rate[1][0], rate[1][1], ratio[1]);
    else
        printf("%-7s %4d | %10.0f %10.0f %6.2f | %10.0f %10.0f %6.2f\n", adapter, emb, rate[0][0], rate[0][1],
               ratio[0], rate[1][0], rate[1][1], ratio[1]);
    fflush(stdout);
}

int main(int argc, char **argv) {
    double seconds = 3.0;
    int threads[4] = {1, 2}, nt = 2, embs[4] = {8, 128}, ne = 2, json = 0, emb_given = 0, hog = 0;
    const char *adapters[3] = {"none", "mlora", "moe"};
    int na = 3, np = 1;
    mml_precision precs[2] = {MML_PRECISION_FP32, MML_PRECISION_BF16};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--windows") && i + 1 < argc && atoi(argv[i + 1]) >= 1) g_windows = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads-list") && i + 1 < argc) nt = parse_list(argv[++i], threads, 4);
        else if (!strcmp(argv[i], "--emb-list") && i + 1 < argc) ne = parse_list(argv[++i], embs, 4), emb_given = 1;
        else if (!strcmp(argv[i], "--adapters") && i + 1 < argc) {
            static char buf[64];
            snprintf(buf, sizeof buf, "%s", argv[++i]);
            na = 0;
            for (char *t = strtok(buf, ","); t && na < 3; t = strtok(NULL, ",")) adapters[na++] = t;
        } else if (!strcmp(argv[i], "--precision-list") && i + 1 < argc) {
            static char buf[64];
            snprintf(buf, sizeof buf, "%s", argv[++i]);
            np = 0;
            for (char *t = strtok(buf, ","); t && np < 2; t = strtok(NULL, ","))
                if (mml_precision_from_name(t, &precs[np++])) {
                    fprintf(stderr, "moemlora-bench: unknown precision \"%s\" (fp32 or bf16)\n", t);
                    return 2;
                }
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc &&
                   (!strcmp(argv[i + 1], "dense") || !strcmp(argv[i + 1], "lazy") || !strcmp(argv[i + 1], "infer")))
            g_only = argv[++i];
        else if (!strcmp(argv[i], "--dropout") && i + 1 < argc && atof(argv[i + 1]) >= 0.0 && atof(argv[i + 1]) < 1.0)
            g_dropout = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--hog")) hog = 1;
        else if (!strcmp(argv[i], "--schema") && i + 1 < argc && !strcmp(argv[i + 1], "aliccp")) {
            g_use_schema = 1;
            i++;
            if (!emb_given) embs[0] = 16, ne = 1;
        } else {
            printf("usage: moemlora-bench [--seconds S] [--windows W] [--threads-list 1,2]\n"
                   "                      [--emb-list 8,128] [--adapters none,mlora,moe] [--json]\n"
                   "                      [--schema aliccp] [--precision-list fp32,bf16]\n"
                   "                      [--only dense|lazy|infer] [--dropout P] [--hog]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    make_data();
    if (g_use_schema) make_schema();
    double peak = mml_simd_isa_supported(MML_ISA_AVX512) ? peak_avx512() : 0.0;
    printf("kernels %s, FMA peak (1 core, AVX-512) %.1f GFLOP/s, %.1f s per measurement%s", mml_simd_isa_name(), peak,
           seconds, g_use_schema ? "; schema aliccp (20 categorical fields)" : "");
    if (g_dropout >= 0.0f) printf("; dropout %g", g_dropout);
    printf("\n");
    if (hog) {
        printf("busy machine: train samples/s, a process spinning on one CPU or not\n");
        printf("%-7s %4s | %10s %10s %6s | %10s %10s %6s\n", "adapter", "emb", "1 thr", "2 thr", "2/1", "hog 1 thr",
               "hog 2 thr", "2/1");
        for (int a = 0; a < na; a++)
            for (int e = 0; e < ne; e++) busy_rows(adapters[a], embs[e], seconds, json);
        return 0;
    }
    printf("%-7s %4s %4s %3s | %12s %6s %12s %12s | %9s %9s | %8s %8s %6s | %8s %8s %6s | %7s\n", "adapter", "prec", "emb", "thr",
           "train/s", "catch", "train-lazy/s", "infer/s", "lat50 us", "lat99 us", "train F", "GFLOP/s", "%peak",
           "infer F", "GFLOP/s", "%peak", "RSS MiB");
    for (int a = 0; a < na; a++)
        for (int e = 0; e < ne; e++)
            for (int t = 0; t < nt; t++)
            for (int q = 0; q < np; q++) {
                run r;
                memset(&r, 0, sizeof r);
                g_precision = r.precision = precs[q];
                r.adapter = adapters[a];
                r.emb = embs[e];
                r.threads = threads[t];
                measure(&r, seconds);
                print_run(&r, peak, json);
            }
    return 0;
}
