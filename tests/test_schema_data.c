/* Data sets with a feature schema (2 categorical fields, a multi-hot list,
 * 2 numbers and the domain, not last):
 *   - the synthetic generator makes them (lists of 1..max_len ids, numbers
 *     the schema maps to N(0,1), the same data for the same seed);
 *   - save -> load round trips, through the CSV layout, the binary cache and
 *     mml_data_load, are exact (an empty list, an out-of-vocabulary id in
 *     val, awkward floats included);
 *   - a stale cache (an edited CSV), a foreign one (a paper-layout set's
 *     copied in) and one of the older version are not used;
 *   - every kind of bad cell or bad schema line is an error naming
 *     file:line, and data in memory with a NaN or an id out of range is
 *     refused before anything is written;
 *   - moemlora-train --data trains such a folder end to end (the trainer is
 *     BUILD/examples/moemlora-train, found from /proc/self/exe; that part is
 *     skipped when it is not built);
 *   - with the signal in the domain-specific fields, MoE-MLoRA beats the
 *     base model (mml_fit, small sizes). */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

#include <fcntl.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { F_USER, F_ITEM, F_GENRES, F_DOM, F_AGE, F_PRICE };

static void mixed_schema(mml_schema_t *s) {
    static const char *const names[] = {"user", "item.id", "genres", "scenario", "age", "price"};
    static const mml_field_kind kinds[] = {MML_FIELD_CATEGORICAL, MML_FIELD_CATEGORICAL, MML_FIELD_MULTI_HOT,
                                           MML_FIELD_CATEGORICAL, MML_FIELD_NUMERIC, MML_FIELD_NUMERIC};
    static const int vocab[] = {50, 40, 12, 3, 0, 0};
    mmlt_schema(s, 6, F_DOM, names, kinds, vocab, 0.0f);
    mml_field_t *f = s->field;
    f[F_ITEM].dim = 6;
    f[F_ITEM].hash_buckets = 40;
    f[F_GENRES].max_len = 3;
    f[F_GENRES].pooling = MML_POOL_SUM;
    f[F_AGE].norm = MML_NORM_ZSCORE;
    f[F_AGE].shift = 30.5f;
    f[F_AGE].scale = 0.1f;
    f[F_PRICE].norm = MML_NORM_MINMAX;
    f[F_PRICE].shift = -1.5f;
    f[F_PRICE].scale = 0.25f;
}

static mml_schema_t g_schema;

/* A generated mixed set, with the corner cases a writer must keep. */
static void make_mixed(int64_t n, uint64_t seed, mml_data_t *d) {
    mml_synth_config_t sc;
    mml_synth_default(&sc);
    sc.n_samples = n;
    sc.seed = seed;
    sc.schema = &g_schema;
    CHECK_OK(mml_data_synthetic(&sc, d));
    if (!d->schema) return;
    mml_split_t *tr = &d->split[MML_TRAIN], *va = &d->split[MML_VAL];
    for (int q = 0; q < 3; q++) tr->ids[F_GENRES][q] = -1; /* an empty list */
    tr->values[F_AGE][0] = 1e-30f;
    tr->values[F_AGE][1] = -0.0f;
    tr->values[F_PRICE][0] = 3.4e38f;
    tr->values[F_PRICE][1] = 0.1f;
    tr->values[F_PRICE][2] = -123456.789f;
    va->ids[F_USER][0] = 50; /* the out-of-vocabulary id */
    va->ids[F_GENRES][3 * 1 + 0] = 12;
}

static char *mkdir_tmp(void) { return mmlt_mkdtemp("mml_test_schema_"); }

static int has(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

static int fields_equal(const mml_field_t *a, const mml_field_t *b) {
    return !strcmp(a->name, b->name) && a->kind == b->kind && a->vocab == b->vocab && a->dim == b->dim &&
           a->max_len == b->max_len && a->pooling == b->pooling && a->hash_buckets == b->hash_buckets &&
           a->frozen == b->frozen && a->norm == b->norm && !memcmp(&a->shift, &b->shift, 4) &&
           !memcmp(&a->scale, &b->scale, 4);
}

/* Everything equal: sizes, names, schema, every column bit for bit. */
static int data_equal(const mml_data_t *a, const mml_data_t *b) {
    if (!a->schema || !b->schema || a->n_domains != b->n_domains || a->schema->n_fields != b->schema->n_fields ||
        a->schema->domain != b->schema->domain)
        return 0;
    const mml_schema_t *sc = a->schema;
    for (int f = 0; f < sc->n_fields; f++)
        if (!fields_equal(&sc->field[f], &b->schema->field[f])) return 0;
    for (int k = 0; k < a->n_domains; k++)
        if (!a->domain_names || !b->domain_names || strcmp(a->domain_names[k], b->domain_names[k])) return 0;
    for (int s = 0; s < 3; s++) {
        const mml_split_t *x = &a->split[s], *y = &b->split[s];
        size_t n = (size_t)x->n;
        if (x->n != y->n || memcmp(x->dom_start, y->dom_start, ((size_t)a->n_domains + 1) * 8) ||
            memcmp(x->dom, y->dom, n * 4) || memcmp(x->label, y->label, n * 4) || x->uid || y->uid)
            return 0;
        for (int f = 0; f < sc->n_fields; f++) {
            const mml_field_t *fd = &sc->field[f];
            size_t w = fd->kind == MML_FIELD_MULTI_HOT ? (size_t)fd->max_len : 1;
            if (fd->kind == MML_FIELD_NUMERIC ? memcmp(x->values[f], y->values[f], n * 4)
                                              : memcmp(x->ids[f], y->ids[f], n * w * 4))
                return 0;
        }
    }
    return 1;
}

/* ---- the generator ---- */

static void test_generator(void) {
    mml_data_t a, b;
    mmlt_ctx = "generator";
    make_mixed(3000, 7, &a);
    make_mixed(3000, 7, &b);
    CHECK(a.schema && data_equal(&a, &b), "the same seed gives the same data");
    const mml_split_t *tr = &a.split[MML_TRAIN];
    double sum = 0, sq = 0, pos = 0;
    int short_list = 0, bad_len = 0;
    for (int64_t i = 0; tr->ids && i < tr->n; i++) {
        double z = (tr->values[F_AGE][i] - g_schema.field[F_AGE].shift) * g_schema.field[F_AGE].scale;
        if (i >= 2) sum += z, sq += z * z;
        pos += tr->label[i];
        int len = 0;
        for (int q = 0; q < 3; q++) len += tr->ids[F_GENRES][i * 3 + q] >= 0;
        for (int q = len; q < 3; q++) bad_len += tr->ids[F_GENRES][i * 3 + q] != -1; /* packed at the front */
        short_list += len < 3;
        if (i > 0 && len == 0) bad_len++;
    }
    double m = sum / (double)(tr->n - 2), sd = sqrt(sq / (double)(tr->n - 2) - m * m);
    CHECK(fabs(m) < 0.1 && sd > 0.9 && sd < 1.1, "age normalises to N(0,1): mean %.3f sd %.3f", m, sd);
    CHECK(fabs(pos / (double)tr->n - 0.25) < 0.04, "CTR %.3f near the target 0.25", pos / (double)tr->n);
    CHECK(bad_len == 0 && short_list > 0, "lists of 1..max_len ids, packed (%d bad)", bad_len);
    CHECK(a.split[MML_VAL].n > 0 && a.split[MML_TEST].n > 0, "every split has rows");
    mml_data_free(&b);
    mml_synth_config_t sc;
    mml_synth_default(&sc);
    sc.schema = &g_schema;
    sc.signal_fields = "genres,nope";
    CHECK(mml_data_synthetic(&sc, &b) == MML_ERR_ARG && has(mml_last_error(), "nope"), "unknown signal field: %s",
          mml_last_error());
    mml_data_free(&a);
}

/* ---- round trips ---- */

/* domain_<k>/<split>.csv of a set with a schema as docs/DATA.md defines it
 * (ids, lists "a|b", floats in their shortest form that reads back, the
 * label), printed here one cell at a time; the caller frees it. */
static char *cols_csv(const mml_schema_t *sc, const mml_split_t *sp, int k, size_t *len) {
    size_t cap = 4096 + (size_t)(sp->dom_start[k + 1] - sp->dom_start[k]) * 512, n = 0;
    char *t = (char *)malloc(cap);
    for (int f = 0; f < sc->n_fields; f++) n += (size_t)snprintf(t + n, cap - n, "%s,", sc->field[f].name);
    n += (size_t)snprintf(t + n, cap - n, "label\n");
    for (int64_t i = sp->dom_start[k]; i < sp->dom_start[k + 1]; i++) {
        for (int f = 0; f < sc->n_fields; f++) {
            const mml_field_t *fd = &sc->field[f];
            if (fd->kind == MML_FIELD_NUMERIC) {
                float v = sp->values[f][i];
                int digits = 6;
                char c[32];
                for (; digits < 9; digits++) {
                    snprintf(c, sizeof c, "%.*g", digits, (double)v);
                    if (strtof(c, NULL) == v) break;
                }
                n += (size_t)snprintf(t + n, cap - n, "%.*g", digits, (double)v);
            } else {
                int w = fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1, first = 1;
                for (int q = 0; q < w; q++) {
                    int32_t id = sp->ids[f][i * w + q];
                    if (id < 0) continue;
                    n += (size_t)snprintf(t + n, cap - n, first ? "%d" : "|%d", id);
                    first = 0;
                }
            }
            t[n++] = ',';
        }
        n += (size_t)snprintf(t + n, cap - n, "%d\n", sp->label[i] != 0.0f);
    }
    *len = n;
    return t;
}

static void test_roundtrip(void) {
    mml_data_t a, x;
    char *dir = mkdir_tmp(), *alone = mkdir_tmp(), path[1024];
    mmlt_ctx = "roundtrip";
    make_mixed(900, 11, &a);
    CHECK_OK(mml_data_save_prepared(&a, dir, 1));
    CHECK_OK(mml_data_load_csv(dir, &x));
    CHECK(data_equal(&a, &x), "CSV layout round trip");
    CHECK(x.n_users == 0 && x.n_items == 0 && x.pretrained_dim == 0, "no paper-layout sizes with a schema");
    for (int k = 0; k < a.n_domains; k++)
        for (int sp = 0; sp < 3; sp++) {
            static const char *const split[3] = {"train", "val", "test"};
            size_t n = 0, want_n = 0;
            snprintf(path, sizeof path, "%s/domain_%d/%s.csv", dir, k, split[sp]);
            unsigned char *got = mmlt_read_file(path, &n);
            char *want = cols_csv(a.schema, &a.split[sp], k, &want_n);
            CHECK(got && n == want_n && !memcmp(got, want, n), "%s: %zu bytes, want %zu", path, n, want_n);
            free(got);
            free(want);
        }
    mml_data_free(&x);
    snprintf(path, sizeof path, "%s/data.mmlc", dir);
    CHECK_OK(mml_data_load_cache(path, &x));
    CHECK(data_equal(&a, &x), "cache round trip");
    mml_data_free(&x);
    CHECK_OK(mml_data_load(dir, &x));
    CHECK(data_equal(&a, &x), "mml_data_load round trip");
    mml_data_free(&x);
    snprintf(path, sizeof path, "%s/data.mmlc", alone);
    CHECK_OK(mml_data_save_cache(&a, path));
    CHECK_OK(mml_data_load(alone, &x));
    CHECK(data_equal(&a, &x), "a cache alone round trip");
    mml_data_free(&x);
    /* the set written from what was loaded is the same set */
    CHECK_OK(mml_data_load_csv(dir, &x));
    CHECK_OK(mml_data_save_dir(&x, alone));
    mml_data_free(&x);
    for (int k = 0; k < 3; k++) {
        char p1[1024], p2[1024];
        size_t n1 = 0, n2 = 0;
        snprintf(p1, sizeof p1, "%s/domain_%d/val.csv", dir, k);
        snprintf(p2, sizeof p2, "%s/domain_%d/val.csv", alone, k);
        unsigned char *t1 = mmlt_read_file(p1, &n1), *t2 = mmlt_read_file(p2, &n2);
        CHECK(t1 && t2 && n1 == n2 && !memcmp(t1, t2, n1), "domain_%d/val.csv rewritten byte for byte", k);
        if (k == 0 && t1) CHECK(has((char *)t1, "user,item.id,genres,scenario,age,price,label\n"), "header: %.60s", (char *)t1);
        free(t1);
        free(t2);
    }
    mml_data_free(&a);
    mmlt_rm_tree(dir);
    mmlt_rm_tree(alone);
    free(dir);
    free(alone);
}

/* ---- stale and foreign caches ---- */

static void rewrite(const char *path, const char *text) {
    struct stat before, after;
    CHECK(stat(path, &before) == 0, "%s exists", path);
    for (int tries = 0; tries < 10000; tries++) { /* until the mtime moves on */
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL, "open %s", path);
        if (!f) return;
        fputs(text, f);
        fclose(f);
        if (stat(path, &after) != 0 || after.st_size != before.st_size ||
            after.st_mtim.tv_nsec != before.st_mtim.tv_nsec || after.st_mtim.tv_sec != before.st_mtim.tv_sec)
            return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

/* The file's text with row (1 = the first after the header) cell col replaced. */
static char *with_cell(const char *path, int row, int col, const char *cell) {
    size_t n = 0;
    char *t = (char *)mmlt_read_file(path, &n), *out = (char *)malloc(n + strlen(cell) + 8), *o = out;
    const char *p = t;
    for (int line = 0; p && *p; line++) {
        const char *nl = strchr(p, '\n'), *end = nl ? nl : p + strlen(p);
        if (line != row) {
            memcpy(o, p, (size_t)(end - p));
            o += end - p;
        } else {
            for (int c = 0; p < end; c++) {
                const char *comma = memchr(p, ',', (size_t)(end - p)), *ce = comma ? comma : end;
                if (c) *o++ = ',';
                if (c == col) o += sprintf(o, "%s", cell);
                else memcpy(o, p, (size_t)(ce - p)), o += ce - p;
                p = ce == end ? end : ce + 1;
                if (ce == end) break;
            }
        }
        if (nl) *o++ = '\n';
        p = nl ? nl + 1 : end;
    }
    *o = 0;
    free(t);
    return out;
}

static void test_stale_cache(void) {
    mml_data_t a, b, x;
    mml_data_t paper;
    char *dir = mkdir_tmp(), *other = mkdir_tmp(), p[1024], q[1024];
    mmlt_ctx = "stale-cache";
    make_mixed(900, 12, &a);
    make_mixed(600, 13, &b);
    /* an edited CSV: the CSV's own error, with file:line */
    CHECK_OK(mml_data_save_prepared(&a, dir, 1));
    snprintf(p, sizeof p, "%s/domain_0/train.csv", dir);
    char *t = with_cell(p, 1, F_AGE, "nan");
    rewrite(p, t);
    free(t);
    CHECK(mml_data_load(dir, &x) == MML_ERR_FORMAT && has(mml_last_error(), "domain_0/train.csv:2: field age: not a finite number"),
          "edited CSV: %s", mml_last_error());
    mml_data_free(&x);
    /* another schema set's cache copied in */
    CHECK_OK(mml_data_save_prepared(&a, dir, 1));
    CHECK_OK(mml_data_save_prepared(&b, other, 1));
    snprintf(p, sizeof p, "%s/data.mmlc", other);
    snprintf(q, sizeof q, "%s/data.mmlc", dir);
    size_t n;
    unsigned char *c = mmlt_read_file(p, &n);
    FILE *f = fopen(q, "wb");
    CHECK(c && f && fwrite(c, 1, n, f) == n, "copy the cache");
    if (f) fclose(f);
    free(c);
    CHECK_OK(mml_data_load(dir, &x));
    CHECK(data_equal(&a, &x), "foreign schema cache: the folder's own data");
    mml_data_free(&x);
    CHECK_OK(mml_data_load_cache(q, &x));
    CHECK(data_equal(&a, &x), "the cache was rebuilt from the folder");
    mml_data_free(&x);
    /* a paper-layout set's cache copied in */
    mml_synth_config_t sc;
    mml_synth_default(&sc);
    sc.n_samples = 2000;
    sc.n_domains = 3;
    CHECK_OK(mml_data_synthetic(&sc, &paper));
    CHECK_OK(mml_data_save_prepared(&paper, other, 1));
    c = mmlt_read_file(p, &n);
    f = fopen(q, "wb");
    CHECK(c && f && fwrite(c, 1, n, f) == n, "copy the cache");
    if (f) fclose(f);
    free(c);
    CHECK_OK(mml_data_load(dir, &x));
    CHECK(data_equal(&a, &x), "paper-layout cache in a schema folder: the folder's own data");
    mml_data_free(&x);
    /* the older version: rebuilt */
    c = mmlt_read_file(q, &n);
    if (c && n > 8) {
        c[8] = 2;
        f = fopen(q, "wb");
        CHECK(f && fwrite(c, 1, n, f) == n, "write version 2");
        if (f) fclose(f);
    }
    free(c);
    CHECK_OK(mml_data_load(dir, &x));
    CHECK(data_equal(&a, &x), "version-2 cache: the folder's data");
    mml_data_free(&x);
    c = mmlt_read_file(q, &n);
    CHECK(c && n > 8 && c[8] == MML__CACHE_VERSION, "rewritten as version %u", MML__CACHE_VERSION);
    free(c);
    /* a corrupt schema block is caught (the CRC, then the sizes) */
    CHECK_OK(mml_data_load_cache(q, &x));
    mml_data_free(&x);
    c = mmlt_read_file(q, &n);
    if (c) {
        mml_data_t y;
        size_t at = 72 + 64 * 13; /* header, 13 sources (meta + 12 CSVs): the names, then the schema */
        CHECK(mml__cache_decode(c, n, "x", &y) == MML_OK, "decodes as written");
        mml_data_free(&y);
        c[at + 40] ^= 1;
        CHECK(mml__cache_decode(c, n, "x", &y) == MML_ERR_FORMAT && has(mml_last_error(), "checksum"), "flip: %s",
              mml_last_error());
        CHECK(mml__cache_decode(c, n - 9, "x", &y) == MML_ERR_FORMAT, "truncated");
        free(c);
    }
    mml_data_free(&paper);
    mml_data_free(&a);
    mml_data_free(&b);
    mmlt_rm_tree(dir);
    mmlt_rm_tree(other);
    free(dir);
    free(other);
}

/* ---- bad data: file:line ---- */

typedef struct bad_cell {
    const char *file;
    int row, col;
    const char *cell, *want;
} bad_cell;

static void test_bad_cells(void) {
    static const bad_cell cases[] = {
        {"domain_0/train.csv", 1, F_USER, "50", "domain_0/train.csv:2: field user: id 50 out of range (vocab 50)"},
        {"domain_0/train.csv", 2, F_USER, "-1", "domain_0/train.csv:3: field user: id -1 out of range"},
        {"domain_0/train.csv", 1, F_USER, "7x", "domain_0/train.csv:2: field user: id is not an integer: \"7x\""},
        {"domain_0/train.csv", 1, F_USER, "", "domain_0/train.csv:2: field user: id is not an integer"},
        {"domain_1/val.csv", 1, F_ITEM, "41", "domain_1/val.csv:2: field item.id: id 41 out of range (vocab 40; vocab"},
        {"domain_1/test.csv", 1, F_ITEM, "99999999999999999999", "domain_1/test.csv:2: field item.id: id 9999"},
        {"domain_0/train.csv", 1, F_GENRES, "1|2|3|4", "domain_0/train.csv:2: field genres: more than max_len=3 ids"},
        {"domain_0/train.csv", 1, F_GENRES, "1|12", "domain_0/train.csv:2: field genres: id 12 out of range"},
        {"domain_0/train.csv", 1, F_GENRES, "1||2", "domain_0/train.csv:2: field genres: id is not an integer"},
        {"domain_0/train.csv", 1, F_GENRES, "1|", "domain_0/train.csv:2: field genres: list ends in '|'"},
        {"domain_2/train.csv", 1, F_AGE, "nan", "domain_2/train.csv:2: field age: not a finite number: \"nan\""},
        {"domain_2/train.csv", 1, F_AGE, "-inf", "domain_2/train.csv:2: field age: not a finite number"},
        {"domain_2/train.csv", 1, F_PRICE, "1e39", "domain_2/train.csv:2: field price: not a finite number"},
        {"domain_2/train.csv", 1, F_PRICE, "12abc", "domain_2/train.csv:2: field price: not a finite number"},
        {"domain_2/train.csv", 1, F_PRICE, "", "domain_2/train.csv:2: field price: not a finite number: \"\""},
        {"domain_2/train.csv", 1, F_DOM, "1", "domain_2/train.csv:2: domain column is 1 but the file is in domain_2/"},
        {"domain_2/train.csv", 1, 6, "2", "domain_2/train.csv:2: label must be 0 or 1"},
        {"domain_2/train.csv", 1, 6, "1,5", "domain_2/train.csv:2: extra columns: expected 7 columns, got 8"},
        {"domain_2/train.csv", 0, 2, "genre", "domain_2/train.csv:1: missing header: expected \"user,item.id,genres,"},
    };
    mml_data_t a, x;
    char *dir = mkdir_tmp(), p[1024];
    mmlt_ctx = "bad-cells";
    make_mixed(900, 14, &a);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_cell *c = &cases[i];
        CHECK_OK(mml_data_save_dir(&a, dir));
        snprintf(p, sizeof p, "%s/%s", dir, c->file);
        char *t = with_cell(p, c->row, c->col, c->cell);
        rewrite(p, t);
        free(t);
        CHECK(mml_data_load_csv(dir, &x) == MML_ERR_FORMAT && has(mml_last_error(), c->want), "%s row %d col %d \"%s\": %s",
              c->file, c->row, c->col, c->cell, mml_last_error());
        mml_data_free(&x);
    }
    /* the out-of-vocabulary id is accepted in val, not in train */
    CHECK_OK(mml_data_save_dir(&a, dir));
    snprintf(p, sizeof p, "%s/domain_1/val.csv", dir);
    char *t = with_cell(p, 1, F_USER, "50");
    rewrite(p, t);
    free(t);
    CHECK_OK(mml_data_load_csv(dir, &x));
    mml_data_free(&x);
    /* a missing column on the last line, without its newline */
    CHECK_OK(mml_data_save_dir(&a, dir));
    snprintf(p, sizeof p, "%s/domain_0/test.csv", dir);
    {
        size_t n;
        char *u = (char *)mmlt_read_file(p, &n);
        if (u && n > 4) {
            u[n - 1] = 0;                   /* the newline */
            *strrchr(u, ',') = 0;           /* and the label */
            rewrite(p, u);
        }
        free(u);
    }
    CHECK(mml_data_load_csv(dir, &x) == MML_ERR_FORMAT && has(mml_last_error(), "domain_0/test.csv:") &&
          has(mml_last_error(), "truncated last line"), "truncated: %s", mml_last_error());
    mml_data_free(&x);
    mml_data_free(&a);
    mmlt_rm_tree(dir);
    free(dir);
}

/* meta.txt with one line replaced: the error names meta.txt:line. */
static void test_bad_meta(void) {
    static const struct { const char *from, *to, *want; } cases[] = {
        {"field.2.kind=multi_hot", "field.2.kind=multihot", "meta.txt:29: bad value \"multihot\" for field.2.kind"},
        {"field.2.max_len=3", "field.2.max_len=x", "meta.txt:34: bad value \"x\" for field.2.max_len"},
        {"field.2.pooling=sum", "field.2.pooling=max", "bad value \"max\" for field.2.pooling"},
        {"field.4.norm=zscore", "field.4.norm=z", "bad value \"z\" for field.4.norm"},
        {"field.4.shift=30.5", "field.4.shift=nan", "bad value \"nan\" for field.4.shift"},
        {"field.2.max_len=3", "field.2.maxlen=3", "meta.txt:34: unknown key \"field.2.maxlen\""},
        {"field.2.max_len=3", "field.9.max_len=3", "meta.txt: field.9.* given, but n_fields=6"},
        {"field.2.max_len=3", "field.2.vocab=3", "meta.txt:34: field.2.vocab given twice"},
        {"field.1.name=item.id", "field.1.name=item id", "meta.txt: schema: field 1: bad name"},
        {"field.1.name=item.id", "field.1.name=user", "name \"user\" given twice"},
        {"field.1.name=item.id", "field.1.nam=item.id", "meta.txt:17: unknown key \"field.1.nam\""},
        {"field.0.kind=categorical", "# no kind", "field.0.kind missing"},
        {"domain_field=scenario", "domain_field=region", "domain_field=region names no field"},
        {"domain_field=scenario", "domain_field=user", "n_domains=3 but the domain field user has vocab 50"},
        {"field.2.max_len=3", "field.2.max_len=0", "max_len 0 outside 1..4096"},
        {"n_fields=6", "n_fields=129", "meta.txt:4: bad n_fields \"129\" (1..128)"},
        {"format=moemlora-data-2", "format=moemlora-data-3", "meta.txt:2: unsupported format"},
    };
    mml_data_t a, x;
    char *dir = mkdir_tmp(), p[1024];
    mmlt_ctx = "bad-meta";
    make_mixed(900, 15, &a);
    CHECK_OK(mml_data_save_dir(&a, dir));
    snprintf(p, sizeof p, "%s/meta.txt", dir);
    size_t n;
    char *meta = (char *)mmlt_read_file(p, &n);
    CHECK(meta && has(meta, "format=moemlora-data-2\n") && has(meta, "field.2.kind=multi_hot\n") &&
          has(meta, "field.4.shift=30.5\n") && has(meta, "field.4.scale=0.1\n") && has(meta, "domain_field=scenario\n"),
          "meta.txt holds the schema:\n%s", meta ? meta : "");
    for (size_t i = 0; meta && i < sizeof cases / sizeof cases[0]; i++) {
        char *at = strstr(meta, cases[i].from), *t = (char *)malloc(n + 64);
        CHECK(at != NULL, "meta.txt has %s", cases[i].from);
        if (!at) { free(t); continue; }
        snprintf(t, n + 64, "%.*s%s%s", (int)(at - meta), meta, cases[i].to, at + strlen(cases[i].from));
        rewrite(p, t);
        free(t);
        CHECK(mml_data_load_csv(dir, &x) == MML_ERR_FORMAT && has(mml_last_error(), cases[i].want), "%s -> %s: %s",
              cases[i].from, cases[i].to, mml_last_error());
        mml_data_free(&x);
        rewrite(p, meta);
    }
    free(meta);
    mml_data_free(&a);
    mmlt_rm_tree(dir);
    free(dir);
}

/* Data in memory that breaks the schema is refused before anything is written. */
static void test_bad_memory(void) {
    mml_data_t a;
    char *dir = mkdir_tmp(), sub[1200];
    mmlt_ctx = "bad-memory";
    make_mixed(900, 16, &a);
    snprintf(sub, sizeof sub, "%s/set", dir);
    float keep = a.split[MML_TEST].values[F_PRICE][4];
    a.split[MML_TEST].values[F_PRICE][4] = NAN;
    CHECK(mml_data_save_dir(&a, sub) == MML_ERR_ARG && has(mml_last_error(), "test row 4: field price: value not finite"),
          "NaN: %s", mml_last_error());
    a.split[MML_TEST].values[F_PRICE][4] = keep;
    a.split[MML_TRAIN].ids[F_GENRES][3 * 5 + 1] = 12;
    CHECK(mml_data_save_dir(&a, sub) == MML_ERR_ARG && has(mml_last_error(), "train row 5: field genres: id out of range"),
          "list id: %s", mml_last_error());
    a.split[MML_TRAIN].ids[F_GENRES][3 * 5 + 1] = -1;
    a.split[MML_TRAIN].ids[F_USER][7] = 50; /* the OOV id: not in train */
    CHECK(mml_data_save_dir(&a, sub) == MML_ERR_ARG && has(mml_last_error(), "train row 7: field user: id out of range"),
          "OOV in train: %s", mml_last_error());
    a.split[MML_TRAIN].ids[F_USER][7] = 1;
    snprintf(a.schema->field[F_AGE].name, MML_FIELD_NAME_MAX, "label");
    CHECK(mml_data_save_dir(&a, sub) == MML_ERR_ARG && has(mml_last_error(), "named label"), "label: %s", mml_last_error());
    CHECK(!mml__is_dir(sub), "nothing written");
    mml_data_free(&a);
    mmlt_rm_tree(dir);
    free(dir);
}

/* ---- training ---- */

static char trainer[1100];

/* moemlora-train with args; its exit code, or -1. Output into dir/out.txt. */
static int run_trainer(const char *dir, const char *const *args) {
    const char *argv[40];
    int n = 0, status = 0;
    char out[1200];
    argv[n++] = trainer;
    for (int i = 0; args[i] && n < 39; i++) argv[n++] = args[i];
    argv[n] = NULL;
    snprintf(out, sizeof out, "%s/out.txt", dir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        execv(trainer, (char *const *)argv);
        _exit(127);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int find_trainer(void) {
    ssize_t n = readlink("/proc/self/exe", trainer, sizeof trainer - 40);
    if (n <= 0) return 0;
    trainer[n] = 0;
    char *slash = strrchr(trainer, '/');
    if (!slash) return 0;
    *slash = 0;
    slash = strrchr(trainer, '/');
    if (!slash) return 0;
    strcpy(slash, "/examples/moemlora-train");
    return access(trainer, X_OK) == 0;
}

static int g_skipped;

/* A generated mixed folder trained end to end by moemlora-train --data. */
static void test_trainer(void) {
    mml_data_t a;
    char *dir = mkdir_tmp(), set[1200], res[1200], out[1200];
    mmlt_ctx = "trainer";
    if (!find_trainer()) {
        printf("skipped: moemlora-train is not built (%s)\n", trainer);
        g_skipped = 1;
        free(dir);
        return;
    }
    make_mixed(3000, 17, &a);
    snprintf(set, sizeof set, "%s/set", dir);
    snprintf(res, sizeof res, "%s/res.json", dir);
    snprintf(out, sizeof out, "%s/out.txt", dir);
    CHECK_OK(mml_data_save_prepared(&a, set, 1));
    const char *const models[][2] = {{"mlp", "moe"}, {"dcn", "mlora"}, {"deepfm", "none"}};
    for (int i = 0; i < 3; i++) {
        const char *args[] = {"--data", set, "--model", models[i][0], "--adapter", models[i][1], "--hidden", "16,8",
                              "--epochs", "2", "--batch", "256", "--emb", "6", "--threads", "1", "--results", res,
                              "--quiet", NULL};
        int rc = run_trainer(dir, args);
        char *text = (char *)mmlt_read_file(out, NULL), *json = (char *)mmlt_read_file(res, NULL);
        CHECK(rc == 0 && text && has(text, "final:") && json && has(json, "\"weighted_auc\""), "%s + %s: exit %d:\n%s",
              models[i][0], models[i][1], rc, text ? text : "");
        free(text);
        free(json);
        remove(res);
    }
    /* --emb is the dim of fields without their own: the interaction model with item.id at 6 needs 6 */
    const char *args[] = {"--data", set, "--model", "deepfm", "--emb", "8", "--epochs", "1", "--quiet", NULL};
    int rc = run_trainer(dir, args);
    char *text = (char *)mmlt_read_file(out, NULL);
    CHECK(rc == 1 && text && has(text, "needs one embedding dim"), "mixed dims refused: exit %d:\n%s", rc, text ? text : "");
    free(text);
    mml_data_free(&a);
    mmlt_rm_tree(dir);
    free(dir);
}

/* With the signal in the domain-specific fields, the adapters win. */
static void test_moe_beats_base(void) {
    mml_data_t d;
    mml_synth_config_t sc;
    mmlt_ctx = "moe-beats-base";
    mml_synth_default(&sc);
    sc.schema = &g_schema;
    sc.n_samples = mmlt_quick() ? 20000 : 40000;
    sc.domain_signal = 2.0f;
    sc.noise = 0.2f;
    sc.signal_fields = "genres,price";
    sc.seed = 99;
    CHECK_OK(mml_data_synthetic(&sc, &d));
    double auc[2] = {0, 0};
    for (int k = 0; k < 2 && d.schema; k++) {
        mml_config_t c;
        mml_config_default(&c);
        c.schema = d.schema;
        c.n_domains = d.n_domains;
        c.adapter = k ? MML_ADAPTER_MOE : MML_ADAPTER_NONE;
        mmlt_tower(&c, 32, 16);
        c.dropout = 0.1f;
        c.lr = 3e-3f;
        mml_model_t *m = NULL;
        CHECK_OK(mml_model_create(&c, &m));
        if (!m) break;
        mml_fit_opts_t o;
        mml_fit_opts_default(&o);
        o.max_epochs = 4;
        o.batch = 256;
        mml_metrics_t t;
        CHECK_OK(mml_fit(m, &d, &o, &t));
        auc[k] = t.weighted_auc;
        mml_model_free(m);
    }
    printf("weighted AUC: base %.4f, MoE-MLoRA %.4f\n", auc[0], auc[1]);
    CHECK(auc[0] > 0.55 && auc[1] > auc[0] + 0.005, "MoE-MLoRA %.4f beats the base %.4f", auc[1], auc[0]);
    mml_data_free(&d);
}

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : NULL;
    mixed_schema(&g_schema);
    if (!only || !strcmp(only, "data")) {
        test_generator();
        test_roundtrip();
        test_stale_cache();
        test_bad_cells();
        test_bad_meta();
        test_bad_memory();
    }
    if (!only || !strcmp(only, "train")) test_trainer();
    if (!only || !strcmp(only, "moe")) test_moe_beats_base();
    int rc = mmlt_finish("test_schema_data");
    return rc ? rc : g_skipped ? MMLT_SKIP : 0;
}
