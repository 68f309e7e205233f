/* The serving programs against the library, end to end: a tiny model trained
 * by moemlora-train (--export and --save), 2000 request lines (unknown user
 * and item ids included) through moemlora-serve --threads 2, from a file and
 * through a pipe, compared with mml_predict in this process within 1e-6 (the
 * output has 6 decimals); a client on two pipes gets each answer before it
 * sends the next line; a malformed line (unknown domain, NUL byte, binary
 * garbage) stops it with a non-zero exit and "stdin:LINE:" quoting the line
 * escaped, --skip-bad answers it with nan; serve-cpp scores a row;
 * moemlora-train --paper sets the paper's per-model adapter reduction unless
 * --lora-reduce is given. Skips (77) if the programs are not built. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"
#include "mml_run.h"

static char bindir[1024], dir[512];

static void dpath(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

enum { N_ROWS = 2000 };
static int32_t U[N_ROWS], P[N_ROWS], D[N_ROWS];

/* Request lines: known ids, unknown users / items and negative ids (all get
 * the out-of-vocabulary prediction), spaces and CRLF endings. */
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

/* The model as moemlora-serve predicts with it: folded where it folds. */
static void as_served(mml_model_t *m) { (void)mml_model_fold(m); }

/* Runs moemlora-serve with args on the requests req and compares its
 * answers (out) with want. */
static void serve_compare(const char *const *args, const char *req, const char *out, const char *err, const float *want,
                          const char *what) {
    int rc = mmlt_run(bindir, "moemlora-serve", args, req, out, err);
    CHECK(rc == 0, "%s: exit %d", what, rc);
    compare_output(out, want, what);
}

/* ---- moemlora-serve behind two pipes, as a client talks to it ---- */

/* How long a read waits for the program before the test gives up on it: a
 * guard that turns a hang into a failure, not a speed requirement. */
enum { WAIT_MS = 30000 };

typedef struct child {
    pid_t pid;
    int in, out; /* our ends: its stdin, its stdout */
} child;

/* Starts moemlora-serve with args, stdin and stdout on pipes, stderr to err. */
static int spawn(const char *const *args, const char *err, child *c) {
    char exe[1200];
    snprintf(exe, sizeof exe, "%s/moemlora-serve", bindir);
    const char *argv[32];
    int n = 0;
    argv[n++] = exe;
    for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
    argv[n] = NULL;
    int pin[2], pout[2];
    if (pipe(pin)) return -1;
    if (pipe(pout)) { close(pin[0]); close(pin[1]); return -1; }
    fflush(stdout);
    fflush(stderr);
    c->pid = fork();
    if (c->pid == 0) {
        int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        if (fe >= 0) dup2(fe, 2);
        close(pin[0]); close(pin[1]); close(pout[0]); close(pout[1]);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    c->in = pin[1];
    c->out = pout[0];
    if (c->pid < 0) { close(c->in); close(c->out); return -1; }
    return 0;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads the child's stdout until `want` lines have come, EOF, or WAIT_MS
 * without a byte. Returns the lines read; buf holds the text. */
static int read_lines(child *c, char *buf, size_t cap, int want) {
    size_t n = 0;
    int lines = 0;
    while (lines < want && n + 1 < cap) {
        struct pollfd pf = {c->out, POLLIN, 0};
        if (poll(&pf, 1, WAIT_MS) <= 0) break;
        ssize_t k = read(c->out, buf + n, cap - 1 - n);
        if (k <= 0) break;
        for (ssize_t i = 0; i < k; i++) lines += buf[n + (size_t)i] == '\n';
        n += (size_t)k;
    }
    buf[n] = 0;
    return lines;
}

/* Closes its stdin, reads the rest of its output into rest (may be NULL) and
 * returns the exit code; -1 if it did not exit (it is killed then). */
static int finish(child *c, char *rest, size_t cap) {
    char sink[4096];
    if (c->in >= 0) close(c->in);
    c->in = -1;
    while (read_lines(c, rest ? rest : sink, rest ? cap : sizeof sink, 1 << 30) > 0 && !rest) {}
    close(c->out);
    int status = 0;
    for (int waited = 0;; waited += 10) {
        pid_t r = waitpid(c->pid, &status, WNOHANG);
        if (r == c->pid) break;
        if (r < 0 || waited >= WAIT_MS) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &status, 0);
            return -1;
        }
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int answer_is(const char *text, double want) {
    char *end;
    double x = strtod(text, &end);
    return end != text && *end == '\n' && fabs(x - want) <= 1e-6;
}

/* A client writes one line and waits for its answer before it writes the
 * next: each must come back at once, whatever --batch is; then three lines in
 * one write come back together. */
static void test_pipe(const char *model, const float *want) {
    char err[1024];
    dpath(err, sizeof err, "err.txt");
    const char *batches[] = {"1024", "1"};
    for (int bi = 0; bi < 2; bi++) {
        mmlt_ctx = bi ? "pipe --batch 1" : "pipe --batch 1024";
        const char *args[] = {model, "--batch", batches[bi], NULL};
        child c;
        if (spawn(args, err, &c)) { CHECK(0, "cannot start moemlora-serve"); continue; }
        int ok = 1;
        for (int i = 0; i < 6 && ok; i++) {
            char line[64], ans[256];
            int len = snprintf(line, sizeof line, "%d,%d,%d\n", U[i], P[i], D[i]);
            ok = write_all(c.in, line, (size_t)len) == 0 && read_lines(&c, ans, sizeof ans, 1) == 1;
            CHECK(ok, "request %d (%.*s): no answer within %d ms", i + 1, len - 1, line, WAIT_MS);
            if (ok) CHECK(answer_is(ans, want[i]), "request %d: answer \"%s\", expected %.6f", i + 1, ans, want[i]);
        }
        if (ok) {
            char lines[256], ans[256] = "";
            int len = 0;
            for (int i = 6; i < 9; i++) len += snprintf(lines + len, sizeof lines - (size_t)len, "%d,%d,%d\n", U[i], P[i], D[i]);
            ok = write_all(c.in, lines, (size_t)len) == 0 && read_lines(&c, ans, sizeof ans, 3) == 3;
            CHECK(ok, "three lines in one write: not all answered within %d ms: \"%s\"", WAIT_MS, ok ? "" : ans);
            char *a = ans;
            for (int i = 6; ok && i < 9; a = strchr(a, '\n') + 1, i++)
                CHECK(answer_is(a, want[i]), "request %d: answer \"%.12s\", expected %.6f", i + 1, a, want[i]);
        }
        int rc = finish(&c, NULL, 0);
        CHECK(rc == 0, "exit %d after stdin closed", rc);
    }
}

/* The whole request file through a pipe, written as fast as the program
 * reads it: the same answers as from the file. */
static void test_pipe_stream(const char *model, const char *req, const float *want) {
    mmlt_ctx = "pipe stream";
    char err[1024], out[1024];
    dpath(err, sizeof err, "err.txt");
    dpath(out, sizeof out, "pipe_out.txt");
    size_t n = 0;
    char *text = (char *)mmlt_read_file(req, &n);
    static char got[N_ROWS * 16];
    const char *args[] = {model, "--threads", "2", "--batch", "333", NULL};
    child c;
    if (!text || spawn(args, err, &c)) { CHECK(0, "cannot start moemlora-serve"); free(text); return; }
    size_t sent = 0, have = 0;
    while (sent < n) { /* both directions at once: neither pipe may fill up */
        struct pollfd pf[2] = {{c.in, POLLOUT, 0}, {c.out, POLLIN, 0}};
        if (poll(pf, 2, WAIT_MS) <= 0) break;
        if (pf[0].revents) {
            ssize_t k = write(c.in, text + sent, n - sent < 4000 ? n - sent : 4000);
            if (k <= 0) break;
            sent += (size_t)k;
        }
        if (pf[1].revents) {
            ssize_t k = read(c.out, got + have, sizeof got - 1 - have);
            if (k <= 0) break;
            have += (size_t)k;
        }
    }
    CHECK(sent == n, "wrote %zu of %zu bytes", sent, n);
    int rc = finish(&c, got + have, sizeof got - have);
    CHECK(rc == 0, "exit %d", rc);
    FILE *f = fopen(out, "w");
    if (f) { fputs(got, f); fclose(f); }
    compare_output(out, want, "serve through a pipe --threads 2 --batch 333");
    free(text);
}

/* Runs moemlora-serve MODEL [--skip-bad] on the given stdin bytes; returns the
 * exit code, *out and *err the program's output (the caller frees them). */
static int serve_bytes(const char *model, int skip_bad, const char *in, size_t n, char **out, char **err) {
    char req[1024], o[1024], e[1024];
    dpath(req, sizeof req, "bad.csv");
    dpath(o, sizeof o, "bad_out.txt");
    dpath(e, sizeof e, "bad_err.txt");
    FILE *f = fopen(req, "wb");
    if (f) { fwrite(in, 1, n, f); fclose(f); }
    const char *a[] = {model, skip_bad ? "--skip-bad" : NULL, NULL};
    int rc = mmlt_run(bindir, "moemlora-serve", a, req, o, e);
    *out = (char *)mmlt_read_file(o, NULL);
    *err = (char *)mmlt_read_file(e, NULL);
    return rc;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

/* Every byte printable ASCII or a newline, no line longer than max. */
static int escaped_and_short(const char *s, size_t max) {
    size_t col = 0;
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\n') { col = 0; continue; }
        if (ch < 0x20 || ch > 0x7e || ++col > max) return 0;
    }
    return 1;
}

/* Line 2 of three is bad: without --skip-bad the program answers line 1 and
 * stops with "stdin:2:" naming the problem; with it, line 2 gets "nan" and a
 * warning. */
static void check_bad_line(const char *model, const char *what, const char *bad, size_t bad_n, const char *reason) {
    mmlt_ctx = what;
    char in[4096];
    int a = snprintf(in, sizeof in, "%d,%d,%d\n", U[0], P[0], D[0]);
    memcpy(in + a, bad, bad_n);
    int b = snprintf(in + a + bad_n, sizeof in - (size_t)a - bad_n, "%d,%d,%d\n", U[1], P[1], D[1]);
    size_t n = (size_t)a + bad_n + (size_t)b;
    char *out, *err;
    int rc = serve_bytes(model, 0, in, n, &out, &err);
    CHECK(rc == 1, "exit %d", rc);
    CHECK(count_lines(out) == 1, "%d lines answered before the bad one", count_lines(out));
    CHECK(err && strstr(err, "stdin:2:") && strstr(err, reason), "message \"%s\", expected \"stdin:2:\" and \"%s\"",
          err ? err : "", reason);
    CHECK(escaped_and_short(err, 200), "message not escaped or too long: \"%s\"", err ? err : "");
    printf("%s: exit %d, stderr: %s", what, rc, err ? err : "\n");
    free(out);
    free(err);
    rc = serve_bytes(model, 1, in, n, &out, &err);
    CHECK(rc == 0, "--skip-bad: exit %d", rc);
    CHECK(count_lines(out) == 3 && out && strstr(out, "\nnan\n"), "--skip-bad: output \"%s\"", out ? out : "");
    CHECK(err && strstr(err, "warning: stdin:2:") && strstr(err, reason), "--skip-bad: message \"%s\"", err ? err : "");
    CHECK(escaped_and_short(err, 200), "--skip-bad: message not escaped or too long: \"%s\"", err ? err : "");
    free(out);
    free(err);
}

static void test_bad_input(const char *model, const mml_config_t *c) {
    char line[256];
    int n = snprintf(line, sizeof line, "%d,%d,%d\n", U[2], P[2], c->n_domains);
    check_bad_line(model, "domain n_domains", line, (size_t)n, "domain");
    n = snprintf(line, sizeof line, "%d,%d,-1\n", U[2], P[2]);
    check_bad_line(model, "domain -1", line, (size_t)n, "domain");
    /* a valid line up to a NUL, then junk: once read as the valid line */
    n = snprintf(line, sizeof line, "%d,%d,%dXjunk\n", U[2], P[2], D[2]);
    *strchr(line, 'X') = 0;
    check_bad_line(model, "NUL byte", line, (size_t)n, "\\x00");
    /* binary garbage, longer than any message should quote */
    char junk[1200];
    const char head[] = "\x01\x02\x1b[2J\xfe\xff\x7f";
    memcpy(junk, head, sizeof head - 1);
    memset(junk + sizeof head - 1, 'A', sizeof junk - sizeof head);
    junk[sizeof junk - 1] = '\n';
    check_bad_line(model, "binary garbage", junk, sizeof junk, "\\x1b[2J\\xfe\\xff\\x7f");

    mmlt_ctx = "--help";
    char out[1024];
    dpath(out, sizeof out, "help.txt");
    const char *ahelp[] = {"--help", NULL};
    int rc = mmlt_run(bindir, "moemlora-serve", ahelp, NULL, out, NULL);
    char *h = (char *)mmlt_read_file(out, NULL);
    CHECK(rc == 0 && h && strstr(h, "out-of-vocabulary") && strstr(h, "domain outside"),
          "--help does not say what unknown ids and domains get: \"%s\"", h ? h : "");
    free(h);
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
    int rc = mmlt_run(bindir, "moemlora-train", targs, NULL, NULL, err);
    CHECK(rc == 0, "moemlora-train exit %d", rc);
    if (rc) { char *e = (char *)mmlt_read_file(err, NULL); fprintf(stderr, "%s\n", e ? e : ""); free(e); return; }

    mml_model_t *m = NULL;
    CHECK_OK(mml_model_load(exp, &m));
    if (!m) return;
    write_requests(req, mml_model_config(m));
    static float want[N_ROWS];
    mml_batch_t b = mml_batch_paper(N_ROWS, U, P, D, NULL);
    as_served(m);
    CHECK(m->fold.ok, "the trained MoE-MLoRA model did not fold");
    CHECK_OK(mml_predict(m, &b, want));

    mmlt_ctx = "serve";
    const char *a2[] = {exp, "--threads", "2", NULL};
    serve_compare(a2, req, out, err, want, "serve export --threads 2");
    const char *a3[] = {ck, "--threads", "3", "--batch", "333", NULL};
    serve_compare(a3, req, out, err, want, "serve checkpoint --threads 3 --batch 333");
    const char *a1[] = {exp, "--batch", "1", NULL};
    serve_compare(a1, req, out, err, want, "serve --batch 1");
    /* bf16 inference: serve's answers are this process's bf16 predictions,
     * which differ from fp32's; a precision it does not know stops it */
    static float want_bf16[N_ROWS];
    CHECK_OK(mml_model_set_precision(m, MML_PRECISION_FP32, MML_PRECISION_BF16));
    as_served(m);
    CHECK_OK(mml_predict(m, &b, want_bf16));
    CHECK_OK(mml_model_set_precision(m, MML_PRECISION_FP32, MML_PRECISION_FP32));
    as_served(m);
    int moved = 0;
    for (int i = 0; i < N_ROWS; i++) moved += fabs((double)want_bf16[i] - want[i]) > 1e-6;
    CHECK(moved > 0, "bf16 predictions equal fp32's to 1e-6: bf16 did not run");
    const char *ab[] = {exp, "--threads", "2", "--infer-precision", "bf16", NULL};
    serve_compare(ab, req, out, err, want_bf16, "serve --infer-precision bf16 --threads 2");
    const char *abad[] = {exp, "--infer-precision", "fp16", NULL};
    rc = mmlt_run(bindir, "moemlora-serve", abad, req, out, err);
    char *perr = (char *)mmlt_read_file(err, NULL);
    CHECK(rc == 2 && perr && strstr(perr, "--infer-precision expects fp32 or bf16, got fp16"),
          "--infer-precision fp16: exit %d, message \"%s\"", rc, perr ? perr : "");
    free(perr);
    test_pipe(exp, want);
    test_pipe_stream(exp, req, want);
    test_bad_input(exp, mml_model_config(m));

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
    rc = mmlt_run(bindir, "moemlora-serve", a2, req, out, err);
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
    rc = mmlt_run(bindir, "moemlora-serve", askip, req, out, err);
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
    CHECK(mmlt_run(bindir, "moemlora-serve", anone, NULL, NULL, NULL) == 2, "no model: exit 2");
    const char *abadopt[] = {exp, "--threads", "0", NULL};
    CHECK(mmlt_run(bindir, "moemlora-serve", abadopt, NULL, NULL, NULL) == 2, "--threads 0: exit 2");
    const char *amissing[] = {"/nonexistent/model.mml", NULL};
    CHECK(mmlt_run(bindir, "moemlora-serve", amissing, NULL, NULL, err) == 1, "missing model: exit 1");
    const char *ahelp[] = {"--help", NULL};
    CHECK(mmlt_run(bindir, "moemlora-serve", ahelp, NULL, NULL, NULL) == 0, "--help: exit 0");

    /* serve-cpp */
    mmlt_ctx = "serve-cpp";
    char row[64];
    snprintf(row, sizeof row, "%d,%d,%d", U[0], P[0], D[0]);
    const char *acpp[] = {exp, row, NULL};
    rc = mmlt_run(bindir, "serve-cpp", acpp, NULL, out, err);
    o = (char *)mmlt_read_file(out, NULL);
    char expect[64];
    snprintf(expect, sizeof expect, "-> %.6f", want[0]);
    CHECK(rc == 0 && o && strstr(o, expect), "serve-cpp: exit %d, output \"%s\", expected \"%s\"", rc, o ? o : "",
          expect);
    free(o);
    const char *acppbad[] = {"/nonexistent/model.mml", NULL};
    rc = mmlt_run(bindir, "serve-cpp", acppbad, NULL, NULL, err);
    msg = (char *)mmlt_read_file(err, NULL);
    CHECK(rc == 1 && msg && strstr(msg, "cannot open"), "serve-cpp missing model: exit %d, \"%s\"", rc, msg ? msg : "");
    free(msg);
    mml_model_free(m);
}

/* ---- a model with a schema ---- */

/* A categorical field, a multi-hot list of 3, the domain and a numeric field. */
enum { SNF = 4, SML = 3, SN = 500 };
static void serve_schema(mml_schema_t *s) {
    static const char *const names[SNF] = {"user", "genres", "region", "price"};
    static const mml_field_kind kinds[SNF] = {MML_FIELD_CATEGORICAL, MML_FIELD_MULTI_HOT, MML_FIELD_CATEGORICAL,
                                              MML_FIELD_NUMERIC};
    static const int vocab[SNF] = {20, 8, 3, 0};
    mmlt_schema(s, SNF, 2, names, kinds, vocab, 0.1f);
    s->field[1].max_len = SML;
}

static int32_t s_user[SN], s_genres[SN * SML], s_region[SN];
static float s_price[SN];

/* Writes the requests with the columns in the order given (-1: the header
 * "order" names them; 0: no header). */
static void write_schema_requests(const char *path, const mml_schema_t *sc, const int *order, int header) {
    FILE *f = fopen(path, "w");
    if (header) {
        for (int j = 0; j < SNF; j++) fprintf(f, "%s%s", j ? "," : "", sc->field[order[j]].name);
        fputc('\n', f);
    }
    for (int i = 0; i < SN; i++) {
        for (int j = 0; j < SNF; j++) {
            int fi = order[j];
            if (j) fputc(',', f);
            if (fi == 0) fprintf(f, "%d", s_user[i]);
            else if (fi == 2) fprintf(f, "%d", s_region[i]);
            else if (fi == 3) fprintf(f, "%.9g", (double)s_price[i]);
            else
                for (int q = 0; q < SML && s_genres[i * SML + q] >= 0; q++)
                    fprintf(f, "%s%d", q ? (i % 7 == 2 ? " | " : "|") : "", s_genres[i * SML + q]);
        }
        fputs(i % 9 == 4 ? "\r\n" : "\n", f);
    }
    fclose(f);
}

/* The program's output against want[0, n) within 1e-6 (6 decimals). */
static void compare_n(const char *out, const float *want, int n_want, const char *what) {
    char *text = (char *)mmlt_read_file(out, NULL);
    int n = 0, bad = 0;
    char *save = NULL;
    for (char *line = text ? strtok_r(text, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save), n++) {
        char *end;
        double x = strtod(line, &end);
        if (*end || n >= n_want || !(fabs(x - want[n]) <= 1e-6)) bad++;
    }
    CHECK(text && n == n_want && bad == 0, "%s: %d lines of %d, %d differ", what, n, n_want, bad);
    free(text);
}

/* Runs moemlora-serve on the bytes in[0, n); exit code, stdout and stderr. */
static int serve_text(const char *model, const char *in, int skip_bad, char **out, char **err) {
    char req[1024], o[1024], e[1024];
    dpath(req, sizeof req, "s_req.csv");
    dpath(o, sizeof o, "s_out.txt");
    dpath(e, sizeof e, "s_err.txt");
    FILE *f = fopen(req, "wb");
    if (f) { fputs(in, f); fclose(f); }
    const char *a[] = {model, skip_bad ? "--skip-bad" : NULL, NULL};
    int rc = mmlt_run(bindir, "moemlora-serve", a, req, o, e);
    *out = (char *)mmlt_read_file(o, NULL);
    *err = (char *)mmlt_read_file(e, NULL);
    return rc;
}

/* Header errors stop before anything is scored (also with --skip-bad). */
static void check_bad_header(const char *model, const char *header, const char *reason) {
    char in[512];
    snprintf(in, sizeof in, "%s\n3,1|2,0,5.5\n", header);
    for (int skip = 0; skip < 2; skip++) {
        char *out, *err;
        int rc = serve_text(model, in, skip, &out, &err);
        CHECK(rc == 1 && out && !*out && err && strstr(err, "stdin:1: header:") && strstr(err, reason),
              "header \"%s\"%s: exit %d, output \"%s\", message \"%s\", expected \"%s\"", header, skip ? " --skip-bad" : "",
              rc, out ? out : "", err ? err : "", reason);
        if (!skip) printf("header \"%s\": exit %d, stderr: %s", header, rc, err ? err : "\n");
        free(out);
        free(err);
    }
}

/* Line 2 of three is bad: exit 1 and "stdin:2: <reason>" after one answer;
 * with --skip-bad a nan in its place. The good lines carry a header. */
static void check_bad_schema_line(const char *model, const char *bad, const char *reason) {
    char in[512];
    snprintf(in, sizeof in, "user,genres,region,price\n3,1|2,0,5.5\n%s\n4,,1,-2\n", bad);
    char *out, *err;
    int rc = serve_text(model, in, 0, &out, &err);
    CHECK(rc == 1 && count_lines(out) == 1 && err && strstr(err, "stdin:3:") && strstr(err, reason),
          "line \"%s\": exit %d, %d answers, message \"%s\", expected \"stdin:3:\" and \"%s\"", bad, rc, count_lines(out),
          err ? err : "", reason);
    printf("line \"%s\": exit %d, stderr: %s", bad, rc, err ? err : "\n");
    free(out);
    free(err);
    rc = serve_text(model, in, 1, &out, &err);
    CHECK(rc == 0 && count_lines(out) == 3 && out && strstr(out, "\nnan\n") && err && strstr(err, "warning: stdin:3:"),
          "line \"%s\" --skip-bad: exit %d, output \"%s\", message \"%s\"", bad, rc, out ? out : "", err ? err : "");
    free(out);
    free(err);
}

static void test_serve_schema(void) {
    mmlt_ctx = "serve schema";
    mml_schema_t sc;
    serve_schema(&sc);
    mml_config_t c;
    mml_config_default(&c);
    c.schema = &sc;
    c.adapter = MML_ADAPTER_MLORA;
    c.emb_dim = 4;
    mmlt_tower(&c, 16, 8);
    c.lora_reduce = 4;
    c.max_batch = 64;
    mml_model_t *m = make_model(&c);
    uint64_t r = 5;
    for (int i = 0; i < SN; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t x = (uint32_t)(r >> 33);
        s_user[i] = (int32_t)(x % 23); /* a few past the vocabulary: the OOV row */
        s_region[i] = (int32_t)((x >> 5) % 3);
        s_price[i] = (float)((x >> 9) % 1000) * 0.37f - 50.0f;
        int k = (int)((x >> 20) % (SML + 1));
        for (int q = 0; q < SML; q++) s_genres[i * SML + q] = q < k ? (int32_t)((x >> (q * 3 + 1)) % 10) : -1;
    }
    /* a few training steps move the adapters off their zero start */
    float lab[64];
    for (int i = 0; i < 64; i++) lab[i] = (float)((s_user[i] + s_region[i]) % 2);
    const int32_t *ids[SNF] = {s_user, s_genres, s_region, NULL};
    const float *vals[SNF] = {NULL, NULL, NULL, s_price};
    for (int k = 0; k < 5; k++) {
        mml_batch_t tb = {64, NULL, NULL, NULL, lab, ids, vals};
        for (int i = 0; i < 64; i++) /* ids past the vocabulary are not for training */
            if (s_user[i] >= 20 || s_genres[i * SML] >= 8 || s_genres[i * SML + 1] >= 8 || s_genres[i * SML + 2] >= 8) {
                tb.n = i;
                break;
            }
        if (tb.n > 0) CHECK_OK(mml_train_step(m, &tb, NULL));
    }
    char model[1024], req[1024], out[1024], err[1024];
    dpath(model, sizeof model, "schema.mml");
    dpath(req, sizeof req, "schema_req.csv");
    dpath(out, sizeof out, "schema_out.txt");
    dpath(err, sizeof err, "schema_err.txt");
    CHECK_OK(mml_model_export(m, model));
    static float want[SN];
    mml_batch_t b = {SN, NULL, NULL, NULL, NULL, ids, vals};
    as_served(m);
    CHECK_OK(mml_predict(m, &b, want));
    int distinct = 0;
    for (int i = 1; i < SN; i++) distinct += want[i] != want[0];
    CHECK(distinct > SN / 2, "the predictions hardly differ (%d of %d)", distinct, SN);

    static const int same[SNF] = {0, 1, 2, 3}, shuffled[SNF] = {3, 2, 0, 1};
    static const struct { const int *order; int header; const char *what; } runs[] = {
        {same, 0, "schema order"}, {same, 1, "schema order, header"}, {shuffled, 1, "header price,region,user,genres"}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        write_schema_requests(req, &sc, runs[i].order, runs[i].header);
        for (int t = 1; t <= 2; t++) {
            const char *a[] = {model, "--threads", t == 1 ? "1" : "2", "--batch", t == 1 ? "1024" : "77", NULL};
            int rc = mmlt_run(bindir, "moemlora-serve", a, req, out, err);
            char what[128];
            snprintf(what, sizeof what, "%s, %d thread%s", runs[i].what, t, t > 1 ? "s" : "");
            CHECK(rc == 0, "%s: exit %d", what, rc);
            compare_n(out, want, SN, what);
        }
    }
    /* --header: a first line of numbers is a header too */
    mml_schema_t num = sc;
    snprintf(num.field[0].name, sizeof num.field[0].name, "101");
    mml_config_t cn = c;
    cn.schema = &num;
    mml_model_t *mn = make_model(&cn);
    char nmodel[1024];
    dpath(nmodel, sizeof nmodel, "numeric_names.mml");
    CHECK_OK(mml_model_export(mn, nmodel));
    float w2[2];
    as_served(mn);
    CHECK_OK(mml_predict(mn, &(mml_batch_t){2, NULL, NULL, NULL, NULL, ids, vals}, w2));
    FILE *f = fopen(req, "w");
    fprintf(f, "price,region,101,genres\n");
    for (int i = 0; i < 2; i++) {
        fprintf(f, "%.9g,%d,%d,", (double)s_price[i], s_region[i], s_user[i]);
        for (int q = 0; q < SML && s_genres[i * SML + q] >= 0; q++) fprintf(f, "%s%d", q ? "|" : "", s_genres[i * SML + q]);
        fputc('\n', f);
    }
    fclose(f);
    const char *ah[] = {nmodel, "--header", NULL};
    CHECK(mmlt_run(bindir, "moemlora-serve", ah, req, out, err) == 0, "--header: exit status");
    compare_n(out, w2, 2, "--header with a field named 101");
    mml_model_free(mn);

    check_bad_header(model, "user,genres,region", "no column for the field \"price\"");
    check_bad_header(model, "user,genres,region,price,label", "unknown column \"label\"");
    check_bad_header(model, "user,genres,region,user", "column \"user\" given twice");
    check_bad_schema_line(model, "3,1|2,0", "got 3 columns, expected 4 (user,genres,region,price)");
    check_bad_schema_line(model, "3,1|2,0,5,9", "more than 4 columns");
    check_bad_schema_line(model, "3,1|2|3|4,0,5.5", "genres: more than 3 ids");
    check_bad_schema_line(model, "3,1|x,0,5.5", "genres: expected ids");
    check_bad_schema_line(model, "3,1||2,0,5.5", "genres: expected ids");
    check_bad_schema_line(model, "3,1|2|,0,5.5", "genres: expected ids");
    check_bad_schema_line(model, "3,1|-2,0,5.5", "genres: id -2 is negative");
    check_bad_schema_line(model, "3,1|2,0,cheap", "price: expected a number");
    check_bad_schema_line(model, "3,1|2,0,inf", "price: inf is not a finite number");
    check_bad_schema_line(model, "3,1|2,0,", "price: expected a number");
    check_bad_schema_line(model, "3.5,1|2,0,5.5", "user: expected an integer id");
    check_bad_schema_line(model, "3,1|2,3,5.5", "region (the domain) 3 outside 0..2");

    /* --help documents the input */
    char help[1024];
    dpath(help, sizeof help, "help_schema.txt");
    const char *ahelp[] = {"--help", NULL};
    mmlt_run(bindir, "moemlora-serve", ahelp, NULL, help, NULL);
    char *h = (char *)mmlt_read_file(help, NULL);
    CHECK(h && strstr(h, "schema's order") && strstr(h, "multi-hot") && strstr(h, "'|'") && strstr(h, "numeric") &&
              strstr(h, "Header") && strstr(h, "--header"),
          "--help does not document the schema input: \"%s\"", h ? h : "");
    free(h);
    mml_model_free(m);
    mmlt_ctx = "";
}

/* A version 1 file (the paper's layout, made by the version 1 writer) serves. */
static void test_serve_v1(void) {
    mmlt_ctx = "serve v1 fixture";
    char model[1024], req[1024], out[1024];
    snprintf(model, sizeof model, "%s/tests/corpus/fuzz_model/export_moe.mml", MOEMLORA_SOURCE_DIR);
    dpath(req, sizeof req, "v1_req.csv");
    dpath(out, sizeof out, "v1_out.txt");
    mml_model_t *m = NULL;
    CHECK_OK(mml_model_load(model, &m));
    if (!m) return;
    write_requests(req, mml_model_config(m));
    static float want[N_ROWS];
    as_served(m);
    CHECK_OK(mml_predict(m, &(mml_batch_t){N_ROWS, U, P, D, NULL, NULL, NULL}, want));
    const char *a[] = {model, "--threads", "2", NULL};
    CHECK(mmlt_run(bindir, "moemlora-serve", a, req, out, NULL) == 0, "exit status");
    compare_output(out, want, "version 1 fixture");
    mml_model_free(m);
    mmlt_ctx = "";
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
        int rc = mmlt_run(bindir, "moemlora-train", a, NULL, NULL, err);
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
    CHECK(mmlt_run(bindir, "moemlora-train", bad, NULL, NULL, NULL) == 2, "--paper criteo: exit 2");
}

int main(int argc, char **argv) {
    (void)argc;
    signal(SIGPIPE, SIG_IGN); /* a program that died shows as a failed write */
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
    test_serve_schema();
    test_serve_v1();
    test_paper();
    mmlt_rm_tree(dir);
    return mmlt_finish("test_serve");
}
