/* Serving raw values (vocab.txt, mml_vocab_*, moemlora-serve --vocab).
 *
 * lib: a CSV of raw strings (delimiters, quotes, a tab, a backslash, UTF-8,
 * blanks and the empty string among the values; a hashed field, lists with
 * empty items, missing numbers) prepared by the recipe and saved; the
 * vocabulary loaded back from vocab.txt maps every raw row (found by its
 * rowid) to exactly the ids and floats preparation gave it, in train, val and
 * test, values first seen outside training included (the OOV id), and a
 * model predicts bit-identical floats from both batches. Malformed files
 * (truncated, bad escape, duplicate, a count other than the model's
 * vocabulary, fields out of order, no "end", text after it) name file:line;
 * a set whose vocabulary does not match its schema is not written.
 * serve: moemlora-prepare csv, moemlora-train --export, then moemlora-serve
 * --vocab on the raw lines (the raw file's header, label column included)
 * answers exactly what moemlora-serve answers on the prepared ids of the
 * same rows; unseen values answer as the OOV ids; an unknown domain, a
 * truncated vocab.txt and one with a wrong count stop it naming the line.
 * Skips (77) serve when the programs are not built. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "../examples/mml_recipes.h"
#include "mml_test.h"
#include "mml_run.h"

static char dir[512], bindir[1024];

static const char *schema_text = "label click\n"
                                 "field site categorical domain\n"
                                 "field user categorical dim=4\n"
                                 "field city categorical hash=11 dim=4\n"
                                 "field tags multi_hot max_len=3 dim=4\n"
                                 "field kw multi_hot max_len=2 hash=13 sep=; dim=4\n"
                                 "field rowid numeric norm=minmax\n"
                                 "field score numeric missing=2.5\n";
enum { F_SITE, F_USER, F_CITY, F_TAGS, F_KW, F_ROWID, F_SCORE, N_FIELDS, N_ROWS = 400 };

static char *raw[N_ROWS]; /* the data lines, as in the file */

static uint64_t rng(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* The raw CSV (header + N_ROWS lines); raw[] keeps each line. */
static char *make_csv(size_t *len) {
    static const char *sites[] = {"web", "app", "\"tv,box\""};
    static const char *users[] = {"alice", "\"bob, jr\"", "\"say \"\"hi\"\"\"", " padded ", "", "back\\slash",
                                  "\"tab\there\"", "caf\xc3\xa9", "17", "017"};
    static const char *cities[] = {"Paris", "New York", "Oslo", "Kyoto"};
    static const char *tags[] = {"a", "b", "c d", "x\\y", "\xc3\xa9t\xc3\xa9"};
    static const char *scores[] = {"0.1", "1e-3", "-7.25", "", "12.300000001", "6.02e3", "42"};
    size_t cap = 256 + (size_t)N_ROWS * 200, n = 0;
    char *buf = (char *)malloc(cap);
    uint64_t s = 5;
    n += (size_t)snprintf(buf, cap, "site,user,city,tags,kw,rowid,score,click\n");
    for (int r = 0; r < N_ROWS; r++) {
        char user[32], tag[64] = "", kw[32];
        if (r % 9 == 4) snprintf(user, sizeof user, "rare%d", r); /* seen once: OOV outside training */
        else snprintf(user, sizeof user, "%s", users[rng(&s) % 10]);
        for (int k = 0, m = (int)(rng(&s) % 4); k < m; k++) {
            const char *t = r % 11 == 3 && k == 0 ? "once" : tags[rng(&s) % 5];
            char one[24];
            snprintf(one, sizeof one, "%s%s%s", k ? "|" : "", t, r % 13 == 0 && k == 0 ? "|" : "");
            strcat(tag, one);
        }
        if (r % 11 == 3 && !strstr(tag, "once")) snprintf(tag, sizeof tag, "once%d", r);
        snprintf(kw, sizeof kw, "k%d;;k%d", (int)(rng(&s) % 5), r % 7);
        char *line = buf + n;
        n += (size_t)snprintf(buf + n, cap - n, "%s,%s,%s,%s,%s,%d,%s,%d\n", sites[rng(&s) % 3], user,
                              cities[rng(&s) % 4], tag, kw, r, scores[rng(&s) % 7], (int)(rng(&s) % 3 == 0));
        free(raw[r]);
        raw[r] = strndup(line, (size_t)(buf + n - 1 - line));
    }
    *len = n;
    return buf;
}

static void write_text(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(text, 1, n, f) == n, "cannot write %s", path);
    if (f) fclose(f);
}

/* Maps raw row r's cells with v into row j of ids/vals (per field). */
static int map_row(const mml_vocab_t *v, const mml_schema_t *s, int r, int32_t **ids, float **vals, int64_t j) {
    char line[256];
    const char *cell[16];
    size_t len[16];
    size_t n = strlen(raw[r]);
    memcpy(line, raw[r], n + 1);
    if (mml_vocab_cells(v, line, n, cell, len, 16) != N_FIELDS + 1) return -1;
    for (int f = 0; f < N_FIELDS; f++) {
        int w = s->field[f].kind == MML_FIELD_MULTI_HOT ? s->field[f].max_len : 1;
        if (mml_vocab_map(v, f, cell[f], len[f], ids[f] ? ids[f] + j * w : NULL, vals[f] ? vals[f] + j : NULL))
            return -1;
    }
    return 0;
}

/* Every row of d mapped from its raw line with v equals d's row; returns how
 * many ids were the out-of-vocabulary id. */
static int64_t compare_rows(const mml_vocab_t *v, const mml_data_t *d, const char *what) {
    const mml_schema_t *s = d->schema;
    int64_t oov = 0, bad = 0;
    for (int k = 0; k < 3; k++) {
        const mml_split_t *sp = &d->split[k];
        for (int64_t i = 0; i < sp->n; i++) {
            int32_t a[N_FIELDS][4], *ids[N_FIELDS];
            float x[N_FIELDS], *vals[N_FIELDS];
            int r = (int)sp->values[F_ROWID][i];
            for (int f = 0; f < N_FIELDS; f++) ids[f] = a[f], vals[f] = &x[f];
            if (map_row(v, s, r, ids, vals, 0)) {
                if (bad++ < 5) fprintf(stderr, "%s: row %d: %s\n", what, r, mml_last_error());
                continue;
            }
            for (int f = 0; f < N_FIELDS; f++) {
                const mml_field_t *fd = &s->field[f];
                int w = fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1;
                if (fd->kind == MML_FIELD_NUMERIC) {
                    if (memcmp(&x[f], &sp->values[f][i], 4) && bad++ < 5)
                        fprintf(stderr, "%s: row %d field %s: %.9g, prepared %.9g\n", what, r, fd->name, x[f],
                                sp->values[f][i]);
                    continue;
                }
                for (int q = 0; q < w; q++) {
                    oov += a[f][q] == fd->vocab && !fd->hash_buckets;
                    if (a[f][q] != sp->ids[f][i * w + q] && bad++ < 5)
                        fprintf(stderr, "%s: row %d field %s[%d]: id %d, prepared %d\n", what, r, fd->name, q, a[f][q],
                                sp->ids[f][i * w + q]);
                }
            }
        }
    }
    CHECK(bad == 0, "%s: %lld cells differ", what, (long long)bad);
    return oov;
}

/* A model on d's schema predicts the same floats, bit for bit, from the
 * prepared rows of split k and from their raw lines mapped with v. */
static void compare_predictions(const mml_vocab_t *v, const mml_data_t *d, int k) {
    mml_config_t c;
    mml_config_default(&c);
    c.schema = d->schema;
    c.n_domains = d->n_domains;
    c.n_hidden = 1;
    c.hidden[0] = 8;
    mml_model_t *m = make_model(&c);
    const mml_split_t *sp = &d->split[k];
    int32_t *ids[N_FIELDS] = {0};
    float *vals[N_FIELDS] = {0};
    const int32_t *cids[N_FIELDS], *pids[N_FIELDS];
    const float *cvals[N_FIELDS], *pvals[N_FIELDS];
    for (int f = 0; f < N_FIELDS; f++) {
        const mml_field_t *fd = &d->schema->field[f];
        if (fd->kind == MML_FIELD_NUMERIC) vals[f] = (float *)calloc((size_t)sp->n, 4);
        else ids[f] = (int32_t *)calloc((size_t)sp->n * (fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1), 4);
        cids[f] = ids[f], cvals[f] = vals[f], pids[f] = sp->ids[f], pvals[f] = sp->values[f];
    }
    int ok = 1;
    for (int64_t i = 0; i < sp->n; i++) ok &= map_row(v, d->schema, (int)sp->values[F_ROWID][i], ids, vals, i) == 0;
    float *p1 = (float *)calloc((size_t)sp->n, 4), *p2 = (float *)calloc((size_t)sp->n, 4);
    mml_batch_t b1 = {.n = (int)sp->n, .ids = pids, .values = pvals}, b2 = {.n = (int)sp->n, .ids = cids, .values = cvals};
    CHECK(ok, "raw rows mapped: %s", mml_last_error());
    CHECK_OK(mml_predict(m, &b1, p1));
    CHECK_OK(mml_predict(m, &b2, p2));
    CHECK(sp->n > 0 && memcmp(p1, p2, (size_t)sp->n * 4) == 0, "predictions from raw lines differ from the prepared rows'");
    for (int f = 0; f < N_FIELDS; f++) free(ids[f]), free(vals[f]);
    free(p1), free(p2);
    mml_model_free(m);
}

/* The text with line `at` (1-based) replaced by rep (NULL: removed) and,
 * with cut, everything after it dropped. */
static char *edit_line(const char *text, int at, const char *rep, int cut) {
    size_t n = strlen(text);
    char *out = (char *)malloc(n + 256), *o = out;
    const char *p = text;
    for (int line = 1; *p; line++) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
        if (line != at) memcpy(o, p, len), o += len;
        else if (rep) o += sprintf(o, "%s\n", rep);
        p += len;
        if (line == at && cut) break;
    }
    *o = 0;
    return out;
}

/* The line number of the first line starting with prefix, or 0. */
static int line_of(const char *text, const char *prefix) {
    int line = 1;
    for (const char *p = text; *p; line++) {
        if (!strncmp(p, prefix, strlen(prefix))) return line;
        p = strchr(p, '\n');
        if (!p) break;
        p++;
    }
    return 0;
}

/* Loading text must fail with a message holding want. */
static void refused(const char *text, const mml_schema_t *s, const char *want, const char *what) {
    char *copy = strdup(text);
    mml_vocab_t *v = NULL;
    mml_status st = mml__vocab_load_mem(copy, strlen(copy), "P/vocab.txt", s, &v);
    CHECK(st == MML_ERR_FORMAT && !v && strstr(mml_last_error(), want), "%s: status %d, \"%s\", want \"%s\"", what, (int)st,
          mml_last_error(), want);
    mml_vocab_free(v);
    free(copy);
}

static void malformed(const char *text, const mml_schema_t *s) {
    char want[160], rep[160];
    int uline = line_of(text, "field user "), tline = line_of(text, "field tags "), end = line_of(text, "end");
    int32_t nu = s->field[F_USER].vocab;
    char *t;
    CHECK(uline > 0 && tline > uline && end > tline, "vocab.txt lines: user %d, tags %d, end %d", uline, tline, end);
    /* cut after two of the user field's values */
    snprintf(want, sizeof want, "P/vocab.txt:%d: truncated: field user has 2 of its n=%d values", uline + 3, nu);
    {
        char *cut = strdup(text);
        char *p = cut;
        for (int line = 1; line < uline + 3; line++) p = strchr(p, '\n') + 1;
        *p = 0;
        refused(cut, s, want, "truncated");
        free(cut);
    }
    snprintf(want, sizeof want, "P/vocab.txt:%d: field user: bad escape \"\\q", uline + 2);
    refused(t = edit_line(text, uline + 2, "a\\qb", 0), s, want, "bad escape"), free(t);
    {
        /* the second value made equal to the first */
        const char *p = text;
        for (int line = 1; line < uline + 1; line++) p = strchr(p, '\n') + 1;
        char first[64];
        const char *nl = strchr(p, '\n');
        snprintf(first, sizeof first, "%.*s", (int)(nl - p), p);
        snprintf(want, sizeof want, "P/vocab.txt:%d: field user: value", uline + 2);
        refused(t = edit_line(text, uline + 2, first, 0), s, want, "duplicate"), free(t);
    }
    snprintf(rep, sizeof rep, "field user categorical column=user n=%d", nu - 1);
    snprintf(want, sizeof want, "P/vocab.txt:%d: field user: n=%d values, the model's vocabulary is %d", uline, nu - 1, nu);
    refused(t = edit_line(text, uline, rep, 0), s, want, "count"), free(t);
    snprintf(rep, sizeof rep, "field user categorical column=user n=%d", nu + 1);
    snprintf(want, sizeof want, "P/vocab.txt:%d: field user: n=%d values, the model's vocabulary is %d", uline, nu + 1, nu);
    refused(t = edit_line(text, uline, rep, 0), s, want, "count up"), free(t);
    snprintf(want, sizeof want, "P/vocab.txt:%d: field \"kw\", but the model's field 3 is tags", tline);
    refused(t = edit_line(text, tline, "field kw multi_hot column=kw sep=; hash=13", 0), s, want, "order"), free(t);
    snprintf(want, sizeof want, "P/vocab.txt:%d: truncated: no \"end\" line", end);
    refused(t = edit_line(text, end, NULL, 1), s, want, "no end"), free(t);
    snprintf(want, sizeof want, "P/vocab.txt:%d: text after \"end\"", end + 1);
    {
        size_t n = strlen(text);
        char *more = (char *)malloc(n + 8);
        memcpy(more, text, n);
        strcpy(more + n, "more\n");
        refused(more, s, want, "after end");
        free(more);
    }
    refused(t = edit_line(text, 1, "moemlora-vocab-9", 0), s, "P/vocab.txt:1: not a vocabulary", "format"), free(t);
    refused(t = edit_line(text, 2, "delimiter=ab", 0), s, "P/vocab.txt:2: expected delimiter=C", "delimiter"), free(t);
    mml_schema_t other = *s;
    other.field[F_CITY].hash_buckets = other.field[F_CITY].vocab = 12;
    refused(text, &other, "hash=11, the model's field has 12 buckets", "hash size");
}

static void test_lib(void) {
    mmlt_ctx = "lib";
    mmlr_csv_schema *sc = (mmlr_csv_schema *)calloc(1, sizeof *sc);
    mml_data_t d, back;
    size_t len;
    char *csv = make_csv(&len), set[600], path[700];
    const char *names[1] = {"in.csv"};
    CHECK_OK(mmlr_schema_parse(schema_text, strlen(schema_text), "s.schema", sc));
    CHECK_OK(mmlr_csv_load_bufs(1, &csv, &len, names, sc, NULL, &d));
    CHECK(d.vocab != NULL, "the CSV recipe gives no vocabulary");
    if (!d.vocab) return;
    CHECK(compare_rows(d.vocab, &d, "in memory") > 0, "no value outside training's vocabulary");
    snprintf(set, sizeof set, "%s/set", dir);
    CHECK_OK(mml_data_save_prepared(&d, set, 1));
    CHECK_OK(mml_data_save_prepared(&d, set, 0)); /* vocab.txt is a part of the set, replaced with it */
    mml_vocab_t *v = NULL;
    CHECK_OK(mml_vocab_load(set, d.schema, &v));
    if (v) {
        CHECK(compare_rows(v, &d, "from vocab.txt") > 0, "no value outside training's vocabulary");
        compare_predictions(v, &d, MML_VAL);
        compare_predictions(v, &d, MML_TEST);
        char cell[] = "mars", many[] = "a|b|c|a";
        int32_t ids[4];
        float x;
        CHECK(mml_vocab_map(v, F_SITE, cell, 4, ids, NULL) == MML_ERR_FORMAT &&
                  strstr(mml_last_error(), "field site (the domain): \"mars\" is not one of the model's domains"),
              "unknown domain: %s", mml_last_error());
        CHECK(mml_vocab_map(v, F_TAGS, many, 7, ids, NULL) == MML_ERR_FORMAT && strstr(mml_last_error(), "more than max_len=3"),
              "long list: %s", mml_last_error());
        CHECK(mml_vocab_map(v, F_ROWID, "", 0, NULL, &x) == MML_ERR_FORMAT && strstr(mml_last_error(), "field rowid: empty"),
              "empty number: %s", mml_last_error());
        CHECK(mml_vocab_map(v, F_ROWID, "3kg", 3, NULL, &x) == MML_ERR_FORMAT && strstr(mml_last_error(), "not a number"),
              "text number: %s", mml_last_error());
        CHECK_OK(mml_vocab_map(v, F_SCORE, "", 0, NULL, &x));
        CHECK(x == 2.5f, "missing score: %g", x);
        CHECK_OK(mml_vocab_map(v, F_USER, "nobody", 6, ids, NULL));
        CHECK(ids[0] == d.schema->field[F_USER].vocab, "unseen user: id %d", ids[0]);
        CHECK(strcmp(mml_vocab_column(v, F_USER), "user") == 0 && mml_vocab_column(v, 99) == NULL, "columns");
    }
    mml_vocab_free(v);
    snprintf(path, sizeof path, "%s/vocab.txt", set);
    size_t tn;
    char *text = (char *)mmlt_read_file(path, &tn);
    CHECK(text != NULL, "no %s", path);
    if (text) malformed(text, d.schema);
    free(text);
    /* a vocabulary that does not match the schema is not written */
    d.schema->field[F_USER].vocab++;
    mml_status st = mml_data_save_prepared(&d, set, 0);
    CHECK(st == MML_ERR_ARG && strstr(mml_last_error(), "field 1 (user) does not match"), "mismatch saved: %d %s", (int)st,
          mml_last_error());
    d.schema->field[F_USER].vocab--;
    CHECK_OK(mml_data_load(set, &back)); /* the set still loads; vocab.txt is not read */
    CHECK(back.vocab == NULL && back.split[0].n == d.split[0].n, "loaded set");
    mml_data_free(&back);
    mml_data_free(&d);
    free(csv);
    free(sc);
}

/* ---- the programs ---- */

/* One prepared row as moemlora-serve's id line. */
static void put_ids(FILE *f, const mml_schema_t *s, const mml_split_t *sp, int64_t i) {
    for (int fi = 0; fi < s->n_fields; fi++) {
        const mml_field_t *fd = &s->field[fi];
        if (fi) fputc(',', f);
        if (fd->kind == MML_FIELD_NUMERIC) fprintf(f, "%.9g", sp->values[fi][i]);
        else if (fd->kind == MML_FIELD_CATEGORICAL) fprintf(f, "%d", sp->ids[fi][i]);
        else
            for (int q = 0; q < fd->max_len && sp->ids[fi][i * fd->max_len + q] >= 0; q++)
                fprintf(f, "%s%d", q ? "|" : "", sp->ids[fi][i * fd->max_len + q]);
    }
    fputc('\n', f);
}

static char *path_in(const char *name) {
    static char buf[16][700];
    static int k;
    k = (k + 1) % 16; /* several in one call's arguments */
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static int contains(const char *path, const char *want) {
    char *t = (char *)mmlt_read_file(path, NULL);
    int ok = t && strstr(t, want);
    if (!ok) fprintf(stderr, "%s holds \"%s\", not \"%s\"\n", path, t ? t : "(nothing)", want);
    free(t);
    return ok;
}

/* The id line of an all-unseen raw line "web,nobody,Atlantis,zz|yy,,5,,0". */
static void put_unseen(FILE *ids, FILE *rawf, const mml_data_t *d) {
    const mml_schema_t *s = d->schema;
    const char *atl = "Atlantis";
    int32_t web = -1;
    for (int k = 0; k < d->n_domains; k++)
        if (!strcmp(d->domain_names[k], "web")) web = k;
    fprintf(rawf, "web,nobody,Atlantis,zz|yy,,5,,0\n");
    fprintf(ids, "%d,%d,%d,%d|%d,,5,2.5\n", web, s->field[F_USER].vocab, mml__hash_bucket(atl, atl + 8, 11),
            s->field[F_TAGS].vocab, s->field[F_TAGS].vocab);
}

static void test_serve(void) {
    mmlt_ctx = "serve";
    size_t len;
    char *csv = make_csv(&len), P[700];
    snprintf(P, sizeof P, "%s", path_in("P"));
    write_text(path_in("in.csv"), csv, len);
    write_text(path_in("s.schema"), schema_text, strlen(schema_text));
    const char *prep[] = {"csv", "--input", path_in("in.csv"), "--schema", path_in("s.schema"), "--out", P, NULL};
    CHECK(mmlt_run(bindir, "moemlora-prepare", prep, NULL, NULL, path_in("err.txt")) == 0, "moemlora-prepare failed");
    const char *train[] = {"--data", P, "--epochs", "1", "--hidden", "8", "--batch", "64", "--quiet", "--export",
                           path_in("m.mml"), NULL};
    CHECK(mmlt_run(bindir, "moemlora-train", train, NULL, NULL, path_in("err.txt")) == 0, "moemlora-train failed");
    mml_data_t d;
    CHECK_OK(mml_data_load(P, &d));
    if (!d.schema) return;
    FILE *ids = fopen(path_in("ids.csv"), "w"), *rawf = fopen(path_in("raw.csv"), "w");
    fprintf(rawf, "site,user,city,tags,kw,rowid,score,click\n"); /* the raw file's header, label included */
    int64_t n = 0;
    for (int k = 0; k < 3; k++)
        for (int64_t i = 0; i < d.split[k].n; i++, n++) {
            put_ids(ids, d.schema, &d.split[k], i);
            fprintf(rawf, "%s\n", raw[(int)d.split[k].values[F_ROWID][i]]);
        }
    put_unseen(ids, rawf, &d);
    fclose(ids);
    fclose(rawf);
    char model[700];
    snprintf(model, sizeof model, "%s", path_in("m.mml"));
    const char *plain[] = {model, NULL}, *withv[] = {model, "--vocab", P, NULL};
    CHECK(mmlt_run(bindir, "moemlora-serve", plain, path_in("ids.csv"), path_in("o_ids.txt"), path_in("err.txt")) == 0, "serve ids");
    CHECK(mmlt_run(bindir, "moemlora-serve", withv, path_in("raw.csv"), path_in("o_raw.txt"), path_in("err2.txt")) == 0, "serve raw");
    size_t n1 = 0, n2 = 0;
    char *o1 = (char *)mmlt_read_file(path_in("o_ids.txt"), &n1), *o2 = (char *)mmlt_read_file(path_in("o_raw.txt"), &n2);
    int lines = 0;
    for (size_t i = 0; o1 && i < n1; i++) lines += o1[i] == '\n';
    CHECK(o1 && o2 && lines == n + 1 && n1 == n2 && memcmp(o1, o2, n1) == 0,
          "answers on raw lines differ from those on prepared ids (%d lines, %zu vs %zu bytes)", lines, n1, n2);
    free(o1), free(o2);
    /* an unknown domain stops it, naming the line and the field */
    const char *bad = "web,alice,Oslo,a,,1,2\nmars,alice,Oslo,a,,1,2\n"; /* no header: the fields in order */
    write_text(path_in("bad.csv"), bad, strlen(bad));
    CHECK(mmlt_run(bindir, "moemlora-serve", withv, path_in("bad.csv"), NULL, path_in("err.txt")) == 1, "unknown domain accepted");
    CHECK(contains(path_in("err.txt"), "stdin:2: field site (the domain): \"mars\""), "unknown domain message");
    /* a truncated vocab.txt, and one whose count is not the model's */
    char vpath[800];
    snprintf(vpath, sizeof vpath, "%s/vocab.txt", P);
    size_t vn;
    char *text = (char *)mmlt_read_file(vpath, &vn), want[900], rep[100];
    int uline = text ? line_of(text, "field user ") : 0;
    if (text && uline) {
        char *cut = strdup(text), *p = cut;
        for (int line = 1; line < uline + 3; line++) p = strchr(p, '\n') + 1;
        *p = 0;
        write_text(vpath, cut, strlen(cut));
        CHECK(mmlt_run(bindir, "moemlora-serve", withv, path_in("raw.csv"), NULL, path_in("err.txt")) == 1, "truncated vocab.txt accepted");
        snprintf(want, sizeof want, "%s:%d: truncated: field user has 2 of its", vpath, uline + 3);
        CHECK(contains(path_in("err.txt"), want), "truncated message");
        free(cut);
        snprintf(rep, sizeof rep, "field user categorical column=user n=%d", d.schema->field[F_USER].vocab - 1);
        cut = edit_line(text, uline + 1, NULL, 0); /* one value less */
        char *both = edit_line(cut, uline, rep, 0);
        write_text(vpath, both, strlen(both));
        CHECK(mmlt_run(bindir, "moemlora-serve", withv, path_in("raw.csv"), NULL, path_in("err.txt")) == 1, "wrong count accepted");
        snprintf(want, sizeof want, "%s:%d: field user: n=%d values, the model's vocabulary is %d", vpath, uline,
                 d.schema->field[F_USER].vocab - 1, d.schema->field[F_USER].vocab);
        CHECK(contains(path_in("err.txt"), want), "count message");
        free(cut), free(both);
    }
    CHECK(uline > 0, "no user field in %s", vpath);
    free(text);
    mml_data_free(&d);
    free(csv);
}

int main(int argc, char **argv) {
    (void)argc;
    const char *td = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mml_vocab_XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "test_vocab: mkdtemp %s: %s\n", dir, strerror(errno));
        return 1;
    }
    const char *slash = strrchr(argv[0], '/');
    int dn = slash ? (int)(slash - argv[0]) : 1;
    snprintf(bindir, sizeof bindir, "%.*s/../examples", dn, slash ? argv[0] : ".");
    test_lib();
    int progs = 1;
    const char *names[] = {"moemlora-prepare", "moemlora-train", "moemlora-serve"};
    for (int i = 0; i < 3; i++) {
        char exe[1200];
        snprintf(exe, sizeof exe, "%s/%s", bindir, names[i]);
        progs &= access(exe, X_OK) == 0;
    }
    if (progs) test_serve();
    else printf("serve: skipped, the programs are not built (MOEMLORA_BUILD_EXAMPLES=ON)\n");
    for (int r = 0; r < N_ROWS; r++) free(raw[r]);
    mmlt_rm_tree(dir);
    int rc = mmlt_finish("test_vocab");
    return rc == 0 && !progs ? MMLT_SKIP : rc;
}
