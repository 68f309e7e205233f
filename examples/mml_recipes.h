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
 * mml__read_file, mml__lines, mml__fields, mml__mix64, the atomic writer,
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
 */
#ifndef MML_RECIPES_H
#define MML_RECIPES_H

#ifndef MOEMLORA_IMPLEMENTED
#error "mml_recipes.h: #define MOEMLORA_IMPLEMENTATION and #include \"moemlora.h\" first"
#else

/* static: one file per program includes this header; unused: a program may
 * use one recipe and not the others. */
#define MMLR_API static MML__UNUSED

// >>api --------------------------------------------------------------------

/* MovieLens-1M (users.dat + ratings.dat or ratings.no-timestamp.dat, "::",
 * 3- or 4-field rating lines) or MovieLens-100K (u.user, u.occupation, u.data),
 * detected from the files in raw_dir. domain_kind: "gender" (F=0, M=1),
 * "age" (7 groups) or "occupation" (21). Label = (rating == 5). User and movie
 * ids are re-indexed densely in ascending order of the raw id, over the ids
 * that occur in the ratings. Then mml_data_split(seed) (the paper uses 123). */
MMLR_API mml_status mmlr_movielens_load(const char *raw_dir, const char *domain_kind, uint64_t seed, mml_data_t *out);

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

/* Parses a float at p (no leading spaces), returns the end or NULL. Decimal
 * mantissa of up to 19 significant digits times an exact power of ten, then
 * rounded to float: within 1 ulp of strtof, ~10x faster. */
static const char *mmlr__parse_f32(const char *p, const char *e, float *out) {
    static const double p10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    int neg = 0, digits = 0, sig = 0;
    int64_t ex = 0;
    uint64_t m = 0;
    double v;
    if (p < e && (*p == '-' || *p == '+')) neg = *p++ == '-';
    while (p < e && (unsigned)(*p - '0') <= 9) {
        if (sig < 19) {
            m = m * 10 + (uint64_t)(*p - '0');
            if (m) sig++;
        } else {
            ex++;
        }
        digits++;
        p++;
    }
    if (p < e && *p == '.') {
        p++;
        while (p < e && (unsigned)(*p - '0') <= 9) {
            if (sig < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                if (m) sig++;
                ex--;
            }
            digits++;
            p++;
        }
    }
    if (!digits) return NULL;
    if (p < e && (*p == 'e' || *p == 'E')) {
        int eneg = 0, ed = 0;
        int64_t x = 0;
        p++;
        if (p < e && (*p == '-' || *p == '+')) eneg = *p++ == '-';
        while (p < e && (unsigned)(*p - '0') <= 9) {
            if (x < 100000) x = x * 10 + (*p - '0');
            ed++;
            p++;
        }
        if (!ed) return NULL;
        ex += eneg ? -x : x;
    }
    v = (double)m;
    if (m == 0) v = 0;
    else if (ex >= 0 && ex <= 22) v *= p10[ex];
    else if (ex < 0 && ex >= -22) v /= p10[-ex];
    else v *= pow(10.0, (double)ex);
    if (!(fabs(v) <= 3.4028234663852886e38)) return NULL; /* inf, overflow */
    *out = (float)(neg ? -v : v);
    return p;
}

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
            const char *q2 = mmlr__parse_f32(p, e, &x);
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

#endif /* MOEMLORA_IMPLEMENTED */
#endif /* MML_RECIPES_H */
