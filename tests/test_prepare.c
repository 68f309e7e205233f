/* moemlora-prepare as a user runs it: an unknown command is named as such;
 * absurd sizes are refused up front, naming the flag and the limit, and so
 * is a generation that cannot fit the free space, with nothing written;
 * preparing twice into one folder swaps the whole set; a folder holding
 * files that are not part of a prepared set is left alone with an error.
 * Every child runs with a 64 MB file-size limit, so a writer that starts
 * when it should refuse fails fast instead of filling the disk. Skips (77)
 * if the program is not built (BUILD/examples/moemlora-prepare). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

static char prog[1100], dir[512], errfile[600];

/* Runs moemlora-prepare with args (NULL-terminated), stderr to errfile;
 * returns the exit code, or -1 if it did not exit. */
static int run(const char *const *args) {
    const char *argv[32];
    int n = 0, status;
    pid_t pid;
    argv[n++] = prog;
    for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        struct rlimit lim = {64 << 20, 64 << 20};
        int fo = open("/dev/null", O_WRONLY), fe = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo >= 0) dup2(fo, 1);
        if (fe >= 0) dup2(fe, 2);
        setrlimit(RLIMIT_FSIZE, &lim);
        signal(SIGXFSZ, SIG_IGN);
        execv(prog, (char *const *)argv);
        _exit(127);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The program's stderr of the last run contains s. */
static int said(const char *s) {
    unsigned char *t = mmlt_read_file(errfile, NULL);
    int r = t && strstr((const char *)t, s);
    free(t);
    return r;
}

static const char *last_err(void) {
    static char buf[1024];
    unsigned char *t = mmlt_read_file(errfile, NULL);
    snprintf(buf, sizeof buf, "%s", t ? (const char *)t : "(none)");
    free(t);
    return buf;
}

static int exists(const char *name) {
    char p[1024];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

static void test_commands(void) {
    mmlt_ctx = "commands";
    CHECK(run((const char *[]){"bogus", NULL}) == 2 && said("unknown command 'bogus' (movielens|csv|taobao|gen-taobao)"),
          "bogus: %s", last_err());
    CHECK(run((const char *[]){"bogus", "--out", "x", NULL}) == 2 &&
              said("unknown command 'bogus' (movielens|csv|taobao|gen-taobao)"),
          "bogus --out: %s", last_err());
}

/* Each flag over its limit, then sizes within the limits that need more
 * space than any test machine has. */
static void test_sizes(void) {
    char out[700];
    static const struct {
        const char *flag, *value, *want;
    } over[] = {
        {"--clicks", "99999999999999", "--clicks 99999999999999 is too large (at most 2147483647)"},
        {"--users", "600000000", "--users 600000000 is too large (at most 536870911)"},
        {"--items", "600000000", "--items 600000000 is too large (at most 536870911)"},
        {"--themes", "2000000", "--themes 2000000 is too large (at most 1000000)"},
        {"--dim", "70000", "--dim 70000 is too large (at most 65536)"},
    };
    mmlt_ctx = "sizes";
    snprintf(out, sizeof out, "%s/gen", dir);
    for (size_t i = 0; i < sizeof over / sizeof over[0]; i++) {
        const char *args[16] = {"gen-taobao", "--out", out, "--users", "100", "--items", "100", "--themes", "2",
                                "--clicks", "10", "--dim", "4", NULL};
        for (int j = 3; args[j]; j += 2)
            if (!strcmp(args[j], over[i].flag)) args[j + 1] = over[i].value;
        CHECK(run(args) == 2 && said(over[i].want), "%s %s: %s", over[i].flag, over[i].value, last_err());
        CHECK(!exists("gen"), "%s %s: nothing written", over[i].flag, over[i].value);
    }
    CHECK(run((const char *[]){"gen-taobao", "--out", out, "--users", "500000000", "--items", "500000000", "--themes",
                               "10", "--clicks", "2000000000", "--dim", "65536", NULL}) == 1 &&
              said("needs about") && said("GB free on"),
          "free space: %s", last_err());
    CHECK(!exists("gen"), "free space: nothing written");
}

/* gen-taobao, then taobao twice into one folder (the second with other
 * themes): the folder holds the second set, with its cache. */
static void test_prepare_twice(void) {
    char raw[700], out[700];
    mml_data_t a, b;
    mmlt_ctx = "prepare-twice";
    snprintf(raw, sizeof raw, "%s/raw", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    CHECK(run((const char *[]){"gen-taobao", "--out", raw, "--users", "300", "--items", "600", "--themes", "4",
                               "--clicks", "4000", "--dim", "4", NULL}) == 0,
          "gen-taobao: %s", last_err());
    CHECK(run((const char *[]){"taobao", "--raw", raw, "--themes", "3", "--out", out, NULL}) == 0, "first: %s",
          last_err());
    CHECK_OK(mml_data_load(out, &a));
    CHECK(a.n_domains == 3, "first set: %d domains", a.n_domains);
    CHECK(run((const char *[]){"taobao", "--raw", raw, "--themes", "2", "--out", out, NULL}) == 0, "second: %s",
          last_err());
    CHECK_OK(mml_data_load(out, &b));
    CHECK(b.n_domains == 2 && !exists("out/domain_2") && exists("out/data.mmlc"), "second set: %d domains",
          b.n_domains);
    mml_data_free(&a);
    mml_data_free(&b);
    /* a user's own file in the folder: refused, nothing touched */
    {
        char p[800];
        FILE *f;
        snprintf(p, sizeof p, "%s/notes.txt", out);
        f = fopen(p, "w");
        if (f) {
            fputs("mine\n", f);
            fclose(f);
        }
        CHECK(run((const char *[]){"taobao", "--raw", raw, "--themes", "3", "--out", out, NULL}) == 1 &&
                  said("notes.txt"),
              "foreign file: %s", last_err());
        CHECK(exists("out/notes.txt") && !exists("out/domain_2"), "folder untouched");
    }
}

/* csv: a small file with every field kind prepared, loaded back with its
 * schema (kinds, sizes, ids re-indexed, the domain field) and row counts
 * summing to the file's; a schema naming a column the file lacks is refused
 * naming the schema file, its line and the column, with nothing written. */
static void test_prepare_csv(void) {
    char csv[700], sch[700], bad[700], out[700];
    const char *doms[3] = {"shop", "feed", "search"};
    FILE *f;
    mml_data_t d;
    int64_t rows = 0;
    mmlt_ctx = "csv";
    snprintf(csv, sizeof csv, "%s/clicks.csv", dir);
    snprintf(sch, sizeof sch, "%s/clicks.schema", dir);
    snprintf(bad, sizeof bad, "%s/bad.schema", dir);
    snprintf(out, sizeof out, "%s/csvout", dir);
    f = fopen(csv, "w");
    if (!f) {
        CHECK(0, "cannot write %s", csv);
        return;
    }
    fputs("clicked,page,user,tags,price\n", f);
    for (int i = 0; i < 600; i++)
        fprintf(f, "%d,%s,u%d,t%d|t%d,%.2f\n", (i * 7919) % 5 < 2, doms[i % 3], i % 37, i % 11, (i / 3) % 7,
                1.5 + (i % 13));
    fclose(f);
    f = fopen(sch, "w");
    if (!f) return;
    fputs("# test schema\nlabel clicked\nfield page categorical domain\nfield user categorical dim=8\n"
          "field tags multi_hot max_len=3 sep=| pooling=sum\nfield price numeric norm=zscore\n",
          f);
    fclose(f);
    f = fopen(bad, "w");
    if (!f) return;
    fputs("label clicked\nfield page categorical domain\nfield shoe_size numeric\n", f);
    fclose(f);
    CHECK(run((const char *[]){"csv", "--input", csv, "--schema", sch, "--out", out, "--seed", "5", NULL}) == 0,
          "prepare csv: %s", last_err());
    memset(&d, 0, sizeof d);
    CHECK_OK(mml_data_load(out, &d));
    {
        const mml_schema_t *s = d.schema;
        CHECK(d.n_domains == 3, "%d domains", d.n_domains);
        CHECK(s && s->n_fields == 4, "schema with 4 fields");
        if (s && s->n_fields == 4) {
            CHECK(s->domain == 0 && !strcmp(s->field[0].name, "page") && s->field[0].vocab == 3, "domain field");
            CHECK(s->field[1].kind == MML_FIELD_CATEGORICAL && s->field[1].dim == 8 && s->field[1].vocab >= 37,
                  "user: kind %d dim %d vocab %d", (int)s->field[1].kind, s->field[1].dim, s->field[1].vocab);
            CHECK(s->field[2].kind == MML_FIELD_MULTI_HOT && s->field[2].max_len == 3 &&
                      s->field[2].pooling == MML_POOL_SUM && s->field[2].vocab >= 11,
                  "tags: kind %d max_len %d vocab %d", (int)s->field[2].kind, s->field[2].max_len, s->field[2].vocab);
            CHECK(s->field[3].kind == MML_FIELD_NUMERIC && s->field[3].norm == MML_NORM_ZSCORE && s->field[3].scale > 0,
                  "price: kind %d norm %d scale %g", (int)s->field[3].kind, (int)s->field[3].norm,
                  (double)s->field[3].scale);
        }
        for (int k = 0; k < 3; k++) rows += d.split[k].n;
        CHECK(rows == 600, "%lld rows in the splits", (long long)rows);
        mml_data_free(&d);
    }
    CHECK(run((const char *[]){"csv", "--input", csv, "--schema", bad, "--out", out, NULL}) == 1 &&
              said("bad.schema:3") && said("shoe_size"),
          "missing column: %s", last_err());
    CHECK(exists("csvout/meta.txt"), "earlier set left in place");
}

int main(int argc, char **argv) {
    const char *slash = strrchr(argv[0], '/');
    int dn = slash ? (int)(slash - argv[0]) : 1;
    (void)argc;
    (void)mmlt_close;
    snprintf(prog, sizeof prog, "%.*s/../examples/moemlora-prepare", dn, slash ? argv[0] : ".");
    if (access(prog, X_OK) != 0) {
        printf("skipped: %s not found (build the examples: MOEMLORA_BUILD_EXAMPLES=ON)\n", prog);
        return MMLT_SKIP;
    }
    snprintf(dir, sizeof dir, "/tmp/mml_test_prepare_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(errfile, sizeof errfile, "%s/stderr.txt", dir);
    test_commands();
    test_sizes();
    test_prepare_twice();
    test_prepare_csv();
    mmlt_rm_tree(dir);
    return mmlt_finish("test_prepare");
}
