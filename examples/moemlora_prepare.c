/* moemlora-prepare: turns a raw dataset (MovieLens-100K/1M, Tianchi Taobao
 * theme data) into the prepared layout the trainers read (docs/DATA.md), or
 * writes a synthetic Taobao-format raw set.
 *
 *   moemlora-prepare movielens --raw DIR --split gender|age|occupation --out OUT
 *   moemlora-prepare taobao --raw DIR --themes 10 --out OUT
 *   moemlora-prepare gen-taobao --out DIR --users U --items I --themes T
 *                               --clicks N --dim D
 */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "moemlora.h"

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
    "the binary cache data.mmlc (unless --no-cache). Every file is replaced\n"
    "atomically; other files in OUT are left alone.\n";

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

/* Parses a non-negative integer option value, or exits with a message. */
static long long num_arg(const char *opt, const char *v) {
    char *end;
    long long x;
    if (!v) {
        fprintf(stderr, "moemlora-prepare: %s needs a value\n", opt);
        exit(2);
    }
    x = strtoll(v, &end, 10);
    if (*v == 0 || *end != 0 || x < 0) {
        fprintf(stderr, "moemlora-prepare: %s: not a non-negative integer: \"%s\"\n", opt, v);
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
    char p[2048];
    double t0 = now_s();
    if (mml_data_save_dir(d, out)) return die("write");
    if (cache) {
        snprintf(p, sizeof p, "%s/data.mmlc", out);
        if (mml_data_save_cache(d, p)) return die("write cache");
    }
    printf("wrote %s%s in %.2f s\n", out, cache ? " (CSV layout + data.mmlc)" : " (CSV layout)", now_s() - t0);
    return 0;
}

int main(int argc, char **argv) {
    const char *cmd, *raw = NULL, *out = NULL, *split = NULL;
    long long seed = 123, themes = -1, users = -1, items = -1, clicks = -1, dim = -1;
    int cache = 1, i;
    mml_data_t d;
    double t0, dt, mb = 0;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    cmd = argv[1];
    for (i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "--no-cache")) {
            cache = 0;
            continue;
        } else if (!strcmp(a, "--raw")) raw = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--split")) split = v;
        else if (!strcmp(a, "--seed")) seed = num_arg(a, v);
        else if (!strcmp(a, "--themes")) themes = num_arg(a, v);
        else if (!strcmp(a, "--users")) users = num_arg(a, v);
        else if (!strcmp(a, "--items")) items = num_arg(a, v);
        else if (!strcmp(a, "--clicks")) clicks = num_arg(a, v);
        else if (!strcmp(a, "--dim")) dim = num_arg(a, v);
        else {
            fprintf(stderr, "moemlora-prepare: unknown option \"%s\" (see --help)\n", a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "moemlora-prepare: %s needs a value\n", a);
            return 2;
        }
        i++;
    }
    if (!out) {
        fprintf(stderr, "moemlora-prepare: --out is required (see --help)\n");
        return 2;
    }
    if (!strcmp(cmd, "gen-taobao")) {
        if (users < 1 || items < 1 || themes < 1 || clicks < 0 || dim < 1) {
            fprintf(stderr, "moemlora-prepare: gen-taobao needs --users --items --themes --clicks --dim\n");
            return 2;
        }
        t0 = now_s();
        if (mml_taobao_write_synthetic(out, users, items, (int32_t)themes, clicks, (int32_t)dim, (uint64_t)seed))
            return die("gen-taobao");
        dt = now_s() - t0;
        mb = file_mb(out, "theme_click_log.csv") + file_mb(out, "user_embedding.csv") +
             file_mb(out, "item_embedding.csv");
        printf("wrote %.1f MB of Taobao-format raw data to %s in %.2f s (%.0f MB/s)\n", mb, out, dt, mb / dt);
        return 0;
    }
    if (!raw) {
        fprintf(stderr, "moemlora-prepare: --raw is required (see --help)\n");
        return 2;
    }
    if (!strcmp(cmd, "movielens")) {
        if (!split) {
            fprintf(stderr, "moemlora-prepare: movielens needs --split gender|age|occupation\n");
            return 2;
        }
        mb = file_mb(raw, "users.dat") > 0
                 ? file_mb(raw, "users.dat") +
                       (file_mb(raw, "ratings.dat") > 0 ? file_mb(raw, "ratings.dat")
                                                        : file_mb(raw, "ratings.no-timestamp.dat"))
                 : file_mb(raw, "u.user") + file_mb(raw, "u.data") + file_mb(raw, "u.occupation");
        t0 = now_s();
        if (mml_movielens_load(raw, split, (uint64_t)seed, &d)) return die(cmd);
    } else if (!strcmp(cmd, "taobao")) {
        if (themes < 0) {
            fprintf(stderr, "moemlora-prepare: taobao needs --themes N (0 = all)\n");
            return 2;
        }
        if (themes > 1000000) {
            fprintf(stderr, "moemlora-prepare: --themes too large\n");
            return 2;
        }
        mb = file_mb(raw, "theme_click_log.csv") + file_mb(raw, "user_embedding.csv") +
             file_mb(raw, "item_embedding.csv");
        t0 = now_s();
        if (mml_taobao_load(raw, (int)themes, (uint64_t)seed, &d)) return die(cmd);
    } else {
        fprintf(stderr, "moemlora-prepare: unknown command \"%s\" (movielens, taobao, gen-taobao; see --help)\n", cmd);
        return 2;
    }
    dt = now_s() - t0;
    printf("loaded %s: %.1f MB raw in %.3f s (%.0f MB/s, parse + re-index + split%s)\n", raw, mb, dt, mb / dt,
           strcmp(cmd, "taobao") ? "" : " + negative sampling");
    summary(&d);
    i = write_out(&d, out, cache);
    mml_data_free(&d);
    return i;
}
