/* mml_recipes.h - dataset recipes for moemlora: public raw data sets turned
 * into an mml_data_t, ready for mml_data_save_prepared (docs/DATA.md).
 * Used by moemlora-prepare, the tests, fuzzers and benchmarks; not part of
 * the library (moemlora.h loads, splits and writes prepared sets only).
 *
 * USAGE: include it AFTER the implementation, in the one file that has it:
 *
 *     #define MOEMLORA_IMPLEMENTATION
 *     #include "moemlora.h"
 *     #include "mml_recipes.h"        // from tests/: "../examples/mml_recipes.h"
 *
 * The recipes use the implementation's internal helpers (mml__fail,
 * mml__read_file, mml__lines, mml__fields, mml__mix64, the raw-value readers
 * that serving shares (mml__csv_cell, mml__parse_f32, mml__hash_bucket, the
 * vocabulary builder mml__vocab_*), the atomic writer,
 * the free-space check, mml_data_split), so every function here is static: one file per
 * program includes this header. Errors as in the library: an mml_status and
 * the reason in mml_last_error(), naming file:line for malformed input;
 * nothing is printed, nothing exits.
 *
 * Public names mmlr_, internal ones mmlr__.
 *
 * SECTIONS (grep the banners "// >>name"); a new data set gets its own
 * banner after the last one and its entry point in >>api.
 *     >>api               the entry points and what they promise
 *     >>common            raw folders, id fields, floats, the id map, dense
 *                         re-indexing, raw sample lists, header names, sort
 *     >>movielens         MovieLens-1M and MovieLens-100K
 *     >>taobao            Tianchi Taobao theme data, negative sampling
 *     >>taobao-synthetic  a synthetic raw set in the Taobao theme format
 *     >>csv               any CSV/TSV with a header, described by a schema file
 */
#ifndef MML_RECIPES_H
#define MML_RECIPES_H

#ifndef MOEMLORA_IMPLEMENTED
#error "mml_recipes.h: #define MOEMLORA_IMPLEMENTATION and #include \"moemlora.h\" first"
#else

/* static: one file per program includes this header; unused: a program may
 * use one recipe and not the others. */
#define MMLR_API static MML__UNUSED

#if defined(__linux__)
#include <sys/mman.h>
/* Strict POSIX modes hide madvise and its Linux-only advice (glibc keeps
 * them for __USE_MISC); without them the large-page hint would silently
 * never be given. */
#if defined(__GLIBC__) && !defined(__USE_MISC)
#ifdef __cplusplus
extern "C"
#endif
int madvise(void *addr, size_t len, int advice);
#endif
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14 /* Linux's, on every target */
#endif
#endif

// >>api --------------------------------------------------------------------

/* MovieLens-1M (users.dat + ratings.dat or ratings.no-timestamp.dat, "::",
 * 3- or 4-field rating lines) or MovieLens-100K (u.user, u.occupation, u.data),
 * detected from the files in raw_dir. domain_kind: "gender" (F=0, M=1),
 * "age" (7 groups) or "occupation" (21). Label = (rating == 5). User and movie
 * ids are re-indexed densely in ascending order of the raw id, over the ids
 * that occur in the ratings. Then mml_data_split(seed) (the paper uses 123). */
MMLR_API mml_status mmlr_movielens_load(const char *raw_dir, const char *domain_kind, uint64_t seed, mml_data_t *out);

/* MovieLens with every attribute as a field of a schema (--features all):
 * user, movie, gender, age, occupation, zip (categorical, re-indexed on the
 * training split), genres (multi-hot, '|'-separated), domain by domain_kind as
 * above; label rating == 5; the same stratified 60/20/20 split as
 * mmlr_movielens_load (the same rows in each split). protocol "swr"
 * (MovieLens-1M only, domain_kind ignored): the Scenario-Wise Rec setting,
 * 3 domains by age {1,18} {25} {35,45,50,56}, label rating > 3, fields user,
 * movie, gender, occupation, zip, first genre (dim 16 each), age (numeric,
 * min-max), a random 80/10/10 split over all rows. protocol "swr-paper": the
 * same rows, split and domains with the paper's three fields user, movie,
 * domain (dim 16), to set the fields' worth apart from the rest. */
MMLR_API mml_status mmlr_movielens_load_all(const char *raw_dir, const char *domain_kind, const char *protocol,
                                            uint64_t seed, mml_data_t *out);

/* Tianchi Taobao theme data: theme_click_log.csv, user_embedding.csv,
 * item_embedding.csv in raw_dir. Domains = the first n_themes (0 = all) theme
 * ids in ascending order among clicks whose user and item have embeddings;
 * positives = distinct clicked (user, item) per theme; per theme a ctr_ratio
 * uniform in [0.2, 0.5] and per user n_neg = round(n_pos / ctr_ratio)
 * negatives from the theme's item pool minus the user's clicks (capped at what
 * is left). Then mml_data_split(seed); pretrained embeddings attached. */
MMLR_API mml_status mmlr_taobao_load(const char *raw_dir, int n_themes, uint64_t seed, mml_data_t *out);

/* Writes a synthetic raw set in the Taobao theme format into dir (created if
 * missing): n_users / n_items with embeddings of dim floats, n_clicks click
 * lines over n_themes themes (a few users without embeddings, duplicates
 * included, as in the real data). Deterministic for a seed. Limits: n_users,
 * n_items <= INT32_MAX / 4, n_themes <= 1000000 and <= n_items, n_clicks <=
 * INT32_MAX, dim <= 65536; a set the free space cannot hold is refused before
 * anything is written. Each file is written atomically. */
MMLR_API mml_status mmlr_taobao_write_synthetic(const char *dir, int64_t n_users, int64_t n_items, int32_t n_themes,
                                                int64_t n_clicks, int32_t dim, uint64_t seed);

/* A CSV or TSV file with a header, described by a schema file (docs/DATA.md,
 * "Schema files"): which column is the label, which the domain, and each
 * feature field's kind and options. mmlr_schema_parse reads the schema text
 * (fname names it in messages); vocabularies of vocab=auto fields are 0 until
 * a load fills them. */
typedef struct mmlr_csv_field {
    char column[256];   /* the header name of the field's column */
    int line;           /* where the field is declared in the schema file */
    char sep;           /* multi-hot: the list separator */
    int has_missing;    /* numeric: an empty cell reads as missing */
    float missing;
} mmlr_csv_field;

enum { MMLR_LABEL_01 = 0, MMLR_LABEL_GT, MMLR_LABEL_GE, MMLR_LABEL_LT, MMLR_LABEL_LE, MMLR_LABEL_EQ };

typedef struct mmlr_csv_schema {
    mml_schema_t s;                     /* the fields, in the schema file's order */
    mmlr_csv_field col[MML_MAX_FIELDS]; /* their columns */
    char label[256];                    /* the label column */
    int label_op;                       /* MMLR_LABEL_01: the cell is 0 or 1; else compared with label_thr */
    double label_thr;
    char delim;                         /* 0: from the header (tab if it has one and no comma) */
    char file[256];                     /* the schema file, for messages */
} mmlr_csv_schema;

MMLR_API mml_status mmlr_schema_parse(const char *text, size_t n, const char *fname, mmlr_csv_schema *out);
MMLR_API mml_status mmlr_schema_read(const char *path, mmlr_csv_schema *out);

/* How mmlr_csv_load splits the rows. */
typedef struct mmlr_csv_opts {
    double ratio[3];            /* train, val, test shares (default 0.6, 0.2, 0.2) */
    uint64_t seed;              /* default 123 */
    int stratify;               /* 1 (default): per domain and label class, as mml_data_split; 0: all rows at random */
    const char *split_column;   /* a column naming each row's split (train, val or test): no random split */
    const char *val_path, *test_path; /* or whole files: the input is train, these val and test */
} mmlr_csv_opts;

MMLR_API void mmlr_csv_opts_default(mmlr_csv_opts *o);

/* Reads path (and the val/test files of o), turns it into a data set with a
 * copy of the schema: categorical and multi-hot cells re-indexed over the
 * training split (ids in ascending order of the raw value: numeric order when
 * every value is an integer, else byte order; a value first seen in val or
 * test gets the id vocab, the model's out-of-vocabulary row), or hashed into
 * hash=N buckets; the domain column re-indexed over all rows; numeric cells
 * kept raw, with shift and scale set from the training split. */
MMLR_API mml_status mmlr_csv_load(const char *path, const mmlr_csv_schema *sc, const mmlr_csv_opts *o,
                                  mml_data_t *out);

/* The same from buffers in memory (the MovieLens feature recipes build theirs). */
MMLR_API mml_status mmlr_csv_load_bufs(int n_bufs, char *const *bufs, const size_t *lens, const char *const *names,
                                       const mmlr_csv_schema *sc, const mmlr_csv_opts *o, mml_data_t *out);

// >>common -----------------------------------------------------------------

/* A raw data folder that cannot be read says why, before its absent files
 * could be taken for another data set's. */
static mml_status mmlr__raw_dir_ok(const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0) return mml__fail(MML_ERR_IO, "%s: cannot read: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return mml__fail(MML_ERR_IO, "%s: not a folder", dir);
    return MML_OK;
}

/* 1: a regular file; 0: nothing there; -1: cannot tell (errno says why). */
static int mmlr__probe_file(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) return S_ISREG(st.st_mode);
    return errno == ENOENT ? 0 : -1;
}

/* Field [s, e) of line L as an id in [0, max]; else the reason, naming a
 * number too large for an id as out of range rather than as no number. */
static mml_status mmlr__field_id(const mml__lines *L, const char *what, const char *s, const char *e, int64_t max,
                                 int64_t *v) {
    char q[64];
    if (!mml__all_digits(s, e))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s must be a non-negative integer, got %s", L->file, L->line,
                         what, mml__q(s, e, q, sizeof q));
    if (!mml__to_i64(s, e, v) || *v > max)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s %s is out of range (at most %lld)", L->file, L->line, what,
                         mml__num(s, e, q, sizeof q), (long long)max);
    return MML_OK;
}

/* Raw ids that are only keys (re-indexed densely): any 18-digit number. */
#define MMLR__RAW_ID_MAX 999999999999999999ll

/* ---- hash map from raw ids (>= 0) to int64 values ---- */
/* Open addressing on mml__mix64 of the key; what a lookup finds does not
 * depend on the mixer, only how far it probes. */

typedef struct mmlr__slot {
    int64_t key; /* -1 = empty */
    int64_t val;
} mmlr__slot;

/* Key and value share a slot so a lookup touches one cache line. */
typedef struct mmlr__imap {
    mmlr__slot *s;
    uint64_t cap, n;
} mmlr__imap;

static void mmlr__imap_free(mmlr__imap *m) {
    mml__free(m->s);
    memset(m, 0, sizeof *m);
}

static mml_status mmlr__imap_init(mmlr__imap *m, uint64_t expect) {
    uint64_t cap = 64, i;
    memset(m, 0, sizeof *m);
    while (cap < expect * 2) cap *= 2;
    m->s = (mmlr__slot *)mml__alloc(cap * sizeof(mmlr__slot));
    if (!m->s) return mml__fail(MML_ERR_NOMEM, "id map: cannot allocate %llu slots", (unsigned long long)cap);
    for (i = 0; i < cap; i++) m->s[i].key = -1;
    m->cap = cap;
    return MML_OK;
}

static int64_t mmlr__imap_get(const mmlr__imap *m, int64_t key) {
    uint64_t i = mml__mix64((uint64_t)key) & (m->cap - 1);
    for (;;) {
        if (m->s[i].key == key) return m->s[i].val;
        if (m->s[i].key < 0) return -1;
        i = (i + 1) & (m->cap - 1);
    }
}

/* Inserts key with val unless present; *old = the existing value or -1. */
static mml_status mmlr__imap_put(mmlr__imap *m, int64_t key, int64_t val, int64_t *old) {
    uint64_t i;
    if ((m->n + 1) * 2 > m->cap) {
        mmlr__imap big;
        uint64_t j;
        mml_status st = mmlr__imap_init(&big, m->cap);
        if (st) return st;
        for (j = 0; j < m->cap; j++) {
            if (m->s[j].key < 0) continue;
            i = mml__mix64((uint64_t)m->s[j].key) & (big.cap - 1);
            while (big.s[i].key >= 0) i = (i + 1) & (big.cap - 1);
            big.s[i] = m->s[j];
        }
        big.n = m->n;
        mmlr__imap_free(m);
        *m = big;
    }
    i = mml__mix64((uint64_t)key) & (m->cap - 1);
    while (m->s[i].key >= 0) {
        if (m->s[i].key == key) {
            *old = m->s[i].val;
            return MML_OK;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->s[i].key = key;
    m->s[i].val = val;
    m->n++;
    *old = -1;
    return MML_OK;
}

static int mmlr__cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Dense re-indexing in ascending order of the raw id: dense[i] = rank of
 * raw[i] among the distinct values. */
static mml_status mmlr__reindex(int64_t n, const int64_t *raw, int32_t *dense, int32_t *n_distinct) {
    mmlr__imap m;
    int64_t *keys = NULL, old, i, k = 0;
    mml_status st = mmlr__imap_init(&m, 1024);
    if (st) return st;
    for (i = 0; i < n; i++)
        if ((st = mmlr__imap_put(&m, raw[i], 0, &old)) != MML_OK) goto done;
    if (m.n > (uint64_t)INT32_MAX) {
        st = mml__fail(MML_ERR_ARG, "more than 2^31 distinct ids");
        goto done;
    }
    keys = (int64_t *)mml__alloc((m.n + 1) * sizeof(int64_t));
    if (!keys) {
        st = mml__fail(MML_ERR_NOMEM, "reindex: out of memory");
        goto done;
    }
    for (i = 0; i < (int64_t)m.cap; i++)
        if (m.s[i].key >= 0) keys[k++] = m.s[i].key;
    qsort(keys, (size_t)k, sizeof(int64_t), mmlr__cmp_i64);
    mmlr__imap_free(&m);
    if ((st = mmlr__imap_init(&m, (uint64_t)k)) != MML_OK) goto done;
    for (i = 0; i < k; i++)
        if ((st = mmlr__imap_put(&m, keys[i], i, &old)) != MML_OK) goto done;
    for (i = 0; i < n; i++) dense[i] = (int32_t)mmlr__imap_get(&m, raw[i]);
    *n_distinct = (int32_t)k;
done:
    mml__free(keys);
    mmlr__imap_free(&m);
    return st;
}

typedef struct mmlr__raw {
    int64_t n, cap;
    int64_t *uraw, *iraw;
    int32_t *dom;
    float *label;
} mmlr__raw;

static void mmlr__raw_free(mmlr__raw *r) {
    mml__free(r->uraw);
    mml__free(r->iraw);
    mml__free(r->dom);
    mml__free(r->label);
    memset(r, 0, sizeof *r);
}

static mml_status mmlr__raw_alloc(mmlr__raw *r, int64_t cap) {
    size_t c = (size_t)(cap > 0 ? cap : 1);
    memset(r, 0, sizeof *r);
    r->cap = cap;
    r->uraw = (int64_t *)mml__alloc(c * 8);
    r->iraw = (int64_t *)mml__alloc(c * 8);
    r->dom = (int32_t *)mml__alloc(c * 4);
    r->label = (float *)mml__alloc(c * 4);
    if (!r->uraw || !r->iraw || !r->dom || !r->label) {
        mmlr__raw_free(r);
        return mml__fail(MML_ERR_NOMEM, "out of memory for %lld samples", (long long)cap);
    }
    return MML_OK;
}

/* Raw samples -> dense ids -> split -> names. */
static mml_status mmlr__finish_raw(mmlr__raw *r, int32_t n_domains, uint64_t seed, mml_data_t *out) {
    int32_t *u = (int32_t *)mml__alloc((size_t)r->n * 4 + 4), *it = (int32_t *)mml__alloc((size_t)r->n * 4 + 4);
    int32_t nu = 0, ni = 0;
    mml_status st;
    if (!u || !it) st = mml__fail(MML_ERR_NOMEM, "out of memory");
    else if ((st = mmlr__reindex(r->n, r->uraw, u, &nu)) == MML_OK &&
             (st = mmlr__reindex(r->n, r->iraw, it, &ni)) == MML_OK)
        st = mml_data_split(r->n, u, it, r->dom, r->label, nu, ni, n_domains, seed, out);
    mml__free(u);
    mml__free(it);
    return st;
}

static int mmlr__name_is(const char *s, const char *e, const char *name) {
    size_t n = strlen(name), i;
    while (s < e && (*s == ' ' || *s == '"')) s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '"')) e--;
    if ((size_t)(e - s) != n) return 0;
    for (i = 0; i < n; i++)
        if ((s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]) != name[i]) return 0;
    return 1;
}

/* LSD radix sort of 64-bit keys over their low `bits` bits (11-bit digits). */
static mml_status mmlr__radix_u64(uint64_t *a, int64_t n, int bits) {
    uint64_t *tmp = (uint64_t *)mml__alloc((size_t)(n > 0 ? n : 1) * 8), *src = a, *dst = tmp;
    int64_t *cnt = (int64_t *)mml__alloc(2048 * sizeof(int64_t)), i;
    int shift;
    if (!tmp || !cnt) {
        mml__free(tmp);
        mml__free(cnt);
        return mml__fail(MML_ERR_NOMEM, "sort: out of memory");
    }
    for (shift = 0; shift < bits; shift += 11) {
        int64_t sum = 0;
        uint64_t *t;
        memset(cnt, 0, 2048 * sizeof(int64_t));
        for (i = 0; i < n; i++) cnt[(src[i] >> shift) & 2047]++;
        for (i = 0; i < 2048; i++) {
            int64_t x = cnt[i];
            cnt[i] = sum;
            sum += x;
        }
        for (i = 0; i < n; i++) dst[cnt[(src[i] >> shift) & 2047]++] = src[i];
        t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, (size_t)n * 8);
    mml__free(tmp);
    mml__free(cnt);
    return MML_OK;
}

// >>movielens --------------------------------------------------------------

enum { MMLR__ML_GENDER = 0, MMLR__ML_AGE = 1, MMLR__ML_OCC = 2 };

static const char *const mmlr__ml_age_names[7] = {"Under 18", "18-24", "25-34", "35-44",
                                                  "45-49",    "50-55", "56+"};
static const char *const mmlr__ml1m_occ_names[21] = {
    "other",         "academic/educator",   "artist",         "clerical/admin",
    "college/grad student", "customer service", "doctor/health care", "executive/managerial",
    "farmer",        "homemaker",           "K-12 student",   "lawyer",
    "programmer",    "retired",             "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed",
    "writer"};

typedef struct mmlr__ml_users {
    mmlr__imap map;      /* raw user id -> index into dom[] */
    int32_t *dom;        /* domain of each user for the chosen kind */
    int64_t n;
    int32_t n_domains;
    char occ[21][48];    /* ML-100K occupation names, u.occupation order */
    int n_occ;
} mmlr__ml_users;

static int mmlr__ml100k_age_group(int64_t age) {
    return age < 18 ? 0 : age < 25 ? 1 : age < 35 ? 2 : age < 45 ? 3 : age < 50 ? 4 : age < 56 ? 5 : 6;
}

/* u.occupation: one name per line, in the order that numbers the domains. */
static mml_status mmlr__ml_parse_occ(const char *buf, size_t n, const char *fname, mmlr__ml_users *u) {
    mml__lines L;
    const char *s, *e;
    char q[64];
    mml__lines_init(&L, buf, n, fname);
    u->n_occ = 0;
    while (mml__next_line(&L, &s, &e)) {
        if (s == e) continue;
        if (u->n_occ >= 21 || e - s >= 48)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: more than 21 occupations or name too long: %s", fname, L.line,
                             mml__q(s, e, q, sizeof q));
        memcpy(u->occ[u->n_occ], s, (size_t)(e - s));
        u->occ[u->n_occ][e - s] = 0;
        u->n_occ++;
    }
    if (u->n_occ == 0) return mml__fail(MML_ERR_FORMAT, "%s: no occupations", fname);
    return MML_OK;
}

/* users.dat (UserID::Gender::Age::Occupation::Zip) or u.user
 * (id|age|gender|occupation|zip): the domain of every user for kind. */
static mml_status mmlr__ml_parse_users(const char *buf, size_t n, const char *fname, int is_1m, int kind,
                                       mmlr__ml_users *u) {
    mml__lines L;
    const char *s, *e, *fs[6], *fe[6];
    char q[64];
    int64_t cap = mml__count_lines(buf, n), id, age, old, occ;
    mml_status st;
    int nf, g, j;
    u->dom = (int32_t *)mml__alloc((size_t)cap * sizeof(int32_t));
    if (!u->dom) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", fname);
    if ((st = mmlr__imap_init(&u->map, (uint64_t)cap)) != MML_OK) return st;
    u->n = 0;
    u->n_domains = kind == MMLR__ML_GENDER ? 2 : kind == MMLR__ML_AGE ? 7 : (is_1m ? 21 : u->n_occ);
    mml__lines_init(&L, buf, n, fname);
    while (mml__next_line(&L, &s, &e)) {
        const char *gs, *ge, *as, *ae, *os, *oe;
        int32_t d = 0;
        if (s == e && L.p >= L.end) break; /* blank last line */
        nf = mml__fields(s, e, is_1m ? "::" : "|", is_1m ? 2 : 1, fs, fe, 6);
        if (nf != 5)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected 5 fields %s, got %d", fname, L.line,
                             is_1m ? "UserID::Gender::Age::Occupation::Zip" : "id|age|gender|occupation|zip", nf);
        gs = fs[is_1m ? 1 : 2], ge = fe[is_1m ? 1 : 2];
        as = fs[is_1m ? 2 : 1], ae = fe[is_1m ? 2 : 1];
        os = fs[3], oe = fe[3];
        if ((st = mmlr__field_id(&L, "user id", fs[0], fe[0], INT32_MAX, &id)) != MML_OK) return st;
        g = (ge - gs == 1 && *gs == 'F') ? 0 : (ge - gs == 1 && *gs == 'M') ? 1 : -1;
        if (g < 0)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: gender must be F or M, got %s", fname, L.line, mml__q(gs, ge, q, sizeof q));
        if (!mml__to_i64(as, ae, &age) || age < 0 || age > 200)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: bad age %s", fname, L.line, mml__q(as, ae, q, sizeof q));
        if (is_1m) {
            static const int codes[7] = {1, 18, 25, 35, 45, 50, 56};
            int a = -1;
            for (j = 0; j < 7; j++)
                if (codes[j] == age) a = j;
            if (a < 0)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: age code must be one of 1,18,25,35,45,50,56, got %s", fname,
                                 L.line, mml__q(as, ae, q, sizeof q));
            if (!mml__to_i64(os, oe, &occ) || occ < 0 || occ > 20)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: occupation must be 0..20, got %s", fname, L.line,
                                 mml__q(os, oe, q, sizeof q));
            d = kind == MMLR__ML_GENDER ? g : kind == MMLR__ML_AGE ? a : (int32_t)occ;
        } else {
            occ = -1;
            for (j = 0; j < u->n_occ; j++)
                if (mml__key_is(os, oe, u->occ[j])) occ = j;
            if (occ < 0)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: occupation %s is not listed in u.occupation", fname, L.line,
                                 mml__q(os, oe, q, sizeof q));
            d = kind == MMLR__ML_GENDER ? g : kind == MMLR__ML_AGE ? mmlr__ml100k_age_group(age) : (int32_t)occ;
        }
        if ((st = mmlr__imap_put(&u->map, id, u->n, &old)) != MML_OK) return st;
        if (old >= 0) return mml__fail(MML_ERR_FORMAT, "%s:%lld: user %lld listed twice", fname, L.line, (long long)id);
        u->dom[u->n++] = d;
    }
    if (u->n == 0) return mml__fail(MML_ERR_FORMAT, "%s: no users", fname);
    return MML_OK;
}

/* ratings.dat (UserID::MovieID::Rating[::Timestamp]) or u.data (tab-separated
 * user item rating [timestamp]); label = rating == 5. */
static mml_status mmlr__ml_parse_ratings(const char *buf, size_t n, const char *fname, int is_1m,
                                         const mmlr__ml_users *u, mmlr__raw *r) {
    mml__lines L;
    const char *s, *e, *fs[5], *fe[5];
    char q[64];
    int64_t v[3], ui;
    int nf, j;
    mml_status st;
    if ((st = mmlr__raw_alloc(r, mml__count_lines(buf, n))) != MML_OK) return st;
    mml__lines_init(&L, buf, n, fname);
    while (mml__next_line(&L, &s, &e)) {
        if (s == e && L.p >= L.end) break;
        nf = mml__fields(s, e, is_1m ? "::" : "\t", is_1m ? 2 : 1, fs, fe, 5);
        if (nf != 3 && nf != 4)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected 3 or 4 fields user%sitem%srating[%stimestamp], got %d",
                             fname, L.line, is_1m ? "::" : "<tab>", is_1m ? "::" : "<tab>", is_1m ? "::" : "<tab>", nf);
        for (j = 0; j < 2; j++)
            if ((st = mmlr__field_id(&L, j ? "item id" : "user id", fs[j], fe[j], INT32_MAX, &v[j])) != MML_OK)
                return st;
        if (!mml__to_i64(fs[2], fe[2], &v[2]) || v[2] < 1 || v[2] > 5)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: rating must be 1..5, got %s", fname, L.line,
                             mml__q(fs[2], fe[2], q, sizeof q));
        if (nf == 4) {
            int64_t ts;
            if (!mml__to_i64(fs[3], fe[3], &ts))
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: timestamp is not an integer: %s", fname, L.line,
                                 mml__q(fs[3], fe[3], q, sizeof q));
        }
        ui = mmlr__imap_get(&u->map, v[0]);
        if (ui < 0)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: user %lld is not in the users file", fname, L.line, (long long)v[0]);
        r->uraw[r->n] = v[0];
        r->iraw[r->n] = v[1];
        r->dom[r->n] = u->dom[ui];
        r->label[r->n] = v[2] == 5 ? 1.0f : 0.0f;
        r->n++;
    }
    if (r->n == 0) return mml__fail(MML_ERR_FORMAT, "%s: no ratings", fname);
    return MML_OK;
}

static mml_status mmlr_movielens_load(const char *raw_dir, const char *domain_kind, uint64_t seed, mml_data_t *out) {
    char upath[MML__PATH_MAX], rpath[MML__PATH_MAX], opath[MML__PATH_MAX];
    mml__buf b;
    mmlr__ml_users *u = NULL;
    mmlr__raw r;
    int is_1m, kind, found;
    int32_t k;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mmlr_movielens_load: out is NULL");
    memset(out, 0, sizeof *out);
    memset(&r, 0, sizeof r);
    if (!raw_dir || !domain_kind) return mml__fail(MML_ERR_ARG, "mmlr_movielens_load: NULL argument");
    if (!strcmp(domain_kind, "gender")) kind = MMLR__ML_GENDER;
    else if (!strcmp(domain_kind, "age")) kind = MMLR__ML_AGE;
    else if (!strcmp(domain_kind, "occupation")) kind = MMLR__ML_OCC;
    else return mml__fail(MML_ERR_ARG, "unknown MovieLens domain split \"%s\" (gender, age or occupation)", domain_kind);
    if ((st = mmlr__raw_dir_ok(raw_dir)) != MML_OK) return st;
    if ((st = mml__join(upath, raw_dir, "users.dat")) != MML_OK) return st;
    if ((is_1m = mmlr__probe_file(upath)) < 0) return mml__fail(MML_ERR_IO, "%s: cannot read: %s", upath, strerror(errno));
    if (is_1m) {
        mml__join(rpath, raw_dir, "ratings.dat");
        if (!mml__is_file(rpath)) mml__join(rpath, raw_dir, "ratings.no-timestamp.dat");
    } else {
        mml__join(upath, raw_dir, "u.user");
        mml__join(rpath, raw_dir, "u.data");
        mml__join(opath, raw_dir, "u.occupation");
        if ((found = mmlr__probe_file(upath)) < 0)
            return mml__fail(MML_ERR_IO, "%s: cannot read: %s", upath, strerror(errno));
        if (!found)
            return mml__fail(MML_ERR_IO, "%s: neither MovieLens-1M (users.dat) nor MovieLens-100K (u.user) files found",
                             raw_dir);
    }
    u = (mmlr__ml_users *)mml__alloc(sizeof *u);
    if (!u) return mml__fail(MML_ERR_NOMEM, "out of memory");
    if (!is_1m) {
        if ((st = mml__read_file(opath, &b)) != MML_OK) goto done;
        st = mmlr__ml_parse_occ(b.p, b.n, opath, u);
        mml__buf_free(&b);
        if (st) goto done;
    }
    if ((st = mml__read_file(upath, &b)) != MML_OK) goto done;
    st = mmlr__ml_parse_users(b.p, b.n, upath, is_1m, kind, u);
    mml__buf_free(&b);
    if (st) goto done;
    if ((st = mml__read_file(rpath, &b)) != MML_OK) goto done;
    st = mmlr__ml_parse_ratings(b.p, b.n, rpath, is_1m, u, &r);
    mml__buf_free(&b);
    if (st) goto done;
    if ((st = mmlr__finish_raw(&r, u->n_domains, seed, out)) != MML_OK) goto done;
    for (k = 0; k < out->n_domains && !st; k++) {
        const char *nm = kind == MMLR__ML_GENDER ? (k ? "M" : "F")
                         : kind == MMLR__ML_AGE  ? mmlr__ml_age_names[k]
                         : is_1m                ? mmlr__ml1m_occ_names[k]
                                                : u->occ[k];
        st = mml__set_name(out, k, nm, strlen(nm));
    }
done:
    if (u) {
        mmlr__imap_free(&u->map);
        mml__free(u->dom);
        mml__free(u);
    }
    mmlr__raw_free(&r);
    if (st) mml_data_free(out);
    return st;
}

/* ---- every attribute as a field (through the CSV loader) ---- */

/* A growing text buffer; st records the first allocation failure. */
typedef struct mmlr__text {
    char *p;
    size_t n, cap;
    mml_status st;
} mmlr__text;

static void mmlr__text_put(mmlr__text *t, const char *s, size_t n) {
    if (t->st) return;
    if (t->n + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 1 << 16;
        while (t->n + n + 1 > cap) cap *= 2;
        char *np = (char *)mml__alloc(cap);
        if (!np) {
            t->st = mml__fail(MML_ERR_NOMEM, "movielens: out of memory");
            return;
        }
        if (t->n) memcpy(np, t->p, t->n);
        mml__free(t->p);
        t->p = np;
        t->cap = cap;
    }
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = 0;
}
static void mmlr__text_str(mmlr__text *t, const char *s) { mmlr__text_put(t, s, strlen(s)); }
static void mmlr__text_int(mmlr__text *t, int64_t v) {
    char b[24];
    mmlr__text_put(t, b, (size_t)(mml__put_u64(b, (uint64_t)v) - b));
}

/* One user's attributes; strings point into the users file. */
typedef struct mmlr__ml_user {
    int64_t age;
    char gender;
    int32_t occ_code;           /* ML-1M: 0..20; ML-100K: index in u.occupation */
    const char *zip, *zip_end;
} mmlr__ml_user;

typedef struct mmlr__ml_all {
    int is_1m;
    mml__buf ub, mb, rb, ob, gb;
    mmlr__imap umap, mmap;      /* raw id -> index */
    mmlr__ml_user *user;
    int64_t n_users, n_movies;
    const char **gen, **gen_end; /* a movie's genres "A|B|C" */
    mmlr__text item_genres;     /* ML-100K: the genre lists built from u.item's flags */
    int64_t *gen_off;
    int max_genres;
    char occ[21][48];
    int n_occ;
} mmlr__ml_all;

static void mmlr__ml_all_free(mmlr__ml_all *a) {
    mml__buf_free(&a->ub);
    mml__buf_free(&a->mb);
    mml__buf_free(&a->rb);
    mml__buf_free(&a->ob);
    mml__buf_free(&a->gb);
    mmlr__imap_free(&a->umap);
    mmlr__imap_free(&a->mmap);
    mml__free(a->user);
    mml__free(a->gen);
    mml__free(a->gen_end);
    mml__free(a->gen_off);
    mml__free(a->item_genres.p);
}

static mml_status mmlr__ml_all_users(mmlr__ml_all *a, const char *fname) {
    mml__lines L;
    const char *s, *e, *fs[6], *fe[6];
    char q[64];
    int64_t cap = mml__count_lines(a->ub.p, a->ub.n), id, old;
    mml_status st;
    int m = a->is_1m;
    if (!(a->user = (mmlr__ml_user *)mml__alloc((size_t)cap * sizeof *a->user)))
        return mml__fail(MML_ERR_NOMEM, "%s: out of memory", fname);
    if ((st = mmlr__imap_init(&a->umap, (uint64_t)cap)) != MML_OK) return st;
    mml__lines_init(&L, a->ub.p, a->ub.n, fname);
    while (mml__next_line(&L, &s, &e)) {
        mmlr__ml_user *u = &a->user[a->n_users];
        if (s == e) continue;
        if (mml__fields(s, e, m ? "::" : "|", m ? 2 : 1, fs, fe, 6) != 5)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected 5 fields", fname, L.line);
        const char *gs = fs[m ? 1 : 2], *ge = fe[m ? 1 : 2], *as = fs[m ? 2 : 1], *ae = fe[m ? 2 : 1];
        if ((st = mmlr__field_id(&L, "user id", fs[0], fe[0], INT32_MAX, &id)) != MML_OK) return st;
        if (ge - gs != 1 || (*gs != 'F' && *gs != 'M'))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: gender must be F or M, got %s", fname, L.line, mml__q(gs, ge, q, sizeof q));
        if (!mml__to_i64(as, ae, &u->age) || u->age < 0 || u->age > 200)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: bad age %s", fname, L.line, mml__q(as, ae, q, sizeof q));
        int64_t occ = -1;
        if (m && (!mml__to_i64(fs[3], fe[3], &occ) || occ < 0 || occ > 20)) occ = -1;
        for (int j = 0; !m && j < a->n_occ; j++)
            if (mml__key_is(fs[3], fe[3], a->occ[j])) occ = j;
        if (occ < 0)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: unknown occupation %s", fname, L.line, mml__q(fs[3], fe[3], q, sizeof q));
        if (m) {
            static const int codes[7] = {1, 18, 25, 35, 45, 50, 56};
            int ok = 0;
            for (int j = 0; j < 7; j++) ok |= codes[j] == u->age;
            if (!ok)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: age code must be one of 1,18,25,35,45,50,56, got %s", fname,
                                 L.line, mml__q(as, ae, q, sizeof q));
        }
        u->gender = *gs;
        u->occ_code = (int32_t)occ;
        u->zip = fs[4], u->zip_end = fe[4];
        if ((st = mmlr__imap_put(&a->umap, id, a->n_users, &old)) != MML_OK) return st;
        if (old >= 0) return mml__fail(MML_ERR_FORMAT, "%s:%lld: user %lld listed twice", fname, L.line, (long long)id);
        a->n_users++;
    }
    return a->n_users ? MML_OK : mml__fail(MML_ERR_FORMAT, "%s: no users", fname);
}

/* movies.dat (MovieID::Title::Genres) or u.item (id|title|date|video|url|19
 * genre flags, names from u.genre): each movie's genre list. */
static mml_status mmlr__ml_all_movies(mmlr__ml_all *a, const char *fname, const char *gname) {
    mml__lines L;
    const char *s, *e, *fs[24], *fe[24], *gn[19], *gne[19];
    int64_t cap = mml__count_lines(a->mb.p, a->mb.n), id, old;
    mml_status st;
    int m = a->is_1m, ng = 0;
    a->gen = (const char **)mml__alloc((size_t)cap * sizeof(char *));
    a->gen_end = (const char **)mml__alloc((size_t)cap * sizeof(char *));
    a->gen_off = (int64_t *)mml__alloc((size_t)cap * 8 + 8);
    if (!a->gen || !a->gen_end || !a->gen_off) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", fname);
    if ((st = mmlr__imap_init(&a->mmap, (uint64_t)cap)) != MML_OK) return st;
    if (!m) { /* u.genre: "name|index" lines */
        mml__lines_init(&L, a->gb.p, a->gb.n, gname);
        while (mml__next_line(&L, &s, &e)) {
            if (s == e) continue;
            if (ng == 19 || mml__fields(s, e, "|", 1, fs, fe, 3) != 2)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected name|index (19 genres)", gname, L.line);
            gn[ng] = fs[0], gne[ng] = fe[0], ng++;
        }
        if (ng != 19) return mml__fail(MML_ERR_FORMAT, "%s: %d genres, expected 19", gname, ng);
    }
    mml__lines_init(&L, a->mb.p, a->mb.n, fname);
    while (mml__next_line(&L, &s, &e)) {
        if (s == e) continue;
        int nf = mml__fields(s, e, m ? "::" : "|", m ? 2 : 1, fs, fe, 24), k = 0;
        if (nf != (m ? 3 : 24)) return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected %d fields, got %d", fname, L.line, m ? 3 : 24, nf);
        if ((st = mmlr__field_id(&L, "movie id", fs[0], fe[0], INT32_MAX, &id)) != MML_OK) return st;
        if (m) {
            a->gen[a->n_movies] = fs[2], a->gen_end[a->n_movies] = fe[2];
            k = fs[2] < fe[2];
            for (const char *p = fs[2]; p < fe[2]; p++) k += *p == '|';
        } else {
            a->gen_off[a->n_movies] = (int64_t)a->item_genres.n;
            for (int j = 0; j < 19; j++) {
                if (fe[5 + j] - fs[5 + j] != 1 || (fs[5 + j][0] != '0' && fs[5 + j][0] != '1'))
                    return mml__fail(MML_ERR_FORMAT, "%s:%lld: genre flag %d must be 0 or 1", fname, L.line, j + 1);
                if (fs[5 + j][0] == '0') continue;
                if (k++) mmlr__text_put(&a->item_genres, "|", 1);
                mmlr__text_put(&a->item_genres, gn[j], (size_t)(gne[j] - gn[j]));
            }
            if (a->item_genres.st) return a->item_genres.st;
        }
        if (k > a->max_genres) a->max_genres = k;
        if ((st = mmlr__imap_put(&a->mmap, id, a->n_movies, &old)) != MML_OK) return st;
        if (old >= 0) return mml__fail(MML_ERR_FORMAT, "%s:%lld: movie %lld listed twice", fname, L.line, (long long)id);
        a->n_movies++;
    }
    a->gen_off[a->n_movies] = (int64_t)a->item_genres.n;
    for (int64_t i = 0; !m && i < a->n_movies; i++) { /* the text is complete: pointers are stable now */
        a->gen[i] = a->item_genres.p + a->gen_off[i];
        a->gen_end[i] = a->item_genres.p + a->gen_off[i + 1];
    }
    return a->n_movies ? MML_OK : mml__fail(MML_ERR_FORMAT, "%s: no movies", fname);
}

/* The domain of a user for kind (MMLR__ML_*, or 3 = the SWR age groups). */
static int32_t mmlr__ml_all_domain(const mmlr__ml_all *a, const mmlr__ml_user *u, int kind) {
    static const int codes[7] = {1, 18, 25, 35, 45, 50, 56};
    int g = 0;
    if (a->is_1m)
        for (int j = 0; j < 7; j++) g = codes[j] == u->age ? j : g;
    else g = mmlr__ml100k_age_group(u->age);
    if (kind == 3) return g <= 1 ? 0 : g == 2 ? 1 : 2;
    return kind == MMLR__ML_GENDER ? u->gender == 'M' : kind == MMLR__ML_AGE ? g : u->occ_code;
}

/* The ratings joined with users and movies, as a CSV the loader reads. */
static mml_status mmlr__ml_all_csv(mmlr__ml_all *a, const char *fname, int kind, int swr, mmlr__text *t) {
    mml__lines L;
    const char *s, *e, *fs[5], *fe[5];
    char q[64];
    int64_t v[3], n = 0;
    int m = a->is_1m;
    mmlr__text_str(t, swr ? "user,movie,gender,occupation,zip,genre,age,domain,rating\n"
                          : "user,movie,gender,age,occupation,zip,genres,domain,rating\n");
    mml__lines_init(&L, a->rb.p, a->rb.n, fname);
    while (mml__next_line(&L, &s, &e) && !t->st) {
        if (s == e) continue;
        int nf = mml__fields(s, e, m ? "::" : "\t", m ? 2 : 1, fs, fe, 5);
        if (nf != 3 && nf != 4) return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected 3 or 4 fields, got %d", fname, L.line, nf);
        for (int j = 0; j < 3; j++)
            if (!mml__to_i64(fs[j], fe[j], &v[j]) || v[j] < 0)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %d is not a non-negative integer: %s", fname, L.line, j + 1,
                                 mml__q(fs[j], fe[j], q, sizeof q));
        int64_t ui = mmlr__imap_get(&a->umap, v[0]), mi = mmlr__imap_get(&a->mmap, v[1]);
        if (ui < 0 || mi < 0)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s %lld is not in the %s file", fname, L.line, ui < 0 ? "user" : "movie",
                             (long long)(ui < 0 ? v[0] : v[1]), ui < 0 ? "users" : "movies");
        const mmlr__ml_user *u = &a->user[ui];
        const char *g = a->gen[mi], *ge = a->gen_end[mi];
        mmlr__text_int(t, v[0]);
        mmlr__text_put(t, ",", 1);
        mmlr__text_int(t, v[1]);
        mmlr__text_put(t, ",", 1);
        mmlr__text_put(t, &u->gender, 1);
        mmlr__text_put(t, ",", 1);
        if (!swr) {
            mmlr__text_int(t, u->age);
            mmlr__text_put(t, ",", 1);
        }
        mmlr__text_int(t, u->occ_code);
        mmlr__text_put(t, ",", 1);
        mmlr__text_put(t, u->zip, (size_t)(u->zip_end - u->zip));
        mmlr__text_put(t, ",", 1);
        if (swr) {
            const char *bar = (const char *)memchr(g, '|', (size_t)(ge - g));
            ge = bar ? bar : ge;
        }
        mmlr__text_put(t, g, (size_t)(ge - g));
        mmlr__text_put(t, ",", 1);
        if (swr) {
            mmlr__text_int(t, u->age);
            mmlr__text_put(t, ",", 1);
        }
        mmlr__text_int(t, mmlr__ml_all_domain(a, u, kind));
        mmlr__text_put(t, ",", 1);
        mmlr__text_int(t, v[2]);
        mmlr__text_put(t, "\n", 1);
        n++;
    }
    if (!t->st && !n) return mml__fail(MML_ERR_FORMAT, "%s: no ratings", fname);
    return t->st;
}

/* The schema text of the recipe. */
static void mmlr__ml_all_schema(char *buf, size_t cap, int swr, int max_genres) {
    if (swr == 2)
        snprintf(buf, cap,
                 "label rating > 3\n"
                 "field user categorical dim=16\nfield movie categorical dim=16\nfield domain categorical domain dim=16\n");
    else if (swr)
        snprintf(buf, cap,
                 "label rating > 3\n"
                 "field user categorical dim=16\nfield movie categorical dim=16\nfield gender categorical dim=16\n"
                 "field occupation categorical dim=16\nfield zip categorical dim=16\nfield genre categorical dim=16\n"
                 "field age numeric norm=minmax\nfield domain categorical domain dim=16\n");
    else
        snprintf(buf, cap,
                 "label rating == 5\n"
                 "field user categorical\nfield movie categorical\nfield gender categorical\nfield age categorical\n"
                 "field occupation categorical\nfield zip categorical\nfield genres multi_hot max_len=%d sep=|\n"
                 "field domain categorical domain\n",
                 max_genres > 0 ? max_genres : 1);
}

static mml_status mmlr__ml_all_read(mmlr__ml_all *a, const char *raw_dir, char rpath[MML__PATH_MAX]) {
    char upath[MML__PATH_MAX], mpath[MML__PATH_MAX], opath[MML__PATH_MAX], gpath[MML__PATH_MAX];
    mml_status st;
    if ((st = mmlr__raw_dir_ok(raw_dir)) != MML_OK || (st = mml__join(upath, raw_dir, "users.dat")) != MML_OK) return st;
    if ((a->is_1m = mmlr__probe_file(upath)) < 0) return mml__fail(MML_ERR_IO, "%s: cannot read: %s", upath, strerror(errno));
    if (a->is_1m) {
        mml__join(mpath, raw_dir, "movies.dat");
        mml__join(rpath, raw_dir, "ratings.dat");
        if (!mml__is_file(rpath)) mml__join(rpath, raw_dir, "ratings.no-timestamp.dat");
    } else {
        mml__join(upath, raw_dir, "u.user");
        mml__join(mpath, raw_dir, "u.item");
        mml__join(rpath, raw_dir, "u.data");
        mml__join(opath, raw_dir, "u.occupation");
        mml__join(gpath, raw_dir, "u.genre");
        if (!mml__is_file(upath))
            return mml__fail(MML_ERR_IO, "%s: neither MovieLens-1M (users.dat) nor MovieLens-100K (u.user) files found", raw_dir);
        if ((st = mml__read_file(opath, &a->ob)) != MML_OK || (st = mml__read_file(gpath, &a->gb)) != MML_OK) return st;
        mmlr__ml_users occ; /* u.occupation names the occupations in order */
        memset(&occ, 0, sizeof occ);
        if ((st = mmlr__ml_parse_occ(a->ob.p, a->ob.n, opath, &occ)) != MML_OK) return st;
        memcpy(a->occ, occ.occ, sizeof a->occ);
        a->n_occ = occ.n_occ;
    }
    if ((st = mml__read_file(upath, &a->ub)) != MML_OK || (st = mmlr__ml_all_users(a, upath)) != MML_OK) return st;
    if ((st = mml__read_file(mpath, &a->mb)) != MML_OK || (st = mmlr__ml_all_movies(a, mpath, gpath)) != MML_OK) return st;
    return mml__read_file(rpath, &a->rb);
}

/* Domain k's name: the raw domain value the loader saw is the recipe's index. */
static mml_status mmlr__ml_all_names(const mmlr__ml_all *a, int kind, mml_data_t *d) {
    static const char *const swr_names[3] = {"age 1-24", "age 25-34", "age 35+"};
    for (int32_t k = 0; k < d->n_domains; k++) {
        int64_t x = 0;
        const char *nm = d->domain_names[k];
        mml__to_i64(nm, nm + strlen(nm), &x);
        nm = kind == 3 ? swr_names[x % 3] : kind == MMLR__ML_GENDER ? (x ? "M" : "F")
           : kind == MMLR__ML_AGE ? mmlr__ml_age_names[x % 7] : a->is_1m ? mmlr__ml1m_occ_names[x % 21] : a->occ[x % 21];
        mml_status st = mml__set_name(d, k, nm, strlen(nm));
        if (st) return st;
    }
    return MML_OK;
}

static mml_status mmlr_movielens_load_all(const char *raw_dir, const char *domain_kind, const char *protocol,
                                          uint64_t seed, mml_data_t *out) {
    char rpath[MML__PATH_MAX], stext[1024];
    mmlr__ml_all *a;
    mmlr__text t;
    mmlr_csv_schema *sc = NULL;
    mmlr_csv_opts o;
    int kind, swr = !protocol ? 0 : !strcmp(protocol, "swr") ? 1 : !strcmp(protocol, "swr-paper") ? 2 : -1;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mmlr_movielens_load_all: out is NULL");
    memset(out, 0, sizeof *out);
    if (!raw_dir || (!domain_kind && !swr)) return mml__fail(MML_ERR_ARG, "mmlr_movielens_load_all: NULL argument");
    if (swr < 0) return mml__fail(MML_ERR_ARG, "unknown MovieLens protocol \"%s\" (swr, swr-paper)", protocol);
    kind = swr ? 3 : !strcmp(domain_kind, "gender") ? MMLR__ML_GENDER : !strcmp(domain_kind, "age") ? MMLR__ML_AGE
             : !strcmp(domain_kind, "occupation") ? MMLR__ML_OCC : -1;
    if (kind < 0) return mml__fail(MML_ERR_ARG, "unknown MovieLens domain split \"%s\" (gender, age or occupation)", domain_kind);
    memset(&t, 0, sizeof t);
    if (!(a = (mmlr__ml_all *)mml__alloc(sizeof *a)) || !(sc = (mmlr_csv_schema *)mml__alloc(sizeof *sc))) {
        mml__free(a);
        return mml__fail(MML_ERR_NOMEM, "movielens: out of memory");
    }
    if ((st = mmlr__ml_all_read(a, raw_dir, rpath)) != MML_OK) goto done;
    if (swr && !a->is_1m) {
        st = mml__fail(MML_ERR_ARG, "%s: the swr protocol is defined on MovieLens-1M (users.dat)", raw_dir);
        goto done;
    }
    if ((st = mmlr__ml_all_csv(a, rpath, kind, swr, &t)) != MML_OK) goto done;
    mmlr__ml_all_schema(stext, sizeof stext, swr, a->max_genres);
    if ((st = mmlr_schema_parse(stext, strlen(stext), "movielens schema", sc)) != MML_OK) goto done;
    mmlr_csv_opts_default(&o);
    o.seed = seed;
    if (swr) {
        o.ratio[0] = 0.8, o.ratio[1] = 0.1, o.ratio[2] = 0.1;
        o.stratify = 0;
    }
    char *bufs[1] = {t.p};
    const char *names[1] = {rpath};
    if ((st = mmlr_csv_load_bufs(1, bufs, &t.n, names, sc, &o, out)) != MML_OK) goto done;
    st = mmlr__ml_all_names(a, kind, out);
done:
    mmlr__ml_all_free(a);
    mml__free(a);
    mml__free(sc);
    mml__free(t.p);
    if (st) mml_data_free(out);
    return st;
}

// >>taobao -----------------------------------------------------------------

typedef struct mmlr__emb {
    mmlr__imap map; /* raw id -> row */
    float *v;       /* rows x dim */
    int64_t rows;
    int32_t dim;
} mmlr__emb;

static void mmlr__emb_free(mmlr__emb *m) {
    mmlr__imap_free(&m->map);
    mml__free(m->v);
    memset(m, 0, sizeof *m);
}

/* "<header>\nid,f1,...,fD\n..." with D taken from the first data row. */
static mml_status mmlr__parse_emb_csv(const char *buf, size_t n, const char *fname, mmlr__emb *m) {
    mml__lines L;
    const char *s, *e, *p, *c;
    char q[64];
    int64_t cap = mml__count_lines(buf, n), id, old;
    long long dim_line = 0;
    mml_status st;
    memset(m, 0, sizeof *m);
    if ((st = mmlr__imap_init(&m->map, (uint64_t)cap)) != MML_OK) return st;
    mml__lines_init(&L, buf, n, fname);
    while (mml__next_line(&L, &s, &e)) {
        int32_t j = 0;
        float *row;
        if (L.line == 1 && (s == e || (unsigned)(*s - '0') > 9)) continue; /* header */
        if (s == e && L.p >= L.end) break;
        c = (const char *)memchr(s, ',', (size_t)(e - s));
        if (!c) return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected id,<floats>, got %s", fname, L.line, mml__q(s, e, q, sizeof q));
        if ((st = mmlr__field_id(&L, "id", s, c, MMLR__RAW_ID_MAX, &id)) != MML_OK) return st;
        if (m->dim == 0) {
            int64_t d = 1;
            for (p = c + 1; p < e; p++) d += *p == ',';
            if (d > 65536) return mml__fail(MML_ERR_FORMAT, "%s:%lld: %lld values, more than 65536", fname, L.line, (long long)d);
            m->dim = (int32_t)d;
            dim_line = L.line;
            m->v = (float *)mml__alloc((size_t)cap * (size_t)d * sizeof(float));
            if (!m->v) return mml__fail(MML_ERR_NOMEM, "%s: out of memory for %lld x %lld floats", fname, (long long)cap, (long long)d);
        }
        row = m->v + (size_t)m->rows * (size_t)m->dim;
        for (p = c + 1;;) {
            float x;
            const char *q2 = mml__parse_f32(p, e, &x);
            if (!q2 || (q2 < e && *q2 != ',')) {
                const char *fe2 = (const char *)memchr(p, ',', (size_t)(e - p));
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: value %d is not a finite number: %s", fname, L.line, j + 1,
                                 mml__q(p, fe2 ? fe2 : e, q, sizeof q));
            }
            if (j < m->dim) row[j] = x;
            j++;
            if (q2 == e) break;
            p = q2 + 1;
        }
        if (j != m->dim)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s values: expected %d (the dimension of line %lld)", fname, L.line,
                             j < m->dim ? "too few" : "too many", m->dim, dim_line);
        if ((st = mmlr__imap_put(&m->map, id, m->rows, &old)) != MML_OK) return st;
        if (old >= 0) return mml__fail(MML_ERR_FORMAT, "%s:%lld: id %lld listed twice", fname, L.line, (long long)id);
        m->rows++;
    }
    if (m->rows == 0) return mml__fail(MML_ERR_FORMAT, "%s: no embedding rows", fname);
    return MML_OK;
}

/* Clicks whose user and item have embeddings: rows into the embedding tables. */
typedef struct mmlr__clicks {
    int64_t n;
    int32_t *urow, *irow;
    int64_t *theme;
} mmlr__clicks;

static void mmlr__clicks_free(mmlr__clicks *c) {
    mml__free(c->urow);
    mml__free(c->irow);
    mml__free(c->theme);
    memset(c, 0, sizeof *c);
}

static mml_status mmlr__parse_clicks(const char *buf, size_t n, const char *fname, const mmlr__emb *ue,
                                     const mmlr__emb *ie, mmlr__clicks *c) {
    enum { MAXC = 64 };
    mml__lines L;
    const char *s, *e, *fs[MAXC], *fe[MAXC];
    char q[64];
    int nf, ncol, j, cu = -1, ci = -1, ct = -1;
    int64_t cap = mml__count_lines(buf, n), v[3], ur, ir;
    memset(c, 0, sizeof *c);
    mml__lines_init(&L, buf, n, fname);
    if (!mml__next_line(&L, &s, &e)) return mml__fail(MML_ERR_FORMAT, "%s: empty file", fname);
    ncol = mml__fields(s, e, ",", 1, fs, fe, MAXC);
    for (j = 0; j < ncol && j < MAXC; j++) {
        if (mmlr__name_is(fs[j], fe[j], "user_id")) cu = j;
        else if (mmlr__name_is(fs[j], fe[j], "item_id")) ci = j;
        else if (mmlr__name_is(fs[j], fe[j], "theme_id")) ct = j;
    }
    if (ncol > MAXC || cu < 0 || ci < 0 || ct < 0)
        return mml__fail(MML_ERR_FORMAT, "%s:1: header must name user_id, item_id and theme_id columns, got %s", fname,
                         mml__q(s, e, q, sizeof q));
    c->urow = (int32_t *)mml__alloc((size_t)cap * 4);
    c->irow = (int32_t *)mml__alloc((size_t)cap * 4);
    c->theme = (int64_t *)mml__alloc((size_t)cap * 8);
    if (!c->urow || !c->irow || !c->theme) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", fname);
    while (mml__next_line(&L, &s, &e)) {
        if (s == e && L.p >= L.end) break;
        nf = mml__fields(s, e, ",", 1, fs, fe, MAXC);
        if (nf != ncol)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected %d columns as in the header, got %d%s", fname, L.line, ncol,
                             nf, L.last_unterminated && nf < ncol ? " (truncated last line)" : "");
        for (j = 0; j < 3; j++) {
            int col = j == 0 ? cu : j == 1 ? ci : ct;
            mml_status st = mmlr__field_id(&L, j == 0 ? "user_id" : j == 1 ? "item_id" : "theme_id", fs[col], fe[col],
                                           MMLR__RAW_ID_MAX, &v[j]);
            if (st) return st;
        }
        ur = mmlr__imap_get(&ue->map, v[0]);
        ir = mmlr__imap_get(&ie->map, v[1]);
        if (ur < 0 || ir < 0) continue; /* no pretrained embedding: dropped, as in the paper */
        c->urow[c->n] = (int32_t)ur;
        c->irow[c->n] = (int32_t)ir;
        c->theme[c->n] = v[2];
        c->n++;
    }
    return MML_OK;
}

/* Dense ids for the embedding rows that are used, ascending by raw id;
 * also copies those rows into a fresh [n_used, dim] table. */
typedef struct mmlr__rawrow {
    int64_t raw, row;
} mmlr__rawrow;

static int mmlr__cmp_rawrow(const void *a, const void *b) {
    int64_t x = ((const mmlr__rawrow *)a)->raw, y = ((const mmlr__rawrow *)b)->raw;
    return (x > y) - (x < y);
}

static mml_status mmlr__dense_rows(const mmlr__emb *m, const int32_t *row_of, int64_t n, int32_t *dense_out,
                                   int32_t *n_used, float **table) {
    int32_t *dense_of_row = (int32_t *)mml__alloc((size_t)m->rows * 4 + 4);
    mmlr__rawrow *used = (mmlr__rawrow *)mml__alloc((size_t)m->rows * sizeof(mmlr__rawrow) + 16);
    int64_t i, nu = 0;
    mml_status st = MML_OK;
    if (!dense_of_row || !used) {
        st = mml__fail(MML_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < n; i++) dense_of_row[row_of[i]] = 1;
    for (i = 0; i < (int64_t)m->map.cap; i++) {
        if (m->map.s[i].key < 0 || !dense_of_row[m->map.s[i].val]) continue;
        used[nu].raw = m->map.s[i].key;
        used[nu].row = m->map.s[i].val;
        nu++;
    }
    qsort(used, (size_t)nu, sizeof *used, mmlr__cmp_rawrow);
    *table = (float *)mml__alloc((size_t)nu * (size_t)m->dim * sizeof(float) + 4);
    if (!*table) {
        st = mml__fail(MML_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < nu; i++) {
        dense_of_row[used[i].row] = (int32_t)i;
        memcpy(*table + (size_t)i * (size_t)m->dim, m->v + (size_t)used[i].row * (size_t)m->dim,
               (size_t)m->dim * sizeof(float));
    }
    for (i = 0; i < n; i++) dense_out[i] = dense_of_row[row_of[i]];
    *n_used = (int32_t)nu;
done:
    mml__free(dense_of_row);
    mml__free(used);
    return st;
}

/* Positives (sorted unique keys dom|user|item) -> positives + sampled
 * negatives, appended to r (dom, label, and dense ids in uraw/iraw). */
static mml_status mmlr__taobao_sample(const uint64_t *key, int64_t nk, int32_t nd, int32_t nu, int32_t ni,
                                      uint64_t seed, mmlr__raw *r, double *ratio_out) {
    int32_t *pool = (int32_t *)mml__alloc((size_t)nk * 4 + 4), *cand = NULL;
    int64_t *pool_start = (int64_t *)mml__alloc(((size_t)nd + 1) * 8);
    int32_t *mark = (int32_t *)mml__alloc((size_t)ni * 4);
    int64_t *ustamp = (int64_t *)mml__alloc((size_t)ni * 8);
    int64_t i, j, total = 0, token = 0, a, b;
    uint64_t rng = seed ^ 0x7A0BA0D47A0BA0DBull;
    int32_t d;
    mml_status st = MML_OK;
    (void)nu;
    if (!pool || !pool_start || !mark || !ustamp) {
        st = mml__fail(MML_ERR_NOMEM, "taobao: out of memory");
        goto done;
    }
    for (i = 0; i < ni; i++) {
        mark[i] = -1;
        ustamp[i] = -1;
    }
    for (d = 0; d < nd; d++) ratio_out[d] = 0.2 + 0.3 * mml__rng_uniform(&rng);
    /* pass 1: item pool of each theme (order of first appearance), sample count */
    for (i = 0, d = 0; d < nd; d++) {
        pool_start[d + 1] = pool_start[d];
        for (a = i; i < nk && (int32_t)(key[i] / ((uint64_t)nu * (uint64_t)ni)) == d; i++) {
            int32_t it = (int32_t)(key[i] % (uint64_t)ni);
            if (mark[it] != d) {
                mark[it] = d;
                pool[pool_start[d + 1]++] = it;
            }
        }
        for (j = a; j < i; j = b) {
            uint64_t ukey = key[j] / (uint64_t)ni;
            int64_t np, nn, avail;
            for (b = j; b < i && key[b] / (uint64_t)ni == ukey; b++) {
            }
            np = b - j;
            avail = (pool_start[d + 1] - pool_start[d]) - np;
            nn = (int64_t)floor((double)np / ratio_out[d] + 0.5);
            total += np + (nn < avail ? nn : avail);
        }
    }
    if ((st = mmlr__raw_alloc(r, total)) != MML_OK) goto done;
    cand = (int32_t *)mml__alloc((size_t)nk * 4 + 4);
    if (!cand) {
        st = mml__fail(MML_ERR_NOMEM, "taobao: out of memory");
        goto done;
    }
    /* pass 2: emit positives, then negatives without replacement */
    for (i = 0; i < nk; i = b) {
        uint64_t ukey = key[i] / (uint64_t)ni;
        int32_t u = (int32_t)(ukey % (uint64_t)nu);
        const int32_t *pl;
        int64_t np, nn, avail, pn;
        d = (int32_t)(ukey / (uint64_t)nu);
        pl = pool + pool_start[d];
        pn = pool_start[d + 1] - pool_start[d];
        token++;
        for (b = i; b < nk && key[b] / (uint64_t)ni == ukey; b++) {
            int32_t it = (int32_t)(key[b] % (uint64_t)ni);
            ustamp[it] = token;
            r->uraw[r->n] = u;
            r->iraw[r->n] = it;
            r->dom[r->n] = d;
            r->label[r->n] = 1.0f;
            r->n++;
        }
        np = b - i;
        avail = pn - np;
        nn = (int64_t)floor((double)np / ratio_out[d] + 0.5);
        if (nn > avail) nn = avail;
        if (nn * 2 <= avail) {
            /* sparse: rejection sampling, at least half of the pool is free */
            for (j = 0; j < nn;) {
                int32_t it = pl[mml__rng_below(&rng, (uint64_t)pn)];
                if (ustamp[it] == token) continue;
                ustamp[it] = token;
                r->uraw[r->n] = u;
                r->iraw[r->n] = it;
                r->dom[r->n] = d;
                r->label[r->n] = 0.0f;
                r->n++;
                j++;
            }
        } else {
            /* dense: partial Fisher-Yates over the free items */
            int64_t nc = 0;
            for (j = 0; j < pn; j++)
                if (ustamp[pl[j]] != token) cand[nc++] = pl[j];
            for (j = 0; j < nn; j++) {
                int64_t x = j + (int64_t)mml__rng_below(&rng, (uint64_t)(nc - j));
                int32_t t = cand[x];
                cand[x] = cand[j];
                cand[j] = t;
                r->uraw[r->n] = u;
                r->iraw[r->n] = t;
                r->dom[r->n] = d;
                r->label[r->n] = 0.0f;
                r->n++;
            }
        }
    }
done:
    mml__free(pool);
    mml__free(cand);
    mml__free(pool_start);
    mml__free(mark);
    mml__free(ustamp);
    return st;
}

/* Themes: distinct ids ascending, first n_themes kept; clicks of other themes
 * get dom -1. Returns the number of domains. */
static mml_status mmlr__select_themes(const mmlr__clicks *c, int n_themes, int32_t *dom, int32_t *nd_out,
                                      int64_t **theme_ids) {
    mmlr__imap m;
    int64_t *keys = NULL, i, k = 0, old;
    mml_status st = mmlr__imap_init(&m, 1024);
    if (st) return st;
    for (i = 0; i < c->n; i++)
        if ((st = mmlr__imap_put(&m, c->theme[i], 0, &old)) != MML_OK) goto done;
    keys = (int64_t *)mml__alloc(m.n * 8 + 8);
    if (!keys) {
        st = mml__fail(MML_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < (int64_t)m.cap; i++)
        if (m.s[i].key >= 0) keys[k++] = m.s[i].key;
    qsort(keys, (size_t)k, sizeof(int64_t), mmlr__cmp_i64);
    if (n_themes > 0 && k > n_themes) k = n_themes;
    mmlr__imap_free(&m);
    if ((st = mmlr__imap_init(&m, (uint64_t)k)) != MML_OK) goto done;
    for (i = 0; i < k; i++)
        if ((st = mmlr__imap_put(&m, keys[i], i, &old)) != MML_OK) goto done;
    for (i = 0; i < c->n; i++) dom[i] = (int32_t)mmlr__imap_get(&m, c->theme[i]);
    *nd_out = (int32_t)k;
    *theme_ids = keys;
    keys = NULL;
done:
    mml__free(keys);
    mmlr__imap_free(&m);
    return st;
}

static mml_status mmlr_taobao_load(const char *raw_dir, int n_themes, uint64_t seed, mml_data_t *out) {
    char path[MML__PATH_MAX], name[64];
    mml__buf b;
    mmlr__emb ue, ie;
    mmlr__clicks c;
    mmlr__raw r;
    int32_t *dom = NULL, *du = NULL, *di = NULL, *u32 = NULL, *i32 = NULL, nd = 0, nu = 0, ni = 0, k;
    int64_t *theme_ids = NULL, i, nk = 0;
    uint64_t *key = NULL, t;
    float *utab = NULL, *itab = NULL;
    double *ratio = NULL;
    int bits = 0;
    int32_t dim = 0;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mmlr_taobao_load: out is NULL");
    memset(out, 0, sizeof *out);
    memset(&ue, 0, sizeof ue);
    memset(&ie, 0, sizeof ie);
    memset(&c, 0, sizeof c);
    memset(&r, 0, sizeof r);
    if (!raw_dir || n_themes < 0) return mml__fail(MML_ERR_ARG, "mmlr_taobao_load: bad argument");
    if ((st = mmlr__raw_dir_ok(raw_dir)) != MML_OK) return st;
    if ((st = mml__join(path, raw_dir, "user_embedding.csv")) != MML_OK) goto done;
    if ((st = mml__read_file(path, &b)) != MML_OK) goto done;
    st = mmlr__parse_emb_csv(b.p, b.n, path, &ue);
    mml__buf_free(&b);
    if (st) goto done;
    if ((st = mml__join(path, raw_dir, "item_embedding.csv")) != MML_OK) goto done;
    if ((st = mml__read_file(path, &b)) != MML_OK) goto done;
    st = mmlr__parse_emb_csv(b.p, b.n, path, &ie);
    mml__buf_free(&b);
    if (st) goto done;
    if (ue.dim != ie.dim) {
        st = mml__fail(MML_ERR_FORMAT, "%s: item embeddings have dim %d but user embeddings %d", path, ie.dim, ue.dim);
        goto done;
    }
    if ((st = mml__join(path, raw_dir, "theme_click_log.csv")) != MML_OK) goto done;
    if ((st = mml__read_file(path, &b)) != MML_OK) goto done;
    st = mmlr__parse_clicks(b.p, b.n, path, &ue, &ie, &c);
    mml__buf_free(&b);
    if (st) goto done;
    if (c.n == 0) {
        st = mml__fail(MML_ERR_FORMAT, "%s: no click has both a user and an item embedding", path);
        goto done;
    }
    dom = (int32_t *)mml__alloc((size_t)c.n * 4);
    if (!dom) {
        st = mml__fail(MML_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = mmlr__select_themes(&c, n_themes, dom, &nd, &theme_ids)) != MML_OK) goto done;
    /* keep the selected themes' clicks, compacting in place */
    for (i = 0; i < c.n; i++) {
        if (dom[i] < 0) continue;
        c.urow[nk] = c.urow[i];
        c.irow[nk] = c.irow[i];
        dom[nk] = dom[i];
        nk++;
    }
    du = (int32_t *)mml__alloc((size_t)nk * 4);
    di = (int32_t *)mml__alloc((size_t)nk * 4);
    key = (uint64_t *)mml__alloc((size_t)nk * 8);
    if (!du || !di || !key) {
        st = mml__fail(MML_ERR_NOMEM, "out of memory");
        goto done;
    }
    dim = ue.dim;
    if ((st = mmlr__dense_rows(&ue, c.urow, nk, du, &nu, &utab)) != MML_OK) goto done;
    if ((st = mmlr__dense_rows(&ie, c.irow, nk, di, &ni, &itab)) != MML_OK) goto done;
    mmlr__emb_free(&ue);
    mmlr__emb_free(&ie);
    if (!mml__mul_ok((uint64_t)nd, (uint64_t)nu, UINT64_MAX, &t) || !mml__mul_ok(t, (uint64_t)ni, UINT64_MAX, &t)) {
        st = mml__fail(MML_ERR_ARG, "taobao: themes x users x items exceeds 2^64");
        goto done;
    }
    while (bits < 64 && (t - 1) >> bits) bits++;
    for (i = 0; i < nk; i++) key[i] = ((uint64_t)dom[i] * (uint64_t)nu + (uint64_t)du[i]) * (uint64_t)ni + (uint64_t)di[i];
    if ((st = mmlr__radix_u64(key, nk, bits)) != MML_OK) goto done;
    {
        int64_t w = 0;
        for (i = 0; i < nk; i++)
            if (w == 0 || key[i] != key[w - 1]) key[w++] = key[i];
        nk = w;
    }
    ratio = (double *)mml__alloc((size_t)nd * sizeof(double));
    if (!ratio) {
        st = mml__fail(MML_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = mmlr__taobao_sample(key, nk, nd, nu, ni, seed, &r, ratio)) != MML_OK) goto done;
    u32 = (int32_t *)mml__alloc((size_t)r.n * 4 + 4);
    i32 = (int32_t *)mml__alloc((size_t)r.n * 4 + 4);
    if (!u32 || !i32) {
        st = mml__fail(MML_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < r.n; i++) {
        u32[i] = (int32_t)r.uraw[i];
        i32[i] = (int32_t)r.iraw[i];
    }
    if ((st = mml_data_split(r.n, u32, i32, r.dom, r.label, nu, ni, nd, seed, out)) != MML_OK) goto done;
    for (k = 0; k < nd && !st; k++) {
        snprintf(name, sizeof name, "theme_%lld", (long long)theme_ids[k]);
        st = mml__set_name(out, k, name, strlen(name));
    }
    if (st) goto done;
    out->pretrained_dim = dim;
    out->user_emb = utab;
    out->item_emb = itab;
    utab = itab = NULL;
done:
    mmlr__emb_free(&ue);
    mmlr__emb_free(&ie);
    mmlr__clicks_free(&c);
    mmlr__raw_free(&r);
    mml__free(dom);
    mml__free(du);
    mml__free(di);
    mml__free(u32);
    mml__free(i32);
    mml__free(key);
    mml__free(theme_ids);
    mml__free(utab);
    mml__free(itab);
    mml__free(ratio);
    if (st) mml_data_free(out);
    return st;
}

// >>taobao-synthetic -------------------------------------------------------

/* Fixed 6 decimals, |v| < 1e9 (embeddings are small). */
static char *mmlr__put_f6(char *p, float v) {
    uint64_t x;
    int j;
    char t[6];
    if (v < 0) {
        *p++ = '-';
        v = -v;
    }
    x = (uint64_t)((double)v * 1e6 + 0.5);
    p = mml__put_u64(p, x / 1000000);
    *p++ = '.';
    x %= 1000000;
    for (j = 5; j >= 0; j--) {
        t[j] = (char)('0' + x % 10);
        x /= 10;
    }
    memcpy(p, t, 6);
    return p + 6;
}

typedef struct mmlr__bw {
    mml__afile w;
    char *buf, *p;
    mml_status st;
} mmlr__bw;

enum { MMLR__BW_CAP = 1 << 20 };

static void mmlr__bw_flush(mmlr__bw *b, int force) {
    if (b->st) return;
    if (force || b->p - b->buf > MMLR__BW_CAP - 4096) {
        b->st = mml__afile_write(&b->w, b->buf, (size_t)(b->p - b->buf));
        b->p = b->buf;
    }
}

static mml_status mmlr__bw_open(mmlr__bw *b, const char *path) {
    memset(b, 0, sizeof *b);
    b->buf = (char *)MOEMLORA_MALLOC(MMLR__BW_CAP);
    if (!b->buf) return mml__fail(MML_ERR_NOMEM, "out of memory");
    b->p = b->buf;
    b->st = mml__afile_open(&b->w, path);
    if (b->st) {
        MOEMLORA_FREE(b->buf);
        b->buf = NULL;
    }
    return b->st;
}

static mml_status mmlr__bw_close(mmlr__bw *b) {
    mml_status st;
    mmlr__bw_flush(b, 1);
    MOEMLORA_FREE(b->buf);
    b->buf = NULL;
    if (b->st) {
        mml__afile_abort(&b->w);
        return b->st;
    }
    st = mml__afile_commit(&b->w);
    return st;
}

static mml_status mmlr__gen_emb(const char *path, const char *idname, int64_t rows, int64_t base, int64_t step,
                                int32_t dim, uint64_t *rng) {
    mmlr__bw b;
    int64_t i;
    int32_t j;
    if (mmlr__bw_open(&b, path)) return b.st;
    b.p += snprintf(b.p, 64, "%.32s", idname);
    for (j = 0; j < dim; j++) {
        b.p += snprintf(b.p, 64, ",e%d", j);
        mmlr__bw_flush(&b, 0);
    }
    *b.p++ = '\n';
    for (i = 0; i < rows && !b.st; i++) {
        b.p = mml__put_u64(b.p, (uint64_t)(base + step * i));
        for (j = 0; j < dim; j++) {
            *b.p++ = ',';
            b.p = mmlr__put_f6(b.p, 0.1f * mml__rng_normal(rng));
            if ((j & 63) == 63) mmlr__bw_flush(&b, 0);
        }
        *b.p++ = '\n';
        mmlr__bw_flush(&b, 0);
    }
    return mmlr__bw_close(&b);
}

/* One size argument within [lo, hi]. */
static mml_status mmlr__size_arg(const char *name, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo) return mml__fail(MML_ERR_ARG, "%s %lld is too small (at least %lld)", name, (long long)v, (long long)lo);
    if (v > hi) return mml__fail(MML_ERR_ARG, "%s %lld is too large (at most %lld)", name, (long long)v, (long long)hi);
    return MML_OK;
}

/* Bytes of the synthetic set: each file's rows times a row's largest width
 * (embedding values print as "-0.123456", 9 characters and a comma). */
static void mmlr__synthetic_bytes(int64_t n_users, int64_t n_items, int32_t n_themes, int64_t n_clicks, int32_t dim,
                                  double bytes[3]) {
    double val = 10.0 * dim + 2;
    bytes[0] = 16.0 * dim + (double)n_users * (mml__digits(100000 + 4 * (uint64_t)n_users) + val);
    bytes[1] = 16.0 * dim + (double)n_items * (mml__digits(5000000 + 8 * (uint64_t)n_items) + val);
    bytes[2] = 32.0 + (double)n_clicks * (mml__digits(100000 + 4 * (uint64_t)n_users) +
                                          mml__digits(5000000 + 8 * (uint64_t)n_items) +
                                          mml__digits(1000 + 17 * (uint64_t)n_themes) + 3);
}

/* The three files replace any at their paths one at a time, so the space
 * needed is the largest running total of new bytes less those replaced. */
static mml_status mmlr__synthetic_space(const char *dir, const char *const names[3], const double bytes[3]) {
    char path[MML__PATH_MAX];
    struct stat st;
    double net = 0, peak = 0;
    int i;
    for (i = 0; i < 3; i++) {
        if (mml__join(path, dir, names[i]) != MML_OK) return MML_ERR_ARG;
        net += bytes[i] + 4096;
        if (net > peak) peak = net;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) net -= (double)st.st_size;
    }
    return mml__check_space(dir, peak);
}

static mml_status mmlr_taobao_write_synthetic(const char *dir, int64_t n_users, int64_t n_items, int32_t n_themes,
                                              int64_t n_clicks, int32_t dim, uint64_t seed) {
    static const char *const names[3] = {"user_embedding.csv", "item_embedding.csv", "theme_click_log.csv"};
    char path[MML__PATH_MAX];
    double bytes[3];
    mmlr__bw b;
    uint64_t rng = seed;
    int64_t i, per;
    mml_status st;
    if (!dir) return mml__fail(MML_ERR_ARG, "mmlr_taobao_write_synthetic: dir is NULL");
    if ((st = mmlr__size_arg("n_users", n_users, 1, INT32_MAX / 4)) != MML_OK ||
        (st = mmlr__size_arg("n_items", n_items, 1, INT32_MAX / 4)) != MML_OK ||
        (st = mmlr__size_arg("n_themes", n_themes, 1, 1000000)) != MML_OK ||
        (st = mmlr__size_arg("n_clicks", n_clicks, 0, INT32_MAX)) != MML_OK ||
        (st = mmlr__size_arg("dim", dim, 1, 65536)) != MML_OK)
        return st;
    if (n_items < n_themes)
        return mml__fail(MML_ERR_ARG, "n_items %lld is fewer than n_themes %d (each theme needs an item)",
                         (long long)n_items, n_themes);
    mmlr__synthetic_bytes(n_users, n_items, n_themes, n_clicks, dim, bytes);
    if ((st = mmlr__synthetic_space(dir, names, bytes)) != MML_OK) return st;
    if ((st = mml__mkdirs(dir)) != MML_OK) return st;
    /* sparse raw ids, so that the loader's re-indexing is exercised */
    if ((st = mml__join(path, dir, names[0])) != MML_OK) return st;
    if ((st = mmlr__gen_emb(path, "user_id", n_users, 100000, 3, dim, &rng)) != MML_OK) return st;
    if ((st = mml__join(path, dir, names[1])) != MML_OK) return st;
    if ((st = mmlr__gen_emb(path, "item_id", n_items, 5000000, 7, dim, &rng)) != MML_OK) return st;
    if ((st = mml__join(path, dir, names[2])) != MML_OK) return st;
    if (mmlr__bw_open(&b, path)) return b.st;
    b.p += snprintf(b.p, 64, "user_id,item_id,theme_id\n");
    per = n_items / n_themes;
    for (i = 0; i < n_clicks && !b.st; i++) {
        /* 2% of users and items lack embeddings; items mostly from the theme's own slice */
        int64_t t = (int64_t)mml__rng_below(&rng, (uint64_t)n_themes);
        int64_t u = (int64_t)mml__rng_below(&rng, (uint64_t)(n_users + n_users / 50 + 1));
        int64_t it = mml__rng_below(&rng, 100) < 90 ? t + n_themes * (int64_t)mml__rng_below(&rng, (uint64_t)per)
                                                      : (int64_t)mml__rng_below(&rng, (uint64_t)(n_items + n_items / 50 + 1));
        b.p = mml__put_u64(b.p, (uint64_t)(100000 + 3 * u));
        *b.p++ = ',';
        b.p = mml__put_u64(b.p, (uint64_t)(5000000 + 7 * it));
        *b.p++ = ',';
        b.p = mml__put_u64(b.p, (uint64_t)(1000 + 17 * t));
        *b.p++ = '\n';
        mmlr__bw_flush(&b, 0);
    }
    return mmlr__bw_close(&b);
}

// >>csv --------------------------------------------------------------------

/* Schema files: "label", "delimiter" and "field" lines (docs/DATA.md). */

/* The next blank-separated token of [*p, e) as [*s, *t); 0 at the end of the
 * line or at a '#' that starts a token (the rest is a comment). */
static int mmlr__tok(const char **p, const char *e, const char **s, const char **t) {
    const char *q = *p;
    while (q < e && (*q == ' ' || *q == '\t')) q++;
    if (q >= e || *q == '#') {
        *p = e;
        return 0;
    }
    *s = q;
    while (q < e && *q != ' ' && *q != '\t') q++;
    *t = q;
    *p = q;
    return 1;
}

static int mmlr__tok_is(const char *s, const char *t, const char *word) {
    size_t n = strlen(word);
    return (size_t)(t - s) == n && memcmp(s, word, n) == 0;
}

/* [s, t) into dst (cap bytes with the NUL); 0 if it does not fit. */
static int mmlr__tok_copy(char *dst, size_t cap, const char *s, const char *t) {
    if ((size_t)(t - s) >= cap) return 0;
    memcpy(dst, s, (size_t)(t - s));
    dst[t - s] = 0;
    return 1;
}

/* An integer option value in [lo, hi], or the reason naming file:line. */
static mml_status mmlr__opt_int(const mml__lines *L, const char *key, const char *s, const char *t, int64_t lo,
                                int64_t hi, int64_t *v) {
    char q[64];
    if (!mml__to_i64(s, t, v) || *v < lo || *v > hi)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s=%s: must be an integer in %lld..%lld", L->file, L->line, key,
                         mml__num(s, t, q, sizeof q), (long long)lo, (long long)hi);
    return MML_OK;
}

static const char *mmlr__kind_name(mml_field_kind k) {
    return k == MML_FIELD_CATEGORICAL ? "categorical" : k == MML_FIELD_MULTI_HOT ? "multi_hot" : "numeric";
}

/* One "key=value" (or "domain") option of field f. */
static mml_status mmlr__field_opt(mmlr_csv_schema *o, int f, const mml__lines *L, const char *s, const char *t) {
    mml_field_t *fd = &o->s.field[f];
    mmlr_csv_field *cf = &o->col[f];
    const char *eq = (const char *)memchr(s, '=', (size_t)(t - s)), *v = eq ? eq + 1 : t, *ke = eq ? eq : t;
    int cat = fd->kind != MML_FIELD_NUMERIC, multi = fd->kind == MML_FIELD_MULTI_HOT;
    const char *need = NULL;
    int64_t x;
    char q[64];
    mml_status st = MML_OK;
    if (!eq && mmlr__tok_is(s, t, "domain")) {
        if (fd->kind != MML_FIELD_CATEGORICAL) need = "categorical";
        else if (o->s.domain >= 0)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: a second domain column \"%s\" (the domain is already \"%s\", line %d)",
                             L->file, L->line, cf->column, o->col[o->s.domain].column, o->col[o->s.domain].line);
        else o->s.domain = f;
    } else if (!eq) {
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: option %s is not key=value", L->file, L->line, fd->name,
                         mml__q(s, t, q, sizeof q));
    } else if (mmlr__tok_is(s, ke, "vocab")) {
        if (!cat) need = "categorical or multi_hot";
        else if (!mmlr__tok_is(v, t, "auto"))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: vocab=%s: only vocab=auto (or hash=N) is known",
                             L->file, L->line, fd->name, mml__num(v, t, q, sizeof q));
        else fd->hash_buckets = fd->vocab = 0;
    } else if (mmlr__tok_is(s, ke, "hash")) {
        if (!cat) need = "categorical or multi_hot";
        else if (!(st = mmlr__opt_int(L, "hash", v, t, 1, 1 << 30, &x))) fd->hash_buckets = fd->vocab = (int32_t)x;
    } else if (mmlr__tok_is(s, ke, "dim")) {
        if (!cat) need = "categorical or multi_hot";
        else if (!(st = mmlr__opt_int(L, "dim", v, t, 1, 1024, &x))) fd->dim = (int32_t)x;
    } else if (mmlr__tok_is(s, ke, "max_len")) {
        if (!multi) need = "multi_hot";
        else if (!(st = mmlr__opt_int(L, "max_len", v, t, 1, 4096, &x))) fd->max_len = (int32_t)x;
    } else if (mmlr__tok_is(s, ke, "sep")) {
        if (!multi) need = "multi_hot";
        else if (t - v != 1)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: sep= takes one character", L->file, L->line, fd->name);
        else cf->sep = *v;
    } else if (mmlr__tok_is(s, ke, "pooling")) {
        if (!multi) need = "multi_hot";
        else if (mmlr__tok_is(v, t, "mean")) fd->pooling = MML_POOL_MEAN;
        else if (mmlr__tok_is(v, t, "sum")) fd->pooling = MML_POOL_SUM;
        else return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: pooling must be mean or sum", L->file, L->line, fd->name);
    } else if (mmlr__tok_is(s, ke, "norm")) {
        if (cat) need = "numeric";
        else if (mmlr__tok_is(v, t, "none")) fd->norm = MML_NORM_NONE;
        else if (mmlr__tok_is(v, t, "minmax")) fd->norm = MML_NORM_MINMAX;
        else if (mmlr__tok_is(v, t, "zscore")) fd->norm = MML_NORM_ZSCORE;
        else return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: norm must be none, minmax or zscore", L->file, L->line, fd->name);
    } else if (mmlr__tok_is(s, ke, "missing")) {
        if (cat) need = "numeric";
        else if (mml__parse_f32(v, t, &cf->missing) != t || !isfinite(cf->missing))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: missing=%s is not a number", L->file, L->line,
                             fd->name, mml__num(v, t, q, sizeof q));
        else cf->has_missing = 1;
    } else if (mmlr__tok_is(s, ke, "column")) {
        if (v == t || !mmlr__tok_copy(cf->column, sizeof cf->column, v, t))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: column= needs a name of 1..%d bytes", L->file,
                             L->line, fd->name, (int)sizeof cf->column - 1);
    } else {
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: unknown option %s", L->file, L->line, fd->name,
                         mml__q(s, ke, q, sizeof q));
    }
    if (need)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: option %s is for %s fields, not %s", L->file, L->line,
                         fd->name, mml__q(s, ke, q, sizeof q), need, mmlr__kind_name(fd->kind));
    return st;
}

/* "field NAME KIND [options]" */
static mml_status mmlr__schema_field(mmlr_csv_schema *o, const mml__lines *L, const char *p, const char *e) {
    const char *s, *t;
    char q[64];
    int f = o->s.n_fields;
    mml_field_t *fd = &o->s.field[f];
    mml_status st;
    if (f >= MML_MAX_FIELDS)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: more than %d fields", L->file, L->line, MML_MAX_FIELDS);
    if (!mmlr__tok(&p, e, &s, &t))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field needs a name and a kind", L->file, L->line);
    if (!mmlr__tok_copy(fd->name, sizeof fd->name, s, t) || !mml__name_ok(fd->name))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field name %s: 1..%d characters of A-Za-z0-9_.- (column= takes any header name)",
                         L->file, L->line, mml__q(s, t, q, sizeof q), MML_FIELD_NAME_MAX - 1);
    for (int g = 0; g < f; g++)
        if (!strcmp(o->s.field[g].name, fd->name))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s declared twice (first at line %d)", L->file, L->line,
                             fd->name, o->col[g].line);
    memcpy(o->col[f].column, fd->name, strlen(fd->name) + 1);
    o->col[f].line = (int)L->line;
    o->col[f].sep = '|';
    fd->scale = 1.0f;
    if (!mmlr__tok(&p, e, &s, &t))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s needs a kind (categorical, multi_hot or numeric)", L->file,
                         L->line, fd->name);
    if (mmlr__tok_is(s, t, "categorical")) fd->kind = MML_FIELD_CATEGORICAL;
    else if (mmlr__tok_is(s, t, "multi_hot") || mmlr__tok_is(s, t, "multi-hot")) fd->kind = MML_FIELD_MULTI_HOT;
    else if (mmlr__tok_is(s, t, "numeric")) fd->kind = MML_FIELD_NUMERIC;
    else
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: unknown kind %s (categorical, multi_hot or numeric)",
                         L->file, L->line, fd->name, mml__q(s, t, q, sizeof q));
    o->s.n_fields = f + 1;
    while (mmlr__tok(&p, e, &s, &t))
        if ((st = mmlr__field_opt(o, f, L, s, t)) != MML_OK) return st;
    if (fd->kind == MML_FIELD_MULTI_HOT && fd->max_len < 1)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: multi_hot needs max_len=N", L->file, L->line, fd->name);
    if (o->s.domain == f && fd->hash_buckets)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: the domain column takes vocab=auto, not hash=", L->file,
                         L->line, fd->name);
    return MML_OK;
}

/* "label COLUMN [OP NUMBER]" */
static mml_status mmlr__schema_label(mmlr_csv_schema *o, const mml__lines *L, const char *p, const char *e) {
    static const char *const ops[] = {">", ">=", "<", "<=", "=="};
    const char *s, *t;
    char q[64];
    double thr;
    if (o->label[0]) return mml__fail(MML_ERR_FORMAT, "%s:%lld: a second label line", L->file, L->line);
    if (!mmlr__tok(&p, e, &s, &t) || !mmlr__tok_copy(o->label, sizeof o->label, s, t))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: label needs a column name (1..255 bytes)", L->file, L->line);
    if (!mmlr__tok(&p, e, &s, &t)) return MML_OK;
    o->label_op = -1;
    for (int k = 0; k < 5; k++)
        if (mmlr__tok_is(s, t, ops[k])) o->label_op = MMLR_LABEL_GT + k;
    if (o->label_op < 0)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: label %s %s: the comparison must be >, >=, <, <= or ==", L->file,
                         L->line, o->label, mml__q(s, t, q, sizeof q));
    char num[64];
    if (!mmlr__tok(&p, e, &s, &t) || !mmlr__tok_copy(num, sizeof num, s, t) || mml__parse_dbl(num, &thr) ||
        !isfinite(thr) || mmlr__tok(&p, e, &s, &t))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: label %s: expected one number after the comparison", L->file,
                         L->line, o->label);
    o->label_thr = thr;
    return MML_OK;
}

static mml_status mmlr__schema_delim(mmlr_csv_schema *o, const mml__lines *L, const char *p, const char *e) {
    const char *s, *t;
    if (!mmlr__tok(&p, e, &s, &t) || (!mmlr__tok_is(s, t, "comma") && !mmlr__tok_is(s, t, "tab") &&
                                      !mmlr__tok_is(s, t, "semicolon") && !mmlr__tok_is(s, t, "auto")))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: delimiter must be comma, tab, semicolon or auto", L->file, L->line);
    o->delim = *s == 'c' ? ',' : *s == 't' ? '\t' : *s == 's' ? ';' : 0;
    return MML_OK;
}

static mml_status mmlr_schema_parse(const char *text, size_t n, const char *fname, mmlr_csv_schema *o) {
    mml__lines L;
    const char *s, *e, *ts, *te;
    mml_status st = MML_OK;
    if (!o || (!text && n)) return mml__fail(MML_ERR_ARG, "mmlr_schema_parse: NULL argument");
    memset(o, 0, sizeof *o);
    o->s.domain = -1;
    snprintf(o->file, sizeof o->file, "%s", fname ? fname : "schema");
    const char *nul = text ? (const char *)memchr(text, 0, n) : NULL;
    if (nul) {
        long long line = 1;
        for (const char *p = text; p < nul; p++) line += *p == '\n';
        st = mml__fail(MML_ERR_FORMAT, "%s:%lld: a NUL byte (not a text file)", o->file, line);
    }
    mml__lines_init(&L, text ? text : "", n, o->file);
    while (!st && mml__next_line(&L, &s, &e)) {
        if (!mmlr__tok(&s, e, &ts, &te)) continue;
        else if (mmlr__tok_is(ts, te, "field")) st = mmlr__schema_field(o, &L, s, e);
        else if (mmlr__tok_is(ts, te, "label")) st = mmlr__schema_label(o, &L, s, e);
        else if (mmlr__tok_is(ts, te, "delimiter")) st = mmlr__schema_delim(o, &L, s, e);
        else {
            char q[64];
            st = mml__fail(MML_ERR_FORMAT, "%s:%lld: unknown line %s (field, label or delimiter)", L.file, L.line,
                           mml__q(ts, te, q, sizeof q));
        }
    }
    if (!st && !o->label[0]) st = mml__fail(MML_ERR_FORMAT, "%s: no label line (label COLUMN)", o->file);
    if (!st && o->s.domain < 0)
        st = mml__fail(MML_ERR_FORMAT, "%s: no domain column (mark one categorical field \"domain\")", o->file);
    for (int f = 0; !st && f < o->s.n_fields; f++) {
        if (!strcmp(o->col[f].column, o->label))
            st = mml__fail(MML_ERR_FORMAT, "%s:%d: field %s reads the label column \"%s\"", o->file, o->col[f].line,
                           o->s.field[f].name, o->label);
        for (int g = 0; !st && g < f; g++)
            if (!strcmp(o->col[f].column, o->col[g].column))
                st = mml__fail(MML_ERR_FORMAT, "%s:%d: field %s reads column \"%s\", as field %s does (line %d)",
                               o->file, o->col[f].line, o->s.field[f].name, o->col[f].column, o->s.field[g].name,
                               o->col[g].line);
    }
    if (st) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", mml_last_error());
        memset(o, 0, sizeof *o);
        return mml__fail(st, "%s", tmp);
    }
    return MML_OK;
}

static mml_status mmlr_schema_read(const char *path, mmlr_csv_schema *out) {
    mml__buf b;
    mml_status st;
    if (!path || !out) return mml__fail(MML_ERR_ARG, "mmlr_schema_read: NULL argument");
    if ((st = mml__read_file(path, &b)) != MML_OK) return st;
    st = mmlr_schema_parse(b.p, b.n, path, out);
    mml__buf_free(&b);
    return st;
}

/* ---- CSV loading ---- */

/* The distinct raw strings of one column, numbered in order of first sight.
 * The strings stay in the file buffers; a short one is also kept in its slot
 * (zero-padded), so that a lookup costs one cache miss, not three. */
typedef struct mmlr__dslot {
    uint64_t h;
    int32_t code; /* -1: empty */
    int32_t len;
    uint64_t key[2];
} mmlr__dslot;

typedef struct mmlr__dict {
    mmlr__dslot *slot;
    uint64_t cap;
    const char **str;
    int32_t *len;
    int32_t n, ncap;
    /* The codes of plain integers below nnum (as "0", "17"; not "017", "+1"),
     * by value, -1 for one not seen: an id column costs no hashing or
     * probing, and a table an eighth of the slots' size. Such a value is
     * never looked up among the slots once nnum covers it. */
    int32_t *num;
    uint32_t nnum;
    int32_t n_num; /* codes held in num */
} mmlr__dict;

/* The largest num table: 64 MB. */
#define MMLR__NUM_MAX (1u << 24)

/* Vocabulary tables on 2 MB pages where the system offers them: a TLB miss
 * per lookup is most of a large vocabulary's cost. Not for blocks read or
 * written in order (the file, the columns): there a 2 MB page only costs
 * more to clear. A hint; nothing changes where it is not taken. */
static void mmlr__huge(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, e = ((uintptr_t)p + bytes) & ~(uintptr_t)4095;
    if (bytes >= ((size_t)4 << 20) && e > a) madvise((void *)a, (size_t)(e - a), MADV_HUGEPAGE);
#else
    (void)p, (void)bytes;
#endif
}

static void mmlr__dict_free(mmlr__dict *d) {
    mml__free(d->slot);
    mml__free(d->num);
    mml__free(d->str);
    mml__free(d->len);
    memset(d, 0, sizeof *d);
}

static mml_status mmlr__dict_grow(mmlr__dict *d) {
    uint64_t cap = d->cap ? d->cap * 2 : 1024, i, j;
    mmlr__dslot *ns = (mmlr__dslot *)mml__alloc_from(cap * sizeof *ns, cap * sizeof *ns);
    if (!ns) return mml__fail(MML_ERR_NOMEM, "csv: out of memory for a vocabulary of %d values", d->n);
    mmlr__huge(ns, cap * sizeof *ns);
    for (i = 0; i < cap; i++) ns[i].code = -1;
    for (i = 0; i < d->cap; i++) {
        if (d->slot[i].code < 0) continue;
        j = mml__mix64(d->slot[i].h) & (cap - 1);
        while (ns[j].code >= 0) j = (j + 1) & (cap - 1);
        ns[j] = d->slot[i];
    }
    mml__free(d->slot);
    d->slot = ns;
    d->cap = cap;
    return MML_OK;
}

static mml_status mmlr__dict_push(mmlr__dict *d, const char *s, int32_t len) {
    if (d->n == d->ncap) {
        int32_t nc = d->ncap ? d->ncap * 2 : 1024;
        const char **ns = (const char **)mml__alloc((size_t)nc * sizeof *ns);
        int32_t *nl = (int32_t *)mml__alloc((size_t)nc * sizeof *nl);
        if (!ns || !nl || d->ncap >= (1 << 30)) {
            mml__free(ns);
            mml__free(nl);
            return mml__fail(MML_ERR_NOMEM, "csv: out of memory for a vocabulary of %d values", d->n);
        }
        if (d->n) {
            memcpy(ns, d->str, (size_t)d->n * sizeof *ns);
            memcpy(nl, d->len, (size_t)d->n * sizeof *nl);
        }
        mml__free(d->str);
        mml__free(d->len);
        d->str = ns;
        d->len = nl;
        d->ncap = nc;
    }
    d->str[d->n] = s;
    d->len[d->n] = len;
    d->n++;
    return MML_OK;
}

/* The code of [s, e), a new one for a value not seen before; -1 when out of memory. */
static int32_t mmlr__dict_code(mmlr__dict *d, const char *s, const char *e, uint64_t h) {
    uint64_t i, key[2] = {0, 0};
    int32_t len = (int32_t)(e - s);
    int inl = len <= 16;
    if (inl) memcpy(key, s, (size_t)len);
    if ((uint64_t)(d->n + 1) * 2 > d->cap && mmlr__dict_grow(d)) return -1;
    i = mml__mix64(h) & (d->cap - 1);
    for (;;) {
        mmlr__dslot *sl = &d->slot[i];
        if (sl->code < 0) break;
        if (sl->h == h && sl->len == len &&
            (inl ? sl->key[0] == key[0] && sl->key[1] == key[1] : memcmp(d->str[sl->code], s, (size_t)len) == 0))
            return sl->code;
        i = (i + 1) & (d->cap - 1);
    }
    if (mmlr__dict_push(d, s, len)) return -1;
    d->slot[i].h = h;
    d->slot[i].len = len;
    d->slot[i].key[0] = key[0];
    d->slot[i].key[1] = key[1];
    d->slot[i].code = d->n - 1;
    return d->n - 1;
}

/* [s, e) as a plain integer below MMLR__NUM_MAX: digits only, no leading
 * zero, so that a value has one spelling. Bytes up to lim may be read: with
 * eight of them the digits are checked and summed eight at a time
 * (simdjson's way), without a branch per digit. */
static int mmlr__plain_int(const char *s, const char *e, const char *lim, uint32_t *v) {
    uint32_t x = 0;
    size_t n = (size_t)(e - s);
    if (n - 1 >= 8 || (*s == '0' && n > 1)) return 0; /* n - 1 >= 8: also n == 0 */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (lim - s >= 8) {
        const uint64_t hi = 0xF0F0F0F0F0F0F0F0ull;
        uint64_t w;
        memcpy(&w, s, 8);
        if (n < 8) w = w << (64 - 8 * n) | 0x3030303030303030ull >> 8 * n; /* '0's ahead, to 8 digits */
        if (((w & hi) | (((w + 0x0606060606060606ull) & hi) >> 4)) != 0x3333333333333333ull) return 0;
        w = (w & 0x0F0F0F0F0F0F0F0Full) * 2561 >> 8;
        w = (w & 0x00FF00FF00FF00FFull) * 6553601 >> 16;
        *v = (uint32_t)((w & 0x0000FFFF0000FFFFull) * 42949672960001ull >> 32);
        return *v < MMLR__NUM_MAX;
    }
#else
    (void)lim;
#endif
    for (; s < e; s++) {
        uint32_t d = (uint32_t)(unsigned char)*s - '0';
        if (d > 9) return 0;
        x = x * 10 + d;
    }
    *v = x;
    return x < MMLR__NUM_MAX;
}

/* Widens d's num table to cover v while it stays within 8 entries a code
 * (or 4096 in all); the plain integers seen so far, some of them in the
 * slots, move in. 0 when not widened: v goes to the slots. */
static int mmlr__dict_num_grow(mmlr__dict *d, uint32_t v) {
    uint64_t cap = d->nnum ? d->nnum : 4096;
    uint32_t x;
    int32_t *t, held = 0;
    while (cap <= v) cap *= 2;
    if (cap > MMLR__NUM_MAX || cap > 8 * (uint64_t)d->n + 4096) return 0;
    if (!(t = (int32_t *)mml__alloc_from(cap * 4, cap * 4))) return 0; /* the slots serve as well */
    mmlr__huge(t, cap * 4);
    memset(t, 0xff, cap * 4);
    for (int32_t c = 0; c < d->n; c++)
        if (mmlr__plain_int(d->str[c], d->str[c] + d->len[c], d->str[c] + d->len[c], &x) && x < cap) t[x] = c, held++;
    mml__free(d->num);
    d->num = t;
    d->nnum = (uint32_t)cap;
    d->n_num = held;
    return 1;
}

/* The code of [s, e), the plain integer v; -1 when out of memory. */
static int32_t mmlr__dict_int(mmlr__dict *d, const char *s, const char *e, uint32_t v) {
    if (v >= d->nnum && !mmlr__dict_num_grow(d, v)) return mmlr__dict_code(d, s, e, mml__fnv1a64(s, e));
    if (d->num[v] < 0) {
        if (mmlr__dict_push(d, s, (int32_t)(e - s))) return -1;
        d->num[v] = d->n - 1;
        d->n_num++;
    }
    return d->num[v];
}

/* The code of [s, e) whichever the table (bytes up to lim readable). */
static int32_t mmlr__dict_any(mmlr__dict *d, const char *s, const char *e, const char *lim) {
    uint32_t v;
    return mmlr__plain_int(s, e, lim, &v) ? mmlr__dict_int(d, s, e, v) : mmlr__dict_code(d, s, e, mml__fnv1a64(s, e));
}

/* Asks for the cache line of a key's entry ahead of the lookup: its num
 * entry when it is a plain integer (key its value), else the first slot of
 * hash key. */
static void mmlr__dict_prefetch(const mmlr__dict *d, uint64_t key, int num) {
#if defined(__GNUC__)
    if (num && key < d->nnum) __builtin_prefetch(&d->num[key]);
    else if (!num && d->cap) __builtin_prefetch(&d->slot[mml__mix64(key) & (d->cap - 1)]);
#else
    (void)d, (void)key, (void)num;
#endif
}

/* What a header column feeds. */
enum { MMLR__COL_SKIP = -1, MMLR__COL_LABEL = -2, MMLR__COL_SPLIT = -3 };

typedef struct mmlr__csv {
    const mmlr_csv_schema *sc;
    const mmlr_csv_opts *o;
    int F;
    int64_t n, cap;
    int32_t *code[MML_MAX_FIELDS];  /* categorical, multi-hot: [cap * len] dict codes or hashed ids */
    float *val[MML_MAX_FIELDS];     /* numeric: [cap] */
    mmlr__dict *dict;               /* [F] */
    float *label;
    unsigned char *part;
    int32_t *dom;                   /* dense domains, set after the parse */
    int ncol;
    int *colmap;                    /* per header column: a field, or MMLR__COL_* */
    char delim;
    const char *lim;                /* the end of the line being parsed: bytes up to it may be read */
    int fixed_part;                 /* the split of this file's rows, or -1 */
    char train_delim;               /* the training file's delimiter, for the vocabulary */
    /* the vocabulary lookups of a block of rows wait until the block is
     * split, then run with the slots of later ones prefetched: the cache
     * misses of a large vocabulary overlap instead of adding up */
    struct mmlr__pending *pend;
    int np;
} mmlr__csv;

#define MMLR__BLOCK_ROWS 64
#define MMLR__AHEAD 64

typedef struct mmlr__pending {
    uint64_t key; /* a plain integer's value (num), else the FNV-1a hash */
    const char *a;
    int64_t r;
    int32_t len, f;
    int num;
} mmlr__pending;

static int mmlr__len(const mml_field_t *fd) { return fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1; }

static void mmlr__csv_free(mmlr__csv *C) {
    for (int f = 0; f < MML_MAX_FIELDS; f++) {
        mml__free(C->code[f]);
        mml__free(C->val[f]);
    }
    if (C->dict)
        for (int f = 0; f < C->F; f++) mmlr__dict_free(&C->dict[f]);
    mml__free(C->dict);
    mml__free(C->label);
    mml__free(C->part);
    mml__free(C->dom);
    mml__free(C->colmap);
    mml__free(C->pend);
    memset(C, 0, sizeof *C);
}

static mml_status mmlr__csv_alloc(mmlr__csv *C, int64_t cap) {
    size_t c = (size_t)(cap > 0 ? cap : 1);
    int ok;
    C->cap = cap;
    C->dict = (mmlr__dict *)mml__alloc((size_t)C->F * sizeof(mmlr__dict) + 1);
    C->label = (float *)mml__alloc(c * 4);
    C->part = (unsigned char *)mml__alloc(c);
    C->dom = (int32_t *)mml__alloc(c * 4);
    C->pend = (mmlr__pending *)mml__alloc((size_t)MMLR__BLOCK_ROWS * (size_t)C->F * sizeof(mmlr__pending));
    ok = C->dict && C->label && C->part && C->dom && C->pend;
    for (int f = 0; ok && f < C->F; f++) {
        const mml_field_t *fd = &C->sc->s.field[f];
        size_t bytes = c * 4 * (size_t)mmlr__len(fd);
        if (fd->kind == MML_FIELD_NUMERIC) ok = (C->val[f] = (float *)mml__alloc_from(bytes, bytes)) != NULL;
        else ok = (C->code[f] = (int32_t *)mml__alloc_from(bytes, bytes)) != NULL;
    }
    if (!ok) return mml__fail(MML_ERR_NOMEM, "csv: out of memory for %lld rows", (long long)cap);
    return MML_OK;
}

/* The id of a categorical or multi-hot value: its dict code, or its bucket. */
static int32_t mmlr__csv_id(mmlr__csv *C, int f, const char *a, const char *b) {
    const mml_field_t *fd = &C->sc->s.field[f];
    if (fd->hash_buckets > 0) return mml__hash_bucket(a, b, fd->hash_buckets);
    return mmlr__dict_any(&C->dict[f], a, b, C->lim);
}

static mml_status mmlr__csv_field(mmlr__csv *C, int f, int64_t r, const char *a, const char *b, const char *file,
                                  long long line) {
    const mml_field_t *fd = &C->sc->s.field[f];
    const mmlr_csv_field *cf = &C->sc->col[f];
    char q[64];
    if (fd->kind == MML_FIELD_NUMERIC) {
        float v = cf->missing;
        if (a == b && !cf->has_missing)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: column %s (numeric) is empty (missing=X in the schema reads it as X)",
                             file, line, cf->column);
        if (a != b && (mml__parse_f32(a, b, &v) != b || !isfinite(v)))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: column %s (numeric): %s is not a number", file, line, cf->column,
                             mml__q(a, b, q, sizeof q));
        C->val[f][r] = v;
        return MML_OK;
    }
    if (fd->kind == MML_FIELD_CATEGORICAL && fd->hash_buckets == 0) {
        mmlr__pending *q = &C->pend[C->np++];
        uint32_t v;
        q->num = mmlr__plain_int(a, b, C->lim, &v);
        q->key = q->num ? v : mml__fnv1a64(a, b);
        /* mmlr__csv_flush asks again MMLR__AHEAD lookups ahead; neither is
         * spare: this one covers a block's first lookups (all of a narrow
         * schema's), that one the lines a wide block's parse pushed out of
         * L1 and the slots a growth moved */
        mmlr__dict_prefetch(&C->dict[f], q->key, q->num);
        q->a = a;
        q->len = (int32_t)(b - a);
        q->f = f;
        q->r = r;
        return MML_OK;
    }
    if (fd->kind == MML_FIELD_CATEGORICAL) {
        C->code[f][r] = mmlr__csv_id(C, f, a, b);
        return MML_OK;
    }
    int32_t *out = C->code[f] + r * fd->max_len;
    int k = 0;
    for (const char *x = a; x < b;) {
        const char *y = (const char *)memchr(x, cf->sep, (size_t)(b - x));
        if (!y) y = b;
        if (y > x) {
            if (k == fd->max_len)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: column %s (multi_hot): more than max_len=%d ids in %s", file,
                                 line, cf->column, fd->max_len, mml__q(a, b, q, sizeof q));
            if ((out[k++] = mmlr__csv_id(C, f, x, y)) < 0) return MML_ERR_NOMEM;
        }
        x = y + 1;
    }
    for (; k < fd->max_len; k++) out[k] = -1;
    return MML_OK;
}

static mml_status mmlr__csv_label(mmlr__csv *C, int64_t r, const char *a, const char *b, const char *file, long long line) {
    const mmlr_csv_schema *sc = C->sc;
    float v;
    char q[64];
    if (mml__parse_f32(a, b, &v) != b || !isfinite(v))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: label column %s: %s is not a number", file, line, sc->label,
                         mml__q(a, b, q, sizeof q));
    double x = v, t = sc->label_thr;
    switch (sc->label_op) {
    case MMLR_LABEL_GT: v = x > t; break;
    case MMLR_LABEL_GE: v = x >= t; break;
    case MMLR_LABEL_LT: v = x < t; break;
    case MMLR_LABEL_LE: v = x <= t; break;
    case MMLR_LABEL_EQ: v = x == t; break;
    default:
        if (v != 0.0f && v != 1.0f)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: label column %s: %s is not 0 or 1 (a comparison in the schema's label line makes one)",
                             file, line, sc->label, mml__q(a, b, q, sizeof q));
    }
    C->label[r] = v;
    return MML_OK;
}

static mml_status mmlr__csv_split_cell(mmlr__csv *C, int64_t r, const char *a, const char *b, const char *file,
                                       long long line) {
    char q[64];
    int p = mmlr__tok_is(a, b, "train") ? MML_TRAIN
          : (mmlr__tok_is(a, b, "val") || mmlr__tok_is(a, b, "valid") || mmlr__tok_is(a, b, "validation")) ? MML_VAL
          : mmlr__tok_is(a, b, "test") ? MML_TEST : -1;
    if (p < 0)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: split column %s: %s is not train, val or test", file, line,
                         C->o->split_column, mml__q(a, b, q, sizeof q));
    C->part[r] = (unsigned char)p;
    return MML_OK;
}

/* One data line into row C->n. */
static mml_status mmlr__csv_row(mmlr__csv *C, char *s, char *e, const char *file, long long line) {
    int64_t r = C->n;
    char *p = s, *a, *b;
    int k = 1;
    mml_status st = MML_OK;
    C->lim = e;
    for (int c = 0; c < C->ncol && !st; c++) {
        if (k != 1)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: %d columns, the header has %d", file, line, c, C->ncol);
        if (!(k = mml__csv_cell(&p, e, C->delim, &a, &b)))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: column %d: a quote is not closed (cells with line breaks are not supported)",
                             file, line, c + 1);
        int m = C->colmap[c];
        if (m >= 0) st = mmlr__csv_field(C, m, r, a, b, file, line);
        else if (m == MMLR__COL_LABEL) st = mmlr__csv_label(C, r, a, b, file, line);
        else if (m == MMLR__COL_SPLIT) st = mmlr__csv_split_cell(C, r, a, b, file, line);
    }
    if (st) return st;
    if (k == 1) return mml__fail(MML_ERR_FORMAT, "%s:%lld: more columns than the header's %d", file, line, C->ncol);
    if (C->fixed_part >= 0) C->part[r] = (unsigned char)C->fixed_part;
    C->n++;
    return MML_OK;
}

/* The block's waiting lookups, in order (codes are numbered as first seen). */
static mml_status mmlr__csv_flush(mmlr__csv *C) {
    mmlr__pending *q = C->pend;
    for (int j = 0; j < C->np; j++) {
        mmlr__dict *d = &C->dict[q[j].f];
        if (j + MMLR__AHEAD < C->np) {
            const mmlr__pending *ahead = &q[j + MMLR__AHEAD];
            mmlr__dict_prefetch(&C->dict[ahead->f], ahead->key, ahead->num);
        }
        int32_t c = q[j].num ? mmlr__dict_int(d, q[j].a, q[j].a + q[j].len, (uint32_t)q[j].key)
                             : mmlr__dict_code(d, q[j].a, q[j].a + q[j].len, q[j].key);
        if (c < 0) return MML_ERR_NOMEM;
        C->code[q[j].f][q[j].r] = c;
    }
    C->np = 0;
    return MML_OK;
}

/* Header cell [a, b) is name (spaces around it ignored). */
static int mmlr__hname_is(const char *a, const char *b, const char *name) {
    while (a < b && *a == ' ') a++;
    while (b > a && b[-1] == ' ') b--;
    return mmlr__tok_is(a, b, name);
}

/* Column index of name among the header cells, -1 if absent, -2 if twice. */
static int mmlr__hfind(int ncol, char *const *ha, char *const *hb, const char *name) {
    int at = -1;
    for (int c = 0; c < ncol; c++)
        if (mmlr__hname_is(ha[c], hb[c], name)) {
            if (at >= 0) return -2;
            at = c;
        }
    return at;
}

static mml_status mmlr__csv_header(mmlr__csv *C, char *s, char *e, const char *file) {
    const mmlr_csv_schema *sc = C->sc;
    char *p = s, *a, *b, **ha = NULL, **hb = NULL;
    int n = 0, k = 1, cap = 0, c;
    mml_status st = MML_OK;
    C->delim = sc->delim ? sc->delim : memchr(s, '\t', (size_t)(e - s)) && !memchr(s, ',', (size_t)(e - s)) ? '\t' : ',';
    while (k == 1) {
        if (!(k = mml__csv_cell(&p, e, C->delim, &a, &b))) {
            st = mml__fail(MML_ERR_FORMAT, "%s:1: header: a quote is not closed", file);
            goto done;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **na = (char **)mml__alloc((size_t)cap * sizeof *na), **nb = (char **)mml__alloc((size_t)cap * sizeof *nb);
            if (na && nb && n) {
                memcpy(na, ha, (size_t)n * sizeof *na);
                memcpy(nb, hb, (size_t)n * sizeof *nb);
            }
            mml__free(ha);
            mml__free(hb);
            ha = na, hb = nb;
            if (!ha || !hb || cap > (1 << 24)) {
                st = mml__fail(MML_ERR_NOMEM, "%s:1: header: out of memory", file);
                goto done;
            }
        }
        ha[n] = a, hb[n] = b, n++;
    }
    mml__free(C->colmap);
    if (!(C->colmap = (int *)mml__alloc((size_t)n * sizeof(int)))) {
        st = mml__fail(MML_ERR_NOMEM, "%s:1: header: out of memory", file);
        goto done;
    }
    C->ncol = n;
    for (c = 0; c < n; c++) C->colmap[c] = MMLR__COL_SKIP;
    for (int f = 0; f < C->F && !st; f++) {
        const mmlr_csv_field *cf = &sc->col[f];
        if ((c = mmlr__hfind(n, ha, hb, cf->column)) == -1)
            st = mml__fail(MML_ERR_FORMAT, "%s:1: the header has no column \"%s\" (field %s, %s:%d)", file, cf->column,
                           sc->s.field[f].name, sc->file, cf->line);
        else if (c == -2) st = mml__fail(MML_ERR_FORMAT, "%s:1: the header names column \"%s\" twice", file, cf->column);
        else C->colmap[c] = f;
    }
    if (!st && (c = mmlr__hfind(n, ha, hb, sc->label)) < 0)
        st = mml__fail(MML_ERR_FORMAT, "%s:1: the header has %s label column \"%s\" (%s)", file, c == -1 ? "no" : "twice the",
                       sc->label, sc->file);
    else if (!st) C->colmap[c] = MMLR__COL_LABEL;
    if (!st && C->o->split_column) {
        if ((c = mmlr__hfind(n, ha, hb, C->o->split_column)) < 0)
            st = mml__fail(MML_ERR_FORMAT, "%s:1: the header has %s split column \"%s\"", file, c == -1 ? "no" : "twice the",
                           C->o->split_column);
        else if (C->colmap[c] != MMLR__COL_SKIP)
            st = mml__fail(MML_ERR_FORMAT, "%s:1: the split column \"%s\" is also a field or the label", file,
                           C->o->split_column);
        else C->colmap[c] = MMLR__COL_SPLIT;
    }
done:
    mml__free(ha);
    mml__free(hb);
    return st;
}

static mml_status mmlr__csv_file(mmlr__csv *C, char *buf, size_t len, const char *file) {
    mml__lines L;
    const char *s, *e;
    mml_status st;
    mml__lines_init(&L, buf, len, file);
    if (!mml__next_line(&L, &s, &e)) return mml__fail(MML_ERR_FORMAT, "%s: empty file (a header line is needed)", file);
    if ((st = mmlr__csv_header(C, (char *)s, (char *)e, file)) != MML_OK) return st;
    if (C->fixed_part <= 0) C->train_delim = C->delim;
    int rows = 0;
    while (mml__next_line(&L, &s, &e)) {
        if (s == e) continue;
        if (C->n >= C->cap) return mml__fail(MML_ERR_FORMAT, "%s:%lld: more rows than lines", file, L.line);
        if ((st = mmlr__csv_row(C, (char *)s, (char *)e, file, L.line)) != MML_OK) return st;
        if (++rows == MMLR__BLOCK_ROWS && (st = mmlr__csv_flush(C)) != MML_OK) return st;
        rows = rows == MMLR__BLOCK_ROWS ? 0 : rows;
    }
    return mmlr__csv_flush(C);
}

/* ---- re-indexing, split, output ---- */

typedef struct mmlr__sv {
    int64_t num;
    uint64_t pre; /* the first 8 bytes big-endian, zero-padded: where most comparisons end */
    const char *s;
    int32_t len, code;
} mmlr__sv;

static uint64_t mmlr__prefix(const char *s, int32_t len) {
    uint64_t k = 0;
    for (int32_t i = 0; i < 8; i++) k = k << 8 | (i < len ? (unsigned char)s[i] : 0u);
    return k;
}

/* Bytes, then length; prefixes that differ order as the bytes do (a pad
 * byte is below any byte of the longer string but a NUL, and then they do
 * not differ). */
static int mmlr__cmp_sv_str(const void *x, const void *y) {
    const mmlr__sv *a = (const mmlr__sv *)x, *b = (const mmlr__sv *)y;
    if (a->pre != b->pre) return a->pre < b->pre ? -1 : 1;
    int c = memcmp(a->s, b->s, (size_t)(a->len < b->len ? a->len : b->len));
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int mmlr__cmp_sv_num(const void *x, const void *y) {
    const mmlr__sv *a = (const mmlr__sv *)x, *b = (const mmlr__sv *)y;
    return a->num != b->num ? (a->num > b->num) - (a->num < b->num) : mmlr__cmp_sv_str(x, y);
}

/* rank[code] = the place of the value among the used ones (use NULL: all) in
 * ascending order, numeric when every used value is an integer; -1 unused. */
static mml_status mmlr__rank(const mmlr__dict *d, const unsigned char *use, int32_t *rank, int32_t *count) {
    mmlr__sv *v;
    int32_t n = 0, all_int = 1;
    if (d->n_num == d->n) {
        /* plain integers only: the num table holds them in order */
        for (int32_t c = 0; c < d->n; c++) rank[c] = -1;
        for (uint32_t x = 0; x < d->nnum; x++)
            if (d->num[x] >= 0 && (!use || use[d->num[x]])) rank[d->num[x]] = n++;
        *count = n;
        return MML_OK;
    }
    if (!(v = (mmlr__sv *)mml__alloc((size_t)d->n * sizeof *v + 1)))
        return mml__fail(MML_ERR_NOMEM, "csv: out of memory ranking %d values", d->n);
    for (int32_t c = 0; c < d->n; c++) {
        rank[c] = -1;
        if (use && !use[c]) continue;
        v[n].s = d->str[c], v[n].len = d->len[c], v[n].code = c;
        v[n].pre = mmlr__prefix(d->str[c], d->len[c]);
        if (!mml__to_i64(d->str[c], d->str[c] + d->len[c], &v[n].num)) all_int = 0;
        n++;
    }
    qsort(v, (size_t)n, sizeof *v, all_int ? mmlr__cmp_sv_num : mmlr__cmp_sv_str);
    for (int32_t i = 0; i < n; i++) rank[v[i].code] = i;
    *count = n;
    mml__free(v);
    return MML_OK;
}

/* The domain column to dense ids over all rows, in C->dom and its column. */
static mml_status mmlr__csv_domains(mmlr__csv *C, mml_schema_t *s, int32_t **rank_out) {
    int df = s->domain;
    const mmlr__dict *d = &C->dict[df];
    int32_t *rank = (int32_t *)mml__alloc((size_t)d->n * 4 + 4), nd = 0;
    mml_status st;
    if (!rank) return mml__fail(MML_ERR_NOMEM, "csv: out of memory");
    if ((st = mmlr__rank(d, NULL, rank, &nd)) != MML_OK) {
        mml__free(rank);
        return st;
    }
    if (nd > MML_MAX_DOMAINS) {
        mml__free(rank);
        return mml__fail(MML_ERR_FORMAT, "%s: the domain column %s has %d values, at most %d", C->sc->file,
                         C->sc->col[df].column, nd, MML_MAX_DOMAINS);
    }
    for (int64_t i = 0; i < C->n; i++) C->dom[i] = C->code[df][i] = rank[C->code[df][i]];
    s->field[df].vocab = nd;
    *rank_out = rank;
    return MML_OK;
}

/* Each row's split: per domain and label class (as mml_data_split: buckets
 * domain 0 class 0, domain 0 class 1, ... shuffled in that order with one
 * splitmix64 stream), or all rows at once; the first floor(r0 n) of a bucket
 * train, the next floor(r1 n) val, the rest test. */
static mml_status mmlr__csv_split(mmlr__csv *C, int32_t nd) {
    const mmlr_csv_opts *o = C->o;
    int64_t nb = o->stratify ? 2 * (int64_t)nd : 1, n = C->n;
    int64_t *bstart = (int64_t *)mml__alloc((size_t)(nb + 2) * 8), *fill = (int64_t *)mml__alloc((size_t)(nb + 1) * 8);
    int64_t *idx = (int64_t *)mml__alloc((size_t)(n + 1) * 8);
    uint64_t rng = o->seed;
    mml_status st = MML_OK;
    if (!bstart || !fill || !idx) {
        st = mml__fail(MML_ERR_NOMEM, "csv: out of memory splitting %lld rows", (long long)n);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) bstart[(o->stratify ? 2 * (int64_t)C->dom[i] + (C->label[i] != 0.0f) : 0) + 1]++;
    for (int64_t b = 0; b < nb; b++) bstart[b + 1] += bstart[b];
    for (int64_t i = 0; i < n; i++) {
        int64_t b = o->stratify ? 2 * (int64_t)C->dom[i] + (C->label[i] != 0.0f) : 0;
        idx[bstart[b] + fill[b]++] = i;
    }
    for (int64_t b = 0; b < nb; b++) {
        int64_t a = bstart[b], c = bstart[b + 1] - a;
        int64_t ntr = (int64_t)floor((double)c * o->ratio[0] + 1e-9), nva = (int64_t)floor((double)c * o->ratio[1] + 1e-9);
        mml__shuffle_i64(idx + a, c, &rng);
        for (int64_t j = 0; j < c; j++)
            C->part[idx[a + j]] = (unsigned char)(j < ntr ? MML_TRAIN : j < ntr + nva ? MML_VAL : MML_TEST);
    }
done:
    mml__free(bstart);
    mml__free(fill);
    mml__free(idx);
    return st;
}

/* The values of d ranked 0..n-1 (rank[code]; -1 unranked), in that order,
 * as vf's vocabulary: what serving maps raw values with. */
static mml_status mmlr__csv_vocab(const mmlr__dict *d, const int32_t *rank, int32_t n, mml__vfield *vf) {
    int32_t *order = (int32_t *)mml__alloc((size_t)n * 4 + 4);
    mml_status st = MML_OK;
    if (!order) return mml__fail(MML_ERR_NOMEM, "csv: out of memory");
    for (int32_t c = 0; c < d->n; c++)
        if (rank[c] >= 0 && rank[c] < n) order[rank[c]] = c;
    for (int32_t i = 0; i < n && !st; i++) st = mml__vocab_add(vf, d->str[order[i]], (size_t)d->len[order[i]]);
    mml__free(order);
    return st;
}

/* An auto field's codes to ids over the training rows; other values -> vocab. */
static mml_status mmlr__csv_reindex(mmlr__csv *C, int f, mml_field_t *fd, mml__vfield *vf) {
    const mmlr__dict *d = &C->dict[f];
    int64_t len = mmlr__len(fd), i, cells = C->n * len;
    unsigned char *use = (unsigned char *)mml__alloc((size_t)d->n + 1);
    int32_t *rank = (int32_t *)mml__alloc((size_t)d->n * 4 + 4), *col = C->code[f], nv = 0;
    mml_status st = MML_OK;
    if (!use || !rank) st = mml__fail(MML_ERR_NOMEM, "csv: out of memory");
    if (!st && len == 1) /* without a branch on the split: it is random */
        for (i = 0; i < C->n; i++) use[col[i]] |= C->part[i] == MML_TRAIN;
    else
        for (i = 0; !st && i < C->n; i++)
            if (C->part[i] == MML_TRAIN)
                for (int64_t k = 0; k < len; k++)
                    if (col[i * len + k] >= 0) use[col[i * len + k]] = 1;
    if (!st) st = mmlr__rank(d, use, rank, &nv);
    if (!st) st = mmlr__csv_vocab(d, rank, nv, vf);
    if (!st) {
        fd->vocab = nv > 0 ? nv : 1;
        for (int32_t c = 0; c < d->n; c++) rank[c] = rank[c] >= 0 ? rank[c] : fd->vocab;
        for (i = 0; i < cells; i++)
            if (col[i] >= 0) col[i] = rank[col[i]];
    }
    mml__free(use);
    mml__free(rank);
    return st;
}

/* shift and scale of a numeric field from the training rows. */
static void mmlr__csv_norm(const mmlr__csv *C, int f, mml_field_t *fd) {
    double lo = INFINITY, hi = -INFINITY, sum = 0, sq = 0;
    int64_t n = 0;
    fd->shift = 0.0f;
    fd->scale = 1.0f;
    for (int64_t i = 0; i < C->n; i++) {
        if (C->part[i] != MML_TRAIN) continue;
        double v = C->val[f][i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        sum += v;
        sq += v * v;
        n++;
    }
    if (!n || fd->norm == MML_NORM_NONE) return;
    if (fd->norm == MML_NORM_MINMAX) {
        fd->shift = (float)lo;
        if (hi > lo) fd->scale = (float)(1.0 / (hi - lo));
    } else {
        double mean = sum / (double)n, var = sq / (double)n - mean * mean;
        fd->shift = (float)mean;
        if (var > 0) fd->scale = (float)(1.0 / sqrt(var));
    }
    if (!isfinite(fd->scale)) fd->scale = 1.0f;
}

/* Rows grouped by split and domain (input order kept) into out. */
static mml_status mmlr__csv_output(mmlr__csv *C, const mml_schema_t *s, int32_t nd, const int32_t *drank,
                                   mml_data_t *out) {
    int64_t *cur = (int64_t *)mml__alloc(((size_t)nd * 3 + 1) * 8), *pos = (int64_t *)mml__alloc((size_t)C->n * 8 + 8);
    mml_status st = MML_OK;
    if (!cur || !pos || !(out->schema = (mml_schema_t *)mml__alloc(sizeof *s))) {
        st = mml__fail(MML_ERR_NOMEM, "csv: out of memory");
        goto done;
    }
    *out->schema = *s;
    out->n_domains = nd;
    for (int64_t i = 0; i < C->n; i++) cur[(int64_t)C->dom[i] * 3 + C->part[i]]++;
    for (int sp_ = 0; sp_ < 3 && !st; sp_++) {
        mml_split_t *sp = &out->split[sp_];
        int64_t cnt = 0;
        for (int32_t k = 0; k < nd; k++) cnt += cur[k * 3 + sp_];
        if ((st = mml__split_alloc(sp, cnt, nd)) != MML_OK) break;
        mml__free(sp->uid);
        mml__free(sp->pid);
        sp->uid = sp->pid = NULL;
        sp->ids = (int32_t **)mml__alloc((size_t)s->n_fields * sizeof(int32_t *));
        sp->values = (float **)mml__alloc((size_t)s->n_fields * sizeof(float *));
        if (!sp->ids || !sp->values) st = mml__fail(MML_ERR_NOMEM, "csv: out of memory");
        for (int32_t k = 0; k < nd; k++) sp->dom_start[k + 1] = sp->dom_start[k] + cur[k * 3 + sp_];
        for (int32_t k = 0; k < nd; k++) cur[k * 3 + sp_] = sp->dom_start[k];
    }
    if (st) goto done;
    for (int64_t i = 0; i < C->n; i++) {
        mml_split_t *sp = &out->split[C->part[i]];
        int64_t j = pos[i] = cur[(int64_t)C->dom[i] * 3 + C->part[i]]++;
        sp->dom[j] = C->dom[i];
        sp->label[j] = C->label[i];
    }
    /* field by field, each raw column freed once copied: the peak stays near one copy */
    for (int f = 0; f < s->n_fields && !st; f++) {
        const mml_field_t *fd = &s->field[f];
        int64_t len = mmlr__len(fd);
        int num = fd->kind == MML_FIELD_NUMERIC;
        for (int k = 0; k < 3 && !st; k++) {
            size_t bytes = (size_t)(out->split[k].n > 0 ? out->split[k].n : 1) * (size_t)len * 4;
            void *col = mml__alloc_from(bytes, bytes);
            if (!col) {
                st = mml__fail(MML_ERR_NOMEM, "csv: out of memory");
                break;
            }
            if (num) out->split[k].values[f] = (float *)col;
            else out->split[k].ids[f] = (int32_t *)col;
        }
        for (int64_t i = 0; i < C->n && !st; i++) {
            mml_split_t *sp = &out->split[C->part[i]];
            if (num) sp->values[f][pos[i]] = C->val[f][i];
            else if (len == 1) sp->ids[f][pos[i]] = C->code[f][i];
            else memcpy(sp->ids[f] + pos[i] * len, C->code[f] + i * len, (size_t)len * 4);
        }
        mml__free(C->code[f]);
        mml__free(C->val[f]);
        C->code[f] = NULL;
        C->val[f] = NULL;
    }
    for (int32_t k = 0; k < nd && !st; k++) {
        /* the domain's raw value names it */
        const mmlr__dict *d = &C->dict[s->domain];
        for (int32_t c = 0; c < d->n; c++)
            if (drank[c] == k) st = mml__set_name(out, k, d->str[c], (size_t)d->len[c]);
    }
done:
    mml__free(cur);
    mml__free(pos);
    return st;
}

static void mmlr_csv_opts_default(mmlr_csv_opts *o) {
    memset(o, 0, sizeof *o);
    o->ratio[0] = 0.6;
    o->ratio[1] = 0.2;
    o->ratio[2] = 0.2;
    o->seed = 123;
    o->stratify = 1;
}

static mml_status mmlr__csv_opts_check(const mmlr_csv_opts *o, int n_bufs) {
    double sum = o->ratio[0] + o->ratio[1] + o->ratio[2];
    for (int k = 0; k < 3; k++)
        if (!(o->ratio[k] >= 0.0 && o->ratio[k] <= 1.0))
            return mml__fail(MML_ERR_ARG, "csv: split ratio %g outside 0..1", o->ratio[k]);
    if (!(fabs(sum - 1.0) < 1e-6)) return mml__fail(MML_ERR_ARG, "csv: split ratios add up to %g, not 1", sum);
    if (n_bufs != 1 && n_bufs != 3) return mml__fail(MML_ERR_ARG, "csv: one input, or three (train, val, test)");
    if (n_bufs == 3 && o->split_column)
        return mml__fail(MML_ERR_ARG, "csv: a split column and separate val/test files exclude each other");
    return MML_OK;
}

/* How the cells of each field were read, and the vocabularies' final
 * sizes, once the schema is complete; then indexed for lookups. */
static mml_status mmlr__csv_vocab_finish(const mmlr__csv *C, const mml_schema_t *s, mml_vocab_t *v) {
    int32_t dup;
    mml_status st = MML_OK;
    v->delim = C->train_delim;
    for (int f = 0; f < s->n_fields && !st; f++) {
        mml__vfield *vf = &v->f[f];
        const mmlr_csv_field *cf = &C->sc->col[f];
        snprintf(vf->column, sizeof vf->column, "%s", cf->column);
        vf->sep = cf->sep;
        vf->has_missing = cf->has_missing;
        vf->missing = cf->missing;
        vf->vocab = s->field[f].vocab;
        if (vf->listed) st = mml__vocab_index(vf, &dup);
    }
    return st ? st : mml__vocab_check(v, s, "csv: the vocabulary");
}

/* Rows to a data set, once every file is parsed. */
static mml_status mmlr__csv_finish(mmlr__csv *C, mml_data_t *out) {
    mml_schema_t *s = (mml_schema_t *)mml__alloc(sizeof *s);
    mml_vocab_t *v = NULL;
    int32_t *drank = NULL, nd;
    mml_status st;
    if (!s) return mml__fail(MML_ERR_NOMEM, "csv: out of memory");
    *s = C->sc->s;
    if (C->n == 0) {
        st = mml__fail(MML_ERR_FORMAT, "csv: no data rows");
        goto done;
    }
    if ((st = mml__vocab_new(s, &v)) != MML_OK) goto done;
    if ((st = mmlr__csv_domains(C, s, &drank)) != MML_OK) goto done;
    nd = s->field[s->domain].vocab;
    if ((st = mmlr__csv_vocab(&C->dict[s->domain], drank, nd, &v->f[s->domain])) != MML_OK) goto done;
    if (C->fixed_part < 0 && !C->o->split_column && (st = mmlr__csv_split(C, nd)) != MML_OK) goto done;
    for (int f = 0; f < s->n_fields && !st; f++) {
        mml_field_t *fd = &s->field[f];
        if (fd->kind == MML_FIELD_NUMERIC) mmlr__csv_norm(C, f, fd);
        else if (f != s->domain && fd->hash_buckets == 0) st = mmlr__csv_reindex(C, f, fd, &v->f[f]);
    }
    if (!st && (st = mml_schema_check(s)) != MML_OK) st = mml__recode(MML_ERR_FORMAT);
    if (!st) st = mmlr__csv_vocab_finish(C, s, v);
    if (!st) st = mmlr__csv_output(C, s, nd, drank, out);
    if (!st) out->vocab = v, v = NULL;
done:
    mml_vocab_free(v);
    mml__free(s);
    mml__free(drank);
    return st;
}

static mml_status mmlr_csv_load_bufs(int n_bufs, char *const *bufs, const size_t *lens, const char *const *names,
                                     const mmlr_csv_schema *sc, const mmlr_csv_opts *o, mml_data_t *out) {
    mmlr__csv C;
    mmlr_csv_opts def;
    int64_t cap = 0;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mmlr_csv_load: out is NULL");
    memset(out, 0, sizeof *out);
    memset(&C, 0, sizeof C);
    if (!bufs || !lens || !names || !sc) return mml__fail(MML_ERR_ARG, "mmlr_csv_load: NULL argument");
    if (!o) {
        mmlr_csv_opts_default(&def);
        o = &def;
    }
    if ((st = mmlr__csv_opts_check(o, n_bufs)) != MML_OK) return st;
    if (sc->s.n_fields < 1 || sc->s.domain < 0 || sc->s.domain >= sc->s.n_fields)
        return mml__fail(MML_ERR_ARG, "mmlr_csv_load: the schema has no fields or no domain (read it with mmlr_schema_parse)");
    C.sc = sc;
    C.o = o;
    C.F = sc->s.n_fields;
    for (int k = 0; k < n_bufs; k++) cap += mml__count_lines(bufs[k], lens[k]);
    if ((st = mmlr__csv_alloc(&C, cap)) != MML_OK) goto done;
    for (int k = 0; k < n_bufs && !st; k++) {
        C.fixed_part = n_bufs == 3 ? k : -1;
        st = mmlr__csv_file(&C, bufs[k], lens[k], names[k]);
    }
    if (!st) st = mmlr__csv_finish(&C, out);
done:
    mmlr__csv_free(&C);
    if (st) mml_data_free(out);
    return st;
}

/* A whole file into *p (n bytes + a NUL). */
static mml_status mmlr__read_big(const char *path, char **p, size_t *n) {
    struct stat st;
    size_t got = 0;
    *p = NULL;
    *n = 0;
    if (stat(path, &st) != 0) return mml__fail(MML_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return mml__fail(MML_ERR_IO, "%s: not a regular file", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mml__fail(MML_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t len = (size_t)st.st_size;
    char *b = (char *)mml__alloc_from(len + 1, len + 1);
    if (!b) {
        close(fd);
        return mml__fail(MML_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, len + 1);
    }
    while (got < len) {
        ssize_t k = read(fd, b + got, len - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd);
    if (got != len) {
        mml__free(b);
        return mml__fail(MML_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, len);
    }
    b[len] = 0;
    *p = b;
    *n = len;
    return MML_OK;
}

static mml_status mmlr_csv_load(const char *path, const mmlr_csv_schema *sc, const mmlr_csv_opts *o, mml_data_t *out) {
    char *bufs[3];
    size_t lens[3];
    const char *names[3] = {path, o ? o->val_path : NULL, o ? o->test_path : NULL};
    int n = names[1] || names[2] ? 3 : 1, k;
    mml_status st = MML_OK;
    if (out) memset(out, 0, sizeof *out);
    if (!path || !sc || !out) return mml__fail(MML_ERR_ARG, "mmlr_csv_load: NULL argument");
    if (n == 3 && (!names[1] || !names[2])) return mml__fail(MML_ERR_ARG, "csv: give both val and test files, or neither");
    memset(bufs, 0, sizeof bufs);
    for (k = 0; k < n && !st; k++) st = mmlr__read_big(names[k], &bufs[k], &lens[k]);
    if (!st) st = mmlr_csv_load_bufs(n, bufs, lens, names, sc, o, out);
    for (k = 0; k < n; k++) mml__free(bufs[k]);
    return st;
}

#endif /* MOEMLORA_IMPLEMENTED */
#endif /* MML_RECIPES_H */
