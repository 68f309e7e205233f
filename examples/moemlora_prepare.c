/* moemlora-prepare: turns a raw dataset (MovieLens-100K/1M, Tianchi Taobao
 * theme data) into the prepared layout the trainers read (docs/DATA.md), or
 * writes a synthetic Taobao-format raw set. The readers are the recipes of
 * mml_recipes.h; this program parses the flags and reports.
 *
 *   moemlora-prepare movielens --raw DIR --split gender|age|occupation --out OUT
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
    "                             [--seed 123] [--no-cache]\n"
    "  moemlora-prepare taobao --raw DIR --themes N --out OUT [--seed 123] [--no-cache]\n"
    "  moemlora-prepare gen-taobao --out DIR --users U --items I --themes T --clicks N\n"
    "                              --dim D [--seed 123]\n"
    "\n"
    "movielens: DIR holds MovieLens-1M (users.dat + ratings.dat or\n"
    "  ratings.no-timestamp.dat) or MovieLens-100K (u.user, u.occupation, u.data).\n"
    "  Label = rating 5; domains by user gender (F=0, M=1), age group (7) or\n"
    "  occupation (21); stratified 60/20/20 split per domain with --seed.\n"
    "taobao: DIR holds theme_click_log.csv, user_embedding.csv, item_embedding.csv;\n"
    "  --themes N keeps the first N theme ids (0 = all); negatives are sampled.\n"
    "gen-taobao: writes a synthetic raw set in the Taobao format (for tests and\n"
    "  parse-speed measurements).\n"
    "\n"
    "OUT gets meta.txt, domain_<k>/{train,val,test}.csv, embeddings when present and\n"
    "the binary cache data.mmlc (unless --no-cache). The new set is built beside OUT\n"
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
    printf("users %d, items %d, domains %d, pretrained dim %d\n", d->n_users, d->n_items, d->n_domains,
           d->pretrained_dim);
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
    int cache;
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
        if (!strcmp(a, "--raw")) slot = &o->raw;
        else if (!strcmp(a, "--out")) slot = &o->out;
        else if (!strcmp(a, "--split")) slot = &o->split;
        else if (!strcmp(a, "--seed")) slot = &o->seed;
        else if (!strcmp(a, "--themes")) slot = &o->themes;
        else if (!strcmp(a, "--users")) slot = &o->users;
        else if (!strcmp(a, "--items")) slot = &o->items;
        else if (!strcmp(a, "--clicks")) slot = &o->clicks;
        else if (!strcmp(a, "--dim")) slot = &o->dim;
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
    opts o = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1};
    long long seed, themes = -1;
    int i;
    mml_data_t d;
    double t0, dt, mb = 0;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    cmd = argv[1];
    if (cmd[0] == '-') {
        fprintf(stderr, "moemlora-prepare: expected a command (movielens|taobao|gen-taobao) before '%s', see --help\n",
                cmd);
        return 2;
    }
    if (strcmp(cmd, "movielens") && strcmp(cmd, "taobao") && strcmp(cmd, "gen-taobao")) {
        fprintf(stderr, "moemlora-prepare: unknown command '%s' (movielens|taobao|gen-taobao), see --help\n", cmd);
        return 2;
    }
    if ((i = parse_flags(argc, argv, &o)) >= 0) return i;
    if (!o.out) {
        fprintf(stderr, "moemlora-prepare: --out is required (see --help)\n");
        return 2;
    }
    seed = o.seed ? num_arg("--seed", o.seed, 0, LLONG_MAX) : 123;
    if (!strcmp(cmd, "gen-taobao")) return gen_taobao(&o, seed);
    if (!o.raw) {
        fprintf(stderr, "moemlora-prepare: --raw is required (see --help)\n");
        return 2;
    }
    if (!strcmp(cmd, "movielens")) {
        const char *raw = o.raw;
        if (!o.split) {
            fprintf(stderr, "moemlora-prepare: movielens needs --split gender|age|occupation\n");
            return 2;
        }
        mb = file_mb(raw, "users.dat") > 0
                 ? file_mb(raw, "users.dat") +
                       (file_mb(raw, "ratings.dat") > 0 ? file_mb(raw, "ratings.dat")
                                                        : file_mb(raw, "ratings.no-timestamp.dat"))
                 : file_mb(raw, "u.user") + file_mb(raw, "u.data") + file_mb(raw, "u.occupation");
        t0 = now_s();
        if (mmlr_movielens_load(raw, o.split, (uint64_t)seed, &d)) return die(cmd);
    } else {
        if (!o.themes) {
            fprintf(stderr, "moemlora-prepare: taobao needs --themes N (0 = all)\n");
            return 2;
        }
        themes = num_arg("--themes", o.themes, 0, MAX_THEMES);
        mb = file_mb(o.raw, "theme_click_log.csv") + file_mb(o.raw, "user_embedding.csv") +
             file_mb(o.raw, "item_embedding.csv");
        t0 = now_s();
        if (mmlr_taobao_load(o.raw, (int)themes, (uint64_t)seed, &d)) return die(cmd);
    }
    dt = now_s() - t0;
    printf("loaded %s: %.1f MB raw in %.3f s (%.0f MB/s, parse + re-index + split%s)\n", o.raw, mb, dt, mb / dt,
           strcmp(cmd, "taobao") ? "" : " + negative sampling");
    summary(&d);
    i = write_out(&d, o.out, o.cache);
    mml_data_free(&d);
    return i;
}
