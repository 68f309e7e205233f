/* moemlora-prepare: turns a raw dataset (MovieLens-100K/1M, Tianchi Taobao
 * theme data) into the prepared layout the trainers read (docs/DATA.md), or
 * writes a synthetic Taobao-format raw set. The readers are the recipes of
 * mml_recipes.h; this program parses the flags and reports.
 *
 *   moemlora-prepare movielens --raw DIR --split gender|age|occupation --out OUT
 *                              [--features paper|all] [--protocol swr]
 *   moemlora-prepare csv --input F --schema S --out OUT [--split-column C]
 *   moemlora-prepare taobao --raw DIR --themes 10 --out OUT
 *   moemlora-prepare gen-taobao --out DIR --users U --items I --themes T
 *                               --clicks N --dim D
 */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "moemlora.h"
#include "mml_recipes.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *usage =
    "usage:\n"
    "  moemlora-prepare movielens --raw DIR --split gender|age|occupation --out OUT\n"
    "                             [--features paper|all] [--protocol swr] [--seed 123] [--no-cache]\n"
    "  moemlora-prepare csv --input F --schema S --out OUT [--val F --test F]\n"
    "                       [--split-column C] [--ratios 0.6,0.2,0.2] [--random-split]\n"
    "                       [--seed 123] [--no-cache]\n"
    "  moemlora-prepare taobao --raw DIR --themes N --out OUT [--seed 123] [--no-cache]\n"
    "  moemlora-prepare gen-taobao --out DIR --users U --items I --themes T --clicks N\n"
    "                              --dim D [--seed 123]\n"
    "\n"
    "movielens: DIR holds MovieLens-1M (users.dat + ratings.dat or\n"
    "  ratings.no-timestamp.dat) or MovieLens-100K (u.user, u.occupation, u.data).\n"
    "  Label = rating 5; domains by user gender (F=0, M=1), age group (7) or\n"
    "  occupation (21); stratified 60/20/20 split per domain with --seed.\n"
    "  --features all: user, movie, gender, age, occupation, zip and the genres\n"
    "  (multi-hot) as fields, re-indexed on the training split (the default,\n"
    "  paper, keeps the three fields user, item, domain).\n"
    "  --protocol swr (MovieLens-1M): the Scenario-Wise Rec setting: 3 domains by\n"
    "  age {1,18} {25} {35,45,50,56}, label rating > 3, fields user, movie, gender,\n"
    "  occupation, zip, first genre, age (numeric), dim 16, random 80/10/10 split;\n"
    "  with --features paper, the same rows and split with user, movie, domain.\n"
    "csv: F is a CSV (or TSV) file with a header; S a schema file naming the label,\n"
    "  the domain and each field's kind (docs/DATA.md, examples/schemas/). Ids are\n"
    "  re-indexed on the training split (later values read the out-of-vocabulary\n"
    "  row) or hashed; numeric fields are normalised from the training split.\n"
    "  Split: stratified per domain and label with --ratios (default 60/20/20) and\n"
    "  --seed, all rows at random with --random-split, from a column holding\n"
    "  train|val|test with --split-column, or given files with --val and --test.\n"
    "taobao: DIR holds theme_click_log.csv, user_embedding.csv, item_embedding.csv;\n"
    "  --themes N keeps the first N theme ids (0 = all); negatives are sampled.\n"
    "gen-taobao: writes a synthetic raw set in the Taobao format (for tests and\n"
    "  parse-speed measurements).\n"
    "\n"
    "OUT gets meta.txt, domain_<k>/{train,val,test}.csv, embeddings when present,\n"
    "the binary cache data.mmlc (unless --no-cache) and, from raw values (csv,\n"
    "movielens --features all), vocab.txt: the raw value of every id, with which\n"
    "moemlora-serve --vocab OUT maps raw lines. The new set is built beside OUT\n"
    "and swapped in as a whole, so OUT holds the old set or the new one, never a mix.\n"
    "An OUT holding other files is refused (nothing is changed), as is a set or a\n"
    "generation larger than the free space.\n"
    "\n"
    "limits: --users, --items <= 536870911; --themes <= 1000000;\n"
    "  --clicks <= 2147483647; --dim <= 65536.\n";

/* The recipes' limits (mmlr_taobao_write_synthetic, mmlr_taobao_load), checked
 * here first so that a refusal names the flag. */
#define MAX_USERS 536870911LL /* INT32_MAX / 4 */
#define MAX_ITEMS 536870911LL
#define MAX_THEMES 1000000LL
#define MAX_CLICKS 2147483647LL
#define MAX_DIM 65536LL

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double path_mb(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0.0;
}

/* This process's CPU seconds: on a busy machine the honest measure of a
 * one-thread parser's speed. */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double file_mb(const char *dir, const char *name) {
    char p[2048];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0 ? (double)st.st_size / 1e6 : 0.0;
}

static int die(const char *what) {
    fprintf(stderr, "moemlora-prepare: %s: %s\n", what, mml_last_error());
    return 1;
}

/* The value of a number flag: a whole number in [lo, hi], or the program ends
 * with a message naming the flag and the limit. */
static long long num_arg(const char *opt, const char *v, long long lo, long long hi) {
    char *end;
    long long x;
    errno = 0;
    x = strtoll(v, &end, 10);
    if (*v == 0 || *end != 0 || *v == '-' || *v == '+') {
        fprintf(stderr, "moemlora-prepare: %s: not a non-negative integer: \"%s\"\n", opt, v);
        exit(2);
    }
    if (errno == ERANGE || x > hi) {
        fprintf(stderr, "moemlora-prepare: %s %s is too large (at most %lld)\n", opt, v, hi);
        exit(2);
    }
    if (x < lo) {
        fprintf(stderr, "moemlora-prepare: %s %s is too small (at least %lld)\n", opt, v, lo);
        exit(2);
    }
    return x;
}

static void summary(const mml_data_t *d) {
    int k, s;
    long long tot[3] = {0, 0, 0};
    double pos[3] = {0, 0, 0};
    printf("%-24s %10s %10s %10s %8s\n", "domain", "train", "val", "test", "CTR");
    for (k = 0; k < d->n_domains; k++) {
        long long c[3];
        double p = 0, n = 0;
        for (s = 0; s < 3; s++) {
            const mml_split_t *sp = &d->split[s];
            int64_t i;
            c[s] = (long long)(sp->dom_start[k + 1] - sp->dom_start[k]);
            for (i = sp->dom_start[k]; i < sp->dom_start[k + 1]; i++) p += sp->label[i];
            n += (double)c[s];
            tot[s] += c[s];
        }
        printf("%-24.24s %10lld %10lld %10lld %8.4f\n", d->domain_names ? d->domain_names[k] : "?", c[0], c[1], c[2],
               n > 0 ? p / n : 0.0);
    }
    for (s = 0; s < 3; s++) {
        int64_t i;
        for (i = 0; i < d->split[s].n; i++) pos[s] += d->split[s].label[i];
    }
    printf("%-24s %10lld %10lld %10lld %8.4f\n", "all", tot[0], tot[1], tot[2],
           (pos[0] + pos[1] + pos[2]) / (double)(tot[0] + tot[1] + tot[2] > 0 ? tot[0] + tot[1] + tot[2] : 1));
    if (!d->schema)
        printf("users %d, items %d, domains %d, pretrained dim %d\n", d->n_users, d->n_items, d->n_domains,
               d->pretrained_dim);
}

/* The fields of a data set with a schema. */
static void schema_summary(const mml_schema_t *s) {
    printf("%d fields:", s->n_fields);
    for (int f = 0; f < s->n_fields; f++) {
        const mml_field_t *fd = &s->field[f];
        if (fd->kind == MML_FIELD_NUMERIC) printf(" %s(numeric)", fd->name);
        else printf(" %s(%s%s %d)", fd->name, fd->kind == MML_FIELD_MULTI_HOT ? "multi-hot" : "categorical",
                    f == s->domain ? ", domain," : fd->hash_buckets ? ", hashed," : "", fd->vocab);
    }
    printf("\n");
}

static int write_out(const mml_data_t *d, const char *out, int cache) {
    double t0 = now_s();
    if (mml_data_save_prepared(d, out, cache)) return die("write");
    printf("wrote %s%s in %.2f s\n", out, cache ? " (CSV layout + data.mmlc)" : " (CSV layout)", now_s() - t0);
    return 0;
}

/* The flags as given; sizes are converted once the command is known. */
typedef struct opts {
    const char *raw, *out, *split, *seed, *themes, *users, *items, *clicks, *dim;
    const char *features, *protocol, *input, *schema, *val, *test, *split_column, *ratios;
    int cache, random_split;
} opts;

/* Parses argv[2..]; returns -1 to go on, else the exit code. */
static int parse_flags(int argc, char **argv, opts *o) {
    int i;
    for (i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL, **slot = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (!strcmp(a, "--no-cache")) {
            o->cache = 0;
            continue;
        }
        if (!strcmp(a, "--random-split")) {
            o->random_split = 1;
            continue;
        }
        if (!strcmp(a, "--raw")) slot = &o->raw;
        else if (!strcmp(a, "--out")) slot = &o->out;
        else if (!strcmp(a, "--split")) slot = &o->split;
        else if (!strcmp(a, "--seed")) slot = &o->seed;
        else if (!strcmp(a, "--themes")) slot = &o->themes;
        else if (!strcmp(a, "--users")) slot = &o->users;
        else if (!strcmp(a, "--items")) slot = &o->items;
        else if (!strcmp(a, "--clicks")) slot = &o->clicks;
        else if (!strcmp(a, "--dim")) slot = &o->dim;
        else if (!strcmp(a, "--features")) slot = &o->features;
        else if (!strcmp(a, "--protocol")) slot = &o->protocol;
        else if (!strcmp(a, "--input")) slot = &o->input;
        else if (!strcmp(a, "--schema")) slot = &o->schema;
        else if (!strcmp(a, "--val")) slot = &o->val;
        else if (!strcmp(a, "--test")) slot = &o->test;
        else if (!strcmp(a, "--split-column")) slot = &o->split_column;
        else if (!strcmp(a, "--ratios")) slot = &o->ratios;
        else {
            fprintf(stderr, "moemlora-prepare: unknown option \"%s\" (see --help)\n", a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "moemlora-prepare: %s needs a value\n", a);
            return 2;
        }
        *slot = v;
        i++;
    }
    return -1;
}

/* "0.8,0.1,0.1" */
static void ratios_arg(const char *v, double r[3]) {
    char *e;
    const char *p = v;
    for (int k = 0; k < 3; k++) {
        r[k] = strtod(p, &e);
        if (e == p || (k < 2 && *e != ',') || (k == 2 && *e)) {
            fprintf(stderr, "moemlora-prepare: --ratios takes three shares like 0.8,0.1,0.1, got \"%s\"\n", v);
            exit(2);
        }
        p = e + 1;
    }
}

static int load_csv(const opts *o, long long seed, mml_data_t *d, double *mb) {
    static mmlr_csv_schema sc;
    mmlr_csv_opts co;
    if (!o->input || !o->schema) {
        fprintf(stderr, "moemlora-prepare: csv needs --input F and --schema S (see --help)\n");
        return 2;
    }
    if (!o->val != !o->test) {
        fprintf(stderr, "moemlora-prepare: --val and --test go together\n");
        return 2;
    }
    mmlr_csv_opts_default(&co);
    co.seed = (uint64_t)seed;
    co.stratify = !o->random_split;
    co.split_column = o->split_column;
    co.val_path = o->val;
    co.test_path = o->test;
    if (o->ratios) ratios_arg(o->ratios, co.ratio);
    if (mmlr_schema_read(o->schema, &sc)) return die("schema");
    *mb = path_mb(o->input) + (o->val ? path_mb(o->val) + path_mb(o->test) : 0);
    if (mmlr_csv_load(o->input, &sc, &co, d)) return die("csv");
    return -1;
}

static int gen_taobao(const opts *o, long long seed) {
    long long users, items, themes, clicks, dim;
    double t0, dt, mb;
    if (!o->users || !o->items || !o->themes || !o->clicks || !o->dim) {
        fprintf(stderr, "moemlora-prepare: gen-taobao needs --users --items --themes --clicks --dim\n");
        return 2;
    }
    users = num_arg("--users", o->users, 1, MAX_USERS);
    items = num_arg("--items", o->items, 1, MAX_ITEMS);
    themes = num_arg("--themes", o->themes, 1, MAX_THEMES);
    clicks = num_arg("--clicks", o->clicks, 0, MAX_CLICKS);
    dim = num_arg("--dim", o->dim, 1, MAX_DIM);
    t0 = now_s();
    if (mmlr_taobao_write_synthetic(o->out, users, items, (int32_t)themes, clicks, (int32_t)dim, (uint64_t)seed))
        return die("gen-taobao");
    dt = now_s() - t0;
    mb = file_mb(o->out, "theme_click_log.csv") + file_mb(o->out, "user_embedding.csv") +
         file_mb(o->out, "item_embedding.csv");
    printf("wrote %.1f MB of Taobao-format raw data to %s in %.2f s (%.0f MB/s)\n", mb, o->out, dt, mb / dt);
    return 0;
}

int main(int argc, char **argv) {
    const char *cmd;
    opts o;
    long long seed, themes = -1;
    int i;
    mml_data_t d;
    double t0, dt, c0, mb = 0;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    memset(&o, 0, sizeof o);
    o.cache = 1;
    cmd = argv[1];
    if (cmd[0] == '-') {
        fprintf(stderr, "moemlora-prepare: expected a command (movielens|csv|taobao|gen-taobao) before '%s', see --help\n",
                cmd);
        return 2;
    }
    if (strcmp(cmd, "movielens") && strcmp(cmd, "csv") && strcmp(cmd, "taobao") && strcmp(cmd, "gen-taobao")) {
        fprintf(stderr, "moemlora-prepare: unknown command '%s' (movielens|csv|taobao|gen-taobao), see --help\n", cmd);
        return 2;
    }
    if ((i = parse_flags(argc, argv, &o)) >= 0) return i;
    if (!o.out) {
        fprintf(stderr, "moemlora-prepare: --out is required (see --help)\n");
        return 2;
    }
    seed = o.seed ? num_arg("--seed", o.seed, 0, LLONG_MAX) : 123;
    if (!strcmp(cmd, "gen-taobao")) return gen_taobao(&o, seed);
    if (!strcmp(cmd, "csv")) {
        t0 = now_s(), c0 = cpu_s();
        if ((i = load_csv(&o, seed, &d, &mb)) >= 0) return i;
        o.raw = o.input;
    } else if (!o.raw) {
        fprintf(stderr, "moemlora-prepare: --raw is required (see --help)\n");
        return 2;
    }
    if (!strcmp(cmd, "csv")) {
    } else if (!strcmp(cmd, "movielens")) {
        const char *raw = o.raw;
        int all = o.features && !strcmp(o.features, "all");
        if (o.features && !all && strcmp(o.features, "paper")) {
            fprintf(stderr, "moemlora-prepare: --features takes paper or all, got \"%s\"\n", o.features);
            return 2;
        }
        if (o.protocol && strcmp(o.protocol, "swr")) {
            fprintf(stderr, "moemlora-prepare: --protocol takes swr, got \"%s\"\n", o.protocol);
            return 2;
        }
        if (!o.split && !o.protocol) {
            fprintf(stderr, "moemlora-prepare: movielens needs --split gender|age|occupation\n");
            return 2;
        }
        mb = file_mb(raw, "users.dat") > 0
                 ? file_mb(raw, "users.dat") +
                       (file_mb(raw, "ratings.dat") > 0 ? file_mb(raw, "ratings.dat")
                                                        : file_mb(raw, "ratings.no-timestamp.dat"))
                 : file_mb(raw, "u.user") + file_mb(raw, "u.data") + file_mb(raw, "u.occupation");
        t0 = now_s(), c0 = cpu_s();
        if (o.protocol ? mmlr_movielens_load_all(raw, NULL, o.features && !all ? "swr-paper" : "swr", (uint64_t)seed, &d)
            : all      ? mmlr_movielens_load_all(raw, o.split, NULL, (uint64_t)seed, &d)
                       : mmlr_movielens_load(raw, o.split, (uint64_t)seed, &d))
            return die(cmd);
    } else {
        if (!o.themes) {
            fprintf(stderr, "moemlora-prepare: taobao needs --themes N (0 = all)\n");
            return 2;
        }
        themes = num_arg("--themes", o.themes, 0, MAX_THEMES);
        mb = file_mb(o.raw, "theme_click_log.csv") + file_mb(o.raw, "user_embedding.csv") +
             file_mb(o.raw, "item_embedding.csv");
        t0 = now_s(), c0 = cpu_s();
        if (mmlr_taobao_load(o.raw, (int)themes, (uint64_t)seed, &d)) return die(cmd);
    }
    dt = now_s() - t0;
    c0 = cpu_s() - c0;
    printf("loaded %s: %.1f MB raw in %.3f s (%.0f MB/s; %.3f s of CPU, %.0f MB/s; parse + re-index + split%s)\n",
           o.raw, mb, dt, mb / dt, c0, mb / c0, strcmp(cmd, "taobao") ? "" : " + negative sampling");
    summary(&d);
    if (d.schema) schema_summary(d.schema);
    i = write_out(&d, o.out, o.cache);
    mml_data_free(&d);
    return i;
}
