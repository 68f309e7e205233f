/* Running the example programs from tests: one child with its stdin and
 * output redirected. Needs POSIX (fork, exec, waitpid). */
#ifndef MML_RUN_H
#define MML_RUN_H
#include <fcntl.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mml_test.h"

/* Starts exe with args (NULL-terminated), stdin from in, stdout to out,
 * stderr to err (NULL: /dev/null; err == out: both to one file, in order);
 * returns the child's pid, or -1 if fork failed. */
MMLT_UNUSED static pid_t mmlt_spawn(const char *exe, const char *const *args, const char *in, const char *out,
                                    const char *err) {
    const char *argv[40];
    int n = 0;
    argv[n++] = exe;
    for (int i = 0; args[i] && n < 39; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fi = open(in ? in : "/dev/null", O_RDONLY);
        int fo = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = err && err == out ? fo : open(err ? err : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fi >= 0) dup2(fi, 0);
        if (fo >= 0) dup2(fo, 1);
        if (fe >= 0) dup2(fe, 2);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Runs bindir/prog as mmlt_spawn does and waits for it; returns the exit
 * code, or -1 if it did not exit. */
MMLT_UNUSED static int mmlt_run(const char *bindir, const char *prog, const char *const *args, const char *in,
                                const char *out, const char *err) {
    char exe[1200];
    snprintf(exe, sizeof exe, "%s/%s", bindir, prog);
    pid_t pid = mmlt_spawn(exe, args, in, out, err);
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#endif
