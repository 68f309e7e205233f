/* Tests of the data chapter: split semantics, CSV layout round trip and error
 * reporting, binary cache and when it is used (stale caches rebuilt), a new
 * set replacing an old one whole (a full disk, SIGKILL at many points, user
 * files refused), size limits and messages; and the recipes of
 * examples/mml_recipes.h: MovieLens (synthetic + real when present), Taobao
 * (synthetic raw set through the real loader), the float parser. */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "../examples/mml_recipes.h"
#include "mml_test.h"

#include <errno.h>
#include <stdint.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MOEMLORA_SOURCE_DIR
#define MOEMLORA_SOURCE_DIR "."
#endif

/* ---- helpers ---- */

static char *mkdir_tmp(void) { return mmlt_mkdtemp("mml_test_data_"); }

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

/* domain_<k>/<split>.csv of the paper layout as docs/DATA.md defines it,
 * printed here one row at a time; the caller frees it. */
static char *paper_csv(const mml_split_t *sp, int k, size_t *len) {
    size_t cap = 32 + (size_t)(sp->dom_start[k + 1] - sp->dom_start[k]) * 40, n;
    char *t = (char *)malloc(cap);
    n = (size_t)snprintf(t, cap, "uid,pid,domain,label\n");
    for (int64_t i = sp->dom_start[k]; i < sp->dom_start[k + 1]; i++)
        n += (size_t)snprintf(t + n, cap - n, "%d,%d,%d,%d\n", sp->uid[i], sp->pid[i], k, sp->label[i] != 0.0f);
    *len = n;
    return t;
}

/* The written split files are exactly those bytes, files of more than the
 * writer's 1 MB buffer included. */
static void test_csv_bytes(void) {
    int quick = mmlt_quick();
    raw_t r = make_raw(quick ? 3001 : 500000, 21);
    mml_data_t a;
    char *dir = mkdir_tmp(), path[1024];
    static const char *const split[3] = {"train", "val", "test"};
    size_t big = 0;
    mmlt_ctx = "csv bytes";
    CHECK_OK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, 123, &a));
    CHECK_OK(mml_data_save_dir(&a, dir));
    for (int k = 0; k < a.n_domains; k++)
        for (int s = 0; s < 3; s++) {
            size_t n = 0, want_n = 0;
            snprintf(path, sizeof path, "%s/domain_%d/%s.csv", dir, k, split[s]);
            unsigned char *got = mmlt_read_file(path, &n);
            char *want = paper_csv(&a.split[s], k, &want_n);
            CHECK(got && n == want_n && !memcmp(got, want, n), "%s: %zu bytes, want %zu", path, n, want_n);
            big = n > big ? n : big;
            free(got);
            free(want);
        }
    CHECK(quick || big > ((size_t)1 << 20), "a file beyond one buffer: the largest has %zu bytes", big);
    mml_data_free(&a);
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

/* ---- the key=value reader (meta.txt and checkpoint text sections) ---- */

typedef struct kv_seen { char text[256]; int n; const char *refuse; } kv_seen;

static mml_status kv_collect(void *ctx, const char *k, const char *v) {
    kv_seen *s = (kv_seen *)ctx;
    size_t at = strlen(s->text);
    if (s->refuse && !strcmp(k, s->refuse)) return mml__fail(MML_ERR_FORMAT, "refused %s", k);
    snprintf(s->text + at, sizeof s->text - at, "[%s|%s]", k, v);
    s->n++;
    return MML_OK;
}

static void test_kv_reader(void) {
    static const char text[] = "\xEF\xBB\xBF# comment\r\n\n  a=1\r\nb==2 x\n\t# another\nc=\nd=last";
    static const char nul[] = "a=1\nb=x\0y\n";
    kv_seen s;
    mmlt_ctx = "kv-reader";
    memset(&s, 0, sizeof s);
    CHECK_OK(mml__kv_each(text, sizeof text - 1, "t.txt", kv_collect, &s));
    CHECK(!strcmp(s.text, "[a|1][b|=2 x][c|][d|last]"), "lines read: %s", s.text);
    memset(&s, 0, sizeof s);
    s.refuse = "c";
    CHECK(mml__kv_each(text, sizeof text - 1, "t.txt", kv_collect, &s) == MML_ERR_FORMAT &&
              has(mml_last_error(), "t.txt:6: refused c"), "callback error located: %s", mml_last_error());
    CHECK(mml__kv_each("a=1\nno equals\n", 14, "t.txt", kv_collect, &s) == MML_ERR_FORMAT &&
              has(mml_last_error(), "t.txt:2: expected key=value, got \"no equals\""), "no '=': %s", mml_last_error());
    CHECK(mml__kv_each(nul, sizeof nul - 1, "t.txt", kv_collect, &s) == MML_ERR_FORMAT &&
              has(mml_last_error(), "t.txt:2: expected key=value text without NUL bytes"), "NUL byte: %s",
          mml_last_error());
    memset(&s, 0, sizeof s);
    CHECK_OK(mml__kv_each("", 0, "t.txt", kv_collect, &s));
    CHECK(s.n == 0, "empty text: no lines");
}

/* The one dirname of the library (atomic writer, stale temporaries, free
 * space, the prepared folder's parent). */
static void test_dir_of(void) {
    static const char *const cases[][3] = {
        {"a/b", "a", "b"}, {"b", ".", "b"}, {"/b", "/", "b"}, {"/", "/", ""},
        {"a/b/", "a/b", ""}, {"x/y/z.mml", "x/y", "z.mml"}, {"./f", ".", "f"},
    };
    char dir[MML__PATH_MAX], *longp = (char *)malloc(MML__PATH_MAX + 8);
    mmlt_ctx = "dir-of";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *base = mml__dir_of(cases[i][0], dir);
        CHECK(base && !strcmp(dir, cases[i][1]) && !strcmp(base, cases[i][2]), "%s -> \"%s\" + \"%s\"", cases[i][0],
              dir, base ? base : "(null)");
    }
    memset(longp, 'd', MML__PATH_MAX + 4);
    strcpy(longp + MML__PATH_MAX, "/f");
    CHECK(mml__dir_of(longp, dir) == NULL, "a folder name past MML__PATH_MAX is refused");
    free(longp);
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
    buf[8] = MML__CACHE_VERSION;
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
    CHECK_OK(mmlr_movielens_load(d3, "gender", 123, &a));
    CHECK_OK(mmlr_movielens_load(d4, "gender", 123, &b));
    CHECK(data_equal(&a, &b), "3-field and 4-field ratings give the same data");
    n = a.split[0].n + a.split[1].n + a.split[2].n;
    for (s = 0; s < 3; s++)
        for (i = 0; i < a.split[s].n; i++) pos += a.split[s].label[i] != 0;
    CHECK(n == 8 && pos == 4 && a.n_users == 4 && a.n_items == 6 && a.n_domains == 2, "counts n=%lld pos=%lld",
          (long long)n, (long long)pos);
    CHECK(!strcmp(a.domain_names[0], "F") && !strcmp(a.domain_names[1], "M"), "gender names");
    mml_data_free(&a);
    mml_data_free(&b);
    CHECK_OK(mmlr_movielens_load(d4, "age", 1, &a));
    CHECK(a.n_domains == 7 && !strcmp(a.domain_names[6], "56+"), "age domains");
    mml_data_free(&a);
    CHECK_OK(mmlr_movielens_load(d4, "occupation", 1, &a));
    CHECK(a.n_domains == 21 && !strcmp(a.domain_names[10], "K-12 student"), "occupation domains");
    mml_data_free(&a);
    /* malformed lines name file:line */
    put_file(d3, "ratings.no-timestamp.dat", "1::1193::5\n1::661\n");
    CHECK(mmlr_movielens_load(d3, "gender", 1, &a) == MML_ERR_FORMAT &&
              has(mml_last_error(), "ratings.no-timestamp.dat:2: expected 3 or 4 fields"),
          "short rating line: %s", mml_last_error());
    put_file(d3, "ratings.no-timestamp.dat", "1::1193::5\n5::661::3\n");
    CHECK(mmlr_movielens_load(d3, "gender", 1, &a) == MML_ERR_FORMAT && has(mml_last_error(), ":2: user 5 is not"),
          "unknown user: %s", mml_last_error());
    put_file(d3, "ratings.no-timestamp.dat", "1::1193::6\n");
    CHECK(mmlr_movielens_load(d3, "gender", 1, &a) == MML_ERR_FORMAT && has(mml_last_error(), ":1: rating must be"),
          "rating 6: %s", mml_last_error());
    put_file(d3, "users.dat", "1::F::1::10::48067\n2::X::56::16::70072\n");
    CHECK(mmlr_movielens_load(d3, "gender", 1, &a) == MML_ERR_FORMAT &&
              has(mml_last_error(), "users.dat:2: gender must be F or M"),
          "gender X: %s", mml_last_error());
    put_file(d3, "users.dat", "1::F::2::10::48067\n");
    CHECK(mmlr_movielens_load(d3, "age", 1, &a) == MML_ERR_FORMAT && has(mml_last_error(), "users.dat:1: age code"),
          "age 2: %s", mml_last_error());
    CHECK(mmlr_movielens_load(d3, "zip", 1, &a) == MML_ERR_ARG, "unknown split kind");
    CHECK(mmlr_movielens_load(dk, "age", 1, &a) == MML_ERR_IO, "empty dir");
    /* ML-100K format */
    put_file(dk, "u.occupation", "administrator\nartist\nwriter\n");
    put_file(dk, "u.user", "1|24|M|writer|85711\n2|53|F|artist|94043\n3|17|M|administrator|32067\n");
    put_file(dk, "u.data", "1\t10\t5\t881250949\n2\t20\t3\t891717742\n3\t10\t4\n3\t30\t5\t878887116\n");
    CHECK_OK(mmlr_movielens_load(dk, "age", 1, &a));
    CHECK(a.n_domains == 7 && a.n_users == 3 && a.n_items == 3, "100K age");
    mml_data_free(&a);
    CHECK_OK(mmlr_movielens_load(dk, "occupation", 1, &a));
    CHECK(a.n_domains == 3 && !strcmp(a.domain_names[2], "writer"), "100K occupation names from u.occupation");
    mml_data_free(&a);
    put_file(dk, "u.user", "1|24|M|pilot|85711\n");
    CHECK(mmlr_movielens_load(dk, "age", 1, &a) == MML_ERR_FORMAT && has(mml_last_error(), "u.user:1: occupation \"pilot\""),
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
        CHECK_OK(mmlr_movielens_load(raw, kinds[k], 123, &d));
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
    CHECK_OK(mmlr_taobao_write_synthetic(dir, 400, 800, 5, 6000, 8, 42));
    CHECK_OK(mmlr_taobao_load(dir, 3, 123, &d));
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
        CHECK_OK(mmlr_taobao_load(dir, 3, 123, &e));
        CHECK(data_equal(&d, &e), "deterministic");
        mml_data_free(&e);
        CHECK_OK(mmlr_taobao_load(dir, 0, 123, &e));
        CHECK(e.n_domains == 5, "all themes");
        mml_data_free(&e);
    }
    mml_data_free(&d);
    /* column order from the header, extra columns, drops clicks without embeddings */
    put_file(d2, "user_embedding.csv", "user_id,emb\n10,0.5,-1e-2\n20,1.5,2\n");
    put_file(d2, "item_embedding.csv", "item_id,emb\n7,1,2\n8,3,4\n9,5,6\n");
    put_file(d2, "theme_click_log.csv", "theme_id,item_id,extra,user_id\n3,7,x,10\n3,8,y,20\n3,9,z,99\n3,7,x,10\n");
    CHECK_OK(mmlr_taobao_load(d2, 0, 1, &d));
    CHECK(d.n_users == 2 && d.n_items == 2 && d.pretrained_dim == 2 && d.user_emb[1] == -0.01f && d.item_emb[3] == 4,
          "small taobao: users %d items %d", d.n_users, d.n_items);
    mml_data_free(&d);
    put_file(d2, "item_embedding.csv", "item_id,emb\n7,1,2\n8,3\n");
    CHECK(mmlr_taobao_load(d2, 0, 1, &d) == MML_ERR_FORMAT && has(mml_last_error(), "item_embedding.csv:3: too few values"),
          "dim mismatch: %s", mml_last_error());
    put_file(d2, "item_embedding.csv", "item_id,emb\n7,1,2\n8,3,abc\n");
    CHECK(mmlr_taobao_load(d2, 0, 1, &d) == MML_ERR_FORMAT && has(mml_last_error(), "item_embedding.csv:3: value 2 is not"),
          "bad float: %s", mml_last_error());
    put_file(d2, "item_embedding.csv", "item_id,emb\n7,1,2\n8,3,4\n");
    put_file(d2, "theme_click_log.csv", "theme_id,item_id,user_id\n3,7,10\n3,8\n");
    CHECK(mmlr_taobao_load(d2, 0, 1, &d) == MML_ERR_FORMAT && has(mml_last_error(), "theme_click_log.csv:3: expected 3 columns"),
          "short click line: %s", mml_last_error());
    put_file(d2, "theme_click_log.csv", "theme,item_id,user_id\n3,7,10\n");
    CHECK(mmlr_taobao_load(d2, 0, 1, &d) == MML_ERR_FORMAT && has(mml_last_error(), "theme_click_log.csv:1: header"),
          "header: %s", mml_last_error());
    mmlt_rm_tree(dir);
    mmlt_rm_tree(d2);
    free(dir);
    free(d2);
}


/* ---- a prepared folder stays one consistent set ---- */

/* A data set of n rows; seed changes the content, dim > 0 adds embeddings. */
static void make_set(int64_t n, uint64_t seed, int dim, mml_data_t *d) {
    raw_t r = make_raw(n, seed);
    CHECK_OK(mml_data_split(r.n, r.uid, r.pid, r.dom, r.label, (int32_t)r.n, 97, 5, seed, d));
    add_names_and_emb(d, dim);
    free_raw(&r);
}

/* The prepared layout plus the binary cache written next to it. */
static void write_set_and_cache(const mml_data_t *d, const char *dir) {
    char path[1024];
    CHECK_OK(mml_data_save_dir(d, dir));
    snprintf(path, sizeof path, "%s/data.mmlc", dir);
    CHECK_OK(mml_data_save_cache(d, path));
}

static int same_mtime(const struct stat *a, const struct stat *b) {
    return a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Overwrites dir/name with n bytes as an editor would. A rewrite of the same
 * size within one tick of the filesystem's clock keeps the old mtime, which
 * no reader could tell from no edit: such a rewrite is repeated until the
 * clock has moved on (polling the file, no fixed wait). */
static void edit_file(const char *dir, const char *name, const void *text, size_t n) {
    char p[1024];
    struct stat before, after;
    int tries;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    CHECK(stat(p, &before) == 0, "%s exists", p);
    for (tries = 0; tries < 10000; tries++) {
        FILE *f = fopen(p, "wb");
        CHECK(f && fwrite(text, 1, n, f) == n, "rewrite %s", p);
        if (f) fclose(f);
        if (stat(p, &after) != 0 || after.st_size != before.st_size || !same_mtime(&before, &after)) return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    CHECK(0, "%s: mtime never changed", p);
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    unsigned char *b = mmlt_read_file(from, &n);
    FILE *f = fopen(to, "wb");
    CHECK(b && f && fwrite(b, 1, n, f) == n, "copy %s -> %s", from, to);
    if (f) fclose(f);
    free(b);
}

/* The four ways a cache went stale in the field: an edited CSV, an edited
 * meta.txt, a deleted domain folder, another data set's cache copied in. The
 * load must see the CSVs as they are now. */
static void stale_cache_cases(void (*write_set)(const mml_data_t *, const char *)) {
    mml_data_t a, b, x;
    char *dir = mkdir_tmp(), *other = mkdir_tmp(), p[1024], q[1024];
    unsigned char *text;
    size_t n;
    make_set(600, 21, 2, &a);
    make_set(400, 22, 0, &b);
    write_set(&a, dir);
    /* a label edited to 7: the CSV's own error, with file:line */
    snprintf(p, sizeof p, "%s/domain_0/train.csv", dir);
    text = mmlt_read_file(p, &n);
    if (text) {
        char *nl = strchr((char *)text, '\n'), *end = nl ? strchr(nl + 1, '\n') : NULL;
        if (end) end[-1] = '7';
        edit_file(dir, "domain_0/train.csv", text, n);
        free(text);
    }
    CHECK(mml_data_load(dir, &x) == MML_ERR_FORMAT && has(mml_last_error(), "domain_0/train.csv:2: label must be 0 or 1"),
          "edited label: %s", mml_last_error());
    mml_data_free(&x);
    write_set(&a, dir);
    /* meta.txt now says one domain */
    snprintf(p, sizeof p, "%s/meta.txt", dir);
    text = mmlt_read_file(p, &n);
    if (text) {
        char *nd = strstr((char *)text, "n_domains=5");
        if (nd) nd[10] = '1';
        edit_file(dir, "meta.txt", text, n);
        free(text);
    }
    CHECK(mml_data_load(dir, &x) != MML_OK && has(mml_last_error(), "meta.txt"), "edited meta.txt: %s",
          mml_last_error());
    mml_data_free(&x);
    write_set(&a, dir);
    /* domain_1/ deleted */
    snprintf(p, sizeof p, "%s/domain_1", dir);
    mmlt_rm_tree(p);
    CHECK(mml_data_load(dir, &x) == MML_ERR_IO && has(mml_last_error(), "domain_1/train.csv"), "deleted domain: %s",
          mml_last_error());
    mml_data_free(&x);
    write_set(&a, dir);
    /* another data set's cache copied in: the folder's own data, cache rebuilt */
    write_set(&b, other);
    snprintf(p, sizeof p, "%s/data.mmlc", other);
    snprintf(q, sizeof q, "%s/data.mmlc", dir);
    copy_file(p, q);
    CHECK_OK(mml_data_load(dir, &x));
    CHECK(data_equal(&a, &x), "foreign cache: loaded %d users, %d domains; the folder has %d, %d", x.n_users,
          x.n_domains, a.n_users, a.n_domains);
    mml_data_free(&x);
    CHECK_OK(mml_data_load_cache(q, &x));
    CHECK(data_equal(&a, &x), "the cache was rebuilt from the folder");
    mml_data_free(&x);
    mml_data_free(&a);
    mml_data_free(&b);
    mmlt_rm_tree(dir);
    mmlt_rm_tree(other);
    free(dir);
    free(other);
}

/* The set with its cache as moemlora-prepare writes it. */
static void write_prepared(const mml_data_t *d, const char *dir) { CHECK_OK(mml_data_save_prepared(d, dir, 1)); }

static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_ino == b->st_ino && a->st_size == b->st_size && same_mtime(a, b);
}

/* Rewrites the version field of the cache at path (nothing else changes). */
static void set_cache_version(const char *path, unsigned v) {
    size_t n;
    unsigned char *b = mmlt_read_file(path, &n);
    FILE *f;
    CHECK(b && n > 12, "read %s", path);
    if (!b || n <= 12) {
        free(b);
        return;
    }
    memcpy(b + 8, &v, 4);
    f = fopen(path, "wb");
    CHECK(f && fwrite(b, 1, n, f) == n, "write version %u", v);
    if (f) fclose(f);
    free(b);
}

/* A current cache is used as it is; one of an older version is rebuilt;
 * a cache alone in its folder (no CSVs to vouch for) is still read, unless
 * it is of an older version: then it is refused, naming the version. */
static void cache_kept_or_rebuilt(void) {
    mml_data_t a, x;
    char *dir = mkdir_tmp(), *alone = mkdir_tmp(), path[1024];
    struct stat before, after;
    unsigned char *b;
    size_t n;
    make_set(500, 51, 2, &a);
    write_prepared(&a, dir);
    snprintf(path, sizeof path, "%s/data.mmlc", dir);
    CHECK(stat(path, &before) == 0, "the set has a cache");
    CHECK_OK(mml_data_load(dir, &x));
    CHECK(data_equal(&a, &x), "current cache loads");
    mml_data_free(&x);
    CHECK(stat(path, &after) == 0 && same_file(&before, &after), "a current cache is not rewritten");
    /* the cache's checksum is the library's one CRC (CRC32C) */
    b = mmlt_read_file(path, &n);
    CHECK(b && n > 68 && b[8] == MML__CACHE_VERSION, "the cache is of version %u", MML__CACHE_VERSION);
    if (b && n > 68) {
        uint32_t stored;
        memcpy(&stored, b + n - 4, 4);
        CHECK(stored == mml_crc32c(0, b, n - 4), "the cache ends in the CRC32C of the rest");
    }
    free(b);
    /* every older version: rebuilt, not an error */
    for (unsigned v = 1; v < MML__CACHE_VERSION; v++) {
        set_cache_version(path, v);
        CHECK_OK(mml_data_load(dir, &x));
        CHECK(data_equal(&a, &x), "version %u cache: the folder's data", v);
        mml_data_free(&x);
        b = mmlt_read_file(path, &n);
        CHECK(b && n > 8 && b[8] == MML__CACHE_VERSION, "version %u cache rewritten as version %u", v,
              MML__CACHE_VERSION);
        free(b);
    }
    /* a cache with no folder to check against */
    snprintf(path, sizeof path, "%s/data.mmlc", alone);
    CHECK_OK(mml_data_save_cache(&a, path));
    CHECK_OK(mml_data_load(alone, &x));
    CHECK(data_equal(&a, &x), "a cache alone in its folder loads");
    mml_data_free(&x);
    /* an older cache with nothing to rebuild it from is refused, never read */
    set_cache_version(path, MML__CACHE_VERSION - 1);
    CHECK(mml_data_load(alone, &x) == MML_ERR_FORMAT && has(mml_last_error(), "data.mmlc") &&
              has(mml_last_error(), "cache version"),
          "an older cache alone in its folder: %s", mml_last_error());
    CHECK(mml_data_load_cache(path, &x) == MML_ERR_FORMAT && has(mml_last_error(), "cache version"),
          "mml_data_load_cache of an older cache: %s", mml_last_error());
    CHECK_OK(mml_data_save_cache(&a, path));
    snprintf(path, sizeof path, "%s/data.mmlc", dir);
    CHECK_OK(mml_data_load_cache(path, &x));
    CHECK(data_equal(&a, &x), "mml_data_load_cache reads a cache by itself");
    mml_data_free(&x);
    mml_data_free(&a);
    mmlt_rm_tree(dir);
    mmlt_rm_tree(alone);
    free(dir);
    free(alone);
}

static void test_stale_cache(void) {
    mmlt_ctx = "stale-cache";
    stale_cache_cases(write_set_and_cache);
    mmlt_ctx = "stale-cache-prepared";
    stale_cache_cases(write_prepared);
    mmlt_ctx = "cache-kept";
    cache_kept_or_rebuilt();
}

/* Names in dir other than keep, joined by spaces into out. */
static int other_entries(const char *dir, const char *keep, char *out, size_t cap) {
    DIR *dh = opendir(dir);
    struct dirent *e;
    int n = 0;
    out[0] = 0;
    while (dh && (e = readdir(dh)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, keep)) continue;
        if (strlen(out) + strlen(e->d_name) + 2 < cap) {
            strcat(out, " ");
            strcat(out, e->d_name);
        }
        n++;
    }
    if (dh) closedir(dh);
    return n;
}

static size_t write_all_fd(int fd, const void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, (const char *)buf + done, n - done);
        if (k <= 0) break;
        done += (size_t)k;
    }
    return done;
}

/* A disk with *user bytes left (SIZE_MAX: count what is written). */
static size_t budget_hook(const void *buf, size_t size, void *file, void *user) {
    size_t *left = (size_t *)user;
    if (*left != (size_t)-1) {
        if (size > *left) {
            errno = ENOSPC;
            return 0;
        }
        *left -= size;
    }
    return write_all_fd(*(int *)file, buf, size);
}

static size_t count_hook(const void *buf, size_t size, void *file, void *user) {
    *(size_t *)user += size;
    return write_all_fd(*(int *)file, buf, size);
}

/* A full disk at several points while a new set replaces an old one: the old
 * set stays whole and loads, and nothing is left beside it. */
static void test_swap_full_disk(void) {
    mml_data_t a, b, x;
    char *root = mkdir_tmp(), *scratch = mkdir_tmp(), dir[1024], rest[512];
    size_t total = 0, left;
    int i;
    mmlt_ctx = "swap-full-disk";
    make_set(3000, 31, 3, &a);
    make_set(2000, 32, 3, &b);
    snprintf(dir, sizeof dir, "%s/set", root);
    mml_set_write_hook(count_hook, &total);
    CHECK_OK(mml_data_save_dir(&b, scratch)); /* how many bytes B takes */
    mml_set_write_hook(NULL, NULL);
    CHECK_OK(mml_data_save_dir(&a, dir));
    for (i = 0; i <= 8; i++) {
        left = i == 8 ? total - 1 : total * (size_t)i / 8;
        mml_set_write_hook(budget_hook, &left);
        CHECK(mml_data_save_dir(&b, dir) != MML_OK, "disk full at step %d: reported", i);
        mml_set_write_hook(NULL, NULL);
        CHECK_OK(mml_data_load(dir, &x));
        CHECK(data_equal(&a, &x), "disk full at step %d of 8 (%zu bytes): the old set is whole", i, total);
        mml_data_free(&x);
        CHECK(other_entries(root, "set", rest, sizeof rest) == 0, "left beside the set:%s", rest);
    }
    CHECK_OK(mml_data_save_dir(&b, dir));
    CHECK_OK(mml_data_load(dir, &x));
    CHECK(data_equal(&b, &x), "the new set replaces the old one");
    mml_data_free(&x);
    CHECK(other_entries(root, "set", rest, sizeof rest) == 0, "left beside the set:%s", rest);
    mml_data_free(&a);
    mml_data_free(&b);
    mmlt_rm_tree(root);
    mmlt_rm_tree(scratch);
    free(root);
    free(scratch);
}

/* Progress of a preparing child: one byte down a pipe per write; at write
 * number kill_stop it waits there to be killed. */
static int progress_fd = -1;
static long progress_n, progress_stop;

static size_t progress_hook(const void *buf, size_t size, void *file, void *user) {
    size_t k = write_all_fd(*(int *)file, buf, size);
    char c = 1;
    (void)user;
    if (write(progress_fd, &c, 1) != 1) _exit(3);
    if (++progress_n == progress_stop)
        for (;;) pause();
    return k;
}

/* Forks a child that prepares B, A, B, ... into dir (with the cache or
 * without) and kills it once it has made `after` writes (read from the
 * pipe: no timing), either inside that write or wherever it has got to by
 * then. Returns 0 if the child ended first. */
static int kill_midway(const mml_data_t *a, const mml_data_t *b, const char *dir, long after, int inside, int cache) {
    int pfd[2], status;
    long seen = 0;
    char c;
    pid_t pid;
    if (pipe(pfd) != 0) return 0;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        long i;
        close(pfd[0]);
        progress_fd = pfd[1];
        progress_stop = inside ? after : 0;
        mml_set_write_hook(progress_hook, NULL);
        for (i = 0;; i++)
            if (mml_data_save_prepared(i % 2 ? a : b, dir, cache) != MML_OK) _exit(2);
    }
    close(pfd[1]);
    while (seen < after && read(pfd[0], &c, 1) == 1) seen++;
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    close(pfd[0]);
    return seen == after;
}

/* SIGKILL of a process preparing into an existing folder, at many points:
 * every time the folder loads as the whole old set or the whole new one. */
static void test_swap_kill(void) {
    mml_data_t a, b, x;
    char *root = mkdir_tmp(), dir[1024], rest[512];
    int i, landed = 0, n_old = 0, n_new = 0, rounds = mmlt_quick() ? 8 : 24;
    mmlt_ctx = "swap-kill";
    make_set(3000, 41, 0, &a);
    make_set(2000, 42, 0, &b);
    snprintf(dir, sizeof dir, "%s/set", root);
    CHECK_OK(mml_data_save_dir(&a, dir));
    for (i = 0; i < rounds; i++) {
        /* a set is 16 files of one write each (17 with the cache): points
         * spread over two sets */
        long after = 1 + (long)(i * 7) % 40;
        int st;
        landed += kill_midway(&a, &b, dir, after, i % 2, i % 4 >= 2);
        st = mml_data_load(dir, &x);
        CHECK(st == MML_OK, "kill %d after write %ld: %s", i, after, mml_last_error());
        if (st == MML_OK) {
            int old = data_equal(&a, &x), fresh = data_equal(&b, &x);
            CHECK(old || fresh, "kill %d after write %ld: the folder holds neither set whole", i, after);
            n_old += old;
            n_new += fresh;
        }
        mml_data_free(&x);
    }
    printf("swap-kill: %d kills (%d midway), then %d old sets and %d new\n", rounds, landed, n_old, n_new);
    CHECK(landed == rounds, "every child was killed midway");
    CHECK_OK(mml_data_save_dir(&b, dir)); /* cleans what the killed ones left */
    CHECK(other_entries(root, "set", rest, sizeof rest) == 0, "left beside the set:%s", rest);
    mml_data_free(&a);
    mml_data_free(&b);
    mmlt_rm_tree(root);
    free(root);
}

/* A folder holding anything but a prepared set is refused and left as it
 * was; a name that cannot be swapped is refused; so is a set larger than
 * the free space (checked through the estimate, as no test disk is full). */
static void test_swap_refusals(void) {
    mml_data_t a, x;
    char *root = mkdir_tmp(), dir[1024], p[1100];
    mmlt_ctx = "swap-refusals";
    make_set(500, 61, 0, &a);
    snprintf(dir, sizeof dir, "%s/set/", root); /* a trailing slash names the same folder */
    CHECK_OK(mml_data_save_dir(&a, dir));
    put_file(dir, "notes.txt", "mine\n");
    CHECK(mml_data_save_dir(&a, dir) == MML_ERR_IO && has(mml_last_error(), "notes.txt") &&
              has(mml_last_error(), "nothing was changed"),
          "foreign file: %s", mml_last_error());
    CHECK(file_exists(dir, "notes.txt") && file_exists(dir, "meta.txt"), "folder untouched");
    remove(strcat(strcpy(p, dir), "notes.txt"));
    put_file(dir, "domain_1/notes.txt", "mine\n");
    CHECK(mml_data_save_dir(&a, dir) == MML_ERR_IO && has(mml_last_error(), "domain_1/notes.txt"),
          "foreign file in a domain folder: %s", mml_last_error());
    remove(strcat(strcpy(p, dir), "domain_1/notes.txt"));
    CHECK_OK(mml_data_save_dir(&a, dir));
    CHECK_OK(mml_data_load(dir, &x));
    CHECK(data_equal(&a, &x), "saved again once the folder is clean");
    mml_data_free(&x);
    CHECK(mml_data_save_dir(&a, ".") == MML_ERR_ARG && has(mml_last_error(), "name the folder"), "\".\": %s",
          mml_last_error());
    /* a link to the set's folder: the set is replaced where it leads */
    {
        char link[1100];
        struct stat st;
        snprintf(link, sizeof link, "%s/link", root);
        CHECK(symlink("set", link) == 0, "symlink");
        CHECK_OK(mml_data_save_dir(&a, link));
        CHECK_OK(mml_data_save_dir(&a, link));
        CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "the link stays a link");
        CHECK_OK(mml_data_load(link, &x));
        CHECK(data_equal(&a, &x), "loads through the link");
        mml_data_free(&x);
    }
    CHECK(mml__check_space(dir, 1e18) == MML_ERR_IO && has(mml_last_error(), "needs about 1000000000 GB") &&
              has(mml_last_error(), "GB free on"),
          "space: %s", mml_last_error());
    CHECK(mml__set_bytes(&a, 1) > mml__set_bytes(&a, 0) && mml__set_bytes(&a, 0) > 500 * 8, "set size estimate");
    mml_data_free(&a);
    mmlt_rm_tree(root);
    free(root);
}

/* ---- sizes and messages ---- */

/* Absurd sizes are refused before anything is written; so is a set that
 * cannot fit the free space. A disk of 64 KB guards against a writer that
 * would start anyway. */
static void test_sizes(void) {
    char *root = mkdir_tmp(), out[1024];
    size_t left = 65536;
    mmlt_ctx = "sizes";
    snprintf(out, sizeof out, "%s/gen", root);
    mml_set_write_hook(budget_hook, &left);
    CHECK(mmlr_taobao_write_synthetic(out, 100, 100, 2, 99999999999999LL, 4, 1) == MML_ERR_ARG &&
              has(mml_last_error(), "n_clicks 99999999999999 is too large (at most 2147483647)"),
          "clicks: %s", mml_last_error());
    CHECK(mmlr_taobao_write_synthetic(out, 100, 100, 2000000, 10, 4, 1) == MML_ERR_ARG &&
              has(mml_last_error(), "n_themes 2000000 is too large (at most 1000000)"),
          "themes: %s", mml_last_error());
    CHECK(mmlr_taobao_write_synthetic(out, 600000000, 100, 2, 10, 4, 1) == MML_ERR_ARG &&
              has(mml_last_error(), "n_users 600000000 is too large (at most 536870911)"),
          "users: %s", mml_last_error());
    CHECK(mmlr_taobao_write_synthetic(out, 500000000, 500000000, 10, 2000000000, 65536, 1) == MML_ERR_IO &&
              has(mml_last_error(), "needs about") && has(mml_last_error(), "GB free on"),
          "free space: %s", mml_last_error());
    mml_set_write_hook(NULL, NULL);
    CHECK(!file_exists(root, "gen"), "nothing written");
    mmlt_rm_tree(root);
    free(root);
}

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
    CHECK(mmlr_movielens_load(ml, "gender", 1, &d) == MML_ERR_FORMAT &&
              has(mml_last_error(), "ratings.dat:2: item id 3000000000 is out of range (at most 2147483647)"),
          "MovieLens item: %s", mml_last_error());
    put_file(ml, "users.dat", "1::F::1::10::48067\n3000000000::M::1::10::48067\n");
    CHECK(mmlr_movielens_load(ml, "gender", 1, &d) == MML_ERR_FORMAT &&
              has(mml_last_error(), "users.dat:2: user id 3000000000 is out of range (at most 2147483647)"),
          "MovieLens user: %s", mml_last_error());
    /* Taobao raw ids are only keys: anything up to 18 digits */
    put_file(tb, "user_embedding.csv", "user_id,emb\n10,0.5,1\n1234567890123456789,1,2\n");
    put_file(tb, "item_embedding.csv", "item_id,emb\n7,1,2\n");
    put_file(tb, "theme_click_log.csv", "user_id,item_id,theme_id\n10,7,3\n");
    CHECK(mmlr_taobao_load(tb, 0, 1, &d) == MML_ERR_FORMAT &&
              has(mml_last_error(), "user_embedding.csv:3: id 1234567890123456789 is out of range (at most 999999999999999999)"),
          "Taobao embedding id: %s", mml_last_error());
    put_file(tb, "user_embedding.csv", "user_id,emb\n10,0.5,1\n3000000000,1,2\n");
    put_file(tb, "theme_click_log.csv", "user_id,item_id,theme_id\n3000000000,7,3\n10,7,99999999999999999999\n");
    CHECK(mmlr_taobao_load(tb, 0, 1, &d) == MML_ERR_FORMAT &&
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
    CHECK(mmlr_movielens_load(loop, "gender", 1, &d) == MML_ERR_IO && has(mml_last_error(), "cannot read") &&
              has(mml_last_error(), strerror(ELOOP)),
          "symlink loop: %s", mml_last_error());
    snprintf(none, sizeof none, "%s/none", root);
    CHECK(mmlr_movielens_load(none, "gender", 1, &d) == MML_ERR_IO && has(mml_last_error(), strerror(ENOENT)),
          "missing folder: %s", mml_last_error());
    if (geteuid() != 0) {
        char locked[1024];
        snprintf(locked, sizeof locked, "%s/locked", root);
        mkdir(locked, 0777);
        put_file(locked, "users.dat", ML1M_USERS);
        chmod(locked, 0);
        CHECK(mmlr_movielens_load(locked, "gender", 1, &d) == MML_ERR_IO && has(mml_last_error(), strerror(EACCES)),
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

/* The one whole-file reader says what a path is when it cannot read it. */
static void test_read_file(void) {
    char *dir = mkdir_tmp(), path[1024];
    mml_data_t d;
    mml__buf b;
    mmlt_ctx = "read-file";
    CHECK(mml_data_load_cache(dir, &d) == MML_ERR_IO && has(mml_last_error(), "is a directory, not a file"),
          "directory: %s", mml_last_error());
    CHECK(mml_data_load_cache("/dev/null", &d) == MML_ERR_IO && has(mml_last_error(), "/dev/null: is not a regular file") &&
              !has(mml_last_error(), ", not a"),
          "device: %s", mml_last_error());
    snprintf(path, sizeof path, "%s/none.mmlc", dir);
    CHECK(mml_data_load_cache(path, &d) == MML_ERR_IO && has(mml_last_error(), "cannot open") &&
              has(mml_last_error(), strerror(ENOENT)),
          "missing: %s", mml_last_error());
    put_file(dir, "f.txt", "abc");
    snprintf(path, sizeof path, "%s/f.txt", dir);
    CHECK_OK(mml__read_file(path, &b));
    CHECK(b.n == 3 && !strcmp(b.p, "abc") && ((uintptr_t)b.p & 63) == 0, "read back, NUL-terminated, aligned");
    mml__buf_free(&b);
    mmlt_rm_tree(dir);
    free(dir);
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
    test_csv_bytes();
    test_atomic();
    test_csv_ok();
    test_csv_bad();
    test_kv_reader();
    test_dir_of();
    test_cache_bad();
    test_stale_cache();
    test_swap_full_disk();
    test_swap_kill();
    test_swap_refusals();
    test_sizes();
    test_id_range();
    test_raw_unreadable();
    test_read_file();
    test_float_parse();
    test_movielens_small();
    test_movielens_real();
    test_taobao();
    return mmlt_finish("test_data");
}
