/* moemlora-serve: batch scoring from stdin. Loads a model file (a training
 * checkpoint or an export), reads one CSV line per request, one column per
 * field of the model's schema ("uid,pid,domain" for the paper's layout;
 * multi-hot lists as a|b|c; numeric fields raw), and writes one click
 * probability per line, in input order.
 *
 *   moemlora-train --export model.mml
 *   printf '3,17,0\n42,5,2\n' | moemlora-serve model.mml
 *   printf 'item,user,domain\n17,3,0\n' | moemlora-serve model.mml
 *   moemlora-serve model.mml --threads 4 < requests.csv > scores.txt
 *
 *   moemlora-serve model.mml --vocab data/mine < raw.csv > scores.txt
 *
 * An optional header line maps the columns to the fields in any order.
 * With --vocab (the folder moemlora-prepare csv wrote), lines are raw lines
 * of the input CSV, values as they were before preparation.
 * Ids outside a field's vocabulary get the model's out-of-vocabulary
 * prediction; a domain the model does not have is a malformed line. The
 * model is folded where it folds (mml_model_fold), and each worker thread
 * owns an mml_session_t, so the rows of a batch are scored concurrently on
 * one shared model. From a pipe or a terminal, whatever has
 * arrived is answered (and flushed) as soon as no more input is waiting, so
 * a client can send a line and wait for its answer.
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
    const char *model, *vocab;
    long threads, batch;
    int skip_bad, header, precision; /* precision: -1 the model's, else an mml_precision */
} opts;

static void usage(FILE *f) {
    fprintf(f,
        "usage: moemlora-serve MODEL [options] < requests > probabilities\n"
        "Scores CSV lines from stdin with a model saved by moemlora-train (--save or\n"
        "--export) and prints one probability per line (%%.6f), in input order.\n\n"
        "Input: one line per request, one column per field of the model's schema, in the\n"
        "schema's order: \"uid,pid,domain\" for the paper's layout (user, item, domain).\n"
        "  categorical  an integer id; ids outside the field's vocabulary (negative ones\n"
        "               included) get the model's out-of-vocabulary prediction\n"
        "  multi-hot    ids separated by '|' (\"3|17|4\"), at most the field's max_len;\n"
        "               empty: no ids; ids past the vocabulary read the out-of-vocabulary row\n"
        "  numeric      the raw number (the model normalises it), finite\n"
        "  the domain   a categorical id in 0..D-1 (D: the model's domains); a domain\n"
        "               outside it is a malformed line\n"
        "Blanks around a column and a CR at the end of a line are ignored.\n"
        "Header: a first line naming the columns (\"item,user,domain\") maps them to the\n"
        "schema's fields in any order; every field once, no other column. The first line\n"
        "is taken as a header when one of its columns is not a number or an id list, or\n"
        "always with --header. A header that names an unknown column, misses a field or\n"
        "repeats one stops the program (exit 1) before anything is scored.\n"
        "From a pipe or a terminal, the lines that have arrived are answered and flushed\n"
        "as soon as no more input is waiting, so a client may send one line and wait.\n\n"
        "options:\n"
        "  --threads N   worker threads, each with its own session (1)\n"
        "  --batch N     lines scored together (1024)\n"
        "  --header      the first line is a header (for field names that look like numbers)\n"
        "  --infer-precision fp32|bf16\n"
        "                the tower's products in fp32, or on bf16-rounded inputs with fp32\n"
        "                sums (faster where the CPU has AMX or AVX512_BF16; probabilities\n"
        "                move by about 1e-3); default: the model's infer_precision\n"
        "  --vocab DIR   raw values: DIR is the folder moemlora-prepare csv wrote the\n"
        "                model's data to; each line is a line of the raw CSV (its delimiter,\n"
        "                \"quoted\" cells), values mapped to ids as preparation mapped the\n"
        "                validation and test rows: a value not seen in training reads the\n"
        "                out-of-vocabulary row, hashed fields hash, numbers read raw, lists\n"
        "                split at their separator; a domain never seen is a malformed line.\n"
        "                A first line holding every field's column name is a header (in\n"
        "                any order; other columns, such as the label, are ignored); without\n"
        "                one the columns are the fields in the schema's order\n"
        "  --skip-bad    answer a malformed line with \"nan\" and a warning instead of stopping\n"
        "  --help        this text\n"
        "A malformed line (wrong column count, text in a number, a list over max_len, a\n"
        "domain outside 0..D-1, a NUL byte) stops the program with exit code 1 and\n"
        "\"stdin:LINE: problem: \\\"line\\\"\" on stderr after the lines before it have been answered.\n");
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
    o->precision = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
        if (!strcmp(a, "--skip-bad")) { o->skip_bad = 1; continue; }
        if (!strcmp(a, "--header")) { o->header = 1; continue; }
        if (!strcmp(a, "--infer-precision")) {
            mml_precision p;
            if (i + 1 >= argc || mml_precision_from_name(argv[i + 1], &p)) {
                fprintf(stderr, "moemlora-serve: --infer-precision expects fp32 or bf16%s%s\n", i + 1 < argc ? ", got " : "",
                        i + 1 < argc ? argv[i + 1] : "");
                return -1;
            }
            o->precision = (int)p;
            i++;
            continue;
        }
        if (!strcmp(a, "--vocab")) {
            if (i + 1 >= argc) { fprintf(stderr, "moemlora-serve: --vocab needs a folder\n"); return -1; }
            o->vocab = argv[++i];
            continue;
        }
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

/* ---- the columns ---- */

/* Columns a raw line (--vocab) may have: the raw file's, not only the fields. */
#define MAX_COLS 1024

/* The model's schema and where each input column goes: column j of a line
 * is field col[j] (the schema's order, or a header's; -1: a raw file's
 * column that is no field). */
typedef struct layout {
    const mml_schema_t *sc;
    const mml_vocab_t *vocab; /* --vocab: lines hold raw values */
    int n_cols;
    int col[MAX_COLS];
    int32_t n_domains;
} layout;

static int field_len(const mml_field_t *fd) { return fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1; }

/* The schema's column names "a,b,c" for messages (cut with "..." when long). */
static void column_names(const mml_schema_t *sc, char *out, size_t cap) {
    size_t o = 0;
    out[0] = 0;
    for (int f = 0; f < sc->n_fields && o + 4 < cap; f++) {
        int w = snprintf(out + o, cap - o, "%s%s", f ? "," : "", sc->field[f].name);
        if (w < 0 || (size_t)w >= cap - o) { snprintf(out + (cap > 4 ? cap - 4 : 0), 4, "..."); return; }
        o += (size_t)w;
    }
}

/* s[0, n) without blanks (and a CR) at either end. */
static void trim(const char **s, size_t *n) {
    while (*n && (**s == ' ' || **s == '\t')) (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r')) (*n)--;
}

/* Splits line[0, n) at commas into at most max columns (blanks trimmed):
 * their count, or max + 1 when there are more. */
static int split_columns(const char *line, size_t n, const char **col, size_t *len, int max) {
    int k = 0;
    for (size_t a = 0;; k++) {
        const char *c = (const char *)memchr(line + a, ',', n - a);
        size_t b = c ? (size_t)(c - line) : n;
        if (k < max) {
            col[k] = line + a;
            len[k] = b - a;
            trim(&col[k], &len[k]);
        }
        if (!c) return k + 1 > max ? max + 1 : k + 1;
        a = b + 1;
    }
}

/* An int32 filling s[0, n); 0 or -1. */
static int parse_i32(const char *s, size_t n, int32_t *out) {
    char buf[32], *end;
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (*end || errno || x < INT32_MIN || x > INT32_MAX) return -1;
    *out = (int32_t)x;
    return 0;
}

/* Could s[0, n) be a value (a number, an id list, nothing)? A first line
 * with a column that cannot is a header. */
static int value_like(const char *s, size_t n) {
    char buf[64], *end;
    if (n == 0) return 1;
    if (n >= sizeof buf) return 0;
    memcpy(buf, s, n);
    buf[n] = 0;
    strtod(buf, &end);
    if (!*end) return 1;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789+-| \t", buf[i])) return 0;
    return 1;
}

/* One column of field fd into row r of its batch column. */
static int parse_value(const mml_field_t *fd, int is_domain, int32_t n_domains, const char *s, size_t n, int32_t *ids,
                       float *value, char *why, size_t why_n) {
    if (fd->kind == MML_FIELD_NUMERIC) {
        char buf[64], *end;
        if (n == 0 || n >= sizeof buf) return snprintf(why, why_n, "%s: expected a number", fd->name), -1;
        memcpy(buf, s, n);
        buf[n] = 0;
        float x = strtof(buf, &end);
        if (*end) return snprintf(why, why_n, "%s: expected a number", fd->name), -1;
        if (!(x - x == 0.0f)) return snprintf(why, why_n, "%s: %s is not a finite number", fd->name, buf), -1;
        *value = x;
        return 0;
    }
    if (fd->kind == MML_FIELD_CATEGORICAL) {
        if (parse_i32(s, n, ids)) return snprintf(why, why_n, "%s: expected an integer id", fd->name), -1;
        if (is_domain && (*ids < 0 || *ids >= n_domains)) {
            snprintf(why, why_n, "%s%s %d outside 0..%d", fd->name, strcmp(fd->name, "domain") ? " (the domain)" : "",
                     *ids, n_domains - 1);
            return -1;
        }
        return 0;
    }
    int k = 0; /* a list "a|b|c" of up to max_len ids; empty: none */
    for (size_t a = 0; a < n; k++) {
        const char *bar = (const char *)memchr(s + a, '|', n - a);
        size_t b = bar ? (size_t)(bar - s) : n;
        const char *t = s + a;
        size_t tn = b - a;
        trim(&t, &tn);
        if (k >= fd->max_len) return snprintf(why, why_n, "%s: more than %d ids", fd->name, fd->max_len), -1;
        if (parse_i32(t, tn, &ids[k])) return snprintf(why, why_n, "%s: expected ids \"a|b|c\"", fd->name), -1;
        if (ids[k] < 0) return snprintf(why, why_n, "%s: id %d is negative", fd->name, ids[k]), -1;
        a = bar ? b + 1 : n;
        if (bar && a == n) return snprintf(why, why_n, "%s: expected ids \"a|b|c\"", fd->name), -1;
    }
    for (; k < fd->max_len; k++) ids[k] = -1;
    return 0;
}

/* ---- scoring ---- */

typedef struct worker {
    mml_session_t *s;
    mml_batch_t b;
    const int32_t *ids[MML_MAX_FIELDS];
    const float *values[MML_MAX_FIELDS];
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

/* Lines read and not yet answered: line i of the batch is bad[i] ("nan") or
 * row slot[i] of the columns; rows [0, rows) are the well-formed ones. */
typedef struct batch {
    int32_t *ids[MML_MAX_FIELDS];  /* field-major, as mml_batch_t */
    float *values[MML_MAX_FIELDS];
    float *prob;
    int *slot;
    unsigned char *bad;
    int cap, n, rows;
    char *raw;          /* --vocab: a line's copy, its cells unquoted in place */
    size_t raw_cap;
} batch;

/* Scores rows [0, n) split into contiguous slices, one per worker. */
static int score(worker *w, int nw, const mml_schema_t *sc, batch *bt) {
    int n = bt->rows, use = n < 64 * nw ? 1 : nw; /* small batches are not worth a thread */
    pthread_t tid[256];
    int started[256] = {0};
    for (int t = 0; t < use; t++) {
        int a = (int)((int64_t)n * t / use), b = (int)((int64_t)n * (t + 1) / use);
        for (int f = 0; f < sc->n_fields; f++) {
            w[t].ids[f] = bt->ids[f] ? bt->ids[f] + (int64_t)a * field_len(&sc->field[f]) : NULL;
            w[t].values[f] = bt->values[f] ? bt->values[f] + a : NULL;
        }
        w[t].b = (mml_batch_t){b - a, NULL, NULL, NULL, NULL, w[t].ids, w[t].values};
        w[t].prob = bt->prob + a;
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

static int batch_alloc(batch *b, const mml_schema_t *sc, int cap) {
    memset(b, 0, sizeof *b);
    size_t c = (size_t)cap;
    int ok = 1;
    b->cap = cap;
    for (int f = 0; f < sc->n_fields; f++) {
        if (sc->field[f].kind == MML_FIELD_NUMERIC) ok &= (b->values[f] = (float *)malloc(c * sizeof(float))) != NULL;
        else ok &= (b->ids[f] = (int32_t *)malloc(c * (size_t)field_len(&sc->field[f]) * 4)) != NULL;
    }
    b->prob = (float *)malloc(c * sizeof(float));
    b->slot = (int *)malloc(c * sizeof(int));
    b->bad = (unsigned char *)malloc(c);
    return ok && b->prob && b->slot && b->bad ? 0 : -1;
}

static void batch_free(batch *b) {
    for (int f = 0; f < MML_MAX_FIELDS; f++) free(b->ids[f]), free(b->values[f]);
    free(b->prob); free(b->slot); free(b->bad); free(b->raw);
}

/* s[0, n) into b->raw (room for a NUL); 0, or -1 out of memory. */
static int raw_copy(batch *b, const char *s, size_t n) {
    if (n + 1 > b->raw_cap) {
        char *nr = (char *)realloc(b->raw, n + 1);
        if (!nr) return -1;
        b->raw = nr;
        b->raw_cap = n + 1;
    }
    memcpy(b->raw, s, n);
    b->raw[n] = 0;
    return 0;
}

/* A raw line (--vocab) into row r: cells split as the input file's, each
 * field's mapped by the vocabulary; columns that are no field ignored. */
static int parse_raw_line(const layout *L, const char *line, size_t len, batch *b, int r, char *why, size_t why_n) {
    static const char *col[MAX_COLS];
    static size_t cl[MAX_COLS];
    if (len && line[len - 1] == '\r') len--;
    if (len == 0) return snprintf(why, why_n, "empty line"), -1;
    if (raw_copy(b, line, len)) return snprintf(why, why_n, "out of memory"), -1;
    int n = mml_vocab_cells(L->vocab, b->raw, len, col, cl, MAX_COLS);
    if (n < 0) return snprintf(why, why_n, "a quote is not closed"), -1;
    if (n != L->n_cols) return snprintf(why, why_n, "got %d columns, expected %d", n, L->n_cols), -1;
    for (int j = 0; j < n; j++) {
        int f = L->col[j];
        if (f < 0) continue;
        const mml_field_t *fd = &L->sc->field[f];
        int32_t *ids = b->ids[f] ? b->ids[f] + (int64_t)r * field_len(fd) : NULL;
        float *val = b->values[f] ? b->values[f] + r : NULL;
        if (mml_vocab_map(L->vocab, f, col[j], cl[j], ids, val)) return snprintf(why, why_n, "%.250s", mml_last_error()), -1;
    }
    return 0;
}

/* Parses line[0, len) (without its newline) into row r; 0, or -1 with the
 * reason in why. */
static int parse_line(const layout *L, const char *line, size_t len, batch *b, int r, char *why, size_t why_n) {
    const char *col[MML_MAX_FIELDS];
    size_t cl[MML_MAX_FIELDS];
    if (L->vocab) return parse_raw_line(L, line, len, b, r, why, why_n);
    if (strlen(line) != len) return snprintf(why, why_n, "NUL byte in the line"), -1;
    if (!line[strspn(line, " \t\r")]) return snprintf(why, why_n, "empty line"), -1;
    int n = split_columns(line, len, col, cl, L->n_cols);
    if (n != L->n_cols) {
        char names[160];
        column_names(L->sc, names, sizeof names);
        if (n > L->n_cols) snprintf(why, why_n, "more than %d columns (%s)", L->n_cols, names);
        else snprintf(why, why_n, "got %d columns, expected %d (%s)", n, L->n_cols, names);
        return -1;
    }
    for (int j = 0; j < n; j++) {
        int f = L->col[j];
        const mml_field_t *fd = &L->sc->field[f];
        int32_t *ids = b->ids[f] ? b->ids[f] + (int64_t)r * field_len(fd) : NULL;
        float *val = b->values[f] ? b->values[f] + r : NULL;
        if (parse_value(fd, f == L->sc->domain, L->n_domains, col[j], cl[j], ids, val, why, why_n)) return -1;
    }
    return 0;
}

/* A header line: its columns name the schema's fields, each once, in any
 * order. 0, or -1 after saying what is wrong. */
static int parse_header(layout *L, const char *line, size_t len) {
    const char *col[MML_MAX_FIELDS];
    size_t cl[MML_MAX_FIELDS];
    char names[160], shown[4 * 48 + 8];
    int seen[MML_MAX_FIELDS] = {0};
    column_names(L->sc, names, sizeof names);
    int n = strlen(line) == len ? split_columns(line, len, col, cl, MML_MAX_FIELDS) : 0;
    if (n < 1 || n > MML_MAX_FIELDS) {
        quote(line, len, shown, sizeof shown);
        fprintf(stderr, "stdin:1: header: not a list of column names: \"%s\"\n", shown);
        return -1;
    }
    for (int j = 0; j < n; j++) {
        char name[MML_FIELD_NAME_MAX + 1];
        int f = -1;
        if (cl[j] < sizeof name) {
            memcpy(name, col[j], cl[j]);
            name[cl[j]] = 0;
            f = mml_schema_find(L->sc, name);
        }
        quote(col[j], cl[j], shown, sizeof shown);
        if (f < 0) {
            fprintf(stderr, "stdin:1: header: unknown column \"%s\" (the model's fields: %s)\n", shown, names);
            return -1;
        }
        if (seen[f]++) {
            fprintf(stderr, "stdin:1: header: column \"%s\" given twice\n", shown);
            return -1;
        }
        L->col[j] = f;
    }
    for (int f = 0; f < L->sc->n_fields; f++)
        if (!seen[f]) {
            fprintf(stderr, "stdin:1: header: no column for the field \"%s\" (the model's fields: %s)\n",
                    L->sc->field[f].name, names);
            return -1;
        }
    L->n_cols = n;
    return 0;
}

/* The cells of a raw header line (--vocab) into col, cl, spaces around
 * them trimmed as preparation read the header: their count, or -1. */
static int raw_header_cells(const layout *L, batch *b, const char *line, size_t len, const char **col, size_t *cl) {
    if (len && line[len - 1] == '\r') len--;
    if (raw_copy(b, line, len)) return -1;
    int n = mml_vocab_cells(L->vocab, b->raw, len, col, cl, MAX_COLS);
    for (int j = 0; j < n && j < MAX_COLS; j++) {
        while (cl[j] && col[j][0] == ' ') col[j]++, cl[j]--;
        while (cl[j] && col[j][cl[j] - 1] == ' ') cl[j]--;
    }
    return n;
}

/* The field whose raw column is s[0, n), or -1. */
static int raw_field(const layout *L, const char *s, size_t n) {
    for (int f = 0; f < L->sc->n_fields; f++) {
        const char *c = mml_vocab_column(L->vocab, f);
        if (strlen(c) == n && !memcmp(c, s, n)) return f;
    }
    return -1;
}

/* A raw header (--vocab): the raw file's column names, each field's once,
 * other columns ignored. 0, or -1 after saying what is wrong. */
static int parse_raw_header(layout *L, batch *b, const char *line, size_t len) {
    static const char *col[MAX_COLS];
    static size_t cl[MAX_COLS];
    char shown[4 * 48 + 8];
    int seen[MML_MAX_FIELDS] = {0};
    int n = raw_header_cells(L, b, line, len, col, cl);
    if (n < 1 || n > MAX_COLS) {
        quote(line, len, shown, sizeof shown);
        fprintf(stderr, "stdin:1: header: not a list of at most %d column names: \"%s\"\n", MAX_COLS, shown);
        return -1;
    }
    for (int j = 0; j < n; j++) {
        int f = L->col[j] = raw_field(L, col[j], cl[j]);
        if (f >= 0 && seen[f]++) {
            quote(col[j], cl[j], shown, sizeof shown);
            fprintf(stderr, "stdin:1: header: column \"%s\" given twice\n", shown);
            return -1;
        }
    }
    for (int f = 0; f < L->sc->n_fields; f++)
        if (!seen[f]) {
            fprintf(stderr, "stdin:1: header: no column \"%s\" (field %s)\n", mml_vocab_column(L->vocab, f),
                    L->sc->field[f].name);
            return -1;
        }
    L->n_cols = n;
    return 0;
}

/* Does a raw line 1 (--vocab) name every field's column? Then it is the
 * raw file's header. */
static int raw_header_like(const layout *L, batch *b, const char *line, size_t len) {
    static const char *col[MAX_COLS];
    static size_t cl[MAX_COLS];
    int seen[MML_MAX_FIELDS] = {0}, n = raw_header_cells(L, b, line, len, col, cl), got = 0;
    for (int j = 0; j < n && j < MAX_COLS; j++) {
        int f = raw_field(L, col[j], cl[j]);
        if (f >= 0 && !seen[f]++) got++;
    }
    return got == L->sc->n_fields;
}

/* Is line 1 a header? With --header always; else when one of its columns
 * cannot be a value (raw lines: when it names every field's column). */
static int is_header(const opts *o, const layout *L, batch *b, const char *line, size_t len) {
    const char *col[MML_MAX_FIELDS];
    size_t cl[MML_MAX_FIELDS];
    if (o->header) return 1;
    if (L->vocab) return raw_header_like(L, b, line, len);
    if (strlen(line) != len) return 0;
    int n = split_columns(line, len, col, cl, MML_MAX_FIELDS);
    for (int j = 0; j < n && j < MML_MAX_FIELDS; j++)
        if (!value_like(col[j], cl[j])) return 1;
    return 0;
}

/* Adds input line `lineno` to the batch: 0. A malformed line is reported;
 * with --skip-bad it gets "nan" (1), otherwise the run ends (-1). */
static int take_line(const opts *o, const layout *L, const char *line, size_t len, long long lineno, batch *b) {
    char why[256];
    if (parse_line(L, line, len, b, b->rows, why, sizeof why) == 0) {
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
static int answer(worker *w, int nw, const mml_schema_t *sc, batch *b, int flush) {
    if (b->rows && score(w, nw, sc, b)) return -1;
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
static int serve(const opts *o, layout *L, worker *w, int nw, batch *b) {
    struct stat st;
    int stream = !(fstat(0, &st) == 0 && S_ISREG(st.st_mode)), rc = 0, got;
    reader rd = {0, (char *)malloc(1 << 16), 1 << 16, 0, 0, 0, 0, 0};
    if (!rd.buf) { fprintf(stderr, "moemlora-serve: out of memory\n"); return 1; }
    long long lineno = 0, n_bad = 0;
    do {
        char *line;
        size_t len;
        got = next_line(&rd, !stream || b->n == 0, &line, &len);
        if (got == LINE_OK && ++lineno == 1 && is_header(o, L, b, line, len)) {
            if (L->vocab ? parse_raw_header(L, b, line, len) : parse_header(L, line, len)) { rc = 1; break; }
            continue;
        }
        int bad = got == LINE_OK ? take_line(o, L, line, len, lineno, b) : 0;
        n_bad += bad != 0;
        if (bad < 0) { rc = 1; got = LINE_END; } /* after answering the lines before it */
        if ((b->n == b->cap || (b->n && got != LINE_OK)) && answer(w, nw, L->sc, b, stream)) { rc = 1; break; }
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
    if (mml_model_load(o.model, &m) ||
        (o.precision >= 0 && mml_model_set_precision(m, mml_model_config(m)->precision, (mml_precision)o.precision))) {
        fprintf(stderr, "moemlora-serve: %s\n", mml_last_error());
        mml_model_free(m);
        return 1;
    }
    /* Folded where the model folds (the base model, MLoRA, MoE-MLoRA with the
     * domain gate): the same probabilities up to rounding, at the base
     * model's cost; a model that does not fold predicts unfolded. */
    (void)mml_model_fold(m);
    int nw = (int)o.threads, rc = 0;
    worker *w = (worker *)calloc((size_t)nw, sizeof *w);
    batch b;
    memset(&b, 0, sizeof b);
    layout L;
    memset(&L, 0, sizeof L);
    L.sc = mml_model_config(m)->schema;
    L.n_cols = L.sc->n_fields;
    L.n_domains = mml_model_config(m)->n_domains;
    for (int f = 0; f < L.n_cols; f++) L.col[f] = f;
    mml_vocab_t *vocab = NULL;
    if (o.vocab && mml_vocab_load(o.vocab, L.sc, &vocab)) {
        fprintf(stderr, "moemlora-serve: %s\n", mml_last_error());
        rc = 1;
        goto done;
    }
    L.vocab = vocab;
    if (!w || batch_alloc(&b, L.sc, (int)o.batch)) {
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
    rc = serve(&o, &L, w, nw, &b);
done:
    for (int t = 0; w && t < nw; t++) mml_session_free(w[t].s);
    free(w);
    batch_free(&b);
    mml_vocab_free(vocab);
    mml_model_free(m);
    return rc;
}
