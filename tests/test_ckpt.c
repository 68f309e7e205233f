/* Checkpoint container: round trip, every corruption kind, atomic save under a
 * simulated full disk, CRC32C vectors and hardware/table agreement.
 *
 *   test_ckpt                      run the tests
 *   test_ckpt --write-corpus DIR   write the fuzzer's seed checkpoints to DIR */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

#include <dirent.h>
#include <errno.h>
#include <unistd.h>

static char tdir[256];
static long n_flip, n_trunc, n_craft, n_enospc;

/* ---- a byte buffer to craft files with ---------------------------------- */

typedef struct tbuf { unsigned char *b; size_t n, cap; } tbuf;

static void tb_put(tbuf *t, const void *p, size_t n) {
    if (t->n + n > t->cap) {
        t->cap = (t->n + n) * 2 + 64;
        t->b = (unsigned char *)realloc(t->b, t->cap);
        if (!t->b) abort();
    }
    if (n) memcpy(t->b + t->n, p, n);
    t->n += n;
}
static void tb_u16(tbuf *t, uint16_t v) { tb_put(t, &v, 2); }
static void tb_u32(tbuf *t, uint32_t v) { tb_put(t, &v, 4); }
static void tb_u64(tbuf *t, uint64_t v) { tb_put(t, &v, 8); }

/* File header with a correct CRC. */
static void tb_header(tbuf *t, uint32_t version, uint32_t endian, uint32_t nsec) {
    size_t at = t->n;
    tb_put(t, "MMLCKPT", 8);
    tb_u32(t, version);
    tb_u32(t, endian);
    tb_u32(t, nsec);
    tb_u32(t, mml_crc32c(0, t->b + at, 20));
}

/* Section with a correct CRC around an arbitrary payload. */
static void tb_section(tbuf *t, const char *tag, uint32_t kind, const void *p, uint64_t n) {
    size_t at = t->n;
    tb_put(t, tag, 4);
    tb_u32(t, kind);
    tb_u64(t, n);
    tb_put(t, p, (size_t)n);
    tb_u32(t, mml_crc32c(0, t->b + at, (size_t)(16 + n)));
}

/* One tensor entry appended to payload p (offsets relative to p's start). */
static void tb_tensor(tbuf *p, const char *name, size_t nl, uint32_t nd, const uint64_t *dims,
                      unsigned char padval, size_t nfloats) {
    tb_u16(p, (uint16_t)nl);
    tb_put(p, name, nl);
    tb_u32(p, nd);
    for (uint32_t k = 0; k < nd; k++) tb_u64(p, dims[k]);
    while (p->n % 64) tb_put(p, &padval, 1);
    for (size_t i = 0; i < nfloats; i++) {
        float f = (float)i;
        tb_put(p, &f, 4);
    }
}

/* A whole file with one section around payload p. */
static tbuf tb_file1(const char *tag, uint32_t kind, const tbuf *p) {
    tbuf f = {0};
    tb_header(&f, 1, 0x01020304u, 1);
    tb_section(&f, tag, kind, p->b, p->n);
    return f;
}

/* ---- files --------------------------------------------------------------- */

/* Number of entries in tdir whose name contains ".tmp.". */
static int count_tmp(void) {
    DIR *d = opendir(tdir);
    int k = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) k += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return k;
}

static void rm_tdir(void) {
    DIR *d = opendir(tdir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
        snprintf(p, sizeof p, "%s/%s", tdir, e->d_name);
        remove(p);
    }
    if (d) closedir(d);
    rmdir(tdir);
}

/* ---- the sample checkpoint ------------------------------------------------ */

enum { NW1 = 7 * 13, NW2 = 5, NW3 = 2 * 3 * 4 * 5 };
static float w1[NW1], w2[NW2], w3[NW3], m1[NW1];
static const char conf_text[] = "d_model=13\nexperts=4\n";
static const uint64_t prog[3] = {42, 1000, 7};

static void fill(uint64_t seed) {
    uint64_t s = seed;
    for (int i = 0; i < NW1; i++) w1[i] = mml__rng_normal(&s);
    for (int i = 0; i < NW2; i++) w2[i] = (float)i - 2.5f;
    for (int i = 0; i < NW3; i++) w3[i] = mml__rng_normal(&s);
    for (int i = 0; i < NW1; i++) m1[i] = (float)mml__rng_uniform(&s);
    w2[0] = -0.0f;
}

static mml__ckpt_tensor parm[4], adam[1];
static mml__ckpt_section secs[5];

static void build_sections(void) {
    static const mml__ckpt_tensor p[4] = {
        {"tower.0.w", 2, {7, 13, 0, 0}, w1},
        {"tower.0.b", 1, {5, 0, 0, 0}, w2},
        {"experts.A", 4, {2, 3, 4, 5}, w3},
        {"empty", 3, {4, 0, 2, 0}, NULL},
    };
    memcpy(parm, p, sizeof p);
    adam[0] = (mml__ckpt_tensor){"tower.0.w.m", 2, {7, 13, 0, 0}, m1};
    memset(secs, 0, sizeof secs);
    memcpy(secs[0].tag, "CONF", 4), secs[0].bytes = conf_text, secs[0].nbytes = sizeof conf_text;
    memcpy(secs[1].tag, "PARM", 4), secs[1].tensors = parm, secs[1].ntensors = 4;
    memcpy(secs[2].tag, "ADAM", 4), secs[2].tensors = adam, secs[2].ntensors = 1;
    memcpy(secs[3].tag, "PROG", 4), secs[3].bytes = prog, secs[3].nbytes = sizeof prog;
    memcpy(secs[4].tag, "NONE", 4), secs[4].tensors = adam, secs[4].ntensors = 0;
}

/* The sample checkpoint (fill(1)) saved as tdir/name; its path in path. */
static void save_sample(char *path, size_t len, const char *name) {
    snprintf(path, len, "%s/%s", tdir, name);
    fill(1);
    build_sections();
    CHECK_OK(mml__ckpt_save(path, secs, 5));
}

/* Checks that c holds exactly the sample checkpoint (fill(seed)). */
static void check_sample(const mml__ckpt *c, uint64_t seed) {
    float b1[NW1], b2[NW2], b3[NW3], bm[NW1];
    const void *p;
    uint64_t n;
    fill(seed);
    CHECK_OK(mml__ckpt_bytes(c, "CONF", &p, &n));
    CHECK(n == sizeof conf_text && memcmp(p, conf_text, n) == 0, "CONF bytes");
    CHECK_OK(mml__ckpt_bytes(c, "PROG", &p, &n));
    CHECK(n == sizeof prog && memcmp(p, prog, n) == 0, "PROG bytes");
    CHECK_OK(mml__ckpt_tensor_read(c, "PARM", "tower.0.w", 2, parm[0].shape, b1));
    CHECK_OK(mml__ckpt_tensor_read(c, "PARM", "tower.0.b", 1, parm[1].shape, b2));
    CHECK_OK(mml__ckpt_tensor_read(c, "PARM", "experts.A", 4, parm[2].shape, b3));
    CHECK_OK(mml__ckpt_tensor_read(c, "PARM", "empty", 3, parm[3].shape, NULL));
    CHECK_OK(mml__ckpt_tensor_read(c, "ADAM", "tower.0.w.m", 2, adam[0].shape, bm));
    CHECK(memcmp(b1, w1, sizeof b1) == 0 && memcmp(b2, w2, sizeof b2) == 0 &&
              memcmp(b3, w3, sizeof b3) == 0 && memcmp(bm, m1, sizeof bm) == 0,
          "tensors bit-identical");
}

/* ---- tests --------------------------------------------------------------- */

static void test_crc(void) {
    mmlt_ctx = "crc32c";
    unsigned char z[32], o[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) z[i] = 0, o[i] = 0xFF, inc[i] = (unsigned char)i, dec[i] = (unsigned char)(31 - i);
    /* RFC 3720 B.4 and the usual check value. */
    uint32_t (*fn[2])(uint32_t, const void *, size_t) = {mml_crc32c, mml__crc32c_sw};
    for (int f = 0; f < 2; f++) {
        CHECK(fn[f](0, "123456789", 9) == 0xE3069283u, "check value %d", f);
        CHECK(fn[f](0, "", 0) == 0, "empty");
        CHECK(fn[f](0, z, 32) == 0x8A9136AAu, "zeros");
        CHECK(fn[f](0, o, 32) == 0x62A8AB43u, "ones");
        CHECK(fn[f](0, inc, 32) == 0x46DD794Eu, "incrementing");
        CHECK(fn[f](0, dec, 32) == 0x113FDB5Cu, "decrementing");
        CHECK(fn[f](fn[f](0, "12345", 5), "6789", 4) == 0xE3069283u, "chaining");
    }
    unsigned char buf[4096 + 16];
    uint64_t s = 99;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)mml__rng_next(&s);
    int agree = 1, cases = 0;
#ifdef MML__CRC32C_HW
    if (mml__crc32c_have_hw()) {
        for (int t = 0; t < 2000; t++) {
            size_t off = mml__rng_below(&s, 16), len = mml__rng_below(&s, 4096) | 1;
            uint32_t seed = (uint32_t)mml__rng_next(&s);
            agree &= mml__crc32c_hw(seed, buf + off, len) == mml__crc32c_sw(seed, buf + off, len);
            cases++;
        }
        for (size_t len = 0; len < 80; len++)
            for (size_t off = 0; off < 9; off++, cases++)
                agree &= mml__crc32c_hw(0, buf + off, len) == mml__crc32c_sw(0, buf + off, len);
    }
#endif
    CHECK(agree, "hardware and table CRC disagree");
    printf("crc32c: hardware path %s, %d hw/table comparisons\n",
           mml__crc32c_have_hw() ? "available" : "NOT available", cases);
}

static void test_roundtrip(void) {
    mmlt_ctx = "roundtrip";
    char path[300];
    save_sample(path, sizeof path, "a.ckpt");
    CHECK(count_tmp() == 0, "temp left");
    mml__ckpt *c = NULL;
    CHECK_OK(mml__ckpt_open(path, &c));
    if (!c) return;
    check_sample(c, 1);

    /* Iteration (name order) and lookups. */
    int32_t nt = 0, nd;
    int64_t sh[4];
    CHECK(mml__ckpt_nsections(c) == 5, "nsections");
    CHECK(mml__ckpt_section_at(c, 0, &nt) && nt == -1, "CONF is bytes");
    CHECK(mml__ckpt_section_at(c, 1, &nt) && nt == 4, "PARM has 4 tensors");
    CHECK(mml__ckpt_section_at(c, 4, &nt) && nt == 0, "NONE has 0 tensors");
    CHECK(mml__ckpt_section_at(c, 5, &nt) == NULL, "out of range");
    const char *nm = mml__ckpt_tensor_at(c, "PARM", 0, &nd, sh);
    CHECK(nm && strcmp(nm, "empty") == 0 && nd == 3 && sh[1] == 0, "first by name");
    nm = mml__ckpt_tensor_at(c, "PARM", 3, &nd, sh);
    CHECK(nm && strcmp(nm, "tower.0.w") == 0 && nd == 2 && sh[0] == 7 && sh[1] == 13, "last by name");
    CHECK(mml__ckpt_tensor_at(c, "PARM", 4, &nd, sh) == NULL, "past the end");
    CHECK(mml__ckpt_has_tensor(c, "PARM", "experts.A") == 1, "has");
    CHECK(mml__ckpt_has_tensor(c, "PARM", "experts.B") == 0, "has not");
    CHECK(mml__ckpt_has_tensor(c, "ADAM", "experts.A") == 0, "other section");
    CHECK(mml__ckpt_has_tensor(c, "CONF", "x") == 0, "byte section");
    CHECK(mml__ckpt_has_tensor(c, "XXXX", "x") == 0, "no section");

    /* Lookup errors name the file, the section and the problem. */
    float dst[NW1];
    const void *p;
    uint64_t n;
    int64_t wrong[2] = {13, 7};
    int st = mml__ckpt_tensor_read(c, "PARM", "tower.0.w", 2, wrong, dst);
    CHECK(st == MML_ERR_FORMAT && strstr(mml_last_error(), "tower.0.w") &&
              strstr(mml_last_error(), "[7, 13]") && strstr(mml_last_error(), "expected [13, 7]") &&
              strstr(mml_last_error(), path),
          "shape mismatch: %d %s", st, mml_last_error());
    int64_t w3d[3] = {7, 13, 1};
    st = mml__ckpt_tensor_read(c, "PARM", "tower.0.w", 3, w3d, dst);
    CHECK(st == MML_ERR_FORMAT && strstr(mml_last_error(), "expected [7, 13, 1]"), "ndim mismatch: %s",
          mml_last_error());
    st = mml__ckpt_tensor_read(c, "PARM", "nope", 2, parm[0].shape, dst);
    CHECK(st == MML_ERR_FORMAT && strstr(mml_last_error(), "no tensor named 'nope'"), "%s", mml_last_error());
    st = mml__ckpt_tensor_read(c, "OPTS", "nope", 2, parm[0].shape, dst);
    CHECK(st == MML_ERR_FORMAT && strstr(mml_last_error(), "missing section OPTS"), "%s", mml_last_error());
    st = mml__ckpt_tensor_read(c, "CONF", "x", 2, parm[0].shape, dst);
    CHECK(st == MML_ERR_FORMAT && strstr(mml_last_error(), "not tensors"), "%s", mml_last_error());
    st = mml__ckpt_bytes(c, "OPTS", &p, &n);
    CHECK(st == MML_ERR_FORMAT && strstr(mml_last_error(), "missing section OPTS") &&
              strstr(mml_last_error(), path), "%s", mml_last_error());
    st = mml__ckpt_bytes(c, "PARM", &p, &n);
    CHECK(st == MML_ERR_FORMAT && strstr(mml_last_error(), "not bytes"), "%s", mml_last_error());
    mml__ckpt_close(c);

    /* The in-memory reader sees the same thing. */
    size_t len;
    unsigned char *img = mmlt_read_file(path, &len);
    c = NULL;
    CHECK_OK(mml__ckpt_open_mem(img, len, "mem", &c));
    if (c) check_sample(c, 1);
    mml__ckpt_close(c);
    free(img);

    /* A checkpoint with no sections is valid. */
    snprintf(path, sizeof path, "%s/empty.ckpt", tdir);
    CHECK_OK(mml__ckpt_save(path, NULL, 0));
    c = NULL;
    CHECK_OK(mml__ckpt_open(path, &c));
    CHECK(c && mml__ckpt_nsections(c) == 0, "empty checkpoint");
    mml__ckpt_close(c);

    st = mml__ckpt_open("/nonexistent/dir/x.ckpt", &c);
    CHECK(st == MML_ERR_IO && c == NULL && strstr(mml_last_error(), "/nonexistent/dir/x.ckpt"), "%s",
          mml_last_error());
    st = mml__ckpt_save("/nonexistent/dir/x.ckpt", secs, 5);
    CHECK(st == MML_ERR_IO && strstr(mml_last_error(), "/nonexistent/dir/x.ckpt"), "%s", mml_last_error());
}

/* Bad arguments to save are refused before any file is created. */
static void test_save_args(void) {
    mmlt_ctx = "save args";
    char path[300];
    snprintf(path, sizeof path, "%s/args.ckpt", tdir);
    fill(1);
    static char longname[300];
    memset(longname, 'x', 256);
    mml__ckpt_tensor t[2];
    mml__ckpt_section s[2];
    const char *expect[] = {"tags", "tensor name", "ndim", "dim 1", "data is NULL", "duplicate tensor",
                            "duplicate section", "either bytes or tensors", "tensor name", "bad byte section"};
    for (int k = 0; k < 10; k++) {
        build_sections();
        memcpy(t, parm, sizeof t);
        memcpy(s, secs, sizeof s);
        s[1].tensors = t;
        s[1].ntensors = 2;
        switch (k) {
        case 0: s[0].tag[2] = '\n'; break;
        case 1: t[0].name = longname; break;
        case 2: t[0].ndim = 5; break;
        case 3: t[1].ndim = 2, t[1].shape[1] = -1; break;
        case 4: t[1].data = NULL; break;
        case 5: t[1].name = t[0].name; break;
        case 6: memcpy(s[1].tag, "CONF", 4); break;
        case 7: s[1].bytes = conf_text; break;
        case 8: t[1].name = ""; break;
        case 9: s[0].bytes = NULL; break;
        }
        int st = mml__ckpt_save(path, s, 2);
        CHECK(st == MML_ERR_ARG && strstr(mml_last_error(), expect[k]) && strstr(mml_last_error(), path),
              "case %d: %d %s", k, st, mml_last_error());
        CHECK(access(path, F_OK) != 0 && count_tmp() == 0, "case %d left a file", k);
    }
    CHECK(mml__ckpt_save(path, secs, -1) == MML_ERR_ARG, "negative count");
    CHECK(mml__ckpt_save(path, secs, 1025) == MML_ERR_ARG, "too many sections");
}

/* Opens len bytes and expects MML_ERR_FORMAT with `want` (and the label) in the message. */
static void expect_bad(const void *b, size_t len, const char *want, const char *what) {
    mml__ckpt *c = (mml__ckpt *)1;
    int st = mml__ckpt_open_mem(b, len, "crafted.ckpt", &c);
    CHECK(st == MML_ERR_FORMAT && c == NULL && strstr(mml_last_error(), want) &&
              strstr(mml_last_error(), "crafted.ckpt"),
          "%s: status %d, message \"%s\", wanted \"%s\"", what, st, mml_last_error(), want);
    if (st == MML_OK) mml__ckpt_close(c);
    n_craft++;
}

static void test_crafted(void) {
    mmlt_ctx = "crafted";
    uint64_t d0[1] = {0}, d2[2] = {2, 3}, big[4] = {1ull << 31, 1ull << 31, 1ull << 31, 1ull << 31};
    tbuf p = {0}, f = {0};

    /* The builders produce a valid file (so each case below tests one fault). */
    tb_u32(&p, 2);
    tb_tensor(&p, "a", 1, 2, d2, 0, 6);
    tb_tensor(&p, "b", 1, 1, d2, 0, 2);
    f = tb_file1("PARM", 1, &p);
    mml__ckpt *c = NULL;
    CHECK_OK(mml__ckpt_open_mem(f.b, f.n, "crafted.ckpt", &c));
    float dst[6];
    int64_t s23[2] = {2, 3};
    CHECK_OK(c ? mml__ckpt_tensor_read(c, "PARM", "a", 2, s23, dst) : 1);
    CHECK(dst[5] == 5.0f, "crafted data");
    mml__ckpt_close(c);
    size_t good_len = f.n;
    unsigned char *good = (unsigned char *)malloc(good_len);
    memcpy(good, f.b, good_len);

    /* Header. */
    memcpy(f.b, "MMLCKPX", 8);
    expect_bad(f.b, f.n, "not a moemlora checkpoint", "magic");
    expect_bad("GIF89a", 6, "not a moemlora checkpoint", "short non-checkpoint");
    f.n = 0, tb_header(&f, 3, 0x01020304u, 0);
    expect_bad(f.b, f.n, "format version 3 is newer than this library's 2", "version");
    f.n = 0, tb_header(&f, 0, 0x01020304u, 0);
    expect_bad(f.b, f.n, "format version 0", "version 0");
    f.n = 0, tb_header(&f, 1, 0x04030201u, 0);
    expect_bad(f.b, f.n, "other byte order", "endianness");
    f.n = 0, tb_header(&f, 1, 0x01020305u, 0);
    expect_bad(f.b, f.n, "byte-order marker", "bad marker");
    f.n = 0, tb_header(&f, 1, 0x01020304u, 100000);
    expect_bad(f.b, f.n, "absurd", "section count");
    f.n = 0, tb_header(&f, 1, 0x01020304u, 1000);
    expect_bad(f.b, f.n, "truncated", "sections that cannot fit");
    memcpy(f.b, good, good_len), f.n = good_len;
    f.b[20] ^= 1;
    expect_bad(f.b, f.n, "header CRC mismatch", "header crc");
    memcpy(f.b, good, good_len);
    f.b[16] = 2; /* count without fixing the CRC */
    expect_bad(f.b, f.n, "header CRC mismatch", "count under crc");

    /* Sections. */
    memcpy(f.b, good, good_len);
    f.b[24 + 16 + 10] ^= 0x40;
    expect_bad(f.b, f.n, "section PARM: CRC mismatch", "payload crc");
    memcpy(f.b, good, good_len);
    f.b[24] = 'Q'; /* tag under the section CRC */
    expect_bad(f.b, f.n, "section QARM: CRC mismatch", "tag crc");
    memcpy(f.b, good, good_len);
    { uint64_t huge = ~0ull; memcpy(f.b + 24 + 8, &huge, 8); }
    expect_bad(f.b, f.n, "truncated at byte", "payload length past the end");
    memcpy(f.b, good, good_len);
    tb_put(&f, "junk", 4);
    expect_bad(f.b, f.n, "4 bytes of trailing garbage", "trailing garbage");
    tbuf g = {0};
    tb_header(&g, 1, 0x01020304u, 1);
    tb_section(&g, "PA\x01M", 0, "x", 1);
    expect_bad(g.b, g.n, "not printable", "tag");
    g.n = 0, tb_header(&g, 1, 0x01020304u, 1);
    tb_section(&g, "PARM", 7, "x", 1);
    expect_bad(g.b, g.n, "unknown kind 7", "kind");
    g.n = 0, tb_header(&g, 1, 0x01020304u, 2);
    tb_section(&g, "CONF", 0, "x", 1);
    tb_section(&g, "CONF", 0, "y", 1);
    expect_bad(g.b, g.n, "duplicate section CONF", "dup section");
    g.n = 0, tb_header(&g, 1, 0x01020304u, 2);
    tb_section(&g, "CONF", 0, "x", 1);
    expect_bad(g.b, g.n, "truncated", "missing section");

    /* Tensor payloads: each fault with valid CRCs around it. */
#define TCASE(want, ...)                                  \
    do {                                                  \
        p.n = 0;                                          \
        __VA_ARGS__;                                      \
        free(f.b);                                        \
        f = tb_file1("PARM", 1, &p);                      \
        expect_bad(f.b, f.n, want, want);                 \
    } while (0)
    TCASE("tensor count past the end", tb_put(&p, "ab", 2));
    TCASE("tensor count 4294967295 does not fit", tb_u32(&p, 0xFFFFFFFFu); tb_tensor(&p, "a", 1, 2, d2, 0, 6));
    TCASE("tensor 1: name length past the end", tb_u32(&p, 3); tb_tensor(&p, "a", 1, 2, d2, 0, 6));
    TCASE("tensor 1: name length past the end", tb_u32(&p, 2); tb_tensor(&p, "a", 1, 1, d0, 0, 0); tb_put(&p, "x", 1));
    TCASE("name length 200 runs past the end", tb_u32(&p, 1); tb_u16(&p, 200); tb_put(&p, "abcdefghijklm", 13));
    TCASE("bad name", tb_u32(&p, 1); tb_tensor(&p, "", 0, 2, d2, 0, 6));
    TCASE("bad name 'a?'", tb_u32(&p, 1); tb_tensor(&p, "a\n", 2, 2, d2, 0, 6));
    TCASE("ndim 0 out of range", tb_u32(&p, 1); tb_tensor(&p, "a", 1, 0, d2, 0, 6));
    TCASE("ndim 5 out of range", tb_u32(&p, 1); tb_u16(&p, 1); tb_put(&p, "a", 1); tb_u32(&p, 5); tb_u64(&p, 1); tb_u64(&p, 1));
    TCASE("shape past the end", tb_u32(&p, 1); tb_u16(&p, 1); tb_put(&p, "a", 1); tb_u32(&p, 4); tb_u64(&p, 1); tb_u64(&p, 1));
    TCASE("dim 1 = 2147483649 exceeds 2^31", uint64_t d[2] = {1, (1ull << 31) + 1}; tb_u32(&p, 1); tb_tensor(&p, "a", 1, 2, d, 0, 0));
    TCASE("does not fit the", tb_u32(&p, 1); tb_tensor(&p, "a", 1, 4, big, 0, 64));
    TCASE("shape [1000, 1000] does not fit the 24 bytes", uint64_t d[2] = {1000, 1000}; tb_u32(&p, 1); tb_tensor(&p, "a", 1, 2, d, 0, 6));
    TCASE("padding past the end", tb_u32(&p, 1); tb_u16(&p, 1); tb_put(&p, "a", 1); tb_u32(&p, 1); tb_u64(&p, 0); tb_put(&p, "\0\0\0", 3));
    TCASE("nonzero padding", tb_u32(&p, 1); tb_tensor(&p, "a", 1, 2, d2, 7, 6));
    TCASE("8 trailing bytes after the last tensor", tb_u32(&p, 1); tb_tensor(&p, "a", 1, 2, d2, 0, 8));
    TCASE("duplicate tensor name 'w'", tb_u32(&p, 3); tb_tensor(&p, "w", 1, 2, d2, 0, 6); tb_tensor(&p, "v", 1, 2, d2, 0, 6); tb_tensor(&p, "w", 1, 1, d2, 0, 2));
#undef TCASE
    free(p.b), free(f.b), free(g.b), free(good);
}

/* Every single-byte corruption and every truncation of a valid file is refused. */
static void test_flips_and_truncations(void) {
    mmlt_ctx = "flips";
    char path[300];
    snprintf(path, sizeof path, "%s/small.ckpt", tdir);
    uint64_t step = 5;
    float v[3] = {1, 2, 3};
    mml__ckpt_tensor t[2] = {{"w", 1, {3, 0, 0, 0}, v}, {"b", 2, {1, 1, 0, 0}, v}};
    mml__ckpt_section s[2] = {{{'P', 'R', 'O', 'G'}, &step, 8, NULL, 0}, {{'P', 'A', 'R', 'M'}, NULL, 0, t, 2}};
    CHECK_OK(mml__ckpt_save(path, s, 2));
    size_t len;
    unsigned char *img = mmlt_read_file(path, &len), *b = (unsigned char *)malloc(len);
    int bad_flip = 0, bad_trunc = 0;
    static const unsigned char masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF};
    for (size_t i = 0; i < len; i++)
        for (size_t m = 0; m < sizeof masks; m++) {
            memcpy(b, img, len);
            b[i] ^= masks[m];
            mml__ckpt *c = NULL;
            int st = mml__ckpt_open_mem(b, len, "flip.ckpt", &c);
            int ok = st == MML_ERR_FORMAT && c == NULL && strstr(mml_last_error(), "flip.ckpt");
            if (!ok && bad_flip++ < 5)
                CHECK(ok, "byte %zu ^ 0x%02x: status %d: %s", i, masks[m], st, mml_last_error());
            mml__ckpt_close(c);
            n_flip++;
        }
    CHECK(bad_flip == 0, "%d single-byte corruptions accepted", bad_flip);
    mmlt_ctx = "truncations";
    for (size_t n = 0; n < len; n++) {
        mml__ckpt *c = NULL;
        int st = mml__ckpt_open_mem(img, n, "trunc.ckpt", &c);
        int ok = st == MML_ERR_FORMAT && c == NULL && strstr(mml_last_error(), "trunc.ckpt") &&
                 strstr(mml_last_error(), "truncated");
        if (!ok && bad_trunc++ < 5) CHECK(ok, "length %zu: status %d: %s", n, st, mml_last_error());
        mml__ckpt_close(c);
        n_trunc++;
    }
    /* The same through the file reader, at a few lengths. */
    char tp[320];
    snprintf(tp, sizeof tp, "%s/trunc.ckpt", tdir);
    for (size_t n = 0; n < len; n += 17) {
        FILE *f = fopen(tp, "wb");
        fwrite(img, 1, n, f);
        fclose(f);
        mml__ckpt *c = NULL;
        int st = mml__ckpt_open(tp, &c);
        int ok = st == MML_ERR_FORMAT && strstr(mml_last_error(), tp) && strstr(mml_last_error(), "truncated");
        if (!ok && bad_trunc++ < 5) CHECK(ok, "file length %zu: status %d: %s", n, st, mml_last_error());
        n_trunc++;
    }
    remove(tp);
    CHECK(bad_trunc == 0, "%d truncations accepted or misreported", bad_trunc);
    printf("flips: %ld single-byte corruptions of a %zu-byte file, %ld truncations, all rejected: %s\n",
           n_flip, len, n_trunc, bad_flip || bad_trunc ? "NO" : "yes");
    free(img), free(b);
}

/* A write hook that lets `budget` bytes through, then fails like a full disk. */
typedef struct wbudget { size_t budget, written; } wbudget;
static size_t enospc_hook(const void *buf, size_t size, void *file, void *user) {
    wbudget *w = (wbudget *)user;
    size_t room = w->budget > w->written ? w->budget - w->written : 0;
    size_t k = size < room ? size : room;
    ssize_t done = k ? write(*(int *)file, buf, k) : 0; /* file is the writer's fd */
    if (done < 0) return 0;
    w->written += (size_t)done;
    if ((size_t)done < size) errno = ENOSPC;
    return (size_t)done;
}

static void test_enospc(void) {
    mmlt_ctx = "enospc";
    char path[300];
    save_sample(path, sizeof path, "full.ckpt");
    size_t len1, len2;
    unsigned char *v1 = mmlt_read_file(path, &len1);
    /* The new checkpoint (other values) would take len2 bytes. */
    char p2[320];
    snprintf(p2, sizeof p2, "%s/v2.ckpt", tdir);
    fill(2);
    CHECK_OK(mml__ckpt_save(p2, secs, 5));
    free(mmlt_read_file(p2, &len2));
    remove(p2);
    int bad = 0;
    for (size_t n = 0; n < len2; n++) {
        wbudget w = {n, 0};
        mml_set_write_hook(enospc_hook, &w);
        fill(2);
        int st = mml__ckpt_save(path, secs, 5);
        mml_set_write_hook(NULL, NULL);
        int ok = st == MML_ERR_IO && strstr(mml_last_error(), path) &&
                 strstr(mml_last_error(), "No space left on device") &&
                 strstr(mml_last_error(), "previous file is untouched");
        if (!ok && bad++ < 5) CHECK(ok, "budget %zu: status %d: %s", n, st, mml_last_error());
        size_t l;
        unsigned char *now = mmlt_read_file(path, &l);
        ok = now && l == len1 && memcmp(now, v1, l) == 0 && count_tmp() == 0;
        if (!ok && bad++ < 5) CHECK(ok, "budget %zu: old file changed or temp left", n);
        free(now);
        if (n % 16 == 0) {
            mml__ckpt *c = NULL;
            CHECK_OK(mml__ckpt_open(path, &c));
            if (c) check_sample(c, 1);
            mml__ckpt_close(c);
        }
        n_enospc++;
    }
    CHECK(bad == 0, "%d ENOSPC cases misbehaved", bad);
    /* With room enough, the hook passes the new file through. */
    wbudget w = {len2, 0};
    mml_set_write_hook(enospc_hook, &w);
    fill(2);
    CHECK_OK(mml__ckpt_save(path, secs, 5));
    mml_set_write_hook(NULL, NULL);
    mml__ckpt *c = NULL;
    CHECK_OK(mml__ckpt_open(path, &c));
    if (c) check_sample(c, 2);
    mml__ckpt_close(c);
    printf("enospc: %ld short-write budgets (0..%zu bytes), old file intact, no temp left\n", n_enospc,
           len2 - 1);
    free(v1);
}

/* The same with a checkpoint larger than the writer's buffer, so the disk
 * fills up between flushes as well as at the final one. */
static void test_enospc_large(void) {
    mmlt_ctx = "enospc large";
    enum { NBIG = 100000 };
    char path[300];
    snprintf(path, sizeof path, "%s/big.ckpt", tdir);
    float *a = (float *)malloc(NBIG * 4), *b = (float *)malloc(NBIG * 4), *r = (float *)malloc(NBIG * 4);
    for (int i = 0; i < NBIG; i++) a[i] = (float)i, b[i] = -(float)i;
    mml__ckpt_tensor t = {"big", 2, {NBIG / 100, 100, 0, 0}, a};
    mml__ckpt_section s = {{'P', 'A', 'R', 'M'}, NULL, 0, &t, 1};
    CHECK_OK(mml__ckpt_save(path, &s, 1));
    size_t len;
    unsigned char *v1 = mmlt_read_file(path, &len);
    t.data = b;
    size_t budgets[] = {0, 1, 23, 24, 4000, 65535, 65536, 65537, 131071, 131072, 131073, 300000, len - 1};
    int bad = 0;
    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) {
        wbudget w = {budgets[i], 0};
        mml_set_write_hook(enospc_hook, &w);
        int st = mml__ckpt_save(path, &s, 1);
        mml_set_write_hook(NULL, NULL);
        size_t l;
        unsigned char *now = mmlt_read_file(path, &l);
        int ok = st == MML_ERR_IO && strstr(mml_last_error(), "No space left on device") && now && l == len &&
                 memcmp(now, v1, l) == 0 && count_tmp() == 0;
        if (!ok && bad++ < 5) CHECK(ok, "budget %zu: status %d: %s", budgets[i], st, mml_last_error());
        free(now);
        n_enospc++;
    }
    CHECK(bad == 0, "%d large ENOSPC cases misbehaved", bad);
    mml__ckpt *c = NULL;
    CHECK_OK(mml__ckpt_open(path, &c));
    CHECK_OK(c ? mml__ckpt_tensor_read(c, "PARM", "big", 2, t.shape, r) : 1);
    CHECK(memcmp(r, a, NBIG * 4) == 0, "old big tensor bit-identical");
    mml__ckpt_close(c);
    CHECK_OK(mml__ckpt_save(path, &s, 1));
    CHECK_OK(mml__ckpt_open(path, &c));
    CHECK_OK(c ? mml__ckpt_tensor_read(c, "PARM", "big", 2, t.shape, r) : 1);
    CHECK(memcmp(r, b, NBIG * 4) == 0, "new big tensor bit-identical");
    mml__ckpt_close(c);
    free(a), free(b), free(r), free(v1);
}

/* Seed inputs for fuzz_ckpt: a few tiny valid checkpoints. */
static int write_corpus(const char *dir) {
    char path[600];
    float v[6] = {0.5f, -1, 2, 3, 4, 5};
    uint32_t prog = 3;
    mml__ckpt_tensor t[3] = {{"w", 2, {2, 3, 0, 0}, v}, {"b", 1, {2, 0, 0, 0}, v}, {"z", 4, {1, 0, 1, 1}, NULL}};
    mml__ckpt_section s[3] = {{{'C', 'O', 'N', 'F'}, "k=v\n", 4, NULL, 0},
                              {{'P', 'A', 'R', 'M'}, NULL, 0, t, 3},
                              {{'P', 'R', 'O', 'G'}, &prog, 4, NULL, 0}};
    struct { const char *name; int first, n; } files[] = {
        {"empty.ckpt", 0, 0}, {"bytes.ckpt", 0, 1}, {"tensors.ckpt", 1, 1}, {"mixed.ckpt", 0, 3}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        if (mml__ckpt_save(path, s + files[i].first, files[i].n)) {
            fprintf(stderr, "%s\n", mml_last_error());
            return 1;
        }
        printf("wrote %s\n", path);
    }
    /* version 2: a model with a schema adds a SCHM byte section */
    static const char schm[] = "n_fields=1\ndomain_field=d\nfield.0.name=d\nfield.0.kind=categorical\nfield.0.vocab=2\n";
    mml__ckpt_section s2[3] = {s[0], {{'S', 'C', 'H', 'M'}, schm, sizeof schm - 1, NULL, 0}, s[1]};
    snprintf(path, sizeof path, "%s/v2.ckpt", dir);
    if (mml__ckpt_save_v(path, s2, 3, 2)) {
        fprintf(stderr, "%s\n", mml_last_error());
        return 1;
    }
    printf("wrote %s\n", path);
    return 0;
}

/* A path that is not a regular file says what it is instead of trying to
 * read it (a directory's "size" used to be an allocation of 2^63 bytes). */
static void test_not_a_file(void) {
    mml_model_t *m = NULL;
    mmlt_ctx = "not-a-file";
    CHECK(mml_model_load(tdir, &m) == MML_ERR_IO && strstr(mml_last_error(), "is a directory, not a checkpoint file"),
          "directory: %s", mml_last_error());
    CHECK(mml_model_load("/dev/null", &m) == MML_ERR_IO &&
              strstr(mml_last_error(), "is not a regular file, not a checkpoint file"),
          "device: %s", mml_last_error());
    CHECK(m == NULL, "no model");
}

int main(int argc, char **argv) {
    (void)mmlt_close; /* shared harness helper this program does not need */
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) return write_corpus(argv[2]);
    snprintf(tdir, sizeof tdir, "/tmp/mml_ckpt_XXXXXX");
    if (!mkdtemp(tdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_crc();
    test_roundtrip();
    test_save_args();
    test_crafted();
    test_flips_and_truncations();
    test_enospc();
    test_enospc_large();
    test_not_a_file();
    rm_tdir();
    printf("corruption cases tried: %ld (single-byte flips %ld, truncations %ld, crafted %ld, ENOSPC %ld)\n",
           n_flip + n_trunc + n_craft + n_enospc, n_flip, n_trunc, n_craft, n_enospc);
    return mmlt_finish("test_ckpt");
}
