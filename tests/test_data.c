/* Tests of the data chapter: split semantics, CSV layout round trip and error
 * reporting, binary cache, MovieLens (synthetic + real when present), Taobao
 * (synthetic raw set through the real loader). */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MOEMLORA_SOURCE_DIR
#define MOEMLORA_SOURCE_DIR "."
#endif

/* ---- helpers ---- */

static char *mkdir_tmp(void) {
    char *p = (char *)malloc(64);
    snprintf(p, 64, "/tmp/mml_test_data_XXXXXX");
    if (!mkdtemp(p)) {
        perror("mkdtemp");
        exit(1);
    }
    return p;
}

static void put_file(const char *dir, const char *name, const char *text) {
    char p[1024];
    FILE *f;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    f = fopen(p, "wb");
    if (!f) {
        perror(p);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static int has(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

static int file_exists(const char *dir, const char *name) {
    char p[1024];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

/* Everything equal, names and embeddings included. */
static int data_equal(const mml_data_t *a, const mml_data_t *b) {
    int s, k;
    if (a->n_users != b->n_users || a->n_items != b->n_items || a->n_domains != b->n_domains ||
        a->pretrained_dim != b->pretrained_dim)
        return 0;
    if (!a->domain_names != !b->domain_names) return 0;
    for (k = 0; a->domain_names && k < a->n_domains; k++)
        if (strcmp(a->domain_names[k], b->domain_names[k])) return 0;
    for (s = 0; s < 3; s++) {
        const mml_split_t *x = &a->split[s], *y = &b->split[s];
        size_t n = (size_t)x->n;
        if (x->n != y->n || !x->dom_start || !y->dom_start) return 0;
        if (memcmp(x->dom_start, y->dom_start, ((size_t)a->n_domains + 1) * 8)) return 0;
        if (n && (memcmp(x->uid, y->uid, n * 4) || memcmp(x->pid, y->pid, n * 4) || memcmp(x->dom, y->dom, n * 4) ||
                  memcmp(x->label, y->label, n * 4)))
            return 0;
    }
    if (a->pretrained_dim) {
        if (memcmp(a->user_emb, b->user_emb, (size_t)a->n_users * a->pretrained_dim * 4)) return 0;
        if (memcmp(a->item_emb, b->item_emb, (size_t)a->n_items * a->pretrained_dim * 4)) return 0;
    }
    return 1;
}

/* n rows, uid = row (unique identity), 5 domains of which domain 3 is empty
 * and domain 4 has 3 rows. */
typedef struct raw_t {
    int64_t n;
    int32_t *uid, *pid, *dom;
    float *label;
} raw_t;

static raw_t make_raw(int64_t n, uint64_t seed) {
    raw_t r;
    int64_t i;
    r.n = n;
    r.uid = (int32_t *)malloc(n * 4);
    r.pid = (int32_t *)malloc(n * 4);
    r.dom = (int32_t *)malloc(n * 4);
    r.label = (float *)malloc(n * 4);
    for (i = 0; i < n; i++) {
        uint64_t h = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 32;
        r.uid[i] = (int32_t)i;
        r.pid[i] = (int32_t)(h % 97);
        r.dom[i] = i >= n - 3 ? 4 : (int32_t)((h >> 8) % 3); /* domains 0..2, 4 */
        r.label[i] = ((h >> 20) % 100) < (uint64_t)(15 + 10 * r.dom[i]) ? 1.0f : 0.0f;
    }
    return r;
}

static void free_raw(raw_t *r) {
    free(r->uid);
    free(r->pid);
    free(r->dom);
    free(r->label);
}

/* ---- split ---- */

static void test_split(void) {
    raw_t r = make_raw(10007, 7);
    mml_data_t a, b, c;
    int64_t cnt[5][2] = {{0}}, i;
    int d, cl, s;
    char *seen;
    mmlt_ctx = "split";
    for (i = 0; i < r.n; i++) cnt[r.dom[i]][r.label[i] != 0]++;
    CHECK_OK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, 123, &a));
    CHECK_OK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, 123, &b));
    CHECK_OK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, 124, &c));
    CHECK(data_equal(&a, &b), "same seed must give the same split");
    CHECK(!data_equal(&a, &c), "different seeds must differ");
    CHECK(a.split[0].n + a.split[1].n + a.split[2].n == r.n, "union size");
    /* counts per domain and class follow floor(6n/10), floor(2n/10), rest */
    for (d = 0; d < 5; d++)
        for (cl = 0; cl < 2; cl++) {
            int64_t want[3], got[3] = {0, 0, 0};
            int64_t n = cnt[d][cl];
            want[0] = n * 6 / 10;
            want[1] = n * 2 / 10;
            want[2] = n - want[0] - want[1];
            for (s = 0; s < 3; s++) {
                const mml_split_t *sp = &a.split[s];
                for (i = sp->dom_start[d]; i < sp->dom_start[d + 1]; i++) got[s] += (sp->label[i] != 0) == cl;
                CHECK(got[s] == want[s], "domain %d class %d split %d: %lld rows, want %lld", d, cl, s,
                      (long long)got[s], (long long)want[s]);
            }
        }
    CHECK(a.split[MML_TEST].dom_start[4] == a.split[MML_TEST].dom_start[3], "empty domain 3 representable");
    CHECK(a.split[MML_VAL].dom_start[5] - a.split[MML_VAL].dom_start[4] == 0, "tiny domain 4: no val rows");
    /* no overlap, union = input (uid is the row identity) */
    seen = (char *)calloc((size_t)r.n, 1);
    for (s = 0; s < 3; s++) {
        const mml_split_t *sp = &a.split[s];
        int bad = 0;
        for (i = 0; i < sp->n; i++) {
            int32_t u = sp->uid[i];
            if (seen[u] || sp->pid[i] != r.pid[u] || sp->dom[i] != r.dom[u] || sp->label[i] != r.label[u]) bad++;
            seen[u] = 1;
        }
        CHECK(bad == 0, "split %d: %d rows duplicated or altered", s, bad);
        for (d = 0; d < 5; d++)
            for (i = sp->dom_start[d]; i < sp->dom_start[d + 1]; i++)
                if (sp->dom[i] != d) bad++;
        CHECK(bad == 0, "rows grouped by domain");
    }
    for (i = 0; i < r.n && seen[i]; i++) {
    }
    CHECK(i == r.n, "every input row lands in some split");
    free(seen);
    /* bad inputs */
    mml_data_free(&b);
    r.uid[5] = (int32_t)r.n;
    CHECK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, 1, &b) == MML_ERR_ARG, "uid range");
    CHECK(has(mml_last_error(), "row 5"), "message names the row: %s", mml_last_error());
    r.uid[5] = 5;
    r.label[9] = 0.5f;
    CHECK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, 1, &b) == MML_ERR_ARG, "label 0.5");
    r.label[9] = 1;
    r.dom[3] = 5;
    CHECK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, 1, &b) == MML_ERR_ARG, "dom range");
    CHECK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 0, 1, &b) == MML_ERR_ARG, "0 domains");
    CHECK(mml_data_split(0, NULL, NULL, NULL, NULL, 1, 1, 2, 1, &b) == MML_OK, "empty input is fine");
    mml_data_free(&b);
    mml_data_free(&a);
    mml_data_free(&c);
    free_raw(&r);
}

/* ---- CSV layout and cache ---- */

static void add_names_and_emb(mml_data_t *d, int dim) {
    int k;
    int64_t i;
    for (k = 0; k < d->n_domains; k++) {
        char nm[32];
        snprintf(nm, sizeof nm, k == 1 ? "sales/marketing %d" : "d%d", k);
        mml__set_name(d, k, nm, strlen(nm));
    }
    if (dim) {
        d->pretrained_dim = dim;
        d->user_emb = (float *)mml__alloc((size_t)d->n_users * dim * 4);
        d->item_emb = (float *)mml__alloc((size_t)d->n_items * dim * 4);
        for (i = 0; i < (int64_t)d->n_users * dim; i++) d->user_emb[i] = (float)i * 0.25f - 3;
        for (i = 0; i < (int64_t)d->n_items * dim; i++) d->item_emb[i] = (float)i * -0.5f;
    }
}

static void test_roundtrip(void) {
    raw_t r = make_raw(3001, 11);
    mml_data_t a, b, c;
    char *dir = mkdir_tmp(), path[1024];
    mmlt_ctx = "roundtrip";
    CHECK_OK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, 123, &a));
    add_names_and_emb(&a, 3);
    CHECK_OK(mml_data_save_dir(&a, dir));
    CHECK(file_exists(dir, "domain_3/test.csv") && file_exists(dir, "user_emb.bin"), "layout written");
    CHECK(!file_exists(dir, "data.mmlc"), "no cache yet");
    CHECK_OK(mml_data_load(dir, &b));
    CHECK(data_equal(&a, &b), "CSV round trip equal");
    snprintf(path, sizeof path, "%s/data.mmlc", dir);
    CHECK_OK(mml_data_save_cache(&a, path));
    CHECK_OK(mml_data_load(dir, &c)); /* now via the cache */
    CHECK(data_equal(&a, &c), "cache round trip equal");
    mml_data_free(&c);
    CHECK_OK(mml_data_load_csv(dir, &c));
    CHECK(data_equal(&a, &c), "CSV still loadable with a cache present");
    mml_data_free(&c);
    /* save_dir removes a stale cache */
    CHECK_OK(mml_data_save_dir(&a, dir));
    CHECK(!file_exists(dir, "data.mmlc"), "stale cache removed");
    /* the paper repo's layout: no meta.txt, vocab inferred as max id + 1 */
    snprintf(path, sizeof path, "%s/meta.txt", dir);
    remove(path);
    CHECK_OK(mml_data_load(dir, &c));
    CHECK(c.n_domains == 5 && c.pretrained_dim == 0 && c.split[0].n == a.split[0].n, "paper layout loads");
    mml_data_free(&c);
    mml_data_free(&a);
    mml_data_free(&b);
    free_raw(&r);
    mmlt_rm_tree(dir);
    free(dir);
}

/* Write hook failing after ~8 KB: nothing may be left half-written. */
static size_t fail_hook(const void *buf, size_t size, void *file, void *user) {
    size_t *left = (size_t *)user;
    if (size > *left) return 0;
    *left -= size;
    return fwrite(buf, 1, size, (FILE *)file);
}

static void test_atomic(void) {
    raw_t r = make_raw(20000, 3);
    mml_data_t a;
    char *dir = mkdir_tmp(), cmd[1200];
    size_t left = 8000;
    FILE *p;
    int n = -1;
    mmlt_ctx = "atomic";
    CHECK_OK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, 123, &a));
    mml_set_write_hook(fail_hook, &left);
    CHECK(mml_data_save_dir(&a, dir) == MML_ERR_IO, "simulated full disk reported");
    mml_set_write_hook(NULL, NULL);
    CHECK(!file_exists(dir, "meta.txt"), "meta.txt not written after a failure");
    snprintf(cmd, sizeof cmd, "find '%s' -type f | wc -l", dir);
    p = popen(cmd, "r");
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = -1;
        pclose(p);
    }
    CHECK(n == 0, "no files (and no temporaries) left behind, found %d", n);
    mml_data_free(&a);
    free_raw(&r);
    mmlt_rm_tree(dir);
    free(dir);
}

static const char *GOOD_META =
    "format=moemlora-data-1\nn_users=10\nn_items=10\nn_domains=2\npretrained_dim=0\ndomain.0=a\ndomain.1=b\n";

static char *make_good_dir(int crlf) {
    char *dir = mkdir_tmp(), p[1024];
    int k, s;
    static const char *split[3] = {"train", "val", "test"};
    put_file(dir, "meta.txt", GOOD_META);
    for (k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/domain_%d", dir, k);
        mkdir(p, 0777);
        for (s = 0; s < 3; s++) {
            char name[64], text[256];
            snprintf(name, sizeof name, "domain_%d/%s.csv", k, split[s]);
            if (crlf)
                snprintf(text, sizeof text, "uid,pid,domain,label\r\n1,2,%d,1\r\n3,9,%d,0\r\n", k, k);
            else
                snprintf(text, sizeof text, "uid,pid,domain,label\n1,2,%d,1\n3,9,%d,0\n", k, k);
            put_file(dir, name, text);
        }
    }
    return dir;
}

static void test_csv_ok(void) {
    mml_data_t d;
    char *dir = make_good_dir(1);
    mmlt_ctx = "csv-ok";
    CHECK_OK(mml_data_load(dir, &d));
    CHECK(d.split[0].n == 4 && d.split[0].uid[2] == 1 && d.split[0].dom[2] == 1 && d.split[0].label[3] == 0,
          "CRLF file parsed");
    CHECK(!strcmp(d.domain_names[1], "b"), "names from meta");
    mml_data_free(&d);
    /* complete last line without a newline is fine */
    put_file(dir, "domain_1/train.csv", "uid,pid,domain,label\n1,2,1,0\n4,5,1,1");
    CHECK_OK(mml_data_load(dir, &d));
    CHECK(d.split[0].n == 4 && d.split[0].uid[3] == 4, "unterminated last line");
    mml_data_free(&d);
    /* header only: a domain with no rows */
    put_file(dir, "domain_1/test.csv", "uid,pid,domain,label\n");
    CHECK_OK(mml_data_load(dir, &d));
    CHECK(d.split[2].dom_start[2] - d.split[2].dom_start[1] == 0, "empty test split of domain 1");
    mml_data_free(&d);
    mmlt_rm_tree(dir);
    free(dir);
}

typedef struct bad_case {
    const char *file, *text, *want; /* want: substring after "file:" */
    int status;
} bad_case;

static void test_csv_bad(void) {
    static const bad_case cases[] = {
        {"domain_1/train.csv", "uid,pid,domain,label\n1,2,1,0\n3,4,1\n", "train.csv:3: missing columns", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n1,2,1,0,5\n", "train.csv:2: extra columns", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n1,x2,1,0\n", "train.csv:2: pid is not an integer: \"x2\"", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n1,2,1,\n", "train.csv:2: label must be 0 or 1, got \"\"", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n-1,2,1,0\n", "train.csv:2: uid must be >= 0", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n1,2,1,0\n10,2,1,0\n", "train.csv:3: uid 10 is out of range (n_users=10)", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n1,10,1,0\n", "train.csv:2: pid 10 is out of range (n_items=10)", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n1,2,0,0\n", "train.csv:2: domain column is 0", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\r\n1,2,1,2\r\n", "train.csv:2: label must be 0 or 1, got \"2\"", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n1,2,1,1.0\n", "train.csv:2: label must be 0 or 1", MML_ERR_FORMAT},
        {"domain_1/train.csv", "1,2,1,0\n", "train.csv:1: missing header", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n1,2,1,0\nuid,pid,domain,label\n", "train.csv:3: header repeated", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n1,2,1,0\n3,4", "train.csv:3: truncated last line", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n1,2,1,0\n\n3,4,1,0\n", "train.csv:3: empty line", MML_ERR_FORMAT},
        {"domain_1/train.csv", "", "train.csv:1: empty file", MML_ERR_FORMAT},
        {"domain_1/train.csv", "uid,pid,domain,label\n99999999999999999999,2,1,0\n", "train.csv:2: uid 99999999999999999999 is out of range", MML_ERR_FORMAT},
        {"meta.txt", "format=moemlora-data-1\nn_domains=abc\n", "meta.txt:2: bad value \"abc\" for n_domains", MML_ERR_FORMAT},
        {"meta.txt", "format=moemlora-data-9\nn_domains=2\n", "meta.txt:1: unsupported format", MML_ERR_FORMAT},
        {"meta.txt", "format=moemlora-data-1\nn_domains=2\nhello\n", "meta.txt:3: expected key=value", MML_ERR_FORMAT},
        {"meta.txt", "format=moemlora-data-1\nn_domains=2\ndomain.2=x\n", "meta.txt:3: domain.2: domain index out of range", MML_ERR_FORMAT},
        {"meta.txt", "format=moemlora-data-1\nn_domains=2\ncount.val.1=7\n", "val.csv: has 2 rows but meta.txt says count.val.1=7", MML_ERR_FORMAT},
        {"meta.txt", "format=moemlora-data-1\nn_domains=3\n", "domain_2/train.csv: cannot open", MML_ERR_IO},
    };
    size_t c;
    char *dir = make_good_dir(0);
    mmlt_ctx = "csv-bad";
    for (c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        mml_data_t d;
        int st;
        put_file(dir, cases[c].file, cases[c].text);
        st = mml_data_load(dir, &d);
        CHECK(st == cases[c].status, "case %zu: status %d, want %d (%s)", c, st, cases[c].status, mml_last_error());
        CHECK(has(mml_last_error(), cases[c].want) && has(mml_last_error(), dir), "case %zu: message \"%s\" lacks \"%s\"",
              c, mml_last_error(), cases[c].want);
        CHECK(d.split[0].uid == NULL && d.n_domains == 0, "case %zu: out zeroed on failure", c);
        if (!strcmp(cases[c].file, "meta.txt")) put_file(dir, "meta.txt", GOOD_META);
        else put_file(dir, cases[c].file, "uid,pid,domain,label\n1,2,1,1\n");
    }
    {
        char p[1024];
        mml_data_t d;
        snprintf(p, sizeof p, "%s/domain_0/val.csv", dir);
        remove(p);
        CHECK(mml_data_load(dir, &d) == MML_ERR_IO && has(mml_last_error(), "domain_0/val.csv"), "missing file: %s",
              mml_last_error());
    }
    mmlt_rm_tree(dir);
    free(dir);
}

static void test_cache_bad(void) {
    raw_t r = make_raw(500, 5);
    mml_data_t a, b;
    char *dir = mkdir_tmp(), path[1024];
    FILE *f;
    long len;
    unsigned char *buf;
    size_t cuts[] = {0, 10, 63, 64, 70, 200, 1000};
    size_t i;
    mmlt_ctx = "cache-bad";
    CHECK_OK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, 123, &a));
    add_names_and_emb(&a, 2);
    snprintf(path, sizeof path, "%s/data.mmlc", dir);
    CHECK_OK(mml_data_save_cache(&a, path));
    f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (unsigned char *)malloc((size_t)len);
    CHECK(fread(buf, 1, (size_t)len, f) == (size_t)len, "read back");
    fclose(f);
    CHECK_OK(mml__cache_decode(buf, (size_t)len, "x", &b));
    CHECK(data_equal(&a, &b), "decode equal");
    mml_data_free(&b);
    for (i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        CHECK(mml__cache_decode(buf, (size_t)len - 1 - cuts[i], "x", &b) == MML_ERR_FORMAT, "truncated by %zu",
              cuts[i] + 1);
    }
    CHECK(has(mml_last_error(), "truncated"), "message says truncated: %s", mml_last_error());
    buf[len / 2] ^= 0x10;
    CHECK(mml__cache_decode(buf, (size_t)len, "x", &b) == MML_ERR_FORMAT && has(mml_last_error(), "checksum"),
          "bit flip caught: %s", mml_last_error());
    buf[len / 2] ^= 0x10;
    {
        unsigned char keep = buf[38];
        buf[38] = 0x7f; /* absurd row count */
        CHECK(mml__cache_decode(buf, (size_t)len, "x", &b) == MML_ERR_FORMAT, "huge size rejected");
        buf[38] = keep;
    }
    buf[8] = 9; /* version */
    CHECK(mml__cache_decode(buf, (size_t)len, "x", &b) == MML_ERR_FORMAT && has(mml_last_error(), "version"),
          "version: %s", mml_last_error());
    buf[8] = 1;
    buf[12] = 0x01, buf[15] = 0x04; /* byte-swapped marker */
    CHECK(mml__cache_decode(buf, (size_t)len, "x", &b) == MML_ERR_FORMAT && has(mml_last_error(), "byte order"),
          "byte order: %s", mml_last_error());
    put_file(dir, "data.mmlc", "uid,pid,domain,label\n1,2,0,1\n");
    CHECK(mml_data_load(dir, &b) == MML_ERR_FORMAT && has(mml_last_error(), "data.mmlc"), "foreign file: %s",
          mml_last_error());
    free(buf);
    mml_data_free(&a);
    free_raw(&r);
    mmlt_rm_tree(dir);
    free(dir);
}

/* ---- MovieLens ---- */

static const char *ML1M_USERS = "1::F::1::10::48067\n2::M::56::16::70072\n7::M::25::15::55117\n9::F::45::7::02460\n";

static void test_movielens_small(void) {
    char *d3 = mkdir_tmp(), *d4 = mkdir_tmp(), *dk = mkdir_tmp();
    mml_data_t a, b;
    int64_t n, pos = 0, i;
    int s;
    mmlt_ctx = "movielens-small";
    put_file(d3, "users.dat", ML1M_USERS);
    put_file(d4, "users.dat", ML1M_USERS);
    put_file(d3, "ratings.no-timestamp.dat", "1::1193::5\n1::661::3\n2::914::5\n7::3408::4\n9::2355::5\n9::1197::1\n7::1193::2\n2::661::5\n");
    put_file(d4, "ratings.dat",
             "1::1193::5::978300760\n1::661::3::978302109\n2::914::5::978301968\n7::3408::4::978300275\r\n"
             "9::2355::5::978824291\n9::1197::1::978302268\n7::1193::2::978301368\n2::661::5::978824268");
    CHECK_OK(mml_movielens_load(d3, "gender", 123, &a));
    CHECK_OK(mml_movielens_load(d4, "gender", 123, &b));
    CHECK(data_equal(&a, &b), "3-field and 4-field ratings give the same data");
    n = a.split[0].n + a.split[1].n + a.split[2].n;
    for (s = 0; s < 3; s++)
        for (i = 0; i < a.split[s].n; i++) pos += a.split[s].label[i] != 0;
    CHECK(n == 8 && pos == 4 && a.n_users == 4 && a.n_items == 6 && a.n_domains == 2, "counts n=%lld pos=%lld",
          (long long)n, (long long)pos);
    CHECK(!strcmp(a.domain_names[0], "F") && !strcmp(a.domain_names[1], "M"), "gender names");
    mml_data_free(&a);
    mml_data_free(&b);
    CHECK_OK(mml_movielens_load(d4, "age", 1, &a));
    CHECK(a.n_domains == 7 && !strcmp(a.domain_names[6], "56+"), "age domains");
    mml_data_free(&a);
    CHECK_OK(mml_movielens_load(d4, "occupation", 1, &a));
    CHECK(a.n_domains == 21 && !strcmp(a.domain_names[10], "K-12 student"), "occupation domains");
    mml_data_free(&a);
    /* malformed lines name file:line */
    put_file(d3, "ratings.no-timestamp.dat", "1::1193::5\n1::661\n");
    CHECK(mml_movielens_load(d3, "gender", 1, &a) == MML_ERR_FORMAT &&
              has(mml_last_error(), "ratings.no-timestamp.dat:2: expected 3 or 4 fields"),
          "short rating line: %s", mml_last_error());
    put_file(d3, "ratings.no-timestamp.dat", "1::1193::5\n5::661::3\n");
    CHECK(mml_movielens_load(d3, "gender", 1, &a) == MML_ERR_FORMAT && has(mml_last_error(), ":2: user 5 is not"),
          "unknown user: %s", mml_last_error());
    put_file(d3, "ratings.no-timestamp.dat", "1::1193::6\n");
    CHECK(mml_movielens_load(d3, "gender", 1, &a) == MML_ERR_FORMAT && has(mml_last_error(), ":1: rating must be"),
          "rating 6: %s", mml_last_error());
    put_file(d3, "users.dat", "1::F::1::10::48067\n2::X::56::16::70072\n");
    CHECK(mml_movielens_load(d3, "gender", 1, &a) == MML_ERR_FORMAT &&
              has(mml_last_error(), "users.dat:2: gender must be F or M"),
          "gender X: %s", mml_last_error());
    put_file(d3, "users.dat", "1::F::2::10::48067\n");
    CHECK(mml_movielens_load(d3, "age", 1, &a) == MML_ERR_FORMAT && has(mml_last_error(), "users.dat:1: age code"),
          "age 2: %s", mml_last_error());
    CHECK(mml_movielens_load(d3, "zip", 1, &a) == MML_ERR_ARG, "unknown split kind");
    CHECK(mml_movielens_load(dk, "age", 1, &a) == MML_ERR_IO, "empty dir");
    /* ML-100K format */
    put_file(dk, "u.occupation", "administrator\nartist\nwriter\n");
    put_file(dk, "u.user", "1|24|M|writer|85711\n2|53|F|artist|94043\n3|17|M|administrator|32067\n");
    put_file(dk, "u.data", "1\t10\t5\t881250949\n2\t20\t3\t891717742\n3\t10\t4\n3\t30\t5\t878887116\n");
    CHECK_OK(mml_movielens_load(dk, "age", 1, &a));
    CHECK(a.n_domains == 7 && a.n_users == 3 && a.n_items == 3, "100K age");
    mml_data_free(&a);
    CHECK_OK(mml_movielens_load(dk, "occupation", 1, &a));
    CHECK(a.n_domains == 3 && !strcmp(a.domain_names[2], "writer"), "100K occupation names from u.occupation");
    mml_data_free(&a);
    put_file(dk, "u.user", "1|24|M|pilot|85711\n");
    CHECK(mml_movielens_load(dk, "age", 1, &a) == MML_ERR_FORMAT && has(mml_last_error(), "u.user:1: occupation \"pilot\""),
          "unknown occupation: %s", mml_last_error());
    mmlt_rm_tree(d3);
    mmlt_rm_tree(d4);
    mmlt_rm_tree(dk);
    free(d3);
    free(d4);
    free(dk);
}

static void check_real(const char *sub, const char *probe, int64_t n_ratings, int64_t n_pos, int32_t n_users,
                       int32_t n_items) {
    static const char *kinds[3] = {"gender", "age", "occupation"};
    static const int ndom[3] = {2, 7, 21};
    char raw[1024];
    int k, s;
    if (!mmlt_real_data(sub, probe, "its loader check", raw, sizeof raw)) return;
    for (k = 0; k < 3; k++) {
        mml_data_t d;
        int64_t n = 0, pos = 0, i;
        clock_t t0 = clock();
        CHECK_OK(mml_movielens_load(raw, kinds[k], 123, &d));
        for (s = 0; s < 3; s++) {
            n += d.split[s].n;
            for (i = 0; i < d.split[s].n; i++) pos += d.split[s].label[i] != 0;
        }
        CHECK(n == n_ratings && pos == n_pos && d.n_users == n_users && d.n_domains == ndom[k] &&
                  (n_items < 0 || d.n_items == n_items),
              "%s %s: n=%lld pos=%lld users=%d items=%d domains=%d", sub, kinds[k], (long long)n, (long long)pos,
              d.n_users, d.n_items, d.n_domains);
        if (k == 0) printf("%s %s: %.2f s\n", sub, kinds[k], (double)(clock() - t0) / CLOCKS_PER_SEC);
        mml_data_free(&d);
    }
}

static void test_movielens_real(void) {
    mmlt_ctx = "movielens-real";
    check_real("ml-100k", "u.data", 100000, 21201, 943, 1682);
    if (mmlt_quick()) {
        printf("ml-1m: skipped in quick mode (MOEMLORA_TEST_QUICK)\n");
        return;
    }
    check_real("ml-1m", "ratings.no-timestamp.dat", 1000209, 226310, 6040, 3706);
}

/* ---- Taobao ---- */

static int cmp_key(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void test_taobao(void) {
    char *dir = mkdir_tmp(), *d2 = mkdir_tmp();
    mml_data_t d;
    int s, k;
    int64_t i, npos_all = 0;
    mmlt_ctx = "taobao";
    CHECK_OK(mml_taobao_write_synthetic(dir, 400, 800, 5, 6000, 8, 42));
    CHECK_OK(mml_taobao_load(dir, 3, 123, &d));
    CHECK(d.n_domains == 3 && d.pretrained_dim == 8 && d.user_emb && d.item_emb, "3 themes, dim 8 embeddings");
    CHECK(d.domain_names && !strcmp(d.domain_names[0], "theme_1000") && !strcmp(d.domain_names[2], "theme_1034"),
          "first themes in ascending id order");
    if (d.n_domains == 3) {
        uint64_t *pos;
        int64_t np = 0, bad = 0;
        for (s = 0; s < 3; s++) npos_all += d.split[s].n;
        pos = (uint64_t *)malloc((size_t)npos_all * 8);
        for (s = 0; s < 3; s++)
            for (i = 0; i < d.split[s].n; i++)
                if (d.split[s].label[i] != 0)
                    pos[np++] = ((uint64_t)d.split[s].dom[i] * d.n_users + d.split[s].uid[i]) * d.n_items + d.split[s].pid[i];
        qsort(pos, (size_t)np, 8, cmp_key);
        for (i = 1; i < np; i++) bad += pos[i] == pos[i - 1];
        CHECK(bad == 0, "positives deduplicated (%lld dups)", (long long)bad);
        /* negatives never collide with a positive of the same user and theme */
        for (s = 0; s < 3; s++)
            for (i = 0; i < d.split[s].n; i++)
                if (d.split[s].label[i] == 0) {
                    uint64_t key = ((uint64_t)d.split[s].dom[i] * d.n_users + d.split[s].uid[i]) * d.n_items + d.split[s].pid[i];
                    bad += bsearch(&key, pos, (size_t)np, 8, cmp_key) != NULL;
                }
        CHECK(bad == 0, "%lld negatives are clicked items", (long long)bad);
        free(pos);
        for (k = 0; k < 3; k++) {
            double p = 0, n = 0, ratio;
            for (s = 0; s < 3; s++)
                for (i = d.split[s].dom_start[k]; i < d.split[s].dom_start[k + 1]; i++) {
                    p += d.split[s].label[i] != 0;
                    n += d.split[s].label[i] == 0;
                }
            ratio = p / n; /* n_neg = round(n_pos / r): p/n near r in [0.2, 0.5] */
            CHECK(ratio > 0.18 && ratio < 0.55, "theme %d: pos/neg %.3f outside [0.2,0.5]", k, ratio);
        }
        for (i = 0; i < (int64_t)d.n_users * 8; i++)
            if (!(fabsf(d.user_emb[i]) < 2)) break;
        CHECK(i == (int64_t)d.n_users * 8, "user embeddings finite");
    }
    {
        mml_data_t e;
        CHECK_OK(mml_taobao_load(dir, 3, 123, &e));
        CHECK(data_equal(&d, &e), "deterministic");
        mml_data_free(&e);
        CHECK_OK(mml_taobao_load(dir, 0, 123, &e));
        CHECK(e.n_domains == 5, "all themes");
        mml_data_free(&e);
    }
    mml_data_free(&d);
    /* column order from the header, extra columns, drops clicks without embeddings */
    put_file(d2, "user_embedding.csv", "user_id,emb\n10,0.5,-1e-2\n20,1.5,2\n");
    put_file(d2, "item_embedding.csv", "item_id,emb\n7,1,2\n8,3,4\n9,5,6\n");
    put_file(d2, "theme_click_log.csv", "theme_id,item_id,extra,user_id\n3,7,x,10\n3,8,y,20\n3,9,z,99\n3,7,x,10\n");
    CHECK_OK(mml_taobao_load(d2, 0, 1, &d));
    CHECK(d.n_users == 2 && d.n_items == 2 && d.pretrained_dim == 2 && d.user_emb[1] == -0.01f && d.item_emb[3] == 4,
          "small taobao: users %d items %d", d.n_users, d.n_items);
    mml_data_free(&d);
    put_file(d2, "item_embedding.csv", "item_id,emb\n7,1,2\n8,3\n");
    CHECK(mml_taobao_load(d2, 0, 1, &d) == MML_ERR_FORMAT && has(mml_last_error(), "item_embedding.csv:3: too few values"),
          "dim mismatch: %s", mml_last_error());
    put_file(d2, "item_embedding.csv", "item_id,emb\n7,1,2\n8,3,abc\n");
    CHECK(mml_taobao_load(d2, 0, 1, &d) == MML_ERR_FORMAT && has(mml_last_error(), "item_embedding.csv:3: value 2 is not"),
          "bad float: %s", mml_last_error());
    put_file(d2, "item_embedding.csv", "item_id,emb\n7,1,2\n8,3,4\n");
    put_file(d2, "theme_click_log.csv", "theme_id,item_id,user_id\n3,7,10\n3,8\n");
    CHECK(mml_taobao_load(d2, 0, 1, &d) == MML_ERR_FORMAT && has(mml_last_error(), "theme_click_log.csv:3: expected 3 columns"),
          "short click line: %s", mml_last_error());
    put_file(d2, "theme_click_log.csv", "theme,item_id,user_id\n3,7,10\n");
    CHECK(mml_taobao_load(d2, 0, 1, &d) == MML_ERR_FORMAT && has(mml_last_error(), "theme_click_log.csv:1: header"),
          "header: %s", mml_last_error());
    mmlt_rm_tree(dir);
    mmlt_rm_tree(d2);
    free(dir);
    free(d2);
}

/* ---- messages ---- */

/* Ids beyond what the format can hold say so, with file:line. */
static void test_id_range(void) {
    char *dir = mkdir_tmp(), *ml = mkdir_tmp(), *tb = mkdir_tmp();
    mml_data_t d;
    mmlt_ctx = "id-range";
    /* the paper repo's layout (no meta.txt): ids become vocab sizes */
    {
        char p[1024];
        snprintf(p, sizeof p, "%s/domain_0", dir);
        mkdir(p, 0777);
    }
    put_file(dir, "domain_0/train.csv", "uid,pid,domain,label\n1,2,0,1\n3000000000,1,0,1\n");
    put_file(dir, "domain_0/val.csv", "uid,pid,domain,label\n1,2,0,1\n");
    put_file(dir, "domain_0/test.csv", "uid,pid,domain,label\n1,2,0,1\n");
    CHECK(mml_data_load(dir, &d) == MML_ERR_FORMAT &&
              has(mml_last_error(), "domain_0/train.csv:3: uid 3000000000 is out of range (at most 2147483646)"),
          "prepared uid: %s", mml_last_error());
    put_file(dir, "domain_0/train.csv", "uid,pid,domain,label\n1,12345678901234567890,0,1\n");
    CHECK(mml_data_load(dir, &d) == MML_ERR_FORMAT &&
              has(mml_last_error(), "domain_0/train.csv:2: pid 12345678901234567890 is out of range (at most 2147483646)"),
          "prepared pid, 20 digits: %s", mml_last_error());
    /* MovieLens */
    put_file(ml, "users.dat", "1::F::1::10::48067\n");
    put_file(ml, "ratings.dat", "1::1193::5::978300760\n1::3000000000::5::978300760\n");
    CHECK(mml_movielens_load(ml, "gender", 1, &d) == MML_ERR_FORMAT &&
              has(mml_last_error(), "ratings.dat:2: item id 3000000000 is out of range (at most 2147483647)"),
          "MovieLens item: %s", mml_last_error());
    put_file(ml, "users.dat", "1::F::1::10::48067\n3000000000::M::1::10::48067\n");
    CHECK(mml_movielens_load(ml, "gender", 1, &d) == MML_ERR_FORMAT &&
              has(mml_last_error(), "users.dat:2: user id 3000000000 is out of range (at most 2147483647)"),
          "MovieLens user: %s", mml_last_error());
    /* Taobao raw ids are only keys: anything up to 18 digits */
    put_file(tb, "user_embedding.csv", "user_id,emb\n10,0.5,1\n1234567890123456789,1,2\n");
    put_file(tb, "item_embedding.csv", "item_id,emb\n7,1,2\n");
    put_file(tb, "theme_click_log.csv", "user_id,item_id,theme_id\n10,7,3\n");
    CHECK(mml_taobao_load(tb, 0, 1, &d) == MML_ERR_FORMAT &&
              has(mml_last_error(), "user_embedding.csv:3: id 1234567890123456789 is out of range (at most 999999999999999999)"),
          "Taobao embedding id: %s", mml_last_error());
    put_file(tb, "user_embedding.csv", "user_id,emb\n10,0.5,1\n3000000000,1,2\n");
    put_file(tb, "theme_click_log.csv", "user_id,item_id,theme_id\n3000000000,7,3\n10,7,99999999999999999999\n");
    CHECK(mml_taobao_load(tb, 0, 1, &d) == MML_ERR_FORMAT &&
              has(mml_last_error(), "theme_click_log.csv:3: theme_id 99999999999999999999 is out of range (at most 999999999999999999)"),
          "Taobao theme id: %s", mml_last_error());
    mmlt_rm_tree(dir);
    mmlt_rm_tree(ml);
    mmlt_rm_tree(tb);
    free(dir);
    free(ml);
    free(tb);
}

/* A raw folder that cannot be read says why, not "no data set found". */
static void test_raw_unreadable(void) {
    char *root = mkdir_tmp(), loop[1024], none[1024];
    mml_data_t d;
    mmlt_ctx = "raw-unreadable";
    snprintf(loop, sizeof loop, "%s/loop", root);
    CHECK(symlink("loop", loop) == 0, "symlink");
    CHECK(mml_movielens_load(loop, "gender", 1, &d) == MML_ERR_IO && has(mml_last_error(), "cannot read") &&
              has(mml_last_error(), strerror(ELOOP)),
          "symlink loop: %s", mml_last_error());
    snprintf(none, sizeof none, "%s/none", root);
    CHECK(mml_movielens_load(none, "gender", 1, &d) == MML_ERR_IO && has(mml_last_error(), strerror(ENOENT)),
          "missing folder: %s", mml_last_error());
    if (geteuid() != 0) {
        char locked[1024];
        snprintf(locked, sizeof locked, "%s/locked", root);
        mkdir(locked, 0777);
        put_file(locked, "users.dat", ML1M_USERS);
        chmod(locked, 0);
        CHECK(mml_movielens_load(locked, "gender", 1, &d) == MML_ERR_IO && has(mml_last_error(), strerror(EACCES)),
              "folder without permission: %s", mml_last_error());
        chmod(locked, 0700);
    } else {
        printf("raw-unreadable: running as root, the permission case is covered by the symlink loop only\n");
    }
    mmlt_rm_tree(root);
    free(root);
}

static const char *parse_whole(const char *s) {
    float f;
    return mml__parse_f32(s, s + strlen(s), &f);
}

static void test_float_parse(void) {
    static const char *v[] = {"0", "-0.5", "1e-3", "3.14159265358979", "-2.5E+2", "123456789012345678901234", "0.000001",
                              ".5", "7."};
    size_t i;
    mmlt_ctx = "float";
    for (i = 0; i < sizeof v / sizeof v[0]; i++) {
        float f = 0, ref = strtof(v[i], NULL);
        const char *e = mml__parse_f32(v[i], v[i] + strlen(v[i]), &f);
        CHECK(e == v[i] + strlen(v[i]) && mmlt_close(f, ref, 1.2e-7, 0), "%s -> %g (strtof %g)", v[i], f, ref);
    }
    CHECK(parse_whole("abc") == NULL, "not a number");
    CHECK(parse_whole("1e") == NULL, "dangling exponent");
    CHECK(parse_whole("1e99") == NULL, "overflow");
}

int main(void) {
    test_split();
    test_roundtrip();
    test_atomic();
    test_csv_ok();
    test_csv_bad();
    test_cache_bad();
    test_id_range();
    test_raw_unreadable();
    test_float_parse();
    test_movielens_small();
    test_movielens_real();
    test_taobao();
    return mmlt_finish("test_data");
}
