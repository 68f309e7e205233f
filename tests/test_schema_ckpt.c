/* Checkpoints of models with a feature schema (format version 2, section
 * SCHM) and what rides on them: the round trip of checkpoints and exports,
 * version 1 files of the paper's layout (the fixtures in
 * tests/corpus/fuzz_model, made by the version 1 writer) loading and
 * re-saving byte for byte, malformed schema sections, folded inference and
 * mml_fit resumed from a checkpoint, with a schema.
 *
 *   test_schema_ckpt                      run the tests
 *   test_schema_ckpt --write-corpus DIR   write fuzz_model's schema seeds to DIR */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

#include <errno.h>

static char tdir[256];

static void tpath(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tdir, name); }

static int write_file(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static uint32_t file_version(const char *path) {
    size_t n;
    unsigned char *b = mmlt_read_file(path, &n);
    uint32_t v = 0;
    if (b && n >= 12) memcpy(&v, b + 8, 4);
    free(b);
    return v;
}

/* ---- a mixed schema and data for it ---------------------------------------- */

/* Two categorical fields, a multi-hot list and two numeric fields around the
 * domain (in the middle, as a user's column order may put it). */
enum { NF = 6, DOMF = 3, ND = 3, MAXL = 3 };
static void mixed_schema(mml_schema_t *s) {
    static const char *const names[NF] = {"user", "age", "genres", "region", "item", "price"};
    static const mml_field_kind kinds[NF] = {MML_FIELD_CATEGORICAL, MML_FIELD_NUMERIC, MML_FIELD_MULTI_HOT,
                                             MML_FIELD_CATEGORICAL, MML_FIELD_CATEGORICAL, MML_FIELD_NUMERIC};
    static const int vocab[NF] = {40, 0, 9, ND, 30, 0};
    mmlt_schema(s, NF, DOMF, names, kinds, vocab, 1.0f);
    s->field[2].max_len = MAXL;
    s->field[2].pooling = MML_POOL_SUM;
    s->field[1].norm = MML_NORM_ZSCORE;
    s->field[1].shift = 35.0f;
    s->field[1].scale = 1.0f / 12.0f;
    s->field[5].norm = MML_NORM_MINMAX;
    s->field[5].scale = 0.01f;
    s->field[4].hash_buckets = 30;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* The columns of n rows in the schema's layout (ids[f] or values[f]). */
typedef struct cols {
    int32_t *ids[NF];
    float *values[NF];
    float *label;
} cols;

static void cols_alloc(cols *c, int64_t n) {
    memset(c, 0, sizeof *c);
    for (int f = 0; f < NF; f++) {
        if (f == 1 || f == 5) c->values[f] = (float *)calloc((size_t)n + 1, 4);
        else c->ids[f] = (int32_t *)calloc((size_t)(n * (f == 2 ? MAXL : 1)) + 1, 4);
    }
    c->label = (float *)calloc((size_t)n + 1, 4);
}

static void cols_free(cols *c) {
    for (int f = 0; f < NF; f++) free(c->ids[f]), free(c->values[f]);
    free(c->label);
}

/* Row i of domain d: a click signal in the user, the genres, the age and the
 * domain, so the model has something to learn. */
static void fill_row(cols *c, int64_t i, int d) {
    int u = (int)(rnd() % 40), it = (int)(rnd() % 30);
    float age = 18.0f + (float)(rnd() % 50), price = (float)(rnd() % 100);
    c->ids[0][i] = u;
    c->ids[3][i] = d;
    c->ids[4][i] = it;
    c->values[1][i] = age;
    c->values[5][i] = price;
    int has3 = 0;
    for (int q = 0; q < MAXL; q++) {
        int g = q && (rnd() & 1) ? -1 : (int)(rnd() % 9);
        c->ids[2][i * MAXL + q] = g;
        has3 |= g == 3 + d;
    }
    float z = (u % 3 == d ? 1.2f : -0.4f) + (has3 ? 1.0f : 0.0f) + (age - 40.0f) * 0.03f * (d - 1) +
              0.5f * ((float)(rnd() % 1000) / 500.0f - 1.0f);
    c->label[i] = z > 0.3f ? 1.0f : 0.0f;
}

/* A data set of the mixed schema: n rows per split and domain, grouped by
 * domain. uid and pid alias the two categorical columns. */
typedef struct sdata {
    mml_schema_t schema;
    mml_data_t d;
    cols c[3];
    const int32_t *ids[3][NF];
    const float *values[3][NF];
} sdata;

static void sdata_make(sdata *s, int64_t n) {
    memset(s, 0, sizeof *s);
    mixed_schema(&s->schema);
    s->d.schema = &s->schema;
    s->d.n_users = 40;
    s->d.n_items = 30;
    s->d.n_domains = ND;
    for (int k = 0; k < 3; k++) {
        int64_t rows = k == 0 ? 3 * n : n; /* train, val, test */
        cols *c = &s->c[k];
        cols_alloc(c, rows * ND);
        mml_split_t *sp = &s->d.split[k];
        sp->n = rows * ND;
        sp->dom_start = (int64_t *)calloc(ND + 1, 8);
        for (int d = 0; d < ND; d++) {
            sp->dom_start[d] = rows * d;
            for (int64_t i = 0; i < rows; i++) fill_row(c, rows * d + i, d);
        }
        sp->dom_start[ND] = sp->n;
        sp->uid = c->ids[0];
        sp->pid = c->ids[4];
        sp->dom = c->ids[DOMF];
        sp->label = c->label;
        sp->ids = c->ids;
        sp->values = c->values;
    }
}

static void sdata_free(sdata *s) {
    for (int k = 0; k < 3; k++) {
        cols_free(&s->c[k]);
        free(s->d.split[k].dom_start);
    }
}

/* The test split's first n rows as a batch. */
static mml_batch_t sdata_batch(const sdata *s, int n) {
    const mml_split_t *sp = &s->d.split[MML_TEST];
    mml_batch_t b = {n, NULL, NULL, NULL, NULL, (const int32_t *const *)sp->ids, (const float *const *)sp->values};
    return b;
}

static void schema_config(mml_config_t *c, const mml_schema_t *s, mml_model_kind k, mml_adapter a) {
    mml_config_default(c);
    c->schema = s;
    c->model = k;
    c->adapter = a;
    c->emb_dim = 4;
    mmlt_tower(c, 16, 8);
    c->lora_reduce = 4;
    c->dropout = 0.1f;
    c->max_batch = 64;
    c->seed = 77 + (uint64_t)k * 3 + (uint64_t)a;
}

static void train_some(mml_model_t *m, const sdata *s, int steps) {
    const mml_split_t *sp = &s->d.split[MML_TRAIN];
    enum { B = 32 };
    int32_t ids[NF][B * MAXL];
    float vals[NF][B], lab[B];
    const int32_t *ip[NF];
    const float *vp[NF];
    for (int f = 0; f < NF; f++) ip[f] = sp->ids[f] ? ids[f] : NULL, vp[f] = sp->values[f] ? vals[f] : NULL;
    for (int k = 0; k < steps; k++) {
        for (int i = 0; i < B; i++) {
            int64_t r = (int64_t)(rnd() % (uint32_t)sp->n);
            for (int f = 0; f < NF; f++) {
                int len = f == 2 ? MAXL : 1;
                if (sp->ids[f]) memcpy(ids[f] + i * len, sp->ids[f] + r * len, (size_t)len * 4);
                else vals[f][i] = sp->values[f][r];
            }
            lab[i] = sp->label[r];
        }
        mml_batch_t b = {B, NULL, NULL, NULL, lab, ip, vp};
        CHECK_OK(mml_train_step(m, &b, NULL));
    }
}

static int same_floats(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * 4) == 0; }

/* ---- version 1: the paper's layout ---------------------------------------- */

/* The fixtures were written by the version 1 writer: each loads and
 * predicts; an export saved again is the same bytes, a training checkpoint
 * (whose writer has since added the key fit_done) the same model, still
 * version 1. */
static void test_v1_fixtures(void) {
    static const char *const names[] = {"export_none", "export_mlora", "export_moe",
                                        "train_none",  "train_mlora",  "train_moe"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        mmlt_ctx = names[i];
        char src[1024], dst[1024];
        snprintf(src, sizeof src, "%s/tests/corpus/fuzz_model/%s.mml", MOEMLORA_SOURCE_DIR, names[i]);
        tpath(dst, sizeof dst, "v1_again.mml");
        CHECK(file_version(src) == 1, "%s: version %u", src, (unsigned)file_version(src));
        mml_model_t *m = NULL;
        mml_status st = mml_model_load(src, &m);
        CHECK(st == MML_OK, "load %s: %s", src, mml_last_error());
        if (st) continue;
        const mml_config_t *c = mml_model_config(m);
        int32_t u[4] = {0, 1, c->n_users, -1}, p[4] = {0, c->n_items - 1, 2, 0}, d[4] = {0, c->n_domains - 1, 0, 0};
        float prob[4];
        CHECK_OK(mml_predict(m, &(mml_batch_t){4, u, p, d, NULL, NULL, NULL}, prob));
        for (int k = 0; k < 4; k++) CHECK(prob[k] > 0.0f && prob[k] < 1.0f, "prediction %d: %g", k, (double)prob[k]);
        int train = names[i][0] == 't';
        CHECK_OK(train ? mml_model_save(m, dst) : mml_model_export(m, dst));
        CHECK(file_version(dst) == 1, "saved again as version %u", (unsigned)file_version(dst));
        size_t na, nb;
        unsigned char *a = mmlt_read_file(src, &na), *b = mmlt_read_file(dst, &nb);
        if (!train)
            CHECK(a && b && na == nb && memcmp(a, b, na) == 0,
                  "%s exported again: %zu bytes, differs from the %zu of the fixture", names[i], nb, na);
        free(a);
        free(b);
        mml_model_t *l = NULL;
        CHECK_OK(mml_model_load(dst, &l));
        CHECK(l && same_floats(m->P, l->P, m->a.n_floats) && same_floats(m->opt.M, l->opt.M, m->a.n_floats) &&
                  same_floats(m->opt.V, l->opt.V, m->a.n_floats),
              "%s saved again: another model", names[i]);
        mml_model_free(l);
        mml_model_free(m);
    }
    /* a model of the paper's layout still writes version 1 */
    mmlt_ctx = "paper layout";
    mml_config_t c;
    mml_config_default(&c);
    c.n_users = 5, c.n_items = 4, c.n_domains = 2, c.n_hidden = 1, c.hidden[0] = 8;
    mml_model_t *m = make_model(&c);
    char path[1024];
    tpath(path, sizeof path, "paper.mml");
    CHECK_OK(mml_model_save(m, path));
    CHECK(file_version(path) == 1, "paper layout saved as version %u", (unsigned)file_version(path));
    mml__ckpt *ck = NULL;
    CHECK_OK(mml__ckpt_open(path, &ck));
    CHECK(ck && !mml__ckpt_find(ck, "SCHM"), "paper layout file has a SCHM section");
    mml__ckpt_close(ck);
    mml_model_free(m);
    char again[1024];
    tpath(again, sizeof again, "paper_again.mml");
    CHECK_OK(mml_model_load(path, &m));
    if (m) CHECK_OK(mml_model_save(m, again));
    size_t na, nb;
    unsigned char *a = mmlt_read_file(path, &na), *b = mmlt_read_file(again, &nb);
    CHECK(a && b && na == nb && memcmp(a, b, na) == 0, "paper layout saved again differs");
    free(a);
    free(b);
    mml_model_free(m);
    mmlt_ctx = "";
}

/* ---- version 2: a schema ---------------------------------------------------- */

static void test_v2_roundtrip(const sdata *s) {
    static const struct { mml_model_kind k; mml_adapter a; } cases[] = {
        {MML_MODEL_MLP, MML_ADAPTER_MOE}, {MML_MODEL_WDL, MML_ADAPTER_MLORA}, {MML_MODEL_DCN, MML_ADAPTER_NONE},
        {MML_MODEL_DEEPFM, MML_ADAPTER_MOE}, {MML_MODEL_FIBINET, MML_ADAPTER_MOE}};
    enum { NB = 40 };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mml_config_t c;
        schema_config(&c, &s->schema, cases[i].k, cases[i].a);
        char tag[64], ck[1024], ex[1024], again[1024];
        snprintf(tag, sizeof tag, "v2 %s+%s", mml_model_kind_name(c.model), mml_adapter_name(c.adapter));
        mmlt_ctx = tag;
        tpath(ck, sizeof ck, "schema_ckpt.mml");
        tpath(ex, sizeof ex, "schema_export.mml");
        tpath(again, sizeof again, "schema_again.mml");
        mml_model_t *m = make_model(&c);
        if (c.adapter == MML_ADAPTER_MOE) CHECK_OK(mml_model_set_phase(m, MML_PHASE_GATE, 0));
        train_some(m, s, 6);
        CHECK_OK(mml_model_save(m, ck));
        CHECK_OK(mml_model_export(m, ex));
        CHECK(file_version(ck) == 2 && file_version(ex) == 2, "versions %u and %u", (unsigned)file_version(ck),
              (unsigned)file_version(ex));
        float want[NB], got[NB];
        mml_batch_t b = sdata_batch(s, NB);
        CHECK_OK(mml_predict(m, &b, want));
        for (int e = 0; e < 2; e++) {
            const char *path = e ? ex : ck;
            mml_model_t *l = NULL;
            mml_status st = mml_model_load(path, &l);
            CHECK(st == MML_OK, "load %s: %s", path, mml_last_error());
            if (st) continue;
            const mml_config_t *lc = mml_model_config(l);
            CHECK(lc->schema && memcmp(lc->schema, &s->schema, sizeof s->schema) == 0, "%s: the schema differs", path);
            CHECK(lc->n_domains == ND && lc->model == c.model && lc->adapter == c.adapter, "%s: config differs", path);
            CHECK(same_floats(m->P, l->P, m->a.n_floats), "%s: parameters differ", path);
            if (!e)
                CHECK(same_floats(m->opt.M, l->opt.M, m->a.n_floats) && same_floats(m->opt.V, l->opt.V, m->a.n_floats),
                      "%s: Adam moments differ", path);
            CHECK(mml_model_fit_state(l, NULL) == (e ? MML_FIT_EXPORT : MML_FIT_NONE), "%s: fit state %d", path,
                  (int)mml_model_fit_state(l, NULL));
            CHECK_OK(mml_predict(l, &b, got));
            CHECK(same_floats(want, got, NB), "%s: predictions differ", path);
            /* saved again: the same bytes */
            CHECK_OK(e ? mml_model_export(l, again) : mml_model_save(l, again));
            size_t na, nb;
            unsigned char *x = mmlt_read_file(path, &na), *y = mmlt_read_file(again, &nb);
            CHECK(x && y && na == nb && memcmp(x, y, na) == 0, "%s saved again differs", path);
            free(x);
            free(y);
            mml_model_free(l);
        }
        mml_model_free(m);
    }
    mmlt_ctx = "";
}

/* ---- malformed version 2 files ---------------------------------------------- */

/* The file at src rebuilt: version ver, section SCHM's payload replaced by
 * schm (NULL: the section dropped), every CRC right. */
static size_t rebuild(const unsigned char *src, size_t n, uint32_t ver, const char *schm, unsigned char *out) {
    uint32_t nsec;
    memcpy(out, src, 24);
    memcpy(out + 8, &ver, 4);
    memcpy(&nsec, src + 16, 4);
    size_t o = 24, q = 24;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < nsec && q + 16 <= n; i++) {
        uint64_t len;
        memcpy(&len, src + q + 8, 8);
        const unsigned char *pay = src + q + 16;
        int is_schm = !memcmp(src + q, "SCHM", 4);
        size_t q_next = q + 16 + (size_t)len + 4;
        if (is_schm && !schm) { q = q_next; continue; }
        if (is_schm) { pay = (const unsigned char *)schm; len = strlen(schm); }
        memcpy(out + o, src + q, 8);
        memcpy(out + o + 8, &len, 8);
        memcpy(out + o + 16, pay, (size_t)len);
        uint32_t crc = mml_crc32c(0, out + o, (size_t)(16 + len));
        memcpy(out + o + 16 + len, &crc, 4);
        o += 16 + (size_t)len + 4;
        kept++;
        q = q_next;
    }
    memcpy(out + 16, &kept, 4);
    uint32_t crc = mml_crc32c(0, out, 20);
    memcpy(out + 20, &crc, 4);
    return o;
}

/* The SCHM text of the file with every occurrence of `from` replaced by `to`. */
static char *schm_edit(const char *orig, const char *from, const char *to) {
    size_t cap = strlen(orig) * 2 + 256, o = 0;
    char *r = (char *)malloc(cap);
    const char *p = orig, *hit;
    while (from && (hit = strstr(p, from))) {
        memcpy(r + o, p, (size_t)(hit - p));
        o += (size_t)(hit - p);
        memcpy(r + o, to, strlen(to));
        o += strlen(to);
        p = hit + strlen(from);
    }
    snprintf(r + o, cap - o, "%s", p);
    return r;
}

static void test_v2_malformed(const sdata *s) {
    mmlt_ctx = "malformed SCHM";
    mml_config_t c;
    schema_config(&c, &s->schema, MML_MODEL_MLP, MML_ADAPTER_MLORA);
    mml_model_t *m = make_model(&c);
    char good[1024], bad[1024];
    tpath(good, sizeof good, "good.mml");
    tpath(bad, sizeof bad, "bad.mml");
    CHECK_OK(mml_model_export(m, good));
    mml_model_free(m);
    size_t n;
    unsigned char *src = mmlt_read_file(good, &n);
    if (!src) return;
    mml__ckpt *ck = NULL;
    const void *p = NULL;
    uint64_t pn = 0;
    CHECK_OK(mml__ckpt_open(good, &ck));
    CHECK_OK(ck ? mml__ckpt_bytes(ck, "SCHM", &p, &pn) : 1);
    char *orig = (char *)calloc(1, (size_t)pn + 1);
    if (p) memcpy(orig, p, (size_t)pn);
    mml__ckpt_close(ck);
    if (!p) {
        free(orig);
        free(src);
        return;
    }
    CHECK(strstr(orig, "domain_field=region\n") && strstr(orig, "field.2.kind=multi_hot\n") &&
              strstr(orig, "field.1.shift=35\n") && strstr(orig, "field.1.scale=0.083333336\n"),
          "SCHM text: %s", orig);
    static const struct { uint32_t ver; int drop; const char *from, *to, *want; } cases[] = {
        {2, 0, NULL, NULL, NULL}, /* unchanged: loads */
        {2, 1, NULL, NULL, "format version 2 file without the schema"},
        {1, 0, NULL, NULL, "section SCHM in a format version 1 file"},
        {3, 0, NULL, NULL, "format version 3 is newer than this library's 2"},
        {2, 0, "field.2.kind=multi_hot", "field.2.kind=bag", "(section SCHM):26: bad value \"bag\" for field.2.kind"},
        {2, 0, "field.2.pooling=sum", "field.2.pooling=max", "bad value \"max\" for field.2.pooling"},
        {2, 0, "field.1.norm=zscore", "field.1.norm=log", "bad value \"log\" for field.1.norm"},
        {2, 0, "field.4.kind=categorical\n", "", "section SCHM: field.4.kind missing"},
        {2, 0, "n_fields=6\n", "", "section SCHM: the schema lacks n_fields"},
        {2, 0, "n_fields=6", "n_fields=5", "field.5.* given, but n_fields=5"},
        {2, 0, "domain_field=region\n", "domain_field=region\ndomain_field=region\n", "domain_field given twice"},
        {2, 0, "domain_field=region", "domain_field=town", "domain_field=town names no field"},
        {2, 0, "field.0.vocab=40", "field.0.vocab=x", "bad value \"x\" for field.0.vocab"},
        {2, 0, "field.0.vocab=40", "field.0.vocab=0", "vocab 0 outside"},
        {2, 0, "field.0.name=user", "field.0.name=region", "given twice"},
        {2, 0, "domain_field=region", "domain_field=age", "the domain must be a categorical field"},
        {2, 0, "field.1.scale=", "field.1.scale=nan", "bad value \"nan0.083333336\" for field.1.scale"},
        {2, 0, "field.3.", "field.x.", "unknown key \"field.x.name\""},
        {2, 0, "field.3.frozen", "field.3.frosty", "unknown key \"field.3.frosty\""},
        /* a schema that builds another model than the file's tensors */
        {2, 0, "field.0.vocab=40", "field.0.vocab=41", "parameters but the file holds"},
    };
    unsigned char *out = (unsigned char *)malloc(n * 2 + 4096);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = cases[i].drop ? NULL : schm_edit(orig, cases[i].from, cases[i].to);
        if (cases[i].from) CHECK(strcmp(text, orig) != 0, "case %zu: \"%s\" not in SCHM", i, cases[i].from);
        size_t len = rebuild(src, n, cases[i].ver, text, out);
        write_file(bad, out, len);
        mml_model_t *l = NULL;
        mml_status st = mml_model_load(bad, &l);
        if (!cases[i].want) CHECK(st == MML_OK, "case %zu: %s", i, mml_last_error());
        else
            CHECK(st == MML_ERR_FORMAT && strstr(mml_last_error(), cases[i].want) && strstr(mml_last_error(), bad),
                  "case %zu: status %d, \"%s\", expected \"%s\"", i, (int)st, mml_last_error(), cases[i].want);
        CHECK(st == MML_OK || l == NULL, "case %zu: a model on failure", i);
        mml_model_free(l);
        free(text);
    }
    free(out);
    free(orig);
    free(src);
    mmlt_ctx = "";
}

/* ---- folded inference with a schema ------------------------------------------- */

/* mml_model_fold with a schema predicts what the unfolded model does (the
 * tolerance of the paper's layout: the same sums in another order), before
 * and after a round trip through an export; rows of interleaved domains and
 * an out-of-vocabulary domain. */
static void test_fold_schema(const sdata *s) {
    static const mml_model_kind kinds[] = {MML_MODEL_MLP, MML_MODEL_WDL, MML_MODEL_DCN, MML_MODEL_PNN,
                                           MML_MODEL_FIBINET};
    static const struct { mml_adapter a; int epd; } ads[] = {{MML_ADAPTER_NONE, 1}, {MML_ADAPTER_MLORA, 1},
                                                             {MML_ADAPTER_MOE, 1}, {MML_ADAPTER_MOE, 2}};
    enum { NB = 150 };
    /* interleave the test split's domains, one row in eleven of domain ND (unknown) */
    const mml_split_t *sp = &s->d.split[MML_TEST];
    static int32_t ids[NF][NB * MAXL];
    static float vals[NF][NB];
    const int32_t *ip[NF];
    const float *vp[NF];
    for (int i = 0; i < NB; i++) {
        int64_t r = sp->dom_start[i % ND] + i / ND;
        for (int f = 0; f < NF; f++) {
            int len = f == 2 ? MAXL : 1;
            if (sp->ids[f]) memcpy(ids[f] + i * len, sp->ids[f] + r * len, (size_t)len * 4);
            else vals[f][i] = sp->values[f][r];
        }
        if (i % 11 == 4) ids[DOMF][i] = ND;
    }
    for (int f = 0; f < NF; f++) ip[f] = sp->ids[f] ? ids[f] : NULL, vp[f] = sp->values[f] ? vals[f] : NULL;
    mml_batch_t b = {NB, NULL, NULL, NULL, NULL, ip, vp};
    double worst = 0.0;
    long cmp = 0;
    char ex[1024];
    tpath(ex, sizeof ex, "fold.mml");
    for (size_t ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++)
        for (size_t ai = 0; ai < sizeof ads / sizeof ads[0]; ai++) {
            mml_config_t c;
            schema_config(&c, &s->schema, kinds[ki], ads[ai].a);
            c.experts_per_domain = ads[ai].epd;
            c.max_batch = NB;
            c.threads = mmlt_max_threads();
            char tag[64];
            snprintf(tag, sizeof tag, "fold %s+%s epd %d", mml_model_kind_name(c.model), mml_adapter_name(c.adapter),
                     c.experts_per_domain);
            mmlt_ctx = tag;
            mml_model_t *m = make_model(&c);
            if (c.adapter == MML_ADAPTER_MOE) CHECK_OK(mml_model_set_phase(m, MML_PHASE_GATE, 0));
            train_some(m, s, 10); /* adapters away from their zero start */
            CHECK_OK(mml_model_export(m, ex));
            mml_model_t *l = NULL;
            CHECK_OK(mml_model_load(ex, &l));
            float p0[NB], p1[NB], p2[NB], p3[NB];
            CHECK_OK(mml_predict(m, &b, p0));
            CHECK_OK(mml_model_fold(m));
            CHECK(m->fold.ok, "the model did not fold");
            CHECK_OK(mml_predict(m, &b, p1));
            mml_session_t *ss = NULL;
            CHECK_OK(mml_session_create(m, &ss));
            CHECK_OK(mml_session_predict(ss, &b, p2));
            mml_session_free(ss);
            if (l) CHECK_OK(mml_model_fold(l));
            if (l) CHECK_OK(mml_predict(l, &b, p3));
            int bad = 0, moved = 0;
            for (int i = 0; i < NB; i++) {
                double d = fmax(fmax(fabs((double)p1[i] - p0[i]), fabs((double)p2[i] - p0[i])),
                                l ? fabs((double)p3[i] - p0[i]) : 0.0);
                if (d > worst) worst = d;
                bad += !(d <= 2e-6);
                moved += p0[i] != p0[0];
                cmp++;
            }
            CHECK(bad == 0, "%d of %d folded predictions differ", bad, NB);
            CHECK(moved > 0, "every prediction equal: nothing was compared");
            mml_model_free(l);
            mml_model_free(m);
        }
    mmlt_ctx = "";
    printf("folded inference with a schema: %ld predictions, largest difference %.2g\n", cmp, worst);
}

/* ---- mml_fit resumed from a checkpoint, with a schema ----------------------------- */

typedef struct recorder { const char *ckpt; int n; char copies[8][1024]; } recorder;

static int copy_file(const char *from, const char *to) {
    size_t n;
    unsigned char *b = mmlt_read_file(from, &n);
    int rc = b ? write_file(to, b, n) : -1;
    free(b);
    return rc;
}

/* The checkpoint of epoch k is written after its EPOCH_END: copy it at the next. */
static void record(const mml_progress_t *p, void *user) {
    recorder *r = (recorder *)user;
    if (p->event != MML_EV_EPOCH_END) return;
    if (r->n >= 1 && r->n <= 8) copy_file(r->ckpt, r->copies[r->n - 1]);
    r->n++;
}

static void test_resume_schema(sdata *s, int threads) {
    char tag[64];
    snprintf(tag, sizeof tag, "resume schema, %d thread%s", threads, threads > 1 ? "s" : "");
    mmlt_ctx = tag;
    mml_config_t c;
    schema_config(&c, &s->schema, MML_MODEL_WDL, MML_ADAPTER_MOE);
    c.threads = threads;
    mml_fit_opts_t o;
    mml_fit_opts_default(&o);
    o.batch = 64;
    o.max_epochs = 2;
    o.patience = 1;
    o.progress_every_s = 1e9;
    mml_metrics_t t_ref, t;
    mml_model_t *ref = make_model(&c);
    mml_status st = mml_fit(ref, &s->d, &o, &t_ref);
    CHECK(st == MML_OK, "fit: %s", mml_last_error());
    if (st) { mml_model_free(ref); return; }
    char ck[1024];
    tpath(ck, sizeof ck, "fit.mml");
    recorder r;
    memset(&r, 0, sizeof r);
    r.ckpt = ck;
    for (int k = 0; k < 8; k++) snprintf(r.copies[k], sizeof r.copies[k], "%s/fit_epoch%d.mml", tdir, k + 1);
    mml_fit_opts_t oc = o;
    oc.checkpoint_path = ck;
    oc.progress = record;
    oc.user = &r;
    mml_model_t *rec = make_model(&c);
    CHECK_OK(mml_fit(rec, &s->d, &oc, &t));
    CHECK(same_floats(ref->P, rec->P, ref->a.n_floats), "checkpointing changed the fit");
    CHECK(file_version(ck) == 2, "the fit's checkpoint is version %u", (unsigned)file_version(ck));
    mml_model_free(rec);
    int n_res = r.n - 1 < 8 ? r.n - 1 : 8, n_same = 0;
    CHECK(n_res >= 3, "%d epochs to resume from", n_res);
    for (int k = 0; k < n_res; k++) {
        mml_model_t *m = NULL;
        st = mml_model_load(r.copies[k], &m);
        CHECK(st == MML_OK, "load after epoch %d: %s", k + 1, mml_last_error());
        if (st) continue;
        CHECK(mml_model_fit_state(m, NULL) == MML_FIT_STOPPED, "epoch %d: not a stopped fit", k + 1);
        st = mml_fit(m, &s->d, &o, &t);
        CHECK(st == MML_OK, "resume after epoch %d: %s", k + 1, mml_last_error());
        int same = !st && same_floats(ref->P, m->P, ref->a.n_floats) && memcmp(&t, &t_ref, sizeof t) == 0;
        CHECK(same, "resume after epoch %d differs from the straight run", k + 1);
        n_same += same;
        mml_model_free(m);
    }
    /* other data: one numeric value changed is refused */
    mml_model_t *m = NULL;
    if (n_res > 0 && mml_model_load(r.copies[0], &m) == MML_OK) {
        float *v = &s->c[MML_VAL].values[5][7], keep = *v;
        *v += 1.0f;
        st = mml_fit(m, &s->d, &o, &t);
        CHECK(st == MML_ERR_STATE && strstr(mml_last_error(), "other data"), "a changed numeric value: %d %s", (int)st,
              mml_last_error());
        *v = keep;
        mml_model_free(m);
        m = NULL;
        CHECK_OK(mml_model_load(r.copies[0], &m));
    }
    if (m) {
        int32_t *g = &s->c[MML_TRAIN].ids[2][5], gk = *g;
        *g = *g == 1 ? 2 : 1;
        st = mml_fit(m, &s->d, &o, &t);
        CHECK(st == MML_ERR_STATE && strstr(mml_last_error(), "other data"), "a changed list id: %d %s", (int)st,
              mml_last_error());
        *g = gk;
        mml_model_free(m);
    }
    printf("%s: %d epochs, %d resume points bit-identical\n", tag, r.n, n_same);
    mml_model_free(ref);
    mmlt_ctx = "";
}

/* Seed inputs for fuzz_model: a tiny export and training checkpoint of a
 * model with a schema (version 2), each under the fuzzers' 4096 bytes. */
static int write_corpus(const char *dir) {
    mml_schema_t s;
    static const char *const names[4] = {"u", "g", "d", "x"};
    static const mml_field_kind kinds[4] = {MML_FIELD_CATEGORICAL, MML_FIELD_MULTI_HOT, MML_FIELD_CATEGORICAL,
                                            MML_FIELD_NUMERIC};
    static const int vocab[4] = {3, 3, 3, 0};
    mmlt_schema(&s, 4, 2, names, kinds, vocab, 0.5f);
    s.field[1].max_len = 2;
    s.field[1].pooling = MML_POOL_MEAN;
    mml_config_t c;
    mml_config_default(&c);
    c.schema = &s;
    c.adapter = MML_ADAPTER_MLORA;
    c.emb_dim = 2;
    c.n_hidden = 1;
    c.hidden[0] = 4;
    c.lora_r = 1;
    c.max_batch = 4;
    mml_model_t *m = NULL;
    char path[600];
    mml_status st = mml_model_create(&c, &m);
    snprintf(path, sizeof path, "%s/export_schema.mml", dir);
    if (!st) st = mml_model_export(m, path);
    if (!st) printf("wrote %s\n", path);
    snprintf(path, sizeof path, "%s/train_schema.mml", dir);
    if (!st) st = mml_model_save(m, path);
    if (!st) printf("wrote %s\n", path);
    if (st) fprintf(stderr, "%s\n", mml_last_error());
    mml_model_free(m);
    return st ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) return write_corpus(argv[2]);
    (void)mmlt_close;
    (void)mmlt_rm_tree;
    const char *td = getenv("TMPDIR");
    snprintf(tdir, sizeof tdir, "%s/mml_schema_ckpt_XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(tdir)) {
        fprintf(stderr, "test_schema_ckpt: mkdtemp %s: %s\n", tdir, strerror(errno));
        return 1;
    }
    sdata s;
    sdata_make(&s, 200);
    test_v1_fixtures();
    test_v2_roundtrip(&s);
    test_v2_malformed(&s);
    test_fold_schema(&s);
    test_resume_schema(&s, 1);
    if (mmlt_max_threads() > 1) test_resume_schema(&s, 2);
    sdata_free(&s);
    mmlt_rm_tree(tdir);
    return mmlt_finish("test_schema_ckpt");
}
