/* parts/data_impl.h - implementation of the data chapter (// >>data).
 * Included by moemlora.h inside MOEMLORA_IMPLEMENTATION; uses its helpers
 * (mml__fail, mml__alloc, mml__afile_*, mml__rng_*).
 *
 * Contents: file and line helpers, an id hash map, mml_data_t memory, the
 * stratified split, the CSV layout (meta.txt + domain_<k>/{train,val,test}.csv), the binary
 * cache, MovieLens-100K/1M, Taobao theme data and its synthetic generator. */

// >>data -------------------------------------------------------------------

#include <sys/stat.h>
#include <sys/types.h>

#define MML__PATH_MAX 1024
#define MML__CACHE_VERSION 1u
#define MML__BOM 0x01020304u
#define MML__META_FORMAT "moemlora-data-1"

static const char *const mml__split_names[3] = {"train", "val", "test"};

/* ---- files and paths ---- */

typedef struct mml__buf {
    char *p;   /* n bytes + a NUL */
    size_t n;
} mml__buf;

static void mml__buf_free(mml__buf *b) {
    if (b->p) MOEMLORA_FREE(b->p);
    b->p = NULL;
    b->n = 0;
}

/* Whole-file read: one fread into one buffer is the fastest way to feed the
 * pointer-loop parsers below (files of a few GB fit in RAM on target boxes). */
static mml_status mml__read_file(const char *path, mml__buf *b) {
    struct stat st;
    FILE *f;
    size_t n, got;
    b->p = NULL;
    b->n = 0;
    f = fopen(path, "rb");
    if (!f) return mml__fail(MML_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return mml__fail(MML_ERR_IO, "%s: not a regular file", path);
    }
    n = (size_t)st.st_size;
    b->p = (char *)MOEMLORA_MALLOC(n + 1);
    if (!b->p) {
        fclose(f);
        return mml__fail(MML_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    got = n ? fread(b->p, 1, n, f) : 0;
    fclose(f);
    if (got != n) {
        mml__buf_free(b);
        return mml__fail(MML_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    b->p[n] = 0;
    b->n = n;
    return MML_OK;
}

static int mml__is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
static int mml__is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* out = a "/" b, refusing paths that do not fit the atomic writer's buffer. */
static mml_status mml__join(char *out, const char *a, const char *b) {
    int n = snprintf(out, MML__PATH_MAX, "%s/%s", a, b);
    if (n < 0 || n >= MML__PATH_MAX) return mml__fail(MML_ERR_ARG, "%s/%s: path too long", a, b);
    return MML_OK;
}

/* mkdir -p */
static mml_status mml__mkdirs(const char *dir) {
    char tmp[MML__PATH_MAX];
    size_t n = strlen(dir), i;
    if (n == 0 || n >= sizeof tmp) return mml__fail(MML_ERR_ARG, "bad directory name \"%s\"", dir);
    memcpy(tmp, dir, n + 1);
    for (i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == 0) {
            char c = tmp[i];
            tmp[i] = 0;
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
                return mml__fail(MML_ERR_IO, "%s: cannot create directory: %s", tmp, strerror(errno));
            tmp[i] = c;
        }
    }
    if (!mml__is_dir(dir)) return mml__fail(MML_ERR_IO, "%s: not a directory", dir);
    return MML_OK;
}

static int mml__host_le(void) {
    uint32_t x = 1;
    unsigned char c;
    memcpy(&c, &x, 1);
    return c == 1;
}

/* ---- lines and fields ---- */

typedef struct mml__lines {
    const char *p, *end;
    const char *file;
    long long line;
    int last_unterminated; /* the line just returned had no '\n' */
} mml__lines;

static void mml__lines_init(mml__lines *L, const char *buf, size_t n, const char *file) {
    L->p = buf;
    L->end = buf + n;
    L->file = file;
    L->line = 0;
    L->last_unterminated = 0;
    /* A UTF-8 byte-order mark (spreadsheet exports) is not part of the header. */
    if (n >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB &&
        (unsigned char)buf[2] == 0xBF)
        L->p += 3;
}

/* Next line as [*s, *e) without its "\n" / "\r\n"; 0 at the end of the buffer. */
static int mml__next_line(mml__lines *L, const char **s, const char **e) {
    const char *nl, *le;
    if (L->p >= L->end) return 0;
    nl = (const char *)memchr(L->p, '\n', (size_t)(L->end - L->p));
    le = nl ? nl : L->end;
    *s = L->p;
    L->p = nl ? nl + 1 : L->end;
    L->last_unterminated = nl == NULL;
    if (le > *s && le[-1] == '\r') le--;
    *e = le;
    L->line++;
    return 1;
}

static int64_t mml__count_lines(const char *buf, size_t n) {
    int64_t c = 1;
    const char *p = buf, *end = buf + n;
    while (p < end && (p = (const char *)memchr(p, '\n', (size_t)(end - p))) != NULL) {
        c++;
        p++;
    }
    return c;
}

/* Splits [s, e) at every sep (1 or 2 chars). Returns the number of fields;
 * only the first max are stored. */
static int mml__fields(const char *s, const char *e, const char *sep, int seplen,
                       const char **fs, const char **fe, int max) {
    int nf = 0;
    for (;;) {
        const char *q = s;
        if (seplen == 1) {
            q = (const char *)memchr(s, sep[0], (size_t)(e - s));
            if (!q) q = e;
        } else {
            while (q + 1 < e && !(q[0] == sep[0] && q[1] == sep[1])) q++;
            if (q + 1 >= e) q = e;
        }
        if (nf < max) {
            fs[nf] = s;
            fe[nf] = q;
        }
        nf++;
        if (q == e) return nf;
        s = q + seplen;
    }
}

/* A field, quoted and shortened for error messages. */
static const char *mml__q(const char *s, const char *e, char *buf, size_t cap) {
    size_t i = 0;
    buf[i++] = '"';
    while (s < e && i + 5 < cap) {
        unsigned char c = (unsigned char)*s++;
        buf[i++] = (c >= 32 && c < 127 && c != '"') ? (char)c : '?';
    }
    if (s < e) {
        buf[i++] = '.';
        buf[i++] = '.';
        buf[i++] = '.';
    }
    buf[i++] = '"';
    buf[i] = 0;
    return buf;
}

/* Whole field as a decimal integer with optional '-'; 0 if it is not one or
 * has more than 18 digits. */
static int mml__to_i64(const char *s, const char *e, int64_t *v) {
    int neg = 0;
    int64_t x = 0;
    if (s < e && *s == '-') {
        neg = 1;
        s++;
    }
    if (s == e || e - s > 18) return 0;
    for (; s < e; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (d > 9) return 0;
        x = x * 10 + (int64_t)d;
    }
    *v = neg ? -x : x;
    return 1;
}

/* Parses a float at p (no leading spaces), returns the end or NULL. Decimal
 * mantissa of up to 19 significant digits times an exact power of ten, then
 * rounded to float: within 1 ulp of strtof, ~10x faster. */
static const char *mml__parse_f32(const char *p, const char *e, float *out) {
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

typedef struct mml__slot {
    int64_t key; /* -1 = empty */
    int64_t val;
} mml__slot;

/* Key and value share a slot so a lookup touches one cache line. */
typedef struct mml__imap {
    mml__slot *s;
    uint64_t cap, n;
} mml__imap;

static uint64_t mml__mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static void mml__imap_free(mml__imap *m) {
    mml__free(m->s);
    memset(m, 0, sizeof *m);
}

static mml_status mml__imap_init(mml__imap *m, uint64_t expect) {
    uint64_t cap = 64, i;
    memset(m, 0, sizeof *m);
    while (cap < expect * 2) cap *= 2;
    m->s = (mml__slot *)mml__alloc(cap * sizeof(mml__slot));
    if (!m->s) return mml__fail(MML_ERR_NOMEM, "id map: cannot allocate %llu slots", (unsigned long long)cap);
    for (i = 0; i < cap; i++) m->s[i].key = -1;
    m->cap = cap;
    return MML_OK;
}

static int64_t mml__imap_get(const mml__imap *m, int64_t key) {
    uint64_t i = mml__mix64((uint64_t)key) & (m->cap - 1);
    for (;;) {
        if (m->s[i].key == key) return m->s[i].val;
        if (m->s[i].key < 0) return -1;
        i = (i + 1) & (m->cap - 1);
    }
}

/* Inserts key with val unless present; *old = the existing value or -1. */
static mml_status mml__imap_put(mml__imap *m, int64_t key, int64_t val, int64_t *old) {
    uint64_t i;
    if ((m->n + 1) * 2 > m->cap) {
        mml__imap big;
        uint64_t j;
        mml_status st = mml__imap_init(&big, m->cap);
        if (st) return st;
        for (j = 0; j < m->cap; j++) {
            if (m->s[j].key < 0) continue;
            i = mml__mix64((uint64_t)m->s[j].key) & (big.cap - 1);
            while (big.s[i].key >= 0) i = (i + 1) & (big.cap - 1);
            big.s[i] = m->s[j];
        }
        big.n = m->n;
        mml__imap_free(m);
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

static int mml__cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Dense re-indexing in ascending order of the raw id: dense[i] = rank of
 * raw[i] among the distinct values. */
static mml_status mml__reindex(int64_t n, const int64_t *raw, int32_t *dense, int32_t *n_distinct) {
    mml__imap m;
    int64_t *keys = NULL, old, i, k = 0;
    mml_status st = mml__imap_init(&m, 1024);
    if (st) return st;
    for (i = 0; i < n; i++)
        if ((st = mml__imap_put(&m, raw[i], 0, &old)) != MML_OK) goto done;
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
    qsort(keys, (size_t)k, sizeof(int64_t), mml__cmp_i64);
    mml__imap_free(&m);
    if ((st = mml__imap_init(&m, (uint64_t)k)) != MML_OK) goto done;
    for (i = 0; i < k; i++)
        if ((st = mml__imap_put(&m, keys[i], i, &old)) != MML_OK) goto done;
    for (i = 0; i < n; i++) dense[i] = (int32_t)mml__imap_get(&m, raw[i]);
    *n_distinct = (int32_t)k;
done:
    mml__free(keys);
    mml__imap_free(&m);
    return st;
}

/* ---- mml_data_t memory and checks ---- */

static void mml__split_free(mml_split_t *s) {
    mml__free(s->uid);
    mml__free(s->pid);
    mml__free(s->dom);
    mml__free(s->label);
    mml__free(s->dom_start);
    memset(s, 0, sizeof *s);
}

static mml_status mml__split_alloc(mml_split_t *s, int64_t n, int32_t n_domains) {
    size_t rows = (size_t)(n > 0 ? n : 1);
    memset(s, 0, sizeof *s);
    s->n = n;
    s->uid = (int32_t *)mml__alloc(rows * sizeof(int32_t));
    s->pid = (int32_t *)mml__alloc(rows * sizeof(int32_t));
    s->dom = (int32_t *)mml__alloc(rows * sizeof(int32_t));
    s->label = (float *)mml__alloc(rows * sizeof(float));
    s->dom_start = (int64_t *)mml__alloc(((size_t)n_domains + 1) * sizeof(int64_t));
    if (!s->uid || !s->pid || !s->dom || !s->label || !s->dom_start) {
        mml__split_free(s);
        return mml__fail(MML_ERR_NOMEM, "cannot allocate a split of %lld rows", (long long)n);
    }
    return MML_OK;
}

void mml_data_free(mml_data_t *d) {
    int k;
    if (!d) return;
    if (d->domain_names) {
        for (k = 0; k < d->n_domains; k++) mml__free(d->domain_names[k]);
        mml__free(d->domain_names);
    }
    for (k = 0; k < 3; k++) mml__split_free(&d->split[k]);
    mml__free(d->user_emb);
    mml__free(d->item_emb);
    memset(d, 0, sizeof *d);
}

static mml_status mml__set_name(mml_data_t *d, int32_t k, const char *s, size_t len) {
    char *p;
    if (!d->domain_names) {
        d->domain_names = (char **)mml__alloc((size_t)d->n_domains * sizeof(char *));
        if (!d->domain_names) return mml__fail(MML_ERR_NOMEM, "domain names: out of memory");
    }
    p = (char *)mml__alloc(len + 1);
    if (!p) return mml__fail(MML_ERR_NOMEM, "domain names: out of memory");
    memcpy(p, s, len);
    mml__free(d->domain_names[k]);
    d->domain_names[k] = p;
    return MML_OK;
}

/* Every invariant the trainers rely on; what names the data for messages. */
static mml_status mml__data_check(const mml_data_t *d, const char *what) {
    int s;
    int32_t k;
    if (d->n_users < 1 || d->n_items < 1 || d->n_domains < 1 || d->pretrained_dim < 0)
        return mml__fail(MML_ERR_FORMAT, "%s: bad sizes (n_users=%d n_items=%d n_domains=%d dim=%d)",
                         what, d->n_users, d->n_items, d->n_domains, d->pretrained_dim);
    if (d->pretrained_dim > 0 && (!d->user_emb || !d->item_emb))
        return mml__fail(MML_ERR_FORMAT, "%s: pretrained_dim=%d but embeddings missing", what,
                         d->pretrained_dim);
    for (s = 0; s < 3; s++) {
        const mml_split_t *sp = &d->split[s];
        if (sp->n < 0 || !sp->dom_start || (sp->n > 0 && (!sp->uid || !sp->pid || !sp->dom || !sp->label)))
            return mml__fail(MML_ERR_FORMAT, "%s: %s split arrays missing", what, mml__split_names[s]);
        if (sp->dom_start[0] != 0 || sp->dom_start[d->n_domains] != sp->n)
            return mml__fail(MML_ERR_FORMAT, "%s: %s split: dom_start does not span 0..%lld", what,
                             mml__split_names[s], (long long)sp->n);
        for (k = 0; k < d->n_domains; k++) {
            int64_t i, a = sp->dom_start[k], b = sp->dom_start[k + 1];
            if (a > b)
                return mml__fail(MML_ERR_FORMAT, "%s: %s split: dom_start decreases at domain %d", what,
                                 mml__split_names[s], k);
            for (i = a; i < b; i++) {
                if (sp->dom[i] != k || sp->uid[i] < 0 || sp->uid[i] >= d->n_users || sp->pid[i] < 0 ||
                    sp->pid[i] >= d->n_items || (sp->label[i] != 0.0f && sp->label[i] != 1.0f))
                    return mml__fail(MML_ERR_FORMAT,
                                     "%s: %s row %lld invalid (uid=%d pid=%d dom=%d in domain %d, label=%g)",
                                     what, mml__split_names[s], (long long)i, sp->uid[i], sp->pid[i],
                                     sp->dom[i], k, (double)sp->label[i]);
            }
        }
    }
    return MML_OK;
}

/* Re-reports the last error under another status (the message is copied
 * first: it lives in the buffer that mml__fail writes). */
static mml_status mml__recode(mml_status st) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", mml_last_error());
    return mml__fail(st, "%s", tmp);
}

/* ---- stratified split ---- */

/* Per domain and per label class: shuffle (splitmix64 from seed, buckets taken
 * in order domain 0 class 0, domain 0 class 1, domain 1 class 0, ...), then the
 * first floor(6n/10) go to train, the next floor(2n/10) to val, the rest to
 * test. Within a (split, domain) the rows keep their input order. */
mml_status mml_data_split(int64_t n, const int32_t *uid, const int32_t *pid, const int32_t *dom,
                          const float *label, int32_t n_users, int32_t n_items, int32_t n_domains,
                          uint64_t seed, mml_data_t *out) {
    int64_t *bstart = NULL, *idx = NULL, *fill = NULL, i, b;
    unsigned char *part = NULL;
    int64_t cnt[3] = {0, 0, 0};
    uint64_t rng = seed;
    int s;
    mml_status st = MML_OK;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_data_split: out is NULL");
    memset(out, 0, sizeof *out);
    if (n < 0 || n_users < 1 || n_items < 1 || n_domains < 1)
        return mml__fail(MML_ERR_ARG, "mml_data_split: bad sizes (n=%lld n_users=%d n_items=%d n_domains=%d)",
                         (long long)n, n_users, n_items, n_domains);
    if (n > 0 && (!uid || !pid || !dom || !label))
        return mml__fail(MML_ERR_ARG, "mml_data_split: NULL input array");
    for (i = 0; i < n; i++) {
        if (uid[i] < 0 || uid[i] >= n_users)
            return mml__fail(MML_ERR_ARG, "mml_data_split: row %lld: uid %d out of range [0,%d)",
                             (long long)i, uid[i], n_users);
        if (pid[i] < 0 || pid[i] >= n_items)
            return mml__fail(MML_ERR_ARG, "mml_data_split: row %lld: pid %d out of range [0,%d)",
                             (long long)i, pid[i], n_items);
        if (dom[i] < 0 || dom[i] >= n_domains)
            return mml__fail(MML_ERR_ARG, "mml_data_split: row %lld: domain %d out of range [0,%d)",
                             (long long)i, dom[i], n_domains);
        if (label[i] != 0.0f && label[i] != 1.0f)
            return mml__fail(MML_ERR_ARG, "mml_data_split: row %lld: label %g is not 0 or 1",
                             (long long)i, (double)label[i]);
    }
    /* bucket b = 2*domain + class, counting sort of row indices */
    bstart = (int64_t *)mml__alloc(((size_t)n_domains * 2 + 1) * sizeof(int64_t));
    fill = (int64_t *)mml__alloc(((size_t)n_domains * 6 + 1) * sizeof(int64_t));
    idx = (int64_t *)mml__alloc((size_t)(n + 1) * sizeof(int64_t));
    part = (unsigned char *)mml__alloc((size_t)(n + 1));
    if (!bstart || !fill || !idx || !part) {
        st = mml__fail(MML_ERR_NOMEM, "mml_data_split: out of memory (%lld rows)", (long long)n);
        goto done;
    }
    for (i = 0; i < n; i++) bstart[2 * (int64_t)dom[i] + (label[i] != 0.0f) + 1]++;
    for (b = 0; b < 2 * (int64_t)n_domains; b++) bstart[b + 1] += bstart[b];
    for (i = 0; i < n; i++) {
        int64_t bb = 2 * (int64_t)dom[i] + (label[i] != 0.0f);
        idx[bstart[bb] + fill[bb]++] = i;
    }
    memset(fill, 0, ((size_t)n_domains * 6 + 1) * sizeof(int64_t));
    for (b = 0; b < 2 * (int64_t)n_domains; b++) {
        int64_t a = bstart[b], c = bstart[b + 1] - a;
        int64_t ntr = c * 6 / 10, nva = c * 2 / 10, j;
        mml__shuffle_i64(idx + a, c, &rng);
        for (j = 0; j < c; j++) {
            int p = j < ntr ? MML_TRAIN : (j < ntr + nva ? MML_VAL : MML_TEST);
            part[idx[a + j]] = (unsigned char)p;
            fill[(b / 2) * 3 + p]++; /* rows of split p in domain b/2 */
        }
    }
    out->n_users = n_users;
    out->n_items = n_items;
    out->n_domains = n_domains;
    for (i = 0; i < n; i++) cnt[part[i]]++;
    for (s = 0; s < 3; s++) {
        mml_split_t *sp = &out->split[s];
        int32_t k;
        if ((st = mml__split_alloc(sp, cnt[s], n_domains)) != MML_OK) goto done;
        for (k = 0; k < n_domains; k++) sp->dom_start[k + 1] = sp->dom_start[k] + fill[k * 3 + s];
    }
    /* fill[] becomes the write cursor of each (domain, split) */
    for (b = 0; b < n_domains; b++)
        for (s = 0; s < 3; s++) fill[b * 3 + s] = out->split[s].dom_start[b];
    for (i = 0; i < n; i++) {
        mml_split_t *sp = &out->split[part[i]];
        int64_t j = fill[(int64_t)dom[i] * 3 + part[i]]++;
        sp->uid[j] = uid[i];
        sp->pid[j] = pid[i];
        sp->dom[j] = dom[i];
        sp->label[j] = label[i];
    }
done:
    mml__free(bstart);
    mml__free(fill);
    mml__free(idx);
    mml__free(part);
    if (st) mml_data_free(out);
    return st;
}

/* ---- CSV layout: writer ---- */

static char *mml__put_u64(char *p, uint64_t v) {
    char t[20];
    int n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) *p++ = t[--n];
    return p;
}

static mml_status mml__write_split_csv(const char *path, const mml_split_t *sp, int32_t k) {
    enum { CAP = 1 << 20 };
    mml__afile w;
    char *buf = (char *)MOEMLORA_MALLOC(CAP), *p;
    int64_t i;
    mml_status st;
    if (!buf) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", path);
    if ((st = mml__afile_open(&w, path)) != MML_OK) {
        MOEMLORA_FREE(buf);
        return st;
    }
    p = buf;
    memcpy(p, "uid,pid,domain,label\n", 21);
    p += 21;
    for (i = sp->dom_start[k]; i < sp->dom_start[k + 1] && !st; i++) {
        p = mml__put_u64(p, (uint64_t)sp->uid[i]);
        *p++ = ',';
        p = mml__put_u64(p, (uint64_t)sp->pid[i]);
        *p++ = ',';
        p = mml__put_u64(p, (uint64_t)k);
        *p++ = ',';
        *p++ = sp->label[i] != 0.0f ? '1' : '0';
        *p++ = '\n';
        if (p - buf > CAP - 80) {
            st = mml__afile_write(&w, buf, (size_t)(p - buf));
            p = buf;
        }
    }
    if (!st && p > buf) st = mml__afile_write(&w, buf, (size_t)(p - buf));
    MOEMLORA_FREE(buf);
    if (st) {
        mml__afile_abort(&w);
        return st;
    }
    return mml__afile_commit(&w);
}

/* Embedding file: "MMLEMB01", u32 byte-order marker, u32 dim, u64 rows, then
 * rows*dim float32 (little-endian; big-endian hosts are refused). */
static mml_status mml__write_emb(const char *path, const float *emb, int64_t rows, int32_t dim) {
    mml__afile w;
    unsigned char hdr[24];
    uint32_t bom = MML__BOM, d = (uint32_t)dim;
    uint64_t r = (uint64_t)rows;
    mml_status st;
    memcpy(hdr, "MMLEMB01", 8);
    memcpy(hdr + 8, &bom, 4);
    memcpy(hdr + 12, &d, 4);
    memcpy(hdr + 16, &r, 8);
    if ((st = mml__afile_open(&w, path)) != MML_OK) return st;
    st = mml__afile_write(&w, hdr, sizeof hdr);
    if (!st) st = mml__afile_write(&w, emb, (size_t)rows * (size_t)dim * sizeof(float));
    if (st) {
        mml__afile_abort(&w);
        return st;
    }
    return mml__afile_commit(&w);
}

static mml_status mml__write_meta(const char *path, const mml_data_t *d) {
    mml__afile w;
    int32_t k;
    int s;
    mml_status st;
    if ((st = mml__afile_open(&w, path)) != MML_OK) return st;
    mml__afile_printf(&w, "# moemlora prepared dataset; see docs/DATA.md\nformat=%s\n", MML__META_FORMAT);
    mml__afile_printf(&w, "n_users=%d\nn_items=%d\nn_domains=%d\npretrained_dim=%d\n", d->n_users,
                      d->n_items, d->n_domains, d->pretrained_dim);
    for (k = 0; k < d->n_domains; k++)
        mml__afile_printf(&w, "domain.%d=%s\n", k,
                          d->domain_names && d->domain_names[k] ? d->domain_names[k] : "");
    for (s = 0; s < 3; s++) {
        const mml_split_t *sp = &d->split[s];
        for (k = 0; k < d->n_domains; k++) {
            int64_t a = sp->dom_start[k], b = sp->dom_start[k + 1], i;
            double pos = 0;
            for (i = a; i < b; i++) pos += sp->label[i];
            mml__afile_printf(&w, "count.%s.%d=%lld\nctr.%s.%d=%.6f\n", mml__split_names[s], k,
                              (long long)(b - a), mml__split_names[s], k, b > a ? pos / (double)(b - a) : 0.0);
        }
    }
    return mml__afile_commit(&w);
}

static mml_status mml__check_names(const mml_data_t *d) {
    int32_t k;
    if (!d->domain_names) return MML_OK;
    for (k = 0; k < d->n_domains; k++) {
        const char *s = d->domain_names[k];
        if (s && (strchr(s, '\n') || strchr(s, '\r') || strlen(s) > 1000))
            return mml__fail(MML_ERR_ARG, "domain name %d contains a line break or is too long", k);
    }
    return MML_OK;
}

mml_status mml_data_save_dir(const mml_data_t *d, const char *dir) {
    char path[MML__PATH_MAX], sub[64];
    int32_t k;
    int s;
    mml_status st;
    if (!d || !dir) return mml__fail(MML_ERR_ARG, "mml_data_save_dir: NULL argument");
    if ((st = mml__data_check(d, "mml_data_save_dir")) != MML_OK) return mml__recode(MML_ERR_ARG);
    if ((st = mml__check_names(d)) != MML_OK) return st;
    if (d->pretrained_dim > 0 && !mml__host_le())
        return mml__fail(MML_ERR_ARG, "binary embedding files need a little-endian host");
    if ((st = mml__mkdirs(dir)) != MML_OK) return st;
    /* A cache left from an earlier dataset would shadow the new CSVs. */
    if ((st = mml__join(path, dir, "data.mmlc")) != MML_OK) return st;
    if (remove(path) != 0 && errno != ENOENT)
        return mml__fail(MML_ERR_IO, "%s: cannot remove stale cache: %s", path, strerror(errno));
    for (k = 0; k < d->n_domains; k++) {
        snprintf(sub, sizeof sub, "domain_%d", k);
        if ((st = mml__join(path, dir, sub)) != MML_OK) return st;
        if ((st = mml__mkdirs(path)) != MML_OK) return st;
        for (s = 0; s < 3; s++) {
            snprintf(sub, sizeof sub, "domain_%d/%s.csv", k, mml__split_names[s]);
            if ((st = mml__join(path, dir, sub)) != MML_OK) return st;
            if ((st = mml__write_split_csv(path, &d->split[s], k)) != MML_OK) return st;
        }
    }
    if (d->pretrained_dim > 0) {
        if ((st = mml__join(path, dir, "user_emb.bin")) != MML_OK) return st;
        if ((st = mml__write_emb(path, d->user_emb, d->n_users, d->pretrained_dim)) != MML_OK) return st;
        if ((st = mml__join(path, dir, "item_emb.bin")) != MML_OK) return st;
        if ((st = mml__write_emb(path, d->item_emb, d->n_items, d->pretrained_dim)) != MML_OK) return st;
    }
    if ((st = mml__join(path, dir, "meta.txt")) != MML_OK) return st;
    return mml__write_meta(path, d);
}

/* ---- CSV layout: reader ---- */

/* Parsed meta.txt; -1 = not given. counts: [3][n_domains]. */
typedef struct mml__meta {
    int64_t n_users, n_items, n_domains, dim;
    int64_t *counts;
} mml__meta;

static int mml__key_is(const char *s, const char *e, const char *key) {
    size_t n = strlen(key);
    return (size_t)(e - s) == n && memcmp(s, key, n) == 0;
}

/* Two passes over meta.txt: scalars first (so domain.<k> may come in any
 * order), then names and counts. Unknown keys are ignored (forward compat). */
static mml_status mml__parse_meta(const char *buf, size_t n, const char *fname, mml__meta *m,
                                  mml_data_t *names_out) {
    mml__lines L;
    const char *s, *e, *eq;
    char q[64];
    int pass, have_format = 0;
    m->n_users = m->n_items = m->n_domains = m->dim = -1;
    m->counts = NULL;
    for (pass = 0; pass < 2; pass++) {
        mml__lines_init(&L, buf, n, fname);
        while (mml__next_line(&L, &s, &e)) {
            const char *ks, *ke, *vs = NULL, *ve = e;
            int64_t v;
            while (s < e && (*s == ' ' || *s == '\t')) s++;
            if (s == e || *s == '#') continue;
            eq = (const char *)memchr(s, '=', (size_t)(e - s));
            if (!eq) return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected key=value, got %s", fname, L.line, mml__q(s, e, q, sizeof q));
            ks = s;
            ke = eq;
            vs = eq + 1;
            if (pass == 0) {
                int64_t *slot = NULL;
                if (mml__key_is(ks, ke, "format")) {
                    if (!mml__key_is(vs, ve, MML__META_FORMAT))
                        return mml__fail(MML_ERR_FORMAT, "%s:%lld: unsupported format %s (expected %s)", fname,
                                         L.line, mml__q(vs, ve, q, sizeof q), MML__META_FORMAT);
                    have_format = 1;
                    continue;
                }
                if (mml__key_is(ks, ke, "n_users")) slot = &m->n_users;
                else if (mml__key_is(ks, ke, "n_items")) slot = &m->n_items;
                else if (mml__key_is(ks, ke, "n_domains")) slot = &m->n_domains;
                else if (mml__key_is(ks, ke, "pretrained_dim")) slot = &m->dim;
                if (!slot) continue;
                if (!mml__to_i64(vs, ve, &v) || v < 0 || v > INT32_MAX ||
                    (v == 0 && slot != &m->dim) || (slot == &m->n_domains && v > 1000000) ||
                    (slot == &m->dim && v > 65536))
                    return mml__fail(MML_ERR_FORMAT, "%s:%lld: bad value %s for %.*s", fname, L.line,
                                     mml__q(vs, ve, q, sizeof q), (int)(ke - ks), ks);
                if (*slot >= 0)
                    return mml__fail(MML_ERR_FORMAT, "%s:%lld: %.*s given twice", fname, L.line, (int)(ke - ks), ks);
                *slot = v;
            } else if (ke - ks > 7 && memcmp(ks, "domain.", 7) == 0) {
                int64_t k;
                if (!mml__to_i64(ks + 7, ke, &k) || k < 0 || k >= m->n_domains)
                    return mml__fail(MML_ERR_FORMAT, "%s:%lld: %.*s: domain index out of range [0,%lld)", fname,
                                     L.line, (int)(ke - ks), ks, (long long)m->n_domains);
                if (names_out->domain_names && names_out->domain_names[k])
                    return mml__fail(MML_ERR_FORMAT, "%s:%lld: %.*s given twice", fname, L.line, (int)(ke - ks), ks);
                if (mml__set_name(names_out, (int32_t)k, vs, (size_t)(ve - vs)) != MML_OK) return MML_ERR_NOMEM;
            } else if (ke - ks > 6 && memcmp(ks, "count.", 6) == 0) {
                const char *fs[4], *fe[4];
                int nf = mml__fields(ks, ke, ".", 1, fs, fe, 4), sp = -1, j;
                int64_t k;
                for (j = 0; j < 3 && nf == 3; j++)
                    if (mml__key_is(fs[1], fe[1], mml__split_names[j])) sp = j;
                if (nf != 3 || sp < 0 || !mml__to_i64(fs[2], fe[2], &k) || k < 0 || k >= m->n_domains ||
                    !mml__to_i64(vs, ve, &v) || v < 0)
                    return mml__fail(MML_ERR_FORMAT, "%s:%lld: bad count line %s", fname, L.line, mml__q(ks, ve, q, sizeof q));
                m->counts[sp * m->n_domains + k] = v;
            }
        }
        if (pass == 0) {
            int64_t i;
            if (!have_format) return mml__fail(MML_ERR_FORMAT, "%s: missing format=%s line", fname, MML__META_FORMAT);
            if (m->n_domains < 1) return mml__fail(MML_ERR_FORMAT, "%s: missing n_domains", fname);
            m->counts = (int64_t *)mml__alloc((size_t)m->n_domains * 3 * sizeof(int64_t));
            if (!m->counts) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", fname);
            for (i = 0; i < m->n_domains * 3; i++) m->counts[i] = -1;
            names_out->n_domains = (int32_t)m->n_domains;
        }
    }
    return MML_OK;
}

/* Parses one domain_<k>/<split>.csv buffer into rows starting at *n_rows
 * (capacity checked by the caller with mml__count_lines). n_users / n_items
 * < 0: unknown, track the maximum id instead. */
static mml_status mml__parse_split_csv(const char *buf, size_t n, const char *fname, int32_t domain,
                                       int64_t n_users, int64_t n_items, mml_split_t *sp,
                                       int64_t *max_uid, int64_t *max_pid) {
    static const char *const col[4] = {"uid", "pid", "domain", "label"};
    mml__lines L;
    const char *s, *e, *fs[5], *fe[5];
    char q[64];
    int64_t r = sp->n;
    if (n == 0) return mml__fail(MML_ERR_FORMAT, "%s:1: empty file (expected header uid,pid,domain,label)", fname);
    mml__lines_init(&L, buf, n, fname);
    if (!mml__next_line(&L, &s, &e))
        return mml__fail(MML_ERR_FORMAT, "%s:1: empty file (expected header uid,pid,domain,label)", fname);
    if (!mml__key_is(s, e, "uid,pid,domain,label"))
        return mml__fail(MML_ERR_FORMAT, "%s:1: missing header: expected \"uid,pid,domain,label\", got %s", fname,
                         mml__q(s, e, q, sizeof q));
    while (mml__next_line(&L, &s, &e)) {
        int64_t v[4];
        int nf, j;
        if (s == e)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: empty line", fname, L.line);
        if (mml__key_is(s, e, "uid,pid,domain,label"))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: header repeated", fname, L.line);
        nf = mml__fields(s, e, ",", 1, fs, fe, 5);
        if (nf != 4)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s: expected 4 columns uid,pid,domain,label, got %d", fname,
                             L.line, nf < 4 && L.last_unterminated ? "truncated last line" : (nf < 4 ? "missing columns" : "extra columns"), nf);
        for (j = 0; j < 4; j++) {
            if (j == 3 && !(fe[3] - fs[3] == 1 && (fs[3][0] == '0' || fs[3][0] == '1')))
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: label must be 0 or 1, got %s", fname, L.line,
                                 mml__q(fs[3], fe[3], q, sizeof q));
            if (!mml__to_i64(fs[j], fe[j], &v[j]))
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s is not an integer: %s", fname, L.line, col[j],
                                 mml__q(fs[j], fe[j], q, sizeof q));
            if (v[j] < 0)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s must be >= 0, got %s", fname, L.line, col[j],
                                 mml__q(fs[j], fe[j], q, sizeof q));
        }
        if (v[0] >= (n_users >= 0 ? n_users : (int64_t)INT32_MAX))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: uid %lld out of range (n_users=%lld)", fname, L.line,
                             (long long)v[0], (long long)n_users);
        if (v[1] >= (n_items >= 0 ? n_items : (int64_t)INT32_MAX))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: pid %lld out of range (n_items=%lld)", fname, L.line,
                             (long long)v[1], (long long)n_items);
        if (v[2] != domain)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: domain column is %lld but the file is in domain_%d/", fname,
                             L.line, (long long)v[2], domain);
        if (v[0] > *max_uid) *max_uid = v[0];
        if (v[1] > *max_pid) *max_pid = v[1];
        sp->uid[r] = (int32_t)v[0];
        sp->pid[r] = (int32_t)v[1];
        sp->dom[r] = domain;
        sp->label[r] = (float)v[3];
        r++;
    }
    sp->n = r;
    return MML_OK;
}

/* Reads domain_<k>/<split>.csv for every k into one split. */
static mml_status mml__load_split(const char *dir, int s, const mml__meta *m, mml_split_t *sp,
                                  int64_t *max_uid, int64_t *max_pid) {
    int32_t nd = (int32_t)m->n_domains, k;
    mml__buf *bufs = (mml__buf *)mml__alloc((size_t)nd * sizeof(mml__buf));
    char path[MML__PATH_MAX], sub[64];
    int64_t cap = 0;
    mml_status st = MML_OK;
    if (!bufs) return mml__fail(MML_ERR_NOMEM, "out of memory");
    for (k = 0; k < nd && !st; k++) {
        snprintf(sub, sizeof sub, "domain_%d/%s.csv", k, mml__split_names[s]);
        if ((st = mml__join(path, dir, sub)) != MML_OK) break;
        if ((st = mml__read_file(path, &bufs[k])) != MML_OK) break;
        cap += mml__count_lines(bufs[k].p, bufs[k].n);
    }
    if (!st) st = mml__split_alloc(sp, cap, nd);
    if (!st) sp->n = 0;
    for (k = 0; k < nd && !st; k++) {
        int64_t before = sp->n;
        snprintf(sub, sizeof sub, "domain_%d/%s.csv", k, mml__split_names[s]);
        mml__join(path, dir, sub);
        st = mml__parse_split_csv(bufs[k].p, bufs[k].n, path, k, m->n_users, m->n_items, sp, max_uid, max_pid);
        sp->dom_start[k + 1] = sp->n;
        if (!st && m->counts && m->counts[s * nd + k] >= 0 && m->counts[s * nd + k] != sp->n - before)
            st = mml__fail(MML_ERR_FORMAT, "%s: has %lld rows but meta.txt says count.%s.%d=%lld", path,
                           (long long)(sp->n - before), mml__split_names[s], k, (long long)m->counts[s * nd + k]);
    }
    for (k = 0; k < nd; k++) mml__buf_free(&bufs[k]);
    mml__free(bufs);
    return st;
}

/* Reads an embedding file written by mml__write_emb, checking its shape. */
static mml_status mml__read_emb(const char *path, int64_t rows, int32_t dim, float **out) {
    mml__buf b;
    uint32_t bom, d;
    uint64_t r, bytes;
    mml_status st = mml__read_file(path, &b);
    *out = NULL;
    if (st) return st;
    if (b.n < 24 || memcmp(b.p, "MMLEMB01", 8) != 0) {
        mml__buf_free(&b);
        return mml__fail(MML_ERR_FORMAT, "%s: not a moemlora embedding file", path);
    }
    memcpy(&bom, b.p + 8, 4);
    memcpy(&d, b.p + 12, 4);
    memcpy(&r, b.p + 16, 8);
    if (bom != MML__BOM || d != (uint32_t)dim || r != (uint64_t)rows ||
        !mml__mul_ok(r, (uint64_t)d * 4, (uint64_t)b.n, &bytes) || bytes + 24 != b.n) {
        mml__buf_free(&b);
        return mml__fail(MML_ERR_FORMAT, "%s: shape/byte order mismatch (file %llu x %u, expected %lld x %d, %zu bytes)",
                         path, (unsigned long long)r, d, (long long)rows, dim, b.n);
    }
    *out = (float *)mml__alloc((size_t)bytes + 1);
    if (!*out) {
        mml__buf_free(&b);
        return mml__fail(MML_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(*out, b.p + 24, (size_t)bytes);
    mml__buf_free(&b);
    return MML_OK;
}

mml_status mml_data_load_csv(const char *dir, mml_data_t *out) {
    char path[MML__PATH_MAX], sub[64];
    mml__meta m;
    mml__buf mb;
    int64_t max_uid = -1, max_pid = -1;
    int s;
    int32_t k;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_data_load_csv: out is NULL");
    memset(out, 0, sizeof *out);
    memset(&m, 0, sizeof m);
    if (!dir) return mml__fail(MML_ERR_ARG, "mml_data_load_csv: dir is NULL");
    if ((st = mml__join(path, dir, "meta.txt")) != MML_OK) return st;
    if (mml__is_file(path)) {
        if ((st = mml__read_file(path, &mb)) != MML_OK) return st;
        st = mml__parse_meta(mb.p, mb.n, path, &m, out);
        mml__buf_free(&mb);
        if (st) goto fail;
    } else {
        /* The paper repo's layout: domain_0, domain_1, ... and nothing else. */
        m.n_users = m.n_items = m.dim = -1;
        for (m.n_domains = 0; m.n_domains < 1000000; m.n_domains++) {
            snprintf(sub, sizeof sub, "domain_%lld", (long long)m.n_domains);
            if ((st = mml__join(path, dir, sub)) != MML_OK) return st;
            if (!mml__is_dir(path)) break;
        }
        if (m.n_domains == 0)
            return mml__fail(MML_ERR_IO, "%s: neither meta.txt nor domain_0/ found", dir);
        out->n_domains = (int32_t)m.n_domains;
    }
    for (s = 0; s < 3; s++)
        if ((st = mml__load_split(dir, s, &m, &out->split[s], &max_uid, &max_pid)) != MML_OK) goto fail;
    out->n_users = (int32_t)(m.n_users >= 0 ? m.n_users : max_uid + 1);
    out->n_items = (int32_t)(m.n_items >= 0 ? m.n_items : max_pid + 1);
    out->pretrained_dim = (int32_t)(m.dim > 0 ? m.dim : 0);
    if (out->n_users < 1 || out->n_items < 1) {
        st = mml__fail(MML_ERR_FORMAT, "%s: no rows and no n_users/n_items in meta.txt", dir);
        goto fail;
    }
    for (k = 0; k < out->n_domains; k++) {
        if (!out->domain_names || !out->domain_names[k]) {
            snprintf(sub, sizeof sub, "domain_%d", k);
            if ((st = mml__set_name(out, k, sub, strlen(sub))) != MML_OK) goto fail;
        }
    }
    if (out->pretrained_dim > 0) {
        if ((st = mml__join(path, dir, "user_emb.bin")) != MML_OK) goto fail;
        if ((st = mml__read_emb(path, out->n_users, out->pretrained_dim, &out->user_emb)) != MML_OK) goto fail;
        if ((st = mml__join(path, dir, "item_emb.bin")) != MML_OK) goto fail;
        if ((st = mml__read_emb(path, out->n_items, out->pretrained_dim, &out->item_emb)) != MML_OK) goto fail;
    }
    mml__free(m.counts);
    return MML_OK;
fail:
    mml__free(m.counts);
    mml_data_free(out);
    return st;
}

/* ---- binary cache ---- */

/* Layout (little-endian, byte-order marker checked):
 *   0  "MMLCACHE"      8  u32 version    12 u32 marker 0x01020304
 *   16 i32 n_users, n_items, n_domains, pretrained_dim
 *   32 i64 n[3]        56 u64 names_bytes                  (64-byte header)
 *   names: per domain u32 length + bytes
 *   per split: i64 dom_start[n_domains+1], i32 uid[n], i32 pid[n], i32 dom[n],
 *              f32 label[n]
 *   f32 user_emb[n_users*dim], f32 item_emb[n_items*dim]
 *   u32 CRC32 (IEEE) of everything before it */

typedef struct mml__crc {
    uint32_t t[8][256];
} mml__crc;

static void mml__crc_init(mml__crc *c) {
    uint32_t i, j, k;
    for (i = 0; i < 256; i++) {
        uint32_t x = i;
        for (j = 0; j < 8; j++) x = (x >> 1) ^ (0xEDB88320u & (0u - (x & 1u)));
        c->t[0][i] = x;
    }
    for (i = 0; i < 256; i++)
        for (k = 1; k < 8; k++) c->t[k][i] = (c->t[k - 1][i] >> 8) ^ c->t[0][c->t[k - 1][i] & 255];
}

/* Slice-by-8 (little-endian hosts only, as the binary formats are). crc is the
 * running value, starting from 0. */
static uint32_t mml__crc_update(const mml__crc *c, uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    crc = ~crc;
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
        a ^= crc;
        crc = c->t[7][a & 255] ^ c->t[6][(a >> 8) & 255] ^ c->t[5][(a >> 16) & 255] ^ c->t[4][a >> 24] ^
              c->t[3][b & 255] ^ c->t[2][(b >> 8) & 255] ^ c->t[1][(b >> 16) & 255] ^ c->t[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = c->t[0][(crc ^ *p++) & 255] ^ (crc >> 8);
    return ~crc;
}

typedef struct mml__cw {
    mml__afile w;
    const mml__crc *c;
    uint32_t crc;
} mml__cw;

static mml_status mml__cw_put(mml__cw *cw, const void *p, size_t n) {
    cw->crc = mml__crc_update(cw->c, cw->crc, p, n);
    return mml__afile_write(&cw->w, p, n);
}

mml_status mml_data_save_cache(const mml_data_t *d, const char *path) {
    mml__cw cw;
    mml__crc *crc;
    unsigned char hdr[64];
    uint32_t u;
    int32_t i32[4], k;
    int64_t n3[3];
    uint64_t names_bytes = 0;
    int s;
    mml_status st;
    if (!d || !path) return mml__fail(MML_ERR_ARG, "mml_data_save_cache: NULL argument");
    if (!mml__host_le()) return mml__fail(MML_ERR_ARG, "%s: the cache format needs a little-endian host", path);
    if ((st = mml__data_check(d, "mml_data_save_cache")) != MML_OK) return mml__recode(MML_ERR_ARG);
    crc = (mml__crc *)mml__alloc(sizeof *crc);
    if (!crc) return mml__fail(MML_ERR_NOMEM, "out of memory");
    mml__crc_init(crc);
    for (k = 0; k < d->n_domains; k++)
        names_bytes += 4 + (d->domain_names && d->domain_names[k] ? strlen(d->domain_names[k]) : 0);
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, "MMLCACHE", 8);
    u = MML__CACHE_VERSION;
    memcpy(hdr + 8, &u, 4);
    u = MML__BOM;
    memcpy(hdr + 12, &u, 4);
    i32[0] = d->n_users;
    i32[1] = d->n_items;
    i32[2] = d->n_domains;
    i32[3] = d->pretrained_dim;
    memcpy(hdr + 16, i32, 16);
    for (s = 0; s < 3; s++) n3[s] = d->split[s].n;
    memcpy(hdr + 32, n3, 24);
    memcpy(hdr + 56, &names_bytes, 8);
    if ((st = mml__afile_open(&cw.w, path)) != MML_OK) {
        mml__free(crc);
        return st;
    }
    cw.c = crc;
    cw.crc = 0;
    st = mml__cw_put(&cw, hdr, sizeof hdr);
    for (k = 0; k < d->n_domains && !st; k++) {
        const char *nm = d->domain_names && d->domain_names[k] ? d->domain_names[k] : "";
        u = (uint32_t)strlen(nm);
        st = mml__cw_put(&cw, &u, 4);
        if (!st) st = mml__cw_put(&cw, nm, u);
    }
    for (s = 0; s < 3 && !st; s++) {
        const mml_split_t *sp = &d->split[s];
        size_t n = (size_t)sp->n;
        st = mml__cw_put(&cw, sp->dom_start, ((size_t)d->n_domains + 1) * 8);
        if (!st && n) st = mml__cw_put(&cw, sp->uid, n * 4);
        if (!st && n) st = mml__cw_put(&cw, sp->pid, n * 4);
        if (!st && n) st = mml__cw_put(&cw, sp->dom, n * 4);
        if (!st && n) st = mml__cw_put(&cw, sp->label, n * 4);
    }
    if (!st && d->pretrained_dim > 0) {
        st = mml__cw_put(&cw, d->user_emb, (size_t)d->n_users * (size_t)d->pretrained_dim * 4);
        if (!st) st = mml__cw_put(&cw, d->item_emb, (size_t)d->n_items * (size_t)d->pretrained_dim * 4);
    }
    u = cw.crc;
    if (!st) st = mml__afile_write(&cw.w, &u, 4);
    mml__free(crc);
    if (st) {
        mml__afile_abort(&cw.w);
        return st;
    }
    return mml__afile_commit(&cw.w);
}

/* Sizes first, each checked against the bytes actually present, then the CRC,
 * then the content invariants; never reads past buf + len. */
static mml_status mml__cache_decode(const unsigned char *buf, size_t len, const char *fname, mml_data_t *out) {
    uint32_t ver, bom, crc_file, crc_now;
    int32_t i32[4], k;
    int64_t n3[3];
    uint64_t names_bytes, need, t, pos;
    mml__crc *crc;
    int s;
    mml_status st = MML_OK;
    memset(out, 0, sizeof *out);
    if (len < 68 || memcmp(buf, "MMLCACHE", 8) != 0)
        return mml__fail(MML_ERR_FORMAT, "%s: not a moemlora cache (bad magic or shorter than a header)", fname);
    memcpy(&ver, buf + 8, 4);
    memcpy(&bom, buf + 12, 4);
    if (bom != MML__BOM)
        return mml__fail(MML_ERR_FORMAT, "%s: byte-order marker 0x%08x: written on a host of other byte order or corrupt",
                         fname, bom);
    if (ver != MML__CACHE_VERSION)
        return mml__fail(MML_ERR_FORMAT, "%s: cache version %u, this library reads %u (delete it to rebuild)", fname,
                         ver, MML__CACHE_VERSION);
    memcpy(i32, buf + 16, 16);
    memcpy(n3, buf + 32, 24);
    memcpy(&names_bytes, buf + 56, 8);
    if (i32[0] < 1 || i32[1] < 1 || i32[2] < 1 || i32[3] < 0 || i32[3] > 65536)
        return mml__fail(MML_ERR_FORMAT, "%s: bad sizes in header (n_users=%d n_items=%d n_domains=%d dim=%d)", fname,
                         i32[0], i32[1], i32[2], i32[3]);
    /* need = total file size implied by the header, overflow-checked against len */
    need = 64 + 4;
    if (names_bytes > len || need + names_bytes > len) goto short_file;
    need += names_bytes;
    for (s = 0; s < 3; s++) {
        if (n3[s] < 0 || !mml__mul_ok((uint64_t)n3[s], 16, len, &t)) goto short_file;
        need += t;
        if (!mml__mul_ok((uint64_t)i32[2] + 1, 8, len, &t)) goto short_file;
        need += t;
        if (need > len) goto short_file;
    }
    if (i32[3] > 0) {
        if (!mml__mul_ok((uint64_t)i32[0] + (uint64_t)i32[1], (uint64_t)i32[3] * 4, len, &t)) goto short_file;
        need += t;
    }
    if (need != len)
        return mml__fail(MML_ERR_FORMAT, "%s: size %zu bytes but the header implies %llu (truncated or corrupt)", fname,
                         len, (unsigned long long)need);
    crc = (mml__crc *)mml__alloc(sizeof *crc);
    if (!crc) return mml__fail(MML_ERR_NOMEM, "out of memory");
    mml__crc_init(crc);
    crc_now = mml__crc_update(crc, 0, buf, len - 4);
    mml__free(crc);
    memcpy(&crc_file, buf + len - 4, 4);
    if (crc_now != crc_file)
        return mml__fail(MML_ERR_FORMAT, "%s: checksum mismatch (file corrupt)", fname);
    out->n_users = i32[0];
    out->n_items = i32[1];
    out->n_domains = i32[2];
    out->pretrained_dim = i32[3];
    pos = 64;
    for (k = 0; k < out->n_domains; k++) {
        uint32_t nl;
        if (pos + 4 > 64 + names_bytes) goto bad_names;
        memcpy(&nl, buf + pos, 4);
        pos += 4;
        if (nl > 64 + names_bytes - pos || memchr(buf + pos, 0, nl) || memchr(buf + pos, '\n', nl)) goto bad_names;
        if ((st = mml__set_name(out, k, (const char *)buf + pos, nl)) != MML_OK) goto fail;
        pos += nl;
    }
    if (pos != 64 + names_bytes) goto bad_names;
    for (s = 0; s < 3; s++) {
        mml_split_t *sp = &out->split[s];
        size_t n = (size_t)n3[s];
        if ((st = mml__split_alloc(sp, n3[s], out->n_domains)) != MML_OK) goto fail;
        memcpy(sp->dom_start, buf + pos, ((size_t)out->n_domains + 1) * 8);
        pos += ((uint64_t)out->n_domains + 1) * 8;
        memcpy(sp->uid, buf + pos, n * 4);
        pos += n * 4;
        memcpy(sp->pid, buf + pos, n * 4);
        pos += n * 4;
        memcpy(sp->dom, buf + pos, n * 4);
        pos += n * 4;
        memcpy(sp->label, buf + pos, n * 4);
        pos += n * 4;
    }
    if (out->pretrained_dim > 0) {
        size_t ub = (size_t)out->n_users * (size_t)out->pretrained_dim * 4;
        size_t ib = (size_t)out->n_items * (size_t)out->pretrained_dim * 4;
        out->user_emb = (float *)mml__alloc(ub);
        out->item_emb = (float *)mml__alloc(ib);
        if (!out->user_emb || !out->item_emb) {
            st = mml__fail(MML_ERR_NOMEM, "%s: out of memory", fname);
            goto fail;
        }
        memcpy(out->user_emb, buf + pos, ub);
        memcpy(out->item_emb, buf + pos + ub, ib);
    }
    if ((st = mml__data_check(out, fname)) != MML_OK) goto fail;
    return MML_OK;
short_file:
    return mml__fail(MML_ERR_FORMAT, "%s: truncated or corrupt: sizes in the header exceed the file (%zu bytes)", fname, len);
bad_names:
    st = mml__fail(MML_ERR_FORMAT, "%s: corrupt domain-name block", fname);
fail:
    mml_data_free(out);
    return st;
}

mml_status mml_data_load_cache(const char *path, mml_data_t *out) {
    mml__buf b;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_data_load_cache: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return mml__fail(MML_ERR_ARG, "mml_data_load_cache: path is NULL");
    if (!mml__host_le()) return mml__fail(MML_ERR_ARG, "%s: the cache format needs a little-endian host", path);
    if ((st = mml__read_file(path, &b)) != MML_OK) return st;
    st = mml__cache_decode((const unsigned char *)b.p, b.n, path, out);
    mml__buf_free(&b);
    return st;
}

mml_status mml_data_load(const char *dir, mml_data_t *out) {
    char path[MML__PATH_MAX];
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_data_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir) return mml__fail(MML_ERR_ARG, "mml_data_load: dir is NULL");
    if (!mml__is_dir(dir)) return mml__fail(MML_ERR_IO, "%s: no such directory", dir);
    if ((st = mml__join(path, dir, "data.mmlc")) != MML_OK) return st;
    if (mml__is_file(path)) return mml_data_load_cache(path, out);
    return mml_data_load_csv(dir, out);
}

/* ---- MovieLens ---- */

enum { MML__ML_GENDER = 0, MML__ML_AGE = 1, MML__ML_OCC = 2 };

static const char *const mml__ml_age_names[7] = {"Under 18", "18-24", "25-34", "35-44",
                                                 "45-49",    "50-55", "56+"};
static const char *const mml__ml1m_occ_names[21] = {
    "other",         "academic/educator",   "artist",         "clerical/admin",
    "college/grad student", "customer service", "doctor/health care", "executive/managerial",
    "farmer",        "homemaker",           "K-12 student",   "lawyer",
    "programmer",    "retired",             "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed",
    "writer"};

typedef struct mml__ml_users {
    mml__imap map;       /* raw user id -> index into dom[] */
    int32_t *dom;        /* domain of each user for the chosen kind */
    int64_t n;
    int32_t n_domains;
    char occ[21][48];    /* ML-100K occupation names, u.occupation order */
    int n_occ;
} mml__ml_users;

static int mml__ml100k_age_group(int64_t age) {
    return age < 18 ? 0 : age < 25 ? 1 : age < 35 ? 2 : age < 45 ? 3 : age < 50 ? 4 : age < 56 ? 5 : 6;
}

/* u.occupation: one name per line, in the order that numbers the domains. */
static mml_status mml__ml_parse_occ(const char *buf, size_t n, const char *fname, mml__ml_users *u) {
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
static mml_status mml__ml_parse_users(const char *buf, size_t n, const char *fname, int is_1m, int kind,
                                      mml__ml_users *u) {
    mml__lines L;
    const char *s, *e, *fs[6], *fe[6];
    char q[64];
    int64_t cap = mml__count_lines(buf, n), id, age, old, occ;
    mml_status st;
    int nf, g, j;
    u->dom = (int32_t *)mml__alloc((size_t)cap * sizeof(int32_t));
    if (!u->dom) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", fname);
    if ((st = mml__imap_init(&u->map, (uint64_t)cap)) != MML_OK) return st;
    u->n = 0;
    u->n_domains = kind == MML__ML_GENDER ? 2 : kind == MML__ML_AGE ? 7 : (is_1m ? 21 : u->n_occ);
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
        if (!mml__to_i64(fs[0], fe[0], &id) || id < 0 || id > INT32_MAX)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: bad user id %s", fname, L.line, mml__q(fs[0], fe[0], q, sizeof q));
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
            d = kind == MML__ML_GENDER ? g : kind == MML__ML_AGE ? a : (int32_t)occ;
        } else {
            occ = -1;
            for (j = 0; j < u->n_occ; j++)
                if (mml__key_is(os, oe, u->occ[j])) occ = j;
            if (occ < 0)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: occupation %s is not listed in u.occupation", fname, L.line,
                                 mml__q(os, oe, q, sizeof q));
            d = kind == MML__ML_GENDER ? g : kind == MML__ML_AGE ? mml__ml100k_age_group(age) : (int32_t)occ;
        }
        if ((st = mml__imap_put(&u->map, id, u->n, &old)) != MML_OK) return st;
        if (old >= 0) return mml__fail(MML_ERR_FORMAT, "%s:%lld: user %lld listed twice", fname, L.line, (long long)id);
        u->dom[u->n++] = d;
    }
    if (u->n == 0) return mml__fail(MML_ERR_FORMAT, "%s: no users", fname);
    return MML_OK;
}

typedef struct mml__raw {
    int64_t n, cap;
    int64_t *uraw, *iraw;
    int32_t *dom;
    float *label;
} mml__raw;

static void mml__raw_free(mml__raw *r) {
    mml__free(r->uraw);
    mml__free(r->iraw);
    mml__free(r->dom);
    mml__free(r->label);
    memset(r, 0, sizeof *r);
}

static mml_status mml__raw_alloc(mml__raw *r, int64_t cap) {
    size_t c = (size_t)(cap > 0 ? cap : 1);
    memset(r, 0, sizeof *r);
    r->cap = cap;
    r->uraw = (int64_t *)mml__alloc(c * 8);
    r->iraw = (int64_t *)mml__alloc(c * 8);
    r->dom = (int32_t *)mml__alloc(c * 4);
    r->label = (float *)mml__alloc(c * 4);
    if (!r->uraw || !r->iraw || !r->dom || !r->label) {
        mml__raw_free(r);
        return mml__fail(MML_ERR_NOMEM, "out of memory for %lld samples", (long long)cap);
    }
    return MML_OK;
}

/* ratings.dat (UserID::MovieID::Rating[::Timestamp]) or u.data (tab-separated
 * user item rating [timestamp]); label = rating == 5. */
static mml_status mml__ml_parse_ratings(const char *buf, size_t n, const char *fname, int is_1m,
                                        const mml__ml_users *u, mml__raw *r) {
    mml__lines L;
    const char *s, *e, *fs[5], *fe[5];
    char q[64];
    int64_t v[3], ui;
    int nf, j;
    mml_status st;
    if ((st = mml__raw_alloc(r, mml__count_lines(buf, n))) != MML_OK) return st;
    mml__lines_init(&L, buf, n, fname);
    while (mml__next_line(&L, &s, &e)) {
        if (s == e && L.p >= L.end) break;
        nf = mml__fields(s, e, is_1m ? "::" : "\t", is_1m ? 2 : 1, fs, fe, 5);
        if (nf != 3 && nf != 4)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected 3 or 4 fields user%sitem%srating[%stimestamp], got %d",
                             fname, L.line, is_1m ? "::" : "<tab>", is_1m ? "::" : "<tab>", is_1m ? "::" : "<tab>", nf);
        for (j = 0; j < 3; j++)
            if (!mml__to_i64(fs[j], fe[j], &v[j]) || v[j] < 0 || v[j] > INT32_MAX)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s must be a non-negative integer, got %s", fname, L.line,
                                 j == 0 ? "user id" : j == 1 ? "item id" : "rating", mml__q(fs[j], fe[j], q, sizeof q));
        if (v[2] < 1 || v[2] > 5)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: rating must be 1..5, got %lld", fname, L.line, (long long)v[2]);
        if (nf == 4) {
            int64_t ts;
            if (!mml__to_i64(fs[3], fe[3], &ts))
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: timestamp is not an integer: %s", fname, L.line,
                                 mml__q(fs[3], fe[3], q, sizeof q));
        }
        ui = mml__imap_get(&u->map, v[0]);
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

/* Raw samples -> dense ids -> split -> names. */
static mml_status mml__finish_raw(mml__raw *r, int32_t n_domains, uint64_t seed, mml_data_t *out) {
    int32_t *u = (int32_t *)mml__alloc((size_t)r->n * 4 + 4), *it = (int32_t *)mml__alloc((size_t)r->n * 4 + 4);
    int32_t nu = 0, ni = 0;
    mml_status st;
    if (!u || !it) st = mml__fail(MML_ERR_NOMEM, "out of memory");
    else if ((st = mml__reindex(r->n, r->uraw, u, &nu)) == MML_OK &&
             (st = mml__reindex(r->n, r->iraw, it, &ni)) == MML_OK)
        st = mml_data_split(r->n, u, it, r->dom, r->label, nu, ni, n_domains, seed, out);
    mml__free(u);
    mml__free(it);
    return st;
}

mml_status mml_movielens_load(const char *raw_dir, const char *domain_kind, uint64_t seed, mml_data_t *out) {
    char upath[MML__PATH_MAX], rpath[MML__PATH_MAX], opath[MML__PATH_MAX];
    mml__buf b;
    mml__ml_users *u = NULL;
    mml__raw r;
    int is_1m, kind;
    int32_t k;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_movielens_load: out is NULL");
    memset(out, 0, sizeof *out);
    memset(&r, 0, sizeof r);
    if (!raw_dir || !domain_kind) return mml__fail(MML_ERR_ARG, "mml_movielens_load: NULL argument");
    if (!strcmp(domain_kind, "gender")) kind = MML__ML_GENDER;
    else if (!strcmp(domain_kind, "age")) kind = MML__ML_AGE;
    else if (!strcmp(domain_kind, "occupation")) kind = MML__ML_OCC;
    else return mml__fail(MML_ERR_ARG, "unknown MovieLens domain split \"%s\" (gender, age or occupation)", domain_kind);
    if ((st = mml__join(upath, raw_dir, "users.dat")) != MML_OK) return st;
    is_1m = mml__is_file(upath);
    if (is_1m) {
        mml__join(rpath, raw_dir, "ratings.dat");
        if (!mml__is_file(rpath)) mml__join(rpath, raw_dir, "ratings.no-timestamp.dat");
    } else {
        mml__join(upath, raw_dir, "u.user");
        mml__join(rpath, raw_dir, "u.data");
        mml__join(opath, raw_dir, "u.occupation");
        if (!mml__is_file(upath))
            return mml__fail(MML_ERR_IO, "%s: neither MovieLens-1M (users.dat) nor MovieLens-100K (u.user) files found",
                             raw_dir);
    }
    u = (mml__ml_users *)mml__alloc(sizeof *u);
    if (!u) return mml__fail(MML_ERR_NOMEM, "out of memory");
    if (!is_1m) {
        if ((st = mml__read_file(opath, &b)) != MML_OK) goto done;
        st = mml__ml_parse_occ(b.p, b.n, opath, u);
        mml__buf_free(&b);
        if (st) goto done;
    }
    if ((st = mml__read_file(upath, &b)) != MML_OK) goto done;
    st = mml__ml_parse_users(b.p, b.n, upath, is_1m, kind, u);
    mml__buf_free(&b);
    if (st) goto done;
    if ((st = mml__read_file(rpath, &b)) != MML_OK) goto done;
    st = mml__ml_parse_ratings(b.p, b.n, rpath, is_1m, u, &r);
    mml__buf_free(&b);
    if (st) goto done;
    if ((st = mml__finish_raw(&r, u->n_domains, seed, out)) != MML_OK) goto done;
    for (k = 0; k < out->n_domains && !st; k++) {
        const char *nm = kind == MML__ML_GENDER ? (k ? "M" : "F")
                         : kind == MML__ML_AGE  ? mml__ml_age_names[k]
                         : is_1m                ? mml__ml1m_occ_names[k]
                                                : u->occ[k];
        st = mml__set_name(out, k, nm, strlen(nm));
    }
done:
    if (u) {
        mml__imap_free(&u->map);
        mml__free(u->dom);
        mml__free(u);
    }
    mml__raw_free(&r);
    if (st) mml_data_free(out);
    return st;
}

/* ---- Taobao theme data ---- */

typedef struct mml__emb {
    mml__imap map;  /* raw id -> row */
    float *v;       /* rows x dim */
    int64_t rows;
    int32_t dim;
} mml__emb;

static void mml__emb_free(mml__emb *m) {
    mml__imap_free(&m->map);
    mml__free(m->v);
    memset(m, 0, sizeof *m);
}

/* "<header>\nid,f1,...,fD\n..." with D taken from the first data row. */
static mml_status mml__parse_emb_csv(const char *buf, size_t n, const char *fname, mml__emb *m) {
    mml__lines L;
    const char *s, *e, *p, *c;
    char q[64];
    int64_t cap = mml__count_lines(buf, n), id, old;
    long long dim_line = 0;
    mml_status st;
    memset(m, 0, sizeof *m);
    if ((st = mml__imap_init(&m->map, (uint64_t)cap)) != MML_OK) return st;
    mml__lines_init(&L, buf, n, fname);
    while (mml__next_line(&L, &s, &e)) {
        int32_t j = 0;
        float *row;
        if (L.line == 1 && (s == e || (unsigned)(*s - '0') > 9)) continue; /* header */
        if (s == e && L.p >= L.end) break;
        c = (const char *)memchr(s, ',', (size_t)(e - s));
        if (!c) return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected id,<floats>, got %s", fname, L.line, mml__q(s, e, q, sizeof q));
        if (!mml__to_i64(s, c, &id) || id < 0)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: id must be a non-negative integer, got %s", fname, L.line,
                             mml__q(s, c, q, sizeof q));
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
        if ((st = mml__imap_put(&m->map, id, m->rows, &old)) != MML_OK) return st;
        if (old >= 0) return mml__fail(MML_ERR_FORMAT, "%s:%lld: id %lld listed twice", fname, L.line, (long long)id);
        m->rows++;
    }
    if (m->rows == 0) return mml__fail(MML_ERR_FORMAT, "%s: no embedding rows", fname);
    return MML_OK;
}

/* Clicks whose user and item have embeddings: rows into the embedding tables. */
typedef struct mml__clicks {
    int64_t n;
    int32_t *urow, *irow;
    int64_t *theme;
} mml__clicks;

static void mml__clicks_free(mml__clicks *c) {
    mml__free(c->urow);
    mml__free(c->irow);
    mml__free(c->theme);
    memset(c, 0, sizeof *c);
}

static int mml__name_is(const char *s, const char *e, const char *name) {
    size_t n = strlen(name), i;
    while (s < e && (*s == ' ' || *s == '"')) s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '"')) e--;
    if ((size_t)(e - s) != n) return 0;
    for (i = 0; i < n; i++)
        if ((s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]) != name[i]) return 0;
    return 1;
}

static mml_status mml__parse_clicks(const char *buf, size_t n, const char *fname, const mml__emb *ue,
                                    const mml__emb *ie, mml__clicks *c) {
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
        if (mml__name_is(fs[j], fe[j], "user_id")) cu = j;
        else if (mml__name_is(fs[j], fe[j], "item_id")) ci = j;
        else if (mml__name_is(fs[j], fe[j], "theme_id")) ct = j;
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
            if (!mml__to_i64(fs[col], fe[col], &v[j]) || v[j] < 0)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s must be a non-negative integer, got %s", fname, L.line,
                                 j == 0 ? "user_id" : j == 1 ? "item_id" : "theme_id",
                                 mml__q(fs[col], fe[col], q, sizeof q));
        }
        ur = mml__imap_get(&ue->map, v[0]);
        ir = mml__imap_get(&ie->map, v[1]);
        if (ur < 0 || ir < 0) continue; /* no pretrained embedding: dropped, as in the paper */
        c->urow[c->n] = (int32_t)ur;
        c->irow[c->n] = (int32_t)ir;
        c->theme[c->n] = v[2];
        c->n++;
    }
    return MML_OK;
}

/* LSD radix sort of 64-bit keys over their low `bits` bits (11-bit digits). */
static mml_status mml__radix_u64(uint64_t *a, int64_t n, int bits) {
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

/* Dense ids for the embedding rows that are used, ascending by raw id;
 * also copies those rows into a fresh [n_used, dim] table. */
typedef struct mml__rawrow {
    int64_t raw, row;
} mml__rawrow;

static int mml__cmp_rawrow(const void *a, const void *b) {
    int64_t x = ((const mml__rawrow *)a)->raw, y = ((const mml__rawrow *)b)->raw;
    return (x > y) - (x < y);
}

static mml_status mml__dense_rows(const mml__emb *m, const int32_t *row_of, int64_t n, int32_t *dense_out,
                                  int32_t *n_used, float **table) {
    int32_t *dense_of_row = (int32_t *)mml__alloc((size_t)m->rows * 4 + 4);
    mml__rawrow *used = (mml__rawrow *)mml__alloc((size_t)m->rows * sizeof(mml__rawrow) + 16);
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
    qsort(used, (size_t)nu, sizeof *used, mml__cmp_rawrow);
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
static mml_status mml__taobao_sample(const uint64_t *key, int64_t nk, int32_t nd, int32_t nu, int32_t ni,
                                     uint64_t seed, mml__raw *r, double *ratio_out) {
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
    if ((st = mml__raw_alloc(r, total)) != MML_OK) goto done;
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
static mml_status mml__select_themes(const mml__clicks *c, int n_themes, int32_t *dom, int32_t *nd_out,
                                     int64_t **theme_ids) {
    mml__imap m;
    int64_t *keys = NULL, i, k = 0, old;
    mml_status st = mml__imap_init(&m, 1024);
    if (st) return st;
    for (i = 0; i < c->n; i++)
        if ((st = mml__imap_put(&m, c->theme[i], 0, &old)) != MML_OK) goto done;
    keys = (int64_t *)mml__alloc(m.n * 8 + 8);
    if (!keys) {
        st = mml__fail(MML_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < (int64_t)m.cap; i++)
        if (m.s[i].key >= 0) keys[k++] = m.s[i].key;
    qsort(keys, (size_t)k, sizeof(int64_t), mml__cmp_i64);
    if (n_themes > 0 && k > n_themes) k = n_themes;
    mml__imap_free(&m);
    if ((st = mml__imap_init(&m, (uint64_t)k)) != MML_OK) goto done;
    for (i = 0; i < k; i++)
        if ((st = mml__imap_put(&m, keys[i], i, &old)) != MML_OK) goto done;
    for (i = 0; i < c->n; i++) dom[i] = (int32_t)mml__imap_get(&m, c->theme[i]);
    *nd_out = (int32_t)k;
    *theme_ids = keys;
    keys = NULL;
done:
    mml__free(keys);
    mml__imap_free(&m);
    return st;
}

mml_status mml_taobao_load(const char *raw_dir, int n_themes, uint64_t seed, mml_data_t *out) {
    char path[MML__PATH_MAX], name[64];
    mml__buf b;
    mml__emb ue, ie;
    mml__clicks c;
    mml__raw r;
    int32_t *dom = NULL, *du = NULL, *di = NULL, *u32 = NULL, *i32 = NULL, nd = 0, nu = 0, ni = 0, k;
    int64_t *theme_ids = NULL, i, nk = 0;
    uint64_t *key = NULL, t;
    float *utab = NULL, *itab = NULL;
    double *ratio = NULL;
    int bits = 0;
    int32_t dim = 0;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_taobao_load: out is NULL");
    memset(out, 0, sizeof *out);
    memset(&ue, 0, sizeof ue);
    memset(&ie, 0, sizeof ie);
    memset(&c, 0, sizeof c);
    memset(&r, 0, sizeof r);
    if (!raw_dir || n_themes < 0) return mml__fail(MML_ERR_ARG, "mml_taobao_load: bad argument");
    if ((st = mml__join(path, raw_dir, "user_embedding.csv")) != MML_OK) goto done;
    if ((st = mml__read_file(path, &b)) != MML_OK) goto done;
    st = mml__parse_emb_csv(b.p, b.n, path, &ue);
    mml__buf_free(&b);
    if (st) goto done;
    if ((st = mml__join(path, raw_dir, "item_embedding.csv")) != MML_OK) goto done;
    if ((st = mml__read_file(path, &b)) != MML_OK) goto done;
    st = mml__parse_emb_csv(b.p, b.n, path, &ie);
    mml__buf_free(&b);
    if (st) goto done;
    if (ue.dim != ie.dim) {
        st = mml__fail(MML_ERR_FORMAT, "%s: item embeddings have dim %d but user embeddings %d", path, ie.dim, ue.dim);
        goto done;
    }
    if ((st = mml__join(path, raw_dir, "theme_click_log.csv")) != MML_OK) goto done;
    if ((st = mml__read_file(path, &b)) != MML_OK) goto done;
    st = mml__parse_clicks(b.p, b.n, path, &ue, &ie, &c);
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
    if ((st = mml__select_themes(&c, n_themes, dom, &nd, &theme_ids)) != MML_OK) goto done;
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
    if ((st = mml__dense_rows(&ue, c.urow, nk, du, &nu, &utab)) != MML_OK) goto done;
    if ((st = mml__dense_rows(&ie, c.irow, nk, di, &ni, &itab)) != MML_OK) goto done;
    mml__emb_free(&ue);
    mml__emb_free(&ie);
    if (!mml__mul_ok((uint64_t)nd, (uint64_t)nu, UINT64_MAX, &t) || !mml__mul_ok(t, (uint64_t)ni, UINT64_MAX, &t)) {
        st = mml__fail(MML_ERR_ARG, "taobao: themes x users x items exceeds 2^64");
        goto done;
    }
    while (bits < 64 && (t - 1) >> bits) bits++;
    for (i = 0; i < nk; i++) key[i] = ((uint64_t)dom[i] * (uint64_t)nu + (uint64_t)du[i]) * (uint64_t)ni + (uint64_t)di[i];
    if ((st = mml__radix_u64(key, nk, bits)) != MML_OK) goto done;
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
    if ((st = mml__taobao_sample(key, nk, nd, nu, ni, seed, &r, ratio)) != MML_OK) goto done;
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
    mml__emb_free(&ue);
    mml__emb_free(&ie);
    mml__clicks_free(&c);
    mml__raw_free(&r);
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

/* ---- synthetic Taobao-format raw set ---- */

/* Fixed 6 decimals, |v| < 1e9 (embeddings are small). */
static char *mml__put_f6(char *p, float v) {
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

typedef struct mml__bw {
    mml__afile w;
    char *buf, *p;
    mml_status st;
} mml__bw;

enum { MML__BW_CAP = 1 << 20 };

static void mml__bw_flush(mml__bw *b, int force) {
    if (b->st) return;
    if (force || b->p - b->buf > MML__BW_CAP - 4096) {
        b->st = mml__afile_write(&b->w, b->buf, (size_t)(b->p - b->buf));
        b->p = b->buf;
    }
}

static mml_status mml__bw_open(mml__bw *b, const char *path) {
    memset(b, 0, sizeof *b);
    b->buf = (char *)MOEMLORA_MALLOC(MML__BW_CAP);
    if (!b->buf) return mml__fail(MML_ERR_NOMEM, "out of memory");
    b->p = b->buf;
    b->st = mml__afile_open(&b->w, path);
    if (b->st) {
        MOEMLORA_FREE(b->buf);
        b->buf = NULL;
    }
    return b->st;
}

static mml_status mml__bw_close(mml__bw *b) {
    mml_status st;
    mml__bw_flush(b, 1);
    MOEMLORA_FREE(b->buf);
    b->buf = NULL;
    if (b->st) {
        mml__afile_abort(&b->w);
        return b->st;
    }
    st = mml__afile_commit(&b->w);
    return st;
}

static mml_status mml__gen_emb(const char *path, const char *idname, int64_t rows, int64_t base, int64_t step,
                               int32_t dim, uint64_t *rng) {
    mml__bw b;
    int64_t i;
    int32_t j;
    if (mml__bw_open(&b, path)) return b.st;
    b.p += snprintf(b.p, 64, "%.32s", idname);
    for (j = 0; j < dim; j++) {
        b.p += snprintf(b.p, 64, ",e%d", j);
        mml__bw_flush(&b, 0);
    }
    *b.p++ = '\n';
    for (i = 0; i < rows && !b.st; i++) {
        b.p = mml__put_u64(b.p, (uint64_t)(base + step * i));
        for (j = 0; j < dim; j++) {
            *b.p++ = ',';
            b.p = mml__put_f6(b.p, 0.1f * mml__rng_normal(rng));
            if ((j & 63) == 63) mml__bw_flush(&b, 0);
        }
        *b.p++ = '\n';
        mml__bw_flush(&b, 0);
    }
    return mml__bw_close(&b);
}

mml_status mml_taobao_write_synthetic(const char *dir, int64_t n_users, int64_t n_items, int32_t n_themes,
                                      int64_t n_clicks, int32_t dim, uint64_t seed) {
    char path[MML__PATH_MAX];
    mml__bw b;
    uint64_t rng = seed;
    int64_t i, per;
    mml_status st;
    if (!dir || n_users < 1 || n_items < 1 || n_themes < 1 || n_clicks < 0 || dim < 1 || dim > 65536 ||
        n_users > INT32_MAX / 4 || n_items > INT32_MAX / 4 || n_items < n_themes)
        return mml__fail(MML_ERR_ARG, "mml_taobao_write_synthetic: bad sizes (users %lld items %lld themes %d dim %d)",
                         (long long)n_users, (long long)n_items, n_themes, dim);
    if ((st = mml__mkdirs(dir)) != MML_OK) return st;
    /* sparse raw ids, so that the loader's re-indexing is exercised */
    if ((st = mml__join(path, dir, "user_embedding.csv")) != MML_OK) return st;
    if ((st = mml__gen_emb(path, "user_id", n_users, 100000, 3, dim, &rng)) != MML_OK) return st;
    if ((st = mml__join(path, dir, "item_embedding.csv")) != MML_OK) return st;
    if ((st = mml__gen_emb(path, "item_id", n_items, 5000000, 7, dim, &rng)) != MML_OK) return st;
    if ((st = mml__join(path, dir, "theme_click_log.csv")) != MML_OK) return st;
    if (mml__bw_open(&b, path)) return b.st;
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
        mml__bw_flush(&b, 0);
    }
    return mml__bw_close(&b);
}
