/* A user's file that includes <stdio.h>, <stdlib.h>, <string.h> and <time.h>
 * before the implementation (with MML_CONSUMER_HEADER_FIRST: after it). ctest
 * compiles it under -std=c11, c17, gnu11, gnu17 and as C++17 with -Wall
 * -Wextra -Werror, and runs a strict c11 build; CI builds it against the
 * installed package. A run reaches every POSIX call the implementation makes:
 * the whole-file read (open, fstat), the stale temp file check (kill) and the
 * worker pool's clock (clock_gettime).
 *
 *     include_order WORKDIR      (an existing, writable directory)
 */
#ifndef MML_CONSUMER_HEADER_FIRST
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#endif

#define MOEMLORA_IMPLEMENTATION
#include <moemlora.h>

#ifdef MML_CONSUMER_HEADER_FIRST
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#endif

static int fail(const char *what) {
    fprintf(stderr, "include_order: %s: %s\n", what, mml_last_error());
    return 1;
}

/* Synthetic data through the CSV layout on disk, so loading reads files. */
static int data_round_trip(const char *dir, mml_data_t *d) {
    mml_synth_config_t sc;
    mml_synth_default(&sc);
    sc.n_domains = 2; sc.n_users = 100; sc.n_items = 50; sc.n_samples = 2000;
    mml_data_t made;
    if (mml_data_synthetic(&sc, &made)) return fail("mml_data_synthetic");
    mml_status st = mml_data_save_dir(&made, dir);
    int64_t n = made.split[MML_TRAIN].n;
    mml_data_free(&made);
    if (st) return fail("mml_data_save_dir");
    if (mml_data_load_csv(dir, d)) return fail("mml_data_load_csv");
    if (d->split[MML_TRAIN].n != n) {
        fprintf(stderr, "include_order: %lld training rows read back, %lld written\n",
                (long long)d->split[MML_TRAIN].n, (long long)n);
        return 1;
    }
    return 0;
}

/* Two worker threads: the pool spins on the monotonic clock between jobs. */
static int train(const mml_data_t *d) {
    mml_config_t c;
    mml_config_default(&c);
    c.n_users = d->n_users; c.n_items = d->n_items; c.n_domains = d->n_domains;
    c.n_hidden = 2; c.hidden[0] = 16; c.hidden[1] = 8;
    c.threads = 2;
    mml_model_t *m;
    if (mml_model_create(&c, &m)) return fail("mml_model_create");
    mml_fit_opts_t o;
    mml_fit_opts_default(&o);
    o.max_epochs = 1;
    mml_metrics_t t;
    mml_status st = mml_fit(m, d, &o, &t);
    mml_model_free(m);
    if (st) return fail("mml_fit");
    printf("include_order: weighted AUC %.4f\n", t.weighted_auc);
    return 0;
}

/* A temp file left by a process that no longer exists is removed by the next
 * atomic write to the same path (pid 2147483646 is above any pid_max). */
static int stale_temp(const char *dir) {
    char path[1024], stale[1100];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    snprintf(stale, sizeof stale, "%s.tmp.2147483646.0", path);
    FILE *f = fopen(stale, "wb");
    if (!f) { fprintf(stderr, "include_order: cannot create %s\n", stale); return 1; }
    fclose(f);
    if (mml_write_atomic(path, "x", 1)) return fail("mml_write_atomic");
    f = fopen(stale, "rb");
    if (f) {
        fclose(f);
        fprintf(stderr, "include_order: stale %s was not removed\n", stale);
        return 1;
    }
    remove(path);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: include_order WORKDIR\n");
        return 2;
    }
    char data_dir[1024];
    snprintf(data_dir, sizeof data_dir, "%s/data", argv[1]);
    mml_data_t d;
    if (data_round_trip(data_dir, &d)) return 1;
    int rc = train(&d);
    mml_data_free(&d);
    return rc || stale_temp(argv[1]);
}
