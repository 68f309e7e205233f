/* Minimal test harness shared by the test programs.
 * CHECK(cond, fmt, ...) records a failure with file:line and keeps going;
 * TEST_MAIN_END() prints "N passed, N failed" and returns the exit code. */
#ifndef MML_TEST_H
#define MML_TEST_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static int mmlt_pass, mmlt_fail;
static const char *mmlt_ctx = "";

#define MMLT_SKIP 77

/* Helpers a test file may leave uncalled. */
#if defined(__GNUC__)
#define MMLT_UNUSED __attribute__((unused))
#else
#define MMLT_UNUSED
#endif

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (cond) {                                                             \
            mmlt_pass++;                                                        \
        } else {                                                                \
            mmlt_fail++;                                                        \
            if (mmlt_fail <= 50) {                                              \
                fprintf(stderr, "FAIL %s:%d [%s] %s: ", __FILE__, __LINE__,     \
                        mmlt_ctx, #cond);                                       \
                fprintf(stderr, __VA_ARGS__);                                   \
                fputc('\n', stderr);                                            \
            }                                                                   \
        }                                                                       \
    } while (0)

#define CHECK_OK(expr)                                                          \
    do {                                                                        \
        int mmlt_rc_ = (int)(expr);                                             \
        CHECK(mmlt_rc_ == 0, "returned %d: %s", mmlt_rc_, mml_last_error());    \
    } while (0)

/* Prints the closing line that test runners read and returns the exit code. */
static int mmlt_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, mmlt_pass, mmlt_fail);
    return mmlt_fail ? 1 : 0;
}

/* MOEMLORA_TEST_QUICK=1 (valgrind runs) asks for smaller sizes. */
MMLT_UNUSED
static int mmlt_quick(void) {
    const char *q = getenv("MOEMLORA_TEST_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

/* MOEMLORA_TEST_ONE_THREAD=1: skip the parts that start worker threads
 * (qemu-user, used for the NEON runs, can hang in pthread_create). */
MMLT_UNUSED
static int mmlt_max_threads(void) {
    const char *q = getenv("MOEMLORA_TEST_ONE_THREAD");
    return q && *q && strcmp(q, "0") != 0 ? 1 : 2;
}

/* Relative closeness with an absolute floor. */
MMLT_UNUSED
static int mmlt_close(double a, double b, double rtol, double atol) {
    double d = fabs(a - b);
    return d <= atol + rtol * fmax(fabs(a), fabs(b));
}

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

/* A whole file, NUL-terminated (*len excludes the NUL; len may be NULL);
 * NULL if it cannot be read. The caller frees it. */
MMLT_UNUSED
static unsigned char *mmlt_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = n >= 0 ? (unsigned char *)malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    if (b) b[n] = 0;
    if (len) *len = b ? (size_t)n : 0;
    return b;
}

/* A new empty folder /tmp/<prefix>XXXXXX, its name malloc'd (the caller
 * frees it), or the program ends with exit 1. */
MMLT_UNUSED
static char *mmlt_mkdtemp(const char *prefix) {
    char *p = (char *)malloc(64);
    snprintf(p, 64, "/tmp/%sXXXXXX", prefix);
    if (!mkdtemp(p)) {
        perror("mkdtemp");
        exit(1);
    }
    return p;
}

/* Removes a directory tree made by a test (no links followed). */
MMLT_UNUSED
static void mmlt_rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[2048];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) mmlt_rm_tree(p);
        else unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}
#ifdef MOEMLORA_H
/* A model for the config, or the program ends: exit 77 (skipped) when the
 * forced ISA is missing here, 1 on any other failure. */
MMLT_UNUSED
static mml_model_t *make_model(const mml_config_t *c) {
    mml_model_t *m = NULL;
    mml_status st = mml_model_create(c, &m);
    if (st == MML_ERR_ISA) {
        printf("skipped: %s\n", mml_last_error());
        exit(MMLT_SKIP);
    }
    CHECK(st == MML_OK && m, "mml_model_create: %d %s", (int)st, mml_last_error());
    if (!m) exit(1);
    return m;
}

/* The ISA the models will run on (mml_simd_resolve: MOEMLORA_ISA may force
 * one), or the program ends with exit 77 (skipped) when that one cannot run
 * here. */
MMLT_UNUSED
static mml_isa mmlt_isa(void) {
    char err[256];
    mml_isa isa;
    if (mml_simd_resolve(&isa, err, sizeof err) != 0) {
        printf("skipped: %s\n", err);
        exit(MMLT_SKIP);
    }
    return isa;
}

/* The default config over the paper's fields with these vocabularies (the
 * default leaves them to the caller). */
MMLT_UNUSED
static void mmlt_config_paper(mml_config_t *c, int32_t n_users, int32_t n_items, int32_t n_domains) {
    mml_config_default(c);
    c->n_users = n_users;
    c->n_items = n_items;
    c->n_domains = n_domains;
}

/* A tower of two hidden layers, h0 then h1 units. */
MMLT_UNUSED
static void mmlt_tower(mml_config_t *c, int h0, int h1) {
    c->n_hidden = 2;
    c->hidden[0] = h0;
    c->hidden[1] = h1;
}

/* The small model the mml_fit tests train on d's vocabularies: emb 8, tower
 * 32-16, lora_reduce 8, dropout 0.2, Adam 1e-2, batches up to 256. */
MMLT_UNUSED
static void mmlt_fit_config(mml_config_t *c, const mml_data_t *d, uint64_t seed) {
    mmlt_config_paper(c, d->n_users, d->n_items, d->n_domains);
    c->emb_dim = 8;
    mmlt_tower(c, 32, 16);
    c->lora_reduce = 8;
    c->dropout = 0.2f;
    c->lr = 1e-2f;
    c->max_batch = 256;
    c->seed = seed;
}

/* Synthetic data settings over 3 domains with these vocabularies and n rows;
 * a test may change more before mml_data_synthetic. */
MMLT_UNUSED
static void mmlt_synth3(mml_synth_config_t *sc, int32_t n_users, int32_t n_items, int64_t n) {
    mml_synth_default(sc);
    sc->n_domains = 3;
    sc->n_users = n_users;
    sc->n_items = n_items;
    sc->n_samples = n;
}

/* The data the mml_fit tests train on: 3 domains, 200 users, 100 items, n rows. */
MMLT_UNUSED
static void mmlt_fit_data(mml_data_t *d, int64_t n) {
    mml_synth_config_t sc;
    mmlt_synth3(&sc, 200, 100, n);
    CHECK_OK(mml_data_synthetic(&sc, d));
}

/* The schema of n fields named, kinded and sized by the tables, the domain
 * the field at index domain, every scale the one given and all else zero:
 * the tests' schemas differ in those and in a few settings made after. */
MMLT_UNUSED
static void mmlt_schema(mml_schema_t *s, int n, int domain, const char *const *names, const mml_field_kind *kinds,
                        const int *vocab, float scale) {
    memset(s, 0, sizeof *s);
    s->n_fields = n;
    s->domain = domain;
    for (int f = 0; f < n; f++) {
        mml_field_t *fd = &s->field[f];
        snprintf(fd->name, sizeof fd->name, "%s", names[f]);
        fd->kind = kinds[f];
        fd->vocab = vocab[f];
        fd->scale = scale;
    }
}
#endif

#ifdef MOEMLORA_SOURCE_DIR
/* The real data set SUB when it holds PROBE: its path in raw and 1; else a
 * line saying which path is missing and what is skipped, and 0. The data sets
 * are in $MOEMLORA_DATA_DIR when that is set, else in ../shared/data next to
 * the project. */
MMLT_UNUSED
static int mmlt_real_data(const char *sub, const char *probe, const char *what, char *raw, size_t n) {
    char path[2048];
    const char *env = getenv("MOEMLORA_DATA_DIR");
    if (env && *env) snprintf(raw, n, "%s/%s", env, sub);
    else snprintf(raw, n, "%s/../shared/data/%s", MOEMLORA_SOURCE_DIR, sub);
    snprintf(path, sizeof path, "%s/%s", raw, probe);
    if (access(path, R_OK) == 0) return 1;
    printf("skipped: %s: %s is missing\n", what, path);
    return 0;
}
#endif
#endif
