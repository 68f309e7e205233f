/* moemlora-serve: batch scoring from stdin. Loads a model file (a training
 * checkpoint or an export), reads "uid,pid,domain" lines and writes one click
 * probability per line, in input order.
 *
 *   moemlora-train --export model.mml
 *   printf '3,17,0\n42,5,2\n' | moemlora-serve model.mml
 *   moemlora-serve model.mml --threads 4 < requests.csv > scores.txt
 *
 * Ids outside the training vocabulary get the model's out-of-vocabulary
 * prediction. Each worker thread owns an mml_session_t, so the rows of a batch
 * are scored concurrently on one shared model.
 */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct opts {
    const char *model;
    long threads, batch;
    int skip_bad;
} opts;

static void usage(FILE *f) {
    fprintf(f,
        "usage: moemlora-serve MODEL [options] < requests > probabilities\n"
        "Scores \"uid,pid,domain\" lines from stdin with a model saved by moemlora-train\n"
        "(--save or --export) and prints one probability per line (%%.6f), in input order.\n"
        "Unknown ids get the model's out-of-vocabulary prediction.\n\n"
        "options:\n"
        "  --threads N   worker threads, each with its own session (1)\n"
        "  --batch N     lines scored together (1024)\n"
        "  --skip-bad    answer a malformed line with \"nan\" and a warning instead of stopping\n"
        "  --help        this text\n"
        "A malformed line stops the program with exit code 1 and \"stdin:LINE: ...\" on stderr\n"
        "after the lines before it have been answered.\n");
}

static int parse_count(const char *flag, const char *v, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < 1 || x > hi) {
        fprintf(stderr, "moemlora-serve: %s expects an integer in 1..%ld, got \"%s\"\n", flag, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, opts *o) {
    o->threads = 1;
    o->batch = 1024;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
        if (!strcmp(a, "--skip-bad")) { o->skip_bad = 1; continue; }
        if (!strcmp(a, "--threads") || !strcmp(a, "--batch")) {
            if (i + 1 >= argc) { fprintf(stderr, "moemlora-serve: %s needs a value\n", a); return -1; }
            if (parse_count(a, argv[++i], a[2] == 't' ? 256 : 1 << 20, a[2] == 't' ? &o->threads : &o->batch)) return -1;
            continue;
        }
        if (a[0] == '-' && a[1]) { fprintf(stderr, "moemlora-serve: unknown option %s (see --help)\n", a); return -1; }
        if (o->model) { fprintf(stderr, "moemlora-serve: more than one model file given\n"); return -1; }
        o->model = a;
    }
    if (!o->model) { usage(stderr); return -1; }
    return 0;
}

/* ---- input ---- */

/* One int32 field ending at sep ('\0' for the last); spaces around it are fine. */
static const char *parse_field(const char *s, char sep, int32_t *out, const char **why) {
    while (*s == ' ' || *s == '\t') s++;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s) { *why = "expected an integer"; return NULL; }
    if (errno || x < INT32_MIN || x > INT32_MAX) { *why = "integer out of range"; return NULL; }
    while (*end == ' ' || *end == '\t') end++;
    if (*end != sep) { *why = sep ? "expected \"uid,pid,domain\"" : "unexpected text after the domain"; return NULL; }
    *out = (int32_t)x;
    return sep ? end + 1 : end;
}

/* Parses "uid,pid,domain" (line without its newline); NULL or a reason. */
static const char *parse_line(char *line, int32_t *u, int32_t *p, int32_t *d) {
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) line[--n] = 0;
    if (!n) return "empty line";
    const char *why = NULL, *s = line;
    if (!(s = parse_field(s, ',', u, &why)) || !(s = parse_field(s, ',', p, &why)) || !parse_field(s, '\0', d, &why))
        return why;
    return NULL;
}

/* ---- scoring ---- */

typedef struct worker {
    mml_session_t *s;
    mml_batch_t b;
    float *prob;
    mml_status st;
    char err[512]; /* mml_last_error() holds up to 511 bytes */
} worker;

static void *score_slice(void *arg) {
    worker *w = (worker *)arg;
    w->st = w->b.n ? mml_session_predict(w->s, &w->b, w->prob) : MML_OK;
    if (w->st) snprintf(w->err, sizeof w->err, "%s", mml_last_error()); /* the error string is per thread */
    return NULL;
}

/* Scores rows [0, n) split into contiguous slices, one per worker. */
static int score(worker *w, int nw, int n, const int32_t *u, const int32_t *p, const int32_t *d, float *prob) {
    int use = n < 64 * nw ? 1 : nw; /* small batches are not worth a thread */
    pthread_t tid[256];
    int started[256] = {0};
    for (int t = 0; t < use; t++) {
        int a = (int)((int64_t)n * t / use), b = (int)((int64_t)n * (t + 1) / use);
        w[t].b = mml_batch_paper(b - a, u + a, p + a, d + a, NULL);
        w[t].prob = prob + a;
        if (t > 0) started[t] = pthread_create(&tid[t], NULL, score_slice, &w[t]) == 0;
        if (t > 0 && !started[t]) score_slice(&w[t]); /* no thread: do it here */
    }
    score_slice(&w[0]);
    int rc = 0;
    for (int t = 0; t < use; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        if (w[t].st && !rc) {
            fprintf(stderr, "moemlora-serve: %s\n", w[t].err);
            rc = -1;
        }
    }
    return rc;
}

/* Answers the batch in input order; bad[i] rows print "nan". */
static void emit(int n, const float *prob, const unsigned char *bad, const int *slot) {
    for (int i = 0; i < n; i++) {
        if (bad[i]) fputs("nan\n", stdout);
        else printf("%.6f\n", prob[slot[i]]);
    }
}

int main(int argc, char **argv) {
    opts o;
    memset(&o, 0, sizeof o);
    if (parse_args(argc, argv, &o)) return 2;

    mml_model_t *m = NULL;
    if (mml_model_load(o.model, &m)) {
        fprintf(stderr, "moemlora-serve: %s\n", mml_last_error());
        return 1;
    }
    int nw = (int)o.threads, B = (int)o.batch, rc = 0;
    worker *w = (worker *)calloc((size_t)nw, sizeof *w);
    int32_t *u = (int32_t *)malloc((size_t)B * 4), *p = (int32_t *)malloc((size_t)B * 4), *d = (int32_t *)malloc((size_t)B * 4);
    float *prob = (float *)malloc((size_t)B * sizeof(float));
    int *slot = (int *)malloc((size_t)B * sizeof(int));
    unsigned char *bad = (unsigned char *)malloc((size_t)B);
    if (!w || !u || !p || !d || !prob || !slot || !bad) {
        fprintf(stderr, "moemlora-serve: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int t = 0; t < nw; t++)
        if (mml_session_create(m, &w[t].s)) {
            fprintf(stderr, "moemlora-serve: %s\n", mml_last_error());
            rc = 1;
            goto done;
        }
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

    char *line = NULL;
    size_t cap = 0;
    long long lineno = 0, n_bad = 0;
    int n = 0, rows = 0, stop = 0;
    while (!stop) {
        ssize_t len = getline(&line, &cap, stdin);
        if (len >= 0) {
            lineno++;
            if (len && line[len - 1] == '\n') line[len - 1] = 0;
            char shown[64];
            snprintf(shown, sizeof shown, "%s", line);
            const char *why = parse_line(line, &u[rows], &p[rows], &d[rows]);
            bad[n] = why != NULL;
            if (why) {
                fprintf(stderr, "%s:%lld: %s: \"%s%s\"\n", o.skip_bad ? "moemlora-serve: warning: stdin" : "stdin", lineno,
                        why, shown, strlen(line) >= sizeof shown ? "..." : "");
                n_bad++;
                if (!o.skip_bad) { rc = 1; stop = 1; }
            } else {
                slot[n] = rows++;
            }
            if (!why || o.skip_bad) n++;
        } else {
            stop = 1;
        }
        if (n == B || (stop && n)) {
            if (rows && score(w, nw, rows, u, p, d, prob)) { rc = 1; break; }
            emit(n, prob, bad, slot);
            n = rows = 0;
        }
    }
    free(line);
    if (ferror(stdin)) { fprintf(stderr, "moemlora-serve: reading stdin: %s\n", strerror(errno)); rc = 1; }
    if (fflush(stdout) || ferror(stdout)) { fprintf(stderr, "moemlora-serve: writing stdout failed\n"); rc = 1; }
    if (n_bad && o.skip_bad) fprintf(stderr, "moemlora-serve: %lld malformed lines answered with nan\n", n_bad);
done:
    for (int t = 0; w && t < nw; t++) mml_session_free(w[t].s);
    free(w); free(u); free(p); free(d); free(prob); free(slot); free(bad);
    mml_model_free(m);
    return rc;
}
