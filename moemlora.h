/* moemlora.h - multi-domain CTR prediction with MLoRA / MoE-MLoRA adapters.
 * Version 0.1.0. License: MIT (see LICENSE).
 *
 * One click model serves several domains (scenarios, user groups, themes).
 * Each hidden layer of the DNN tower carries low-rank adapters: one per domain
 * (MLoRA), or a mixture of experts weighted by a softmax gate (MoE-MLoRA),
 * trained in three phases: backbone, each expert alone on its own domain, the
 * gate. Eight standard CTR models (WDL, DeepFM, NFM, PNN, DCN, xDeepFM,
 * AutoInt, FiBiNET) and a plain MLP take the adapters in their towers.
 * Kernels: moemlora_simd.h (scalar, AVX2, AVX-512, NEON; chosen at run time).
 *
 * USAGE (one file defines the implementation; link -lsleef -lm -lpthread)
 *
 *     #define MOEMLORA_IMPLEMENTATION
 *     #include "moemlora.h"
 *
 *     mml_data_t d;                       // or mml_data_load("prepared/", &d)
 *     mml_synth_config_t sc; mml_synth_default(&sc);
 *     if (mml_data_synthetic(&sc, &d)) die(mml_last_error());
 *     mml_config_t c; mml_config_default(&c);          // MoE-MLoRA, MLP tower
 *     c.n_users = d.n_users; c.n_items = d.n_items; c.n_domains = d.n_domains;
 *     mml_model_t *m;
 *     if (mml_model_create(&c, &m)) die(mml_last_error());
 *     mml_fit_opts_t o; mml_fit_opts_default(&o);
 *     mml_metrics_t test;
 *     if (mml_fit(m, &d, &o, &test)) die(mml_last_error());  // all phases
 *     printf("weighted AUC %.4f\n", test.weighted_auc);
 *     mml_model_save(m, "model.mml");                    // atomic
 *     mml_model_fold(m);                                 // cheap inference
 *     mml_predict(m, &(mml_batch_t){1, &uid, &pid, &dom, NULL}, &p);
 *     mml_model_free(m); mml_data_free(&d);
 *
 * CONFIGURATION MACROS (define before including)
 *     MOEMLORA_IMPLEMENTATION   emit the implementation in this file
 *     MOEMLORA_STATIC           make every public function static
 *     MOEMLORA_API              linkage of public functions (default extern)
 *     MOEMLORA_MALLOC(sz), MOEMLORA_FREE(p)   the allocator (both or neither)
 * Environment: MOEMLORA_ISA=scalar|avx2|avx512|neon forces the kernel set (an
 * ISA the CPU lacks is an error). Each model keeps the kernels it was made with.
 *
 * ERRORS. Functions return mml_status (MML_OK = 0). mml_last_error() gives a
 * thread-local message naming the file, line and problem for data errors. The
 * library never prints, never exits and never aborts on bad input.
 *
 * THREADING. A model is used by one thread at a time (its training step may
 * itself use cfg.threads workers; fixed thread count = deterministic results).
 * For concurrent serving, give each thread an mml_session_t on one model.
 *
 * MEMORY. Parameters, gradients, Adam state and activations (sized for
 * cfg.max_batch) are allocated once at creation, 64-byte aligned. Training
 * steps and predictions allocate nothing.
 *
 * FILES. Every write is atomic (temp file, fsync, rename, directory fsync), so
 * a crash or a full disk never loses an existing file. Checkpoints carry CRC32C
 * per section and are validated before use (docs/FORMAT.md).
 *
 * DIFFERENCES FROM THE PAPER'S PUBLIC CODE (deliberate): the gate's domain
 * embedding is a trained, saved parameter; frozen groups really receive no
 * update; each phase keeps its own best validation score and checkpoint;
 * domain ids are dense; AUC is exact (rank statistic with tied ranks averaged).
 *
 * CHAPTERS (grep the banners; same order in both halves)
 *     >>errors >>data >>model >>metrics >>schedules >>checkpoints >>synthetic
 *     >>io >>memory >>rng >>layers >>optimizer >>threads >>sessions >>folding
 *
 * VERSION HISTORY
 *     0.1.0  first release: kernels, nine models x three adapters, three-phase
 *            training, data preparation, checkpoints, serving, benchmarks.
 */
#ifndef MOEMLORA_H
#define MOEMLORA_H

/* The implementation uses POSIX file calls (open, fsync, rename). */
#if defined(MOEMLORA_IMPLEMENTATION) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef MOEMLORA_API
#ifdef MOEMLORA_STATIC
#define MOEMLORA_API static
#else
#define MOEMLORA_API extern
#endif
#endif

/* // >>errors ------------------------------------------------------------- */

typedef enum mml_status {
    MML_OK = 0,
    MML_ERR_ARG = 1,      /* bad argument or configuration */
    MML_ERR_NOMEM = 2,    /* allocation failed */
    MML_ERR_IO = 3,       /* open/read/write/rename failed */
    MML_ERR_FORMAT = 4,   /* malformed input file (error names file:line) */
    MML_ERR_ISA = 5,      /* forced ISA not supported by this CPU */
    MML_ERR_STATE = 6     /* call not valid in the current state */
} mml_status;

/* The reason for the last failing call on this thread ("" if none). */
MOEMLORA_API const char *mml_last_error(void);

/* // >>data ---------------------------------------------------------------- */

enum { MML_TRAIN = 0, MML_VAL = 1, MML_TEST = 2 };

/* One split, rows grouped by domain: rows of domain d are
 * [dom_start[d], dom_start[d+1]). */
typedef struct mml_split_t {
    int64_t n;
    int32_t *uid, *pid, *dom;
    float *label;          /* 0 or 1 */
    int64_t *dom_start;    /* n_domains + 1 entries */
} mml_split_t;

typedef struct mml_data_t {
    int32_t n_users, n_items, n_domains;   /* vocab sizes (ids are 0..n-1) */
    char **domain_names;                   /* n_domains strings (may be NULL) */
    mml_split_t split[3];                  /* MML_TRAIN, MML_VAL, MML_TEST */
    int32_t pretrained_dim;                /* 0 = none */
    float *user_emb, *item_emb;            /* [n_users, dim], [n_items, dim] or NULL */
} mml_data_t;

/* Loads a prepared dataset: DIR/data.mmlc (binary cache) if present, else the
 * CSV layout DIR/meta.txt + DIR/domain_<k>/{train,val,test}.csv. */
MOEMLORA_API mml_status mml_data_load(const char *dir, mml_data_t *out);
MOEMLORA_API void mml_data_free(mml_data_t *d);
/* Per-domain stratified (by label) random 60/20/20 split of raw samples. */
MOEMLORA_API mml_status mml_data_split(int64_t n, const int32_t *uid, const int32_t *pid,
                                       const int32_t *dom, const float *label,
                                       int32_t n_users, int32_t n_items, int32_t n_domains,
                                       uint64_t seed, mml_data_t *out);

#if defined(__has_include)
#if __has_include("parts/data_decl.h")
#include "parts/data_decl.h"
#endif
#endif

#include "parts/model_decl.h"

/* // >>io ------------------------------------------------------------------ */

/* Every file the library writes goes through an atomic writer: a temporary file
 * in the same directory, fsync, rename over the target, fsync of the directory.
 * The write hook (tests use it to simulate a full disk) replaces write(2): it
 * gets the bytes and `file`, a pointer to the int file descriptor, and returns
 * the number of bytes written; fewer than asked is an error. */
typedef size_t (*mml_write_hook)(const void *buf, size_t size, void *file, void *user);
MOEMLORA_API void mml_set_write_hook(mml_write_hook hook, void *user);
/* Writes a whole buffer to path atomically (temp file, fsync, rename). */
MOEMLORA_API mml_status mml_write_atomic(const char *path, const void *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* MOEMLORA_H */

/* ======================================================================== */
#ifdef MOEMLORA_IMPLEMENTATION
#ifndef MOEMLORA_IMPLEMENTED
#define MOEMLORA_IMPLEMENTED

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "moemlora_simd.h"

#ifdef __cplusplus
#define MML_THREAD_LOCAL thread_local
#else
#define MML_THREAD_LOCAL _Thread_local
#endif

#if defined(__GNUC__)
#define MML__UNUSED __attribute__((unused))
#else
#define MML__UNUSED
#endif

#ifndef MOEMLORA_MALLOC
#define MOEMLORA_MALLOC(sz) malloc(sz)
#define MOEMLORA_FREE(p) free(p)
#endif

// >>errors -----------------------------------------------------------------

static MML_THREAD_LOCAL char mml__errbuf[512];

const char *mml_last_error(void) { return mml__errbuf; }

/* Records the reason for a failure and returns the status, so call sites read
 * `return mml__fail(MML_ERR_FORMAT, "%s:%lld: ...", file, line);`. */
static mml_status mml__fail(mml_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static mml_status mml__fail(mml_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mml__errbuf, sizeof mml__errbuf, fmt, ap);
    va_end(ap);
    return st;
}

// >>memory -----------------------------------------------------------------

/* 64-byte aligned, zeroed; sizes checked for overflow by the caller via
 * mml__mul_ok. The original pointer sits just before the aligned block. */
static void *mml__alloc(size_t bytes) {
    size_t total = bytes + 64 + sizeof(void *);
    if (total < bytes) return NULL;
    unsigned char *raw = (unsigned char *)MOEMLORA_MALLOC(total);
    if (!raw) return NULL;
    uintptr_t a = ((uintptr_t)(raw + sizeof(void *)) + 63) & ~(uintptr_t)63;
    ((void **)a)[-1] = raw;
    memset((void *)a, 0, bytes);
    return (void *)a;
}
static void mml__free(void *p) {
    if (p) MOEMLORA_FREE(((void **)p)[-1]);
}
/* *out = a * b, 0 on overflow past limit. */
static int mml__mul_ok(uint64_t a, uint64_t b, uint64_t limit, uint64_t *out) {
    if (a != 0 && b > limit / a) return 0;
    *out = a * b;
    return *out <= limit;
}

// >>io ---------------------------------------------------------------------

static mml_write_hook mml__whook;
static void *mml__whook_user;

void mml_set_write_hook(mml_write_hook hook, void *user) {
    mml__whook = hook;
    mml__whook_user = user;
}

typedef struct mml__afile {
    int fd;
    int failed;
    size_t used;
    char path[1024];
    char tmp[1100];
    unsigned char buf[1 << 16];
} mml__afile;

static mml_status mml__afile_open(mml__afile *w, const char *path) {
    w->fd = -1;
    w->failed = 0;
    w->used = 0;
    w->tmp[0] = 0;
    if (strlen(path) >= sizeof w->path) return mml__fail(MML_ERR_ARG, "%s: path too long", path);
    strcpy(w->path, path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", path, (long)getpid());
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (w->fd < 0) {
        w->tmp[0] = 0;
        return mml__fail(MML_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    return MML_OK;
}

/* Default sink: write(2) until done or an error. */
static size_t mml__write_fd(const void *buf, size_t n, void *file, void *user) {
    (void)user;
    int fd = *(int *)file;
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, (const char *)buf + done, n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        done += (size_t)k;
    }
    return done;
}

static mml_status mml__afile_flush(mml__afile *w) {
    if (w->failed) return MML_ERR_IO;
    if (!w->used) return MML_OK;
    errno = 0;
    size_t k = mml__whook ? mml__whook(w->buf, w->used, &w->fd, mml__whook_user)
                          : mml__write_fd(w->buf, w->used, &w->fd, NULL);
    if (k != w->used) {
        w->failed = 1;
        return mml__fail(MML_ERR_IO, "%s: write failed: %s", w->path, errno ? strerror(errno) : "short write (disk full?)");
    }
    w->used = 0;
    return MML_OK;
}

static mml_status mml__afile_write(mml__afile *w, const void *buf, size_t n) {
    const unsigned char *p = (const unsigned char *)buf;
    while (n) {
        if (w->failed) return MML_ERR_IO;
        size_t room = sizeof w->buf - w->used, k = n < room ? n : room;
        memcpy(w->buf + w->used, p, k);
        w->used += k; p += k; n -= k;
        if (w->used == sizeof w->buf && mml__afile_flush(w)) return MML_ERR_IO;
    }
    return MML_OK;
}

static mml_status mml__afile_printf(mml__afile *w, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3), unused))
#endif
    ;
static mml_status mml__afile_printf(mml__afile *w, const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        w->failed = 1;
        return mml__fail(MML_ERR_ARG, "%s: formatted line too long", w->path);
    }
    return mml__afile_write(w, buf, (size_t)n);
}

static void mml__afile_abort(mml__afile *w) {
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    if (w->tmp[0]) unlink(w->tmp);
    w->tmp[0] = 0;
}

static void mml__fsync_dir_of(const char *path) {
    char dir[1024];
    const char *slash = strrchr(path, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == path) strcpy(dir, "/");
    else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Flushes, syncs and renames over the target; on any failure the temporary is
 * removed and the previous file at the target path is untouched. */
static mml_status mml__afile_commit(mml__afile *w) {
    if (mml__afile_flush(w) != MML_OK) {
        mml__afile_abort(w);
        return MML_ERR_IO;
    }
    if (fsync(w->fd) != 0) {
        int err = errno;
        mml__afile_abort(w);
        return mml__fail(MML_ERR_IO, "%s: fsync failed: %s", w->path, strerror(err));
    }
    close(w->fd);
    w->fd = -1;
    if (rename(w->tmp, w->path) != 0) {
        int err = errno;
        mml__afile_abort(w);
        return mml__fail(MML_ERR_IO, "%s: rename failed: %s", w->path, strerror(err));
    }
    w->tmp[0] = 0;
    mml__fsync_dir_of(w->path);
    return MML_OK;
}

mml_status mml_write_atomic(const char *path, const void *buf, size_t n) {
    mml__afile w;
    mml_status st = mml__afile_open(&w, path);
    if (st) return st;
    if (mml__afile_write(&w, buf, n) != MML_OK) { mml__afile_abort(&w); return MML_ERR_IO; }
    return mml__afile_commit(&w);
}

// >>rng --------------------------------------------------------------------

/* splitmix64: seeds and shuffles (all host-side, ISA independent). */
static uint64_t mml__rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double mml__rng_uniform(uint64_t *s) { return (double)(mml__rng_next(s) >> 11) * 0x1.0p-53; }
static uint64_t mml__rng_below(uint64_t *s, uint64_t n) { return n ? mml__rng_next(s) % n : 0; }
static float mml__rng_normal(uint64_t *s) {
    double u1 = mml__rng_uniform(s), u2 = mml__rng_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
static void mml__shuffle_i64(int64_t *a, int64_t n, uint64_t *s) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)mml__rng_below(s, (uint64_t)i + 1);
        int64_t t = a[i]; a[i] = a[j]; a[j] = t;
    }
}

#if __has_include("parts/layers_impl.h")
#include "parts/layers_impl.h"
#endif
#if __has_include("parts/data_impl.h")
#include "parts/data_impl.h"
#endif
#if __has_include("parts/ckpt_impl.h")
#include "parts/ckpt_impl.h"
#endif
#include "parts/model_impl.h"
#include "parts/model_fwd.h"
#include "parts/model_par.h"
#include "parts/model_fold.h"
#include "parts/train_impl.h"
#include "parts/model_io.h"
/* PARTS */

#endif /* MOEMLORA_IMPLEMENTED */
#endif /* MOEMLORA_IMPLEMENTATION */
