/* Schema files and the CSV loader of the recipes (examples/mml_recipes.h),
 * one case per run (test_csv CASE; ctest registers each):
 *   - schema: the file format, and its errors naming schema-file:line
 *     (unknown kind, 0 hash buckets, two domain columns, ...);
 *   - load: a small CSV: the data errors naming file:line (a field missing
 *     from the header, text in a numeric field, a list over its max_len);
 *     re-indexing on the training split with out-of-vocabulary ids for
 *     values seen only in val/test; hash buckets; numeric shift and scale from
 *     the training split; the split (stratified as mml_data_split, from a
 *     column, from files); quoted cells, TSV;
 *   - fast: the loader's fast paths give the ids of the plain definition
 *     (plain integers read eight digits at a time and looked up by value,
 *     odd spellings among hashed slots, strings ranked by an 8-byte prefix);
 *   - samples: the Ali-CCP, Criteo and Avazu samples of the real data sets
 *     with the schemas of examples/schemas/, each trained for two epochs per
 *     phase in memory (the loss and AUC defined, the model learns something);
 *   - movielens: MovieLens-100K with every attribute (--features all: the
 *     same rows in each split as the paper's layout; trained, AUC above 0.6)
 *     and MovieLens-1M under the Scenario-Wise Rec protocol (3 age domains,
 *     80/10/10, label rating > 3).
 * Real data as mml_test.h says (MOEMLORA_DATA_DIR, else ../shared/data): a
 * case without it is skipped (77). MOEMLORA_TEST_QUICK=1 trains less. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "../examples/mml_recipes.h"
#include "mml_test.h"

static int quick;

/* ---- helpers ---- */

static mml_status parse_schema(const char *text, mmlr_csv_schema *sc) {
    return mmlr_schema_parse(text, strlen(text), "schema.txt", sc);
}

/* The schema text must fail with a message holding want. */
static void schema_fails(const char *text, const char *want) {
    static mmlr_csv_schema sc;
    mml_status st = parse_schema(text, &sc);
    CHECK(st == MML_ERR_FORMAT && strstr(mml_last_error(), want), "want \"%s\", got %d \"%s\"", want, (int)st,
          mml_last_error());
}

/* Loads csv (one file, "data.csv") with the schema text. */
static mml_status load_text(const char *schema, const char *csv, const mmlr_csv_opts *o, mml_data_t *d) {
    static mmlr_csv_schema sc;
    mml_status st = parse_schema(schema, &sc);
    if (st) return st;
    char *buf = strdup(csv);
    size_t len = strlen(csv);
    const char *name = "data.csv";
    st = mmlr_csv_load_bufs(1, &buf, &len, &name, &sc, o, d);
    free(buf);
    return st;
}

static void load_fails(const char *schema, const char *csv, const char *want) {
    mml_data_t d;
    mml_status st = load_text(schema, csv, NULL, &d);
    CHECK(st == MML_ERR_FORMAT && strstr(mml_last_error(), want), "want \"%s\", got %d \"%s\"", want, (int)st,
          mml_last_error());
    CHECK(d.schema == NULL && d.split[0].n == 0, "a failed load left data behind");
}

/* ---- schema ---- */

static void test_schema_ok(void) {
    static mmlr_csv_schema sc;
    mmlt_ctx = "schema ok";
    CHECK_OK(parse_schema("# a comment\n"
                          "label rating >= 4   # trailing comment\n"
                          "delimiter tab\n"
                          "field user categorical dim=8\n"
                          "field site categorical domain\n"
                          "field ad categorical hash=1000 column=Ad-Id\n"
                          "field tags multi_hot max_len=3 sep=; pooling=sum\n"
                          "field price numeric norm=zscore missing=-1\n",
                          &sc));
    const mml_schema_t *s = &sc.s;
    CHECK(s->n_fields == 5 && s->domain == 1, "fields %d domain %d", s->n_fields, s->domain);
    CHECK(!strcmp(sc.label, "rating") && sc.label_op == MMLR_LABEL_GE && sc.label_thr == 4.0 && sc.delim == '\t',
          "label %s op %d thr %g delim %d", sc.label, sc.label_op, sc.label_thr, sc.delim);
    CHECK(s->field[0].kind == MML_FIELD_CATEGORICAL && s->field[0].dim == 8 && s->field[0].hash_buckets == 0, "user");
    CHECK(s->field[2].hash_buckets == 1000 && s->field[2].vocab == 1000 && !strcmp(sc.col[2].column, "Ad-Id") &&
              !strcmp(s->field[2].name, "ad"),
          "ad: buckets %d column %s", s->field[2].hash_buckets, sc.col[2].column);
    CHECK(s->field[3].kind == MML_FIELD_MULTI_HOT && s->field[3].max_len == 3 && sc.col[3].sep == ';' &&
              s->field[3].pooling == MML_POOL_SUM,
          "tags");
    CHECK(s->field[4].kind == MML_FIELD_NUMERIC && s->field[4].norm == MML_NORM_ZSCORE && sc.col[4].has_missing &&
              sc.col[4].missing == -1.0f,
          "price");
    CHECK(sc.col[1].line == 5 && sc.col[4].line == 8, "lines %d %d", sc.col[1].line, sc.col[4].line);
}

static void test_schema_errors(void) {
    mmlt_ctx = "schema errors";
    /* the six named cases, each with its line */
    schema_fails("label y\nfield d categorical domain\nfield x colour\n",
                 "schema.txt:3: field x: unknown kind \"colour\"");
    schema_fails("label y\nfield d categorical domain\n\nfield x categorical hash=0\n",
                 "schema.txt:4: hash=0: must be an integer in 1..1073741824");
    schema_fails("label y\nfield a categorical domain\nfield b categorical domain\n",
                 "schema.txt:3: a second domain column \"b\" (the domain is already \"a\", line 2)");
    /* and the others */
    schema_fails("label y\nfield d categorical domain\nfield x categorical max_len=3\n",
                 "schema.txt:3: field x: option \"max_len\" is for multi_hot fields, not categorical");
    schema_fails("label y\nfield d categorical domain\nfield t multi_hot\n", "schema.txt:3: field t: multi_hot needs max_len=N");
    schema_fails("label y\nfield d numeric domain\n", "schema.txt:2: field d: option \"domain\" is for categorical fields");
    schema_fails("label y\nfield d categorical domain hash=10\n", "schema.txt:2: field d: the domain column takes vocab=auto");
    schema_fails("label y\nfield d categorical domain\nfield d numeric\n", "schema.txt:3: field d declared twice (first at line 2)");
    schema_fails("label y\nfield d categorical domain\nfield a numeric column=d\n",
                 "schema.txt:3: field a reads column \"d\", as field d does (line 2)");
    schema_fails("label y\nfield d categorical domain\nfield y numeric\n", "schema.txt:3: field y reads the label column");
    schema_fails("label y\nfield d categorical domain\nfield x categorical dim=0\n", "schema.txt:3: dim=0: must be an integer in 1..1024");
    schema_fails("label y\nfield d categorical domain\nfield x categorical size=3\n", "schema.txt:3: field x: unknown option \"size\"");
    schema_fails("label y\nfield d categorical domain\nfield x numeric missing=abc\n", "schema.txt:3: field x: missing=abc is not a number");
    schema_fails("label y\nfield d categorical domain\nfield bad/name numeric\n", "schema.txt:3: field name \"bad/name\"");
    schema_fails("label y ~ 3\nfield d categorical domain\n", "schema.txt:1: label y \"~\": the comparison must be");
    schema_fails("label y\nlabel z\n", "schema.txt:2: a second label line");
    schema_fails("labels y\n", "schema.txt:1: unknown line \"labels\"");
    schema_fails("field d categorical domain\n", "schema.txt: no label line");
    schema_fails("label y\nfield x numeric\n", "schema.txt: no domain column");
    schema_fails("label y\nfield d categorical domain\ndelimiter pipe\n", "schema.txt:3: delimiter must be");
    static mmlr_csv_schema sc;
    CHECK(mmlr_schema_parse("label y\n\0field\n", 14, "schema.txt", &sc) == MML_ERR_FORMAT &&
              strstr(mml_last_error(), "schema.txt:2: a NUL byte") && sc.s.n_fields == 0 && !sc.label[0],
          "NUL: %s", mml_last_error());
}

/* ---- load ---- */

static const char *const S1 = "label click\n"
                              "field user categorical\n"
                              "field site categorical domain\n"
                              "field ad categorical hash=7\n"
                              "field tags multi_hot max_len=2\n"
                              "field price numeric norm=minmax missing=0\n";

static void test_load_errors(void) {
    mmlt_ctx = "load errors";
    /* the three named data errors */
    load_fails(S1, "click,user,site,tags,price\n1,u1,s1,a,2\n", "data.csv:1: the header has no column \"ad\" (field ad, schema.txt:4)");
    load_fails(S1, "click,user,site,ad,tags,price\n1,u1,s1,x,a,2\n0,u2,s1,y,b,2.5kg\n",
               "data.csv:3: column price (numeric): \"2.5kg\" is not a number");
    load_fails(S1, "click,user,site,ad,tags,price\n1,u1,s1,x,a|b,2\n0,u2,s1,y,,2\n1,u2,s1,y,a|b|c,2\n",
               "data.csv:4: column tags (multi_hot): more than max_len=2 ids in \"a|b|c\"");
    /* and the others */
    load_fails(S1, "click,user,site,ad,tags,price\n1,u1,s1,x,a,2\n0,u1,s1\n", "data.csv:3: 3 columns, the header has 6");
    load_fails(S1, "click,user,site,ad,tags,price\n1,u1,s1,x,a,2,9\n", "data.csv:2: more columns than the header's 6");
    load_fails(S1, "click,user,site,ad,tags,price\n2,u1,s1,x,a,2\n", "data.csv:2: label column click: \"2\" is not 0 or 1");
    load_fails(S1, "click,user,site,ad,tags,price\n1,\"u1,s1,x,a,2\n", "data.csv:2: column 2: a quote is not closed");
    load_fails(S1, "click,user,site,ad,tags,price,user\n1,u1,s1,x,a,2,u\n", "data.csv:1: the header names column \"user\" twice");
    load_fails(S1, "user,site,ad,tags,price\n", "data.csv:1: the header has no label column \"click\"");
    load_fails(S1, "click,\"user,site\n", "data.csv:1: header: a quote is not closed");
    load_fails(S1, "", "data.csv: empty file");
    load_fails(S1, "click,user,site,ad,tags,price\n", "no data rows");
    load_fails("label click\nfield site categorical domain\nfield n numeric\n", "click,site,n\n1,a,\n",
               "data.csv:2: column n (numeric) is empty");
    load_fails("label click\nfield site categorical domain\nfield n numeric\n", "click,site,n\n1,a,nan\n",
               "data.csv:2: column n (numeric): \"nan\" is not a number");
}

/* 20 rows: users u0..u9 (u9 only in the last rows), 2 sites, a split column. */
static char *split_csv(void) {
    static char buf[4096];
    char *p = buf;
    p += sprintf(p, "click,user,site,ad,tags,price,part\n");
    for (int i = 0; i < 20; i++) {
        const char *part = i < 12 ? "train" : i < 16 ? "val" : "test";
        p += sprintf(p, "%d,u%d,%s,ad%d,%s,%d,%s\n", i % 3 == 0, i < 16 ? i % 8 : 9 - i % 2, i % 2 ? "s1" : "s0", i,
                     i % 4 == 0 ? "" : i % 4 == 1 ? "x|y" : "\"z\"", i < 12 ? i : 100 + i, part);
    }
    return buf;
}

static void test_load_reindex(void) {
    mmlt_ctx = "re-index";
    mml_data_t d;
    mmlr_csv_opts o;
    mmlr_csv_opts_default(&o);
    o.split_column = "part";
    CHECK_OK(load_text(S1, split_csv(), &o, &d));
    if (!d.schema) return;
    const mml_schema_t *s = d.schema;
    CHECK(d.n_domains == 2 && d.split[0].n == 12 && d.split[1].n == 4 && d.split[2].n == 4, "domains %d rows %lld %lld %lld",
          d.n_domains, (long long)d.split[0].n, (long long)d.split[1].n, (long long)d.split[2].n);
    CHECK(!strcmp(d.domain_names[0], "s0") && !strcmp(d.domain_names[1], "s1"), "names");
    /* users u0..u7 in train (ids in ascending order), u8/u9 never: OOV = vocab */
    CHECK(s->field[0].vocab == 8, "user vocab %d", s->field[0].vocab);
    int oov = 0, bad = 0;
    for (int k = 0; k < 3; k++)
        for (int64_t i = 0; i < d.split[k].n; i++) {
            int32_t u = d.split[k].ids[0][i];
            if (k == 0 && (u < 0 || u >= 8)) bad++;
            oov += u == 8;
        }
    CHECK(!bad && oov == 4, "train ids out of range %d, out-of-vocabulary rows %d (want 4: u8, u9 in test)", bad, oov);
    /* train rows of domain s0: rows 0,2,..,10 in order, users u0,u2,u4,u6,u0,u2 */
    const int32_t want0[6] = {0, 2, 4, 6, 0, 2};
    CHECK(d.split[0].dom_start[1] == 6 && !memcmp(d.split[0].ids[0], want0, sizeof want0), "s0 users %d %d %d",
          d.split[0].ids[0][0], d.split[0].ids[0][1], d.split[0].ids[0][2]);
    /* hashed: any id below 7, the same value the same bucket */
    CHECK(s->field[2].vocab == 7 && s->field[2].hash_buckets == 7, "ad buckets");
    for (int64_t i = 0; i < d.split[0].n; i++) CHECK(d.split[0].ids[2][i] >= 0 && d.split[0].ids[2][i] < 7, "bucket");
    /* multi-hot: x, y, z in train -> 0, 1, 2; padded with -1; quotes removed */
    const int32_t *t = d.split[0].ids[3];
    CHECK(s->field[3].vocab == 3 && t[0] == -1 && t[1] == -1 && t[2] == 2 && t[3] == -1 && t[4] == -1, "tags %d %d %d %d",
          t[0], t[1], t[2], t[3]);
    /* price 0..11 in train: min-max shift 0, scale 1/11; later rows raw */
    CHECK(s->field[4].shift == 0.0f && mmlt_close(s->field[4].scale, 1.0 / 11, 1e-6, 0), "price shift %g scale %g",
          s->field[4].shift, s->field[4].scale);
    CHECK(d.split[2].values[4][0] >= 116.0f, "test price kept raw: %g", d.split[2].values[4][0]);
    CHECK(d.split[0].label[0] == 1.0f && d.split[0].label[1] == 0.0f, "labels");
    CHECK(mml_schema_check(s) == MML_OK, "%s", mml_last_error());
    mml_data_free(&d);
}

/* The stratified split is mml_data_split's: the same rows in each split. */
static void test_load_split(void) {
    mmlt_ctx = "split";
    static char csv[1 << 16];
    int32_t uid[600], pid[600], dom[600];
    float lab[600];
    char *p = csv;
    uint64_t r = 7;
    p += sprintf(p, "y\tu\td\n");
    for (int i = 0; i < 600; i++) {
        uid[i] = (int32_t)mml__rng_below(&r, 1000);
        dom[i] = (int32_t)mml__rng_below(&r, 3);
        lab[i] = (float)(mml__rng_below(&r, 4) == 0);
        pid[i] = 0;
        p += sprintf(p, "%d\t%d\t%d\n", (int)lab[i], uid[i], dom[i]);
    }
    mml_data_t a, b;
    CHECK_OK(load_text("label y\nfield u categorical\nfield d categorical domain\n", csv, NULL, &b));
    CHECK_OK(mml_data_split(600, uid, pid, dom, lab, 1000, 1, 3, 123, &a));
    if (!b.schema || !a.split[0].uid) return;
    for (int k = 0; k < 3; k++) {
        CHECK(a.split[k].n == b.split[k].n, "split %d: %lld rows, mml_data_split %lld", k, (long long)b.split[k].n,
              (long long)a.split[k].n);
        int same = a.split[k].n == b.split[k].n;
        for (int64_t i = 0; same && i < a.split[k].n; i++) {
            /* ids differ (re-indexed): compare through the raw values' ranks on both sides */
            same = a.split[k].dom[i] == b.split[k].dom[i] && a.split[k].label[i] == b.split[k].label[i];
        }
        CHECK(same, "split %d differs from mml_data_split's", k);
    }
    /* the users of train: every raw user of a's train rows, in order */
    int ok = 1;
    for (int64_t i = 1; i < a.split[0].n; i++)
        if ((a.split[0].uid[i] < a.split[0].uid[i - 1]) != (b.split[0].ids[0][i] < b.split[0].ids[0][i - 1])) ok = 0;
    CHECK(ok, "train users in another order than mml_data_split's rows");
    mml_data_free(&a);
    mml_data_free(&b);
    /* ratios and the random split */
    mmlr_csv_opts o;
    mmlr_csv_opts_default(&o);
    o.ratio[0] = 0.8, o.ratio[1] = 0.1, o.ratio[2] = 0.1;
    o.stratify = 0;
    CHECK_OK(load_text("label y\nfield u categorical\nfield d categorical domain\n", csv, &o, &b));
    CHECK(b.split[0].n == 480 && b.split[1].n == 60 && b.split[2].n == 60, "80/10/10: %lld %lld %lld",
          (long long)b.split[0].n, (long long)b.split[1].n, (long long)b.split[2].n);
    mml_data_free(&b);
    o.ratio[2] = 0.3;
    CHECK(load_text("label y\nfield u categorical\nfield d categorical domain\n", csv, &o, &b) == MML_ERR_ARG &&
              strstr(mml_last_error(), "add up to"),
          "ratios not adding up: %s", mml_last_error());
}

/* ---- fast paths: the same ids as the plain definition ---- */

/* A plain integer as the loader's num table takes it: digits only, no
 * leading zero, at most 8 digits, below 2^24. */
static int ref_plain(const char *s, size_t n, uint32_t *v) {
    uint64_t x = 0;
    if (n == 0 || n > 8 || (s[0] == '0' && n > 1)) return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    *v = (uint32_t)x;
    return x < (1u << 24);
}

/* Eight bytes at a time (room to read) and byte by byte (none) agree with
 * the definition, on edge spellings and on random bytes near the digits. */
static void test_fast_int(void) {
    static const char *const edge[] = {"", "0", "00", "01", "007", "7", "-0", "-7", "+7", " 7", "7 ", "9", "10",
                                       "16777215", "16777216", "99999999", "123456789", "12345678", "1e3", "0x1f",
                                       "/", ":", "1/2", "12:4", "\xb5", "1\xb9", "\x39\x3a"};
    static const char alpha[] = "0123456789/:a+- \x30\xb0\xb9\xf9\x3f";
    char buf[32];
    uint64_t r = 11;
    int bad = 0;
    mmlt_ctx = "fast int";
    for (int t = 0; t < 200000; t++) {
        size_t n;
        if (t < (int)(sizeof edge / sizeof *edge)) {
            n = strlen(edge[t]);
            memcpy(buf, edge[t], n);
        } else {
            n = (size_t)mml__rng_below(&r, 11);
            for (size_t i = 0; i < n; i++)
                buf[i] = mml__rng_below(&r, 4) ? (char)('0' + mml__rng_below(&r, 10))
                                               : alpha[mml__rng_below(&r, sizeof alpha - 1)];
        }
        memset(buf + n, '7', sizeof buf - n); /* what follows must not count */
        uint32_t want = 0, fast = 0, slow = 0;
        int w = ref_plain(buf, n, &want);
        int f = mmlr__plain_int(buf, buf + n, buf + sizeof buf, &fast);
        int s = mmlr__plain_int(buf, buf + n, buf + n, &slow);
        if (f != w || s != w || (w && (fast != want || slow != want))) {
            if (bad++ < 5)
                CHECK(0, "\"%.*s\": want %d %u, 8 at a time %d %u, byte by byte %d %u", (int)n, buf, w, want, f, fast, s,
                      slow);
        }
    }
    CHECK(!bad, "%d spellings read otherwise", bad);
}

/* The value of row i, column c of fast_csv. */
static void fast_value(uint64_t *r, int i, int c, char *out) {
    static const char *const odd[] = {"0", "00", "07", "7", "007", "+7", "-0", "-7", "", "16777215", "16777216",
                                      "99999999", "123456789", "abcdefgh", "abcdefghi", "abcdefg", "abc", "ABC",
                                      "abcdefgh\x01", "\"12\"", "12", "x y"};
    uint64_t u = mml__rng_next(r);
    if (c == 0) { /* a mix: odd spellings, ids from a range that grows, now and then a large one */
        if (u % 4 == 0) strcpy(out, odd[(u >> 8) % (sizeof odd / sizeof *odd)]);
        else if (u % 97 == 1) sprintf(out, "%llu", (unsigned long long)((u >> 8) % 1000000000));
        else sprintf(out, "%llu", (unsigned long long)((u >> 8) % (uint64_t)(50 + 30 * i)));
    } else if (c == 1) { /* plain ids only: large early ones wait among the slots until the table covers them */
        sprintf(out, "%llu", (unsigned long long)(i < 8 ? 5000 + (uint64_t)i : (u >> 8) % (uint64_t)(1 + 2 * i)));
    } else { /* hex, 6 to 10 characters: prefixes shared, lengths differ */
        sprintf(out, "%.*llx", (int)(6 + (u >> 60) % 5), (unsigned long long)((u >> 8) % 3000) * 0x10001ull);
        out[6 + (u >> 60) % 5] = 0;
    }
}

typedef struct {
    const char *s;
    int64_t num;
} fast_sv;

static int fast_all_int;

/* The loader's order: numeric when every train value is an integer, else bytes then length. */
static int fast_cmp(const void *x, const void *y) {
    const fast_sv *a = (const fast_sv *)x, *b = (const fast_sv *)y;
    if (fast_all_int && a->num != b->num) return a->num < b->num ? -1 : 1;
    return strcmp(a->s, b->s);
}

/* The ids of n values (train[i]: the row trains) by the definition: the
 * place among the distinct train values, vocab for any other. */
static int32_t ref_ids(int n, char **val, const int *train, int32_t *id) {
    fast_sv *v = (fast_sv *)calloc((size_t)n + 1, sizeof *v);
    int m = 0, k = 0;
    fast_all_int = 1;
    for (int i = 0; i < n; i++)
        if (train[i]) v[m++].s = val[i];
    for (int i = 0; i < m; i++)
        if (!mml__to_i64(v[i].s, v[i].s + strlen(v[i].s), &v[i].num)) fast_all_int = 0;
    qsort(v, (size_t)m, sizeof *v, fast_cmp);
    for (int i = 0; i < m; i++)
        if (i == 0 || strcmp(v[i].s, v[k - 1].s)) v[k++] = v[i];
    for (int i = 0; i < n; i++) {
        fast_sv key = {val[i], 0};
        mml__to_i64(val[i], val[i] + strlen(val[i]), &key.num);
        fast_sv *hit = (fast_sv *)bsearch(&key, v, (size_t)k, sizeof *v, fast_cmp);
        id[i] = hit ? (int32_t)(hit - v) : (k > 0 ? k : 1);
    }
    free(v);
    return k > 0 ? k : 1;
}

/* Integer ids (num table, grown as values come, with large ones first
 * among the slots), odd spellings (slots), hex strings (ranked by prefix),
 * tag lists of them, cells of every length up to the line's end: each id
 * as the definition gives it. */
static void test_load_fast(void) {
    enum { N = 6000, C = 3 };
    static char cell[N][C + 1][24];
    static char csv[N * 120];
    char *val[N];
    int32_t id[N], part[N], train[N];
    char *p = csv;
    uint64_t r = 5;
    mmlt_ctx = "fast load";
    p += sprintf(p, "y,d,a,b,c,t,s\n");
    for (int i = 0; i < N; i++) {
        part[i] = i % 5 < 3 ? MML_TRAIN : i % 5 == 3 ? MML_VAL : MML_TEST;
        train[i] = part[i] == MML_TRAIN;
        for (int c = 0; c < C; c++) fast_value(&r, i, c, cell[i][c]);
        fast_value(&r, i, 0, cell[i][C]); /* the tag: one more of the mix */
        if (strchr(cell[i][C], '"') || strchr(cell[i][C], ' ') || !cell[i][C][0]) strcpy(cell[i][C], "5");
        p += sprintf(p, "%d,x,%s,%s,%s,%s,%s\n", i % 3 == 0, cell[i][0], cell[i][1], cell[i][2], cell[i][C],
                     mml__split_names[part[i]]);
        for (int c = 0; c < C; c++) /* the value the loader sees: quotes removed */
            if (cell[i][c][0] == '"') memmove(cell[i][c], cell[i][c] + 1, strlen(cell[i][c]) - 1), cell[i][c][2] = 0;
    }
    mml_data_t d;
    mmlr_csv_opts o;
    mmlr_csv_opts_default(&o);
    o.split_column = "s";
    CHECK_OK(load_text("label y\nfield d categorical domain\nfield a categorical\nfield b categorical\n"
                       "field c categorical\nfield t multi_hot max_len=2\n",
                       csv, &o, &d));
    if (!d.schema) return;
    for (int c = 0; c <= C; c++) {
        for (int i = 0; i < N; i++) val[i] = cell[i][c];
        int32_t vocab = ref_ids(N, val, train, id), bad = 0;
        int64_t at[3] = {0, 0, 0};
        int len = c == C ? 2 : 1;
        for (int i = 0; i < N; i++) {
            int32_t got = d.split[part[i]].ids[1 + c][at[part[i]]++ * len];
            if (got != id[i] && bad++ < 3) CHECK(0, "column %d row %d \"%s\": id %d, want %d", c, i, val[i], got, id[i]);
        }
        CHECK(!bad && d.schema->field[1 + c].vocab == vocab, "column %d: %d ids differ; vocab %d, want %d", c, bad,
              d.schema->field[1 + c].vocab, vocab);
    }
    mml_data_free(&d);
}

/* ---- samples ---- */

/* Two epochs per phase of MoE-MLoRA on the MLP tower; the test metrics defined. */
static void train_briefly(const mml_data_t *d, const char *what, mml_model_kind kind) {
    mml_config_t c;
    mml_config_default(&c);
    c.schema = d->schema;
    c.model = kind;
    c.n_domains = d->n_domains;
    c.emb_dim = 8;
    c.hidden[0] = 32, c.hidden[1] = 16, c.hidden[2] = 8;
    c.threads = 1;
    mml_model_t *m = make_model(&c);
    mml_fit_opts_t o;
    mml_fit_opts_default(&o);
    o.max_epochs = quick ? 1 : 2;
    o.batch = 64;
    mml_metrics_t t;
    memset(&t, 0, sizeof t);
    CHECK_OK(mml_fit(m, d, &o, &t));
    CHECK(isfinite(t.logloss_all) && t.logloss_all > 0 && t.logloss_all < 1.5, "%s: test log loss %g", what, t.logloss_all);
    printf("  %s (%s): %lld/%lld/%lld rows, %d domains, test log loss %.4f, weighted AUC %.4f\n", what,
           mml_model_kind_name(kind), (long long)d->split[0].n, (long long)d->split[1].n, (long long)d->split[2].n,
           d->n_domains, t.logloss_all, t.weighted_auc);
    mml_model_free(m);
}

static int sample(const char *sub, const char *file, const char *schema, const char *val, const char *test,
                  mml_model_kind kind) {
    char raw[1100], in[1300], vp[1300], tp[1300], sp[1300];
    if (!mmlt_real_data(sub, file, "the sample", raw, sizeof raw)) return MMLT_SKIP;
    static mmlr_csv_schema sc;
    mmlr_csv_opts o;
    mml_data_t d;
    mmlr_csv_opts_default(&o);
    snprintf(in, sizeof in, "%s/%s", raw, file);
    snprintf(sp, sizeof sp, "%s/examples/schemas/%s", MOEMLORA_SOURCE_DIR, schema);
    if (val) {
        snprintf(vp, sizeof vp, "%s/%s", raw, val);
        snprintf(tp, sizeof tp, "%s/%s", raw, test);
        o.val_path = vp;
        o.test_path = tp;
    }
    mmlt_ctx = schema;
    CHECK_OK(mmlr_schema_read(sp, &sc));
    CHECK_OK(mmlr_csv_load(in, &sc, &o, &d));
    if (!d.schema) return 0;
    CHECK(d.split[0].n > 0 && d.split[1].n > 0 && d.split[2].n > 0, "empty split");
    train_briefly(&d, schema, kind);
    mml_data_free(&d);
    return 0;
}

static int test_samples(void) {
    int skip = 0;
    skip |= sample("ali-ccp-sample", "swr_ali_ccp_train_sample.csv", "ali_ccp.schema", "swr_ali_ccp_val_sample.csv",
                   "swr_ali_ccp_test_sample.csv", MML_MODEL_MLP);
    skip |= sample("deepctr-samples", "criteo_sample.txt", "criteo.schema", NULL, NULL, MML_MODEL_DEEPFM);
    skip |= sample("deepctr-samples", "avazu_sample.txt", "avazu.schema", NULL, NULL, MML_MODEL_WDL);
    return skip;
}

/* ---- movielens ---- */

static int test_movielens(void) {
    char raw[1100];
    int skip = 0;
    mml_data_t a, b;
    if (mmlt_real_data("ml-100k", "u.data", "MovieLens-100K with every attribute", raw, sizeof raw)) {
        mmlt_ctx = "ml-100k all";
        CHECK_OK(mmlr_movielens_load(raw, "age", 123, &a));
        CHECK_OK(mmlr_movielens_load_all(raw, "age", NULL, 123, &b));
        if (b.schema && a.split[0].n) {
            CHECK(b.schema->n_fields == 8 && b.n_domains == 7 && !strcmp(b.domain_names[6], "56+"), "fields %d domains %d",
                  b.schema->n_fields, b.n_domains);
            int same = 1;
            for (int k = 0; k < 3; k++)
                for (int32_t j = 0; j <= 7; j++) same &= a.split[k].dom_start[j] == b.split[k].dom_start[j];
            for (int64_t i = 0; i < a.split[0].n; i++) same &= a.split[0].label[i] == b.split[0].label[i];
            CHECK(same, "the rows of each split differ from the paper layout's");
            const mml_field_t *g = &b.schema->field[6];
            CHECK(g->kind == MML_FIELD_MULTI_HOT && g->max_len >= 3 && g->vocab >= 18, "genres: kind %d max_len %d vocab %d",
                  (int)g->kind, g->max_len, g->vocab);
            mml_config_t c;
            mml_config_default(&c);
            c.schema = b.schema;
            c.n_domains = b.n_domains;
            c.hidden[0] = 64, c.hidden[1] = 32, c.hidden[2] = 16;
            mml_model_t *m = make_model(&c);
            mml_fit_opts_t o;
            mml_fit_opts_default(&o);
            o.max_epochs = quick ? 1 : 3;
            mml_metrics_t t;
            memset(&t, 0, sizeof t);
            CHECK_OK(mml_fit(m, &b, &o, &t));
            CHECK(t.weighted_auc > 0.6, "weighted AUC %.4f", t.weighted_auc);
            printf("  ml-100k, every attribute, by age: weighted AUC %.4f\n", t.weighted_auc);
            mml_model_free(m);
        }
        mml_data_free(&a);
        mml_data_free(&b);
    } else skip = MMLT_SKIP;
    if (mmlt_real_data("ml-1m", "users.dat", "MovieLens-1M under the Scenario-Wise Rec protocol", raw, sizeof raw)) {
        mmlt_ctx = "ml-1m swr";
        CHECK_OK(mmlr_movielens_load_all(raw, NULL, "swr", 123, &b));
        if (b.schema) {
            int64_t n = b.split[0].n + b.split[1].n + b.split[2].n;
            CHECK(n == 1000209 && b.split[0].n == n * 8 / 10 && b.split[1].n == n / 10, "rows %lld: %lld %lld %lld",
                  (long long)n, (long long)b.split[0].n, (long long)b.split[1].n, (long long)b.split[2].n);
            CHECK(b.n_domains == 3 && b.schema->n_fields == 8, "domains %d fields %d", b.n_domains, b.schema->n_fields);
            for (int f = 0; f < b.schema->n_fields; f++)
                CHECK(b.schema->field[f].kind == MML_FIELD_NUMERIC || b.schema->field[f].dim == 16, "dim of %s",
                      b.schema->field[f].name);
            double pos = 0;
            for (int64_t i = 0; i < b.split[0].n; i++) pos += b.split[0].label[i];
            CHECK(pos / (double)b.split[0].n > 0.5 && pos / (double)b.split[0].n < 0.65, "share of ratings > 3: %g",
                  pos / (double)b.split[0].n);
        }
        /* swr-paper: the same rows, split, domains and labels, three fields */
        CHECK_OK(mmlr_movielens_load_all(raw, NULL, "swr-paper", 123, &a));
        if (a.schema && b.schema) {
            int same = a.schema->n_fields == 3 && a.n_domains == b.n_domains;
            for (int k = 0; k < 3 && same; k++) {
                same = a.split[k].n == b.split[k].n &&
                       !memcmp(a.split[k].label, b.split[k].label, (size_t)a.split[k].n * sizeof(float)) &&
                       !memcmp(a.split[k].dom, b.split[k].dom, (size_t)a.split[k].n * sizeof(int32_t)) &&
                       !memcmp(a.split[k].ids[0], b.split[k].ids[0], (size_t)a.split[k].n * sizeof(int32_t));
            }
            CHECK(same, "swr-paper: %d fields; the rows, labels, domains and users of swr", a.schema->n_fields);
        }
        mml_data_free(&a);
        mml_data_free(&b);
        CHECK(mmlr_movielens_load_all(raw, NULL, "xyz", 123, &b) == MML_ERR_ARG, "unknown protocol");
        mml_data_free(&b);
    } else skip = MMLT_SKIP;
    return skip;
}

int main(int argc, char **argv) {
    const char *c = argc > 1 ? argv[1] : "all";
    int all = !strcmp(c, "all"), skip = 0;
    quick = mmlt_quick();
    if (all || !strcmp(c, "schema")) {
        test_schema_ok();
        test_schema_errors();
    }
    if (all || !strcmp(c, "load")) {
        test_load_errors();
        test_load_reindex();
        test_load_split();
    }
    if (all || !strcmp(c, "fast")) {
        test_fast_int();
        test_load_fast();
    }
    if (all || !strcmp(c, "samples")) skip |= test_samples();
    if (all || !strcmp(c, "movielens")) skip |= test_movielens();
    int rc = mmlt_finish("test_csv");
    return rc ? rc : skip ? MMLT_SKIP : 0;
}
