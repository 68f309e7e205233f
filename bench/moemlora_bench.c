/* moemlora-bench: end-to-end training and inference throughput of the model
 * configurations of the PyTorch peer (../shared/peers/torch_moemlora.py bench):
 * 100k users, 50k items, 10 domains, tower 256-128-64, batch 1024, ids and
 * domains drawn uniformly per sample (mixed-domain batches, as the peer).
 *
 *   moemlora-bench [--seconds S] [--windows W] [--threads-list 1,2]
 *                  [--emb-list 8,128] [--adapters none,mlora,moe] [--json]
 *
 * Each rate is the best of W windows of S/W seconds (default 3: a shared
 * machine's noise only ever slows a window down); run_peers.sh runs one
 * window, as the peer measures, and repeats both. Prints a table and, with
 * --json, one JSON line per configuration. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct run {
    const char *adapter;
    int emb, threads, lazy;
    double train_sps, train_lazy_sps, infer_sps, lat_med_us, lat_p99_us, flops, rss_mb;
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

static void make_data(void) {
    uint64_t s = 42;
    for (int i = 0; i < BATCH * NB; i++) {
        g_uid[i] = (int32_t)(mml__rng_next(&s) % USERS);
        g_pid[i] = (int32_t)(mml__rng_next(&s) % ITEMS);
        g_dom[i] = (int32_t)(mml__rng_next(&s) % DOMAINS);
        g_lab[i] = mml__rng_uniform(&s) < 0.3 ? 1.0f : 0.0f;
    }
}

/* Forward FLOPs per sample as the peer counts them (dense_flops). */
static double fwd_flops(int emb, mml_adapter a) {
    int dims[4] = {3 * emb, 256, 128, 64};
    double f = 0;
    for (int i = 0; i < 3; i++) {
        f += 2.0 * dims[i] * dims[i + 1];
        int r = dims[i + 1] / 16 > 1 ? dims[i + 1] / 16 : 1;
        if (a == MML_ADAPTER_MLORA) f += 2.0 * (dims[i] * r + r * dims[i + 1]);
        if (a == MML_ADAPTER_MOE) f += DOMAINS * 2.0 * (dims[i] * r + r * dims[i + 1]);
    }
    return f + 2.0 * 64;
}

static mml_model_t *make_model(const char *adapter, int emb, int threads, int lazy) {
    mml_config_t c;
    mml_config_default(&c);
    c.model = MML_MODEL_WDL; /* the peer's model: tower + linear logit */
    mml_adapter_from_name(adapter, &c.adapter);
    c.n_users = USERS;
    c.n_items = ITEMS;
    c.n_domains = DOMAINS;
    c.emb_dim = emb;
    c.threads = threads;
    c.lazy_adam = lazy;
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

static double train_rate(mml_model_t *m, double seconds) {
    mml_batch_t b;
    for (int k = 0; k < 3; k++) {
        b = mml_batch_paper(BATCH, g_uid + k * BATCH, g_pid + k * BATCH, g_dom + k * BATCH, g_lab + k * BATCH);
        mml_train_step(m, &b, NULL);
    }
    double best = 0.0;
    long n = 0;
    for (int w = 0; w < g_windows; w++) {
        double t0 = now_s(), t;
        long n0 = n;
        do {
            int k = (int)(n % NB);
            b = mml_batch_paper(BATCH, g_uid + k * BATCH, g_pid + k * BATCH, g_dom + k * BATCH, g_lab + k * BATCH);
            if (mml_train_step(m, &b, NULL)) { fprintf(stderr, "%s\n", mml_last_error()); exit(1); }
            n++;
            t = now_s() - t0;
        } while (t < seconds / g_windows);
        double rate = (double)(n - n0) * BATCH / t;
        if (rate > best) best = rate;
    }
    return best;
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
            int k = (int)(n % NB);
            b = mml_batch_paper(BATCH, g_uid + k * BATCH, g_pid + k * BATCH, g_dom + k * BATCH, NULL);
            mml_predict(m, &b, prob);
            n++;
            t = now_s() - t0;
        } while (t < seconds / g_windows);
        double rate = (double)(n - n0) * BATCH / t;
        if (rate > r->infer_sps) r->infer_sps = rate;
    }
    enum { NL = 20000 };
    static double lat[NL];
    for (int i = 0; i < NL; i++) {
        int k = i % (BATCH * NB);
        b = mml_batch_paper(1, g_uid + k, g_pid + k, g_dom + k, NULL);
        double a = now_s();
        mml_predict(m, &b, prob);
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

int main(int argc, char **argv) {
    double seconds = 3.0;
    int threads[4] = {1, 2}, nt = 2, embs[4] = {8, 128}, ne = 2, json = 0;
    const char *adapters[3] = {"none", "mlora", "moe"};
    int na = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--windows") && i + 1 < argc && atoi(argv[i + 1]) >= 1) g_windows = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads-list") && i + 1 < argc) nt = parse_list(argv[++i], threads, 4);
        else if (!strcmp(argv[i], "--emb-list") && i + 1 < argc) ne = parse_list(argv[++i], embs, 4);
        else if (!strcmp(argv[i], "--adapters") && i + 1 < argc) {
            static char buf[64];
            snprintf(buf, sizeof buf, "%s", argv[++i]);
            na = 0;
            for (char *t = strtok(buf, ","); t && na < 3; t = strtok(NULL, ",")) adapters[na++] = t;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else {
            printf("usage: moemlora-bench [--seconds S] [--windows W] [--threads-list 1,2]\n"
                   "                      [--emb-list 8,128] [--adapters none,mlora,moe] [--json]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    make_data();
    double peak = mml_simd_isa_supported(MML_ISA_AVX512) ? peak_avx512() : 0.0;
    printf("kernels %s, FMA peak (1 core, AVX-512) %.1f GFLOP/s, %.1f s per measurement\n", mml_simd_isa_name(), peak,
           seconds);
    printf("%-7s %4s %3s | %12s %12s %12s | %9s %9s | %8s %6s | %8s %6s | %7s\n", "adapter", "emb", "thr",
           "train/s", "train-lazy/s", "infer/s", "lat50 us", "lat99 us", "train GF", "%peak", "infer GF", "%peak",
           "RSS MiB");
    for (int a = 0; a < na; a++)
        for (int e = 0; e < ne; e++)
            for (int t = 0; t < nt; t++) {
                run r;
                memset(&r, 0, sizeof r);
                r.adapter = adapters[a];
                r.emb = embs[e];
                r.threads = threads[t];
                mml_model_t *m = make_model(adapters[a], embs[e], threads[t], 0);
                r.train_sps = train_rate(m, seconds);
                r.rss_mb = rss_mb(); /* one model, trained: the only one alive */
                if (strcmp(adapters[a], "none")) mml_model_fold(m);
                infer_rates(m, seconds, &r);
                mml_model_free(m);
                m = make_model(adapters[a], embs[e], threads[t], 1);
                r.train_lazy_sps = train_rate(m, seconds);
                mml_model_free(m);
                mml_adapter ad = MML_ADAPTER_NONE;
                mml_adapter_from_name(adapters[a], &ad);
                r.flops = fwd_flops(embs[e], ad);
                double gf = 3.0 * r.flops * r.train_sps / 1e9;
                /* inference runs the folded tower: the base model's FLOPs */
                double gfi = fwd_flops(embs[e], MML_ADAPTER_NONE) * r.infer_sps / 1e9;
                double pk = peak > 0 ? peak * r.threads : 0.0;
                printf("%-7s %4d %3d | %12.0f %12.0f %12.0f | %9.2f %9.2f | %8.1f %5.1f%% | %8.1f %5.1f%% | %7.0f\n",
                       r.adapter, r.emb, r.threads, r.train_sps, r.train_lazy_sps, r.infer_sps, r.lat_med_us,
                       r.lat_p99_us, gf, pk > 0 ? 100.0 * gf / pk : 0.0, gfi, pk > 0 ? 100.0 * gfi / pk : 0.0, r.rss_mb);
                if (json)
                    printf("{\"adapter\":\"%s\",\"emb\":%d,\"threads\":%d,\"train_samples_per_s\":%.0f,"
                           "\"train_lazy_samples_per_s\":%.0f,\"infer_samples_per_s\":%.0f,\"batch1_latency_us\":%.2f,"
                           "\"batch1_p99_us\":%.2f,\"train_gflops\":%.2f,\"infer_gflops\":%.2f,\"peak_gflops\":%.1f,"
                           "\"rss_mb\":%.1f}\n",
                           r.adapter, r.emb, r.threads, r.train_sps, r.train_lazy_sps, r.infer_sps, r.lat_med_us,
                           r.lat_p99_us, gf, gfi, peak, r.rss_mb);
                fflush(stdout);
            }
    return 0;
}
