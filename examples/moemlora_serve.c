/* moemlora-serve: batch scoring from stdin. Loads a model file (a training
 * checkpoint or an export), reads "uid,pid,domain" lines and writes one click
 * probability per line, in input order.
 *
 *   moemlora-train --export model.mml
 *   printf '3,17,0\n42,5,2\n' | moemlora-serve model.mml
 *   moemlora-serve model.mml --threads 4 < requests.csv > scores.txt
 *
 * User and item ids outside the training vocabulary get the model's
 * out-of-vocabulary prediction; a domain the model does not have is a
 * malformed line. Each worker thread owns an mml_session_t, so the rows of a
 * batch are scored concurrently on one shared model. From a pipe or a
 * terminal, whatever has arrived is answered (and flushed) as soon as no more
 * input is waiting, so a client can send a line and wait for its answer.
 */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
        "User and item ids outside the model's vocabulary (negative ones included) get the\n"
        "model's out-of-vocabulary prediction; a domain outside 0..D-1 (D: the model's\n"
        "domains) is a malformed line, and so is a line with a NUL byte.\n"
        "From a pipe or a terminal, the lines that have arrived are answered and flushed\n"
        "as soon as no more input is waiting, so a client may send one line and wait.\n\n"
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

/* stdin through read(2) rather than stdio, whose buffer would hide whether
 * more input is waiting. Bytes [head, tail) are unread; [head, scanned) holds
 * no newline; one byte is kept free for the NUL after a last line. */
typedef struct reader {
    int fd;
    char *buf;
    size_t cap, head, tail, scanned;
    int eof, err; /* err: errno of the failed read */
} reader;

enum { LINE_OK, LINE_WAIT, LINE_END, LINE_ERROR };

/* One read(2) into the buffer. Called when no whole line is left, so moving
 * the unread part (a partial line) to the front is cheap. */
static int fill(reader *r) {
    if (r->head > 0) {
        memmove(r->buf, r->buf + r->head, r->tail - r->head);
        r->tail -= r->head;
        r->scanned -= r->head;
        r->head = 0;
    }
    if (r->tail + 1 >= r->cap) {
        char *nb = (char *)realloc(r->buf, r->cap * 2);
        if (!nb) { r->err = ENOMEM; return -1; }
        r->buf = nb;
        r->cap *= 2;
    }
    for (;;) {
        ssize_t k = read(r->fd, r->buf + r->tail, r->cap - 1 - r->tail);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) { r->err = errno; return -1; }
        if (k == 0) r->eof = 1;
        r->tail += (size_t)k;
        return 0;
    }
}

/* A read would not block: input (or its end) is waiting. */
static int input_waiting(int fd) {
    struct pollfd pf = {fd, POLLIN, 0};
    return poll(&pf, 1, 0) > 0;
}

/* The next line without its newline, NUL-terminated; *len counts its bytes,
 * NULs inside included. wait = 0: LINE_WAIT instead of blocking for input. */
static int next_line(reader *r, int wait, char **line, size_t *len) {
    for (;;) {
        char *nl = (char *)memchr(r->buf + r->scanned, '\n', r->tail - r->scanned);
        if (nl || (r->eof && r->tail > r->head)) {
            size_t end = nl ? (size_t)(nl - r->buf) : r->tail;
            *line = r->buf + r->head;
            *len = end - r->head;
            r->buf[end] = 0;
            r->head = r->scanned = nl ? end + 1 : end;
            return LINE_OK;
        }
        r->scanned = r->tail;
        if (r->eof) return LINE_END;
        if (!wait && !input_waiting(r->fd)) return LINE_WAIT;
        if (fill(r)) return LINE_ERROR;
    }
}

/* At most the first 48 bytes of s[0, n) for a message: printable ASCII as
 * is, other bytes as \xNN, backslash and quote escaped; "..." if cut. */
static void quote(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0, i = 0;
    for (; i < n && i < 48 && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\' || c == '"') { out[o++] = '\\'; out[o++] = (char)c; }
        else if (c >= 0x20 && c < 0x7f) out[o++] = (char)c;
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    out[o] = 0;
    if (i < n && o + 4 <= cap) memcpy(out + o, "...", 4);
}

/* One int32 field ending at sep (',', or '\0' for the last, where trailing
 * blanks and a CR may come first); blanks around it are fine. */
static const char *parse_field(const char *s, char sep, int32_t *out, const char **why) {
    while (*s == ' ' || *s == '\t') s++;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s) { *why = "expected an integer"; return NULL; }
    if (errno || x < INT32_MIN || x > INT32_MAX) { *why = "integer out of range"; return NULL; }
    while (*end == ' ' || *end == '\t' || (!sep && *end == '\r')) end++;
    if (*end != sep) { *why = sep ? "expected \"uid,pid,domain\"" : "unexpected text after the domain"; return NULL; }
    *out = (int32_t)x;
    return sep ? end + 1 : end;
}

/* Parses "uid,pid,domain" (line[0, len), without its newline); 0, or -1 with
 * the reason in why. */
static int parse_line(const char *line, size_t len, int32_t n_domains, int32_t *u, int32_t *p, int32_t *d,
                      char *why, size_t why_n) {
    const char *r = NULL, *s = line;
    if (strlen(line) != len) r = "NUL byte in the line";
    else if (!line[strspn(line, " \t\r")]) r = "empty line";
    else if ((s = parse_field(s, ',', u, &r)) && (s = parse_field(s, ',', p, &r)) && parse_field(s, '\0', d, &r) &&
             (*d < 0 || *d >= n_domains)) {
        snprintf(why, why_n, "domain %d outside 0..%d", *d, n_domains - 1);
        return -1;
    }
    if (!r) return 0;
    snprintf(why, why_n, "%s", r);
    return -1;
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

/* ---- the request loop ---- */

/* Lines read and not yet answered: line i of the batch is bad[i] ("nan") or
 * row slot[i] of u/p/d; rows [0, rows) are the well-formed ones. */
typedef struct batch {
    int32_t *u, *p, *d;
    float *prob;
    int *slot;
    unsigned char *bad;
    int cap, n, rows;
} batch;

static int batch_alloc(batch *b, int cap) {
    size_t c = (size_t)cap;
    b->cap = cap;
    b->u = (int32_t *)malloc(c * 4);
    b->p = (int32_t *)malloc(c * 4);
    b->d = (int32_t *)malloc(c * 4);
    b->prob = (float *)malloc(c * sizeof(float));
    b->slot = (int *)malloc(c * sizeof(int));
    b->bad = (unsigned char *)malloc(c);
    return b->u && b->p && b->d && b->prob && b->slot && b->bad ? 0 : -1;
}

static void batch_free(batch *b) {
    free(b->u); free(b->p); free(b->d); free(b->prob); free(b->slot); free(b->bad);
}

/* Adds input line `lineno` to the batch: 0. A malformed line is reported;
 * with --skip-bad it gets "nan" (1), otherwise the run ends (-1). */
static int take_line(const opts *o, int32_t n_domains, const char *line, size_t len, long long lineno, batch *b) {
    char why[96];
    int r = b->rows;
    if (parse_line(line, len, n_domains, &b->u[r], &b->p[r], &b->d[r], why, sizeof why) == 0) {
        b->bad[b->n] = 0;
        b->slot[b->n++] = b->rows++;
        return 0;
    }
    char shown[4 * 48 + 8];
    quote(line, len, shown, sizeof shown);
    fprintf(stderr, "%s:%lld: %s: \"%s\"\n", o->skip_bad ? "moemlora-serve: warning: stdin" : "stdin", lineno, why, shown);
    if (!o->skip_bad) return -1;
    b->bad[b->n++] = 1;
    return 1;
}

/* Scores the batch and prints its answers in input order; flush when a
 * client may be waiting for them. */
static int answer(worker *w, int nw, batch *b, int flush) {
    if (b->rows && score(w, nw, b->rows, b->u, b->p, b->d, b->prob)) return -1;
    for (int i = 0; i < b->n; i++) {
        if (b->bad[i]) fputs("nan\n", stdout);
        else printf("%.6f\n", b->prob[b->slot[i]]);
    }
    b->n = b->rows = 0;
    if (flush && fflush(stdout)) {
        fprintf(stderr, "moemlora-serve: writing stdout: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

/* Answers stdin line by line. A regular file is read in full batches; from
 * a pipe or a terminal a partial batch is answered as soon as no more input
 * is waiting. */
static int serve(const opts *o, int32_t n_domains, worker *w, int nw, batch *b) {
    struct stat st;
    int stream = !(fstat(0, &st) == 0 && S_ISREG(st.st_mode)), rc = 0, got;
    reader rd = {0, (char *)malloc(1 << 16), 1 << 16, 0, 0, 0, 0, 0};
    if (!rd.buf) { fprintf(stderr, "moemlora-serve: out of memory\n"); return 1; }
    long long lineno = 0, n_bad = 0;
    do {
        char *line;
        size_t len;
        got = next_line(&rd, !stream || b->n == 0, &line, &len);
        int bad = got == LINE_OK ? take_line(o, n_domains, line, len, ++lineno, b) : 0;
        n_bad += bad != 0;
        if (bad < 0) { rc = 1; got = LINE_END; } /* after answering the lines before it */
        if ((b->n == b->cap || (b->n && got != LINE_OK)) && answer(w, nw, b, stream)) { rc = 1; break; }
    } while (got == LINE_OK || got == LINE_WAIT);
    free(rd.buf);
    if (got == LINE_ERROR) { fprintf(stderr, "moemlora-serve: reading stdin: %s\n", strerror(rd.err)); rc = 1; }
    if (fflush(stdout) || ferror(stdout)) { fprintf(stderr, "moemlora-serve: writing stdout failed\n"); rc = 1; }
    if (n_bad && o->skip_bad) fprintf(stderr, "moemlora-serve: %lld malformed lines answered with nan\n", n_bad);
    return rc;
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
    int nw = (int)o.threads, rc = 0;
    worker *w = (worker *)calloc((size_t)nw, sizeof *w);
    batch b;
    memset(&b, 0, sizeof b);
    if (!w || batch_alloc(&b, (int)o.batch)) {
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
    rc = serve(&o, mml_model_config(m)->n_domains, w, nw, &b);
done:
    for (int t = 0; w && t < nw; t++) mml_session_free(w[t].s);
    free(w);
    batch_free(&b);
    mml_model_free(m);
    return rc;
}
