/* Spawn timing for bench/run.sh: runs each command RUNS times, round robin
 * (command 1, 2, ..., n, then 1 again), so that drifting load on a shared
 * machine lands on every command alike, and prints one line per command:
 * the median wall time in ms, then the command.
 *
 *   spawn RUNS WARMUP 'CMD ARGS...' 'VAR=VALUE CMD ARGS...' ...
 *
 * A command is split on spaces; leading VAR=VALUE words are added to its
 * environment. Its stdout and stderr go to /dev/null. Exits 1 when a run
 * fails to start or exits non-zero. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct cmd {
    char *text;
    char *argv[64];
    char **envp;
    double *ms;
};

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int parse(struct cmd *c, const char *text) {
    size_t env_count = 0, extra = 0, argc = 0;
    while (environ[env_count]) env_count++;
    c->text = strdup(text);
    char *copy = strdup(text), *save = NULL;
    char **added = calloc(64, sizeof *added);
    if (!c->text || !copy || !added) return -1;
    for (char *word = strtok_r(copy, " ", &save); word; word = strtok_r(NULL, " ", &save)) {
        if (argc == 0 && strchr(word, '=') && extra < 63) added[extra++] = word;
        else if (argc < 63) c->argv[argc++] = word;
    }
    c->argv[argc] = NULL;
    c->envp = calloc(env_count + extra + 1, sizeof *c->envp);
    if (!c->envp || argc == 0) return -1;
    size_t k = 0;
    for (size_t i = 0; i < extra; i++) c->envp[k++] = added[i];
    for (size_t i = 0; i < env_count; i++) {
        int overridden = 0; /* a variable set on the command line replaces ours */
        for (size_t j = 0; j < extra; j++) {
            size_t len = strcspn(added[j], "=") + 1;
            if (strncmp(environ[i], added[j], len) == 0) overridden = 1;
        }
        if (!overridden) c->envp[k++] = environ[i];
    }
    c->envp[k] = NULL;
    return 0;
}

static int run_once(struct cmd *c, posix_spawn_file_actions_t *fa, double *ms) {
    pid_t pid;
    int status;
    double start = now_ms();
    if (posix_spawn(&pid, c->argv[0], fa, NULL, c->argv, c->envp) != 0) return -1;
    if (waitpid(pid, &status, 0) != pid) return -1;
    *ms = now_ms() - start;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: spawn RUNS WARMUP 'CMD ARGS...'...\n");
        return 2;
    }
    int runs = atoi(argv[1]), warmup = atoi(argv[2]), n = argc - 3;
    struct cmd *cmds = calloc(n, sizeof *cmds);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (!cmds || runs < 1) return 2;
    for (int i = 0; i < n; i++) {
        cmds[i].ms = calloc(runs, sizeof(double));
        if (!cmds[i].ms || parse(&cmds[i], argv[3 + i]) != 0) {
            fprintf(stderr, "spawn: cannot parse '%s'\n", argv[3 + i]);
            return 2;
        }
    }
    for (int r = -warmup; r < runs; r++) {
        for (int i = 0; i < n; i++) {
            double ms;
            if (run_once(&cmds[i], &fa, &ms) != 0) {
                fprintf(stderr, "spawn: '%s' failed\n", cmds[i].text);
                return 1;
            }
            if (r >= 0) cmds[i].ms[r] = ms;
        }
    }
    for (int i = 0; i < n; i++) {
        qsort(cmds[i].ms, runs, sizeof(double), by_value);
        double median = runs % 2 ? cmds[i].ms[runs / 2]
                                 : (cmds[i].ms[runs / 2 - 1] + cmds[i].ms[runs / 2]) / 2;
        printf("%.4f %s\n", median, cmds[i].text);
    }
    return 0;
}
