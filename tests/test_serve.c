/* The serving programs against the library, end to end: a tiny model trained
 * by moemlora-train (--export and --save), 2000 request lines (unknown ids
 * included) through moemlora-serve --threads 2, compared with mml_predict in
 * this process within 1e-6 (the output has 6 decimals); a malformed line
 * stops it with a non-zero exit and "stdin:LINE:", --skip-bad answers it with
 * nan; serve-cpp scores a row; moemlora-train --paper sets the paper's
 * per-model adapter reduction unless --lora-reduce is given. Skips (77) if the
 * programs are not built. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

static char bindir[1024], dir[512];

static void dpath(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* Runs BINDIR/prog with args, stdin from in, stdout to out, stderr to err
 * (NULL: /dev/null); returns the exit code, or -1 if it did not exit. */
static int run(const char *prog, const char *const *args, const char *in, const char *out, const char *err) {
    char exe[1200];
    snprintf(exe, sizeof exe, "%s/%s", bindir, prog);
    const char *argv[32];
    int n = 0;
    argv[n++] = exe;
    for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fi = open(in ? in : "/dev/null", O_RDONLY);
        int fo = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(err ? err : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fi >= 0) dup2(fi, 0);
        if (fo >= 0) dup2(fo, 1);
        if (fe >= 0) dup2(fe, 2);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

enum { N_ROWS = 2000 };
static int32_t U[N_ROWS], P[N_ROWS], D[N_ROWS];

/* Request lines: known ids, unknown users / items / domains, negative ids,
 * spaces and CRLF endings. */
static void write_requests(const char *path, const mml_config_t *c) {
    FILE *f = fopen(path, "w");
    uint64_t s = 77;
    for (int i = 0; i < N_ROWS; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(s >> 33);
        U[i] = (int32_t)(r % (uint32_t)c->n_users);
        P[i] = (int32_t)((r >> 8) % (uint32_t)c->n_items);
        D[i] = (int32_t)((r >> 16) % (uint32_t)c->n_domains);
        if (i % 97 == 5) U[i] = c->n_users + i;
        if (i % 89 == 7) P[i] = c->n_items + 3;
        if (i % 101 == 9) D[i] = c->n_domains;
        if (i % 211 == 11) { U[i] = -1; P[i] = -7; }
        if (i % 50 == 13) fprintf(f, " %d , %d,%d \r\n", U[i], P[i], D[i]);
        else fprintf(f, "%d,%d,%d\n", U[i], P[i], D[i]);
    }
    fclose(f);
}

/* Compares the program's lines with the in-process predictions. */
static void compare_output(const char *out, const float *want, const char *what) {
    char *text = (char *)mmlt_read_file(out, NULL);
    CHECK(text != NULL, "%s: no output", what);
    if (!text) return;
    int n = 0, bad = 0;
    double worst = 0.0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++) {
        char *end;
        double x = strtod(line, &end);
        if (*end || n >= N_ROWS || !(fabs(x - want[n]) <= 1e-6)) {
            if (bad++ < 5) fprintf(stderr, "%s: line %d: \"%s\", expected %.7f\n", what, n + 1, line, n < N_ROWS ? want[n] : -1.0);
            continue;
        }
        if (fabs(x - want[n]) > worst) worst = fabs(x - want[n]);
    }
    CHECK(n == N_ROWS && bad == 0, "%s: %d lines, %d differ", what, n, bad);
    printf("%s: %d lines, max |diff| %.2g\n", what, n, worst);
    free(text);
}

static void test_serve(void) {
    char exp[1024], ck[1024], req[1024], out[1024], err[1024];
    dpath(exp, sizeof exp, "model.mml");
    dpath(ck, sizeof ck, "ckpt.mml");
    dpath(req, sizeof req, "requests.csv");
    dpath(out, sizeof out, "out.txt");
    dpath(err, sizeof err, "err.txt");
    mmlt_ctx = "train";
    const char *targs[] = {"--syn-samples", "6000", "--syn-users", "300", "--syn-items", "100", "--syn-domains", "3",
                           "--adapter", "moe", "--hidden", "32,16", "--epochs", "2", "--patience", "1", "--quiet",
                           "--save", ck, "--export", exp, NULL};
    int rc = run("moemlora-train", targs, NULL, NULL, err);
    CHECK(rc == 0, "moemlora-train exit %d", rc);
    if (rc) { char *e = (char *)mmlt_read_file(err, NULL); fprintf(stderr, "%s\n", e ? e : ""); free(e); return; }

    mml_model_t *m = NULL;
    CHECK_OK(mml_model_load(exp, &m));
    if (!m) return;
    write_requests(req, mml_model_config(m));
    static float want[N_ROWS];
    mml_batch_t b = mml_batch_paper(N_ROWS, U, P, D, NULL);
    CHECK_OK(mml_predict(m, &b, want));

    mmlt_ctx = "serve";
    const char *a2[] = {exp, "--threads", "2", NULL};
    rc = run("moemlora-serve", a2, req, out, err);
    CHECK(rc == 0, "moemlora-serve --threads 2: exit %d", rc);
    compare_output(out, want, "serve export --threads 2");
    const char *a3[] = {ck, "--threads", "3", "--batch", "333", NULL};
    rc = run("moemlora-serve", a3, req, out, err);
    CHECK(rc == 0, "moemlora-serve checkpoint: exit %d", rc);
    compare_output(out, want, "serve checkpoint --threads 3 --batch 333");
    const char *a1[] = {exp, "--batch", "1", NULL};
    rc = run("moemlora-serve", a1, req, out, err);
    CHECK(rc == 0, "moemlora-serve --batch 1: exit %d", rc);
    compare_output(out, want, "serve --batch 1");

    /* a malformed line 1234: the lines before it are answered, then exit 1 */
    mmlt_ctx = "malformed";
    char *text = (char *)mmlt_read_file(req, NULL);
    char *p = text;
    for (int i = 1; p && i < 1234; i++) p = strchr(p, '\n') + 1;
    FILE *f = fopen(req, "w");
    fwrite(text, 1, (size_t)(p - text), f);
    fputs("12,abc,1\n", f);
    fputs(p, f);
    fclose(f);
    free(text);
    rc = run("moemlora-serve", a2, req, out, err);
    char *msg = (char *)mmlt_read_file(err, NULL), *o = (char *)mmlt_read_file(out, NULL);
    CHECK(rc != 0, "malformed line: exit %d", rc);
    CHECK(msg && strstr(msg, "stdin:1234:"), "malformed line: message \"%s\"", msg ? msg : "");
    int lines = 0;
    for (char *q = o; q && *q; q++) lines += *q == '\n';
    CHECK(lines == 1233, "malformed line: %d lines answered before it", lines);
    printf("malformed line: exit %d, stderr: %s", rc, msg ? msg : "\n");
    free(msg);
    free(o);
    const char *askip[] = {exp, "--skip-bad", "--threads", "2", NULL};
    rc = run("moemlora-serve", askip, req, out, err);
    o = (char *)mmlt_read_file(out, NULL);
    CHECK(rc == 0, "--skip-bad: exit %d", rc);
    lines = 0;
    char *nanline = NULL;
    for (char *q = o; q && *q; q++)
        if (*q == '\n' && ++lines == 1233) nanline = q + 1;
    CHECK(lines == N_ROWS + 1 && nanline && !strncmp(nanline, "nan\n", 4), "--skip-bad: %d lines", lines);
    free(o);

    /* usage errors */
    const char *anone[] = {NULL};
    CHECK(run("moemlora-serve", anone, NULL, NULL, NULL) == 2, "no model: exit 2");
    const char *abadopt[] = {exp, "--threads", "0", NULL};
    CHECK(run("moemlora-serve", abadopt, NULL, NULL, NULL) == 2, "--threads 0: exit 2");
    const char *amissing[] = {"/nonexistent/model.mml", NULL};
    CHECK(run("moemlora-serve", amissing, NULL, NULL, err) == 1, "missing model: exit 1");
    const char *ahelp[] = {"--help", NULL};
    CHECK(run("moemlora-serve", ahelp, NULL, NULL, NULL) == 0, "--help: exit 0");

    /* serve-cpp */
    mmlt_ctx = "serve-cpp";
    char row[64];
    snprintf(row, sizeof row, "%d,%d,%d", U[0], P[0], D[0]);
    const char *acpp[] = {exp, row, NULL};
    rc = run("serve-cpp", acpp, NULL, out, err);
    o = (char *)mmlt_read_file(out, NULL);
    char expect[64];
    snprintf(expect, sizeof expect, "-> %.6f", want[0]);
    CHECK(rc == 0 && o && strstr(o, expect), "serve-cpp: exit %d, output \"%s\", expected \"%s\"", rc, o ? o : "",
          expect);
    free(o);
    const char *acppbad[] = {"/nonexistent/model.mml", NULL};
    rc = run("serve-cpp", acppbad, NULL, NULL, err);
    msg = (char *)mmlt_read_file(err, NULL);
    CHECK(rc == 1 && msg && strstr(msg, "cannot open"), "serve-cpp missing model: exit %d, \"%s\"", rc, msg ? msg : "");
    free(msg);
    mml_model_free(m);
}

/* moemlora-train --paper: the model saved carries the paper's lora_reduce. */
static void test_paper(void) {
    mmlt_ctx = "train --paper";
    static const struct { const char *model, *paper, *reduce; int want; } cases[] = {
        {"deepfm", "movielens", NULL, 32}, {"deepfm", "taobao", NULL, 256}, {"nfm", "movielens", NULL, 4},
        {"xdeepfm", "taobao", NULL, 16},   {"mlp", "movielens", NULL, 16},  {"deepfm", "movielens", "8", 8},
    };
    char exp[1024], err[1024];
    dpath(exp, sizeof exp, "paper.mml");
    dpath(err, sizeof err, "err.txt");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *a[32] = {"--syn-samples", "3000", "--syn-users", "100", "--syn-items", "50", "--syn-domains", "2",
                             "--model", cases[i].model, "--paper", cases[i].paper, "--hidden", "32,16",
                             "--epochs", "1", "--quiet", "--export", exp};
        int n = 19;
        if (cases[i].reduce) { a[n++] = "--lora-reduce"; a[n++] = cases[i].reduce; }
        a[n] = NULL;
        int rc = run("moemlora-train", a, NULL, NULL, err);
        CHECK(rc == 0, "%s --paper %s: exit %d", cases[i].model, cases[i].paper, rc);
        mml_model_t *m = NULL;
        if (rc == 0) CHECK_OK(mml_model_load(exp, &m));
        if (!m) continue;
        CHECK(mml_model_config(m)->lora_reduce == cases[i].want, "%s --paper %s%s%s: lora_reduce %d, expected %d",
              cases[i].model, cases[i].paper, cases[i].reduce ? " --lora-reduce " : "",
              cases[i].reduce ? cases[i].reduce : "", mml_model_config(m)->lora_reduce, cases[i].want);
        mml_model_free(m);
    }
    const char *bad[] = {"--paper", "criteo", NULL};
    CHECK(run("moemlora-train", bad, NULL, NULL, NULL) == 2, "--paper criteo: exit 2");
}

int main(int argc, char **argv) {
    (void)argc;
    const char *slash = strrchr(argv[0], '/');
    int dn = slash ? (int)(slash - argv[0]) : 1;
    snprintf(bindir, sizeof bindir, "%.*s/../examples", dn, slash ? argv[0] : ".");
    const char *progs[] = {"moemlora-train", "moemlora-serve", "serve-cpp"};
    for (int i = 0; i < 3; i++) {
        char exe[1200];
        snprintf(exe, sizeof exe, "%s/%s", bindir, progs[i]);
        if (access(exe, X_OK) != 0) {
            printf("skipped: %s not found (build the examples: MOEMLORA_BUILD_EXAMPLES=ON)\n", exe);
            return MMLT_SKIP;
        }
    }
    const char *td = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mml_serve_XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "test_serve: mkdtemp %s: %s\n", dir, strerror(errno));
        return 1;
    }
    test_serve();
    test_paper();
    mmlt_rm_tree(dir);
    return mmlt_finish("test_serve");
}
