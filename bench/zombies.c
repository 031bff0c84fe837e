/*
 * Orphan-reaping load for bench/run.sh.
 *
 *   zombies N [TIMEOUT_S]
 *
 * Runs as the init's only child. It forks a "spawner" that forks N
 * grandchildren, each of which calls _exit(0) at once; the spawner records
 * their PIDs in shared memory and exits without waiting for any of them, so
 * all N become orphans (zombies or soon-to-be zombies) of PID 1, which must
 * reap them. This process then waits until the init has reaped every one of
 * them (kill(pid, 0) fails with ESRCH only once a zombie is gone), and only
 * then exits: the init therefore cannot exit before it has done the work.
 *
 * Prints one line: fork_ms=... reap_ms=... orphans=...
 *   fork_ms  from before the first fork until the spawner was reaped
 *   reap_ms  from the spawner's exit until the last orphan was reaped
 * Exit 0 on success, 2 if orphans were left unreaped after TIMEOUT_S
 * (default 30), 3 if fewer than N forks succeeded, 64 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct orphan_list {
    long count;
    pid_t pids[];
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int still_exists(pid_t pid)
{
    /* A zombie still accepts signal 0; only a reaped PID gives ESRCH. */
    return !(kill(pid, 0) == -1 && errno == ESRCH);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s N [TIMEOUT_S]\n", argv[0]);
        return 64;
    }
    char *end = NULL;
    long n = strtol(argv[1], &end, 10);
    if (*end != '\0' || n < 1 || n > 1000000) {
        fprintf(stderr, "zombies: N must be an integer in 1..1000000\n");
        return 64;
    }
    double timeout_ms = 30000.0;
    if (argc == 3) {
        timeout_ms = strtod(argv[2], &end) * 1000.0;
        if (*end != '\0' || timeout_ms <= 0) {
            fprintf(stderr, "zombies: TIMEOUT_S must be a positive number\n");
            return 64;
        }
    }

    size_t bytes = sizeof(struct orphan_list) + (size_t)n * sizeof(pid_t);
    struct orphan_list *list = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (list == MAP_FAILED) {
        perror("zombies: mmap");
        return 1;
    }
    list->count = 0;

    double t_start = now_ms();
    pid_t spawner = fork();
    if (spawner < 0) {
        perror("zombies: fork spawner");
        return 1;
    }
    if (spawner == 0) {
        for (long i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid == 0)
                _exit(0);
            if (pid < 0) {
                perror("zombies: fork grandchild");
                break;
            }
            list->pids[i] = pid;
            list->count = i + 1;
        }
        /* Exit without waiting: every grandchild is orphaned to PID 1. */
        _exit(list->count == n ? 0 : 3);
    }

    int status = 0;
    while (waitpid(spawner, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("zombies: waitpid spawner");
            return 1;
        }
    }
    double t_orphaned = now_ms();
    long count = list->count;

    const struct timespec nap = {0, 100000}; /* 0.1 ms between checks */
    long next = 0;
    while (next < count) {
        if (!still_exists(list->pids[next])) {
            next++;
            continue;
        }
        if (now_ms() - t_orphaned > timeout_ms) {
            long left = 0;
            for (long i = next; i < count; i++)
                left += still_exists(list->pids[i]);
            fprintf(stderr, "zombies: %ld of %ld orphans still not reaped after %.0f s\n",
                    left, count, timeout_ms / 1000.0);
            return 2;
        }
        nanosleep(&nap, NULL);
    }
    double t_done = now_ms();

    printf("fork_ms=%.3f reap_ms=%.3f orphans=%ld\n", t_orphaned - t_start,
           t_done - t_orphaned, count);
    fflush(stdout);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || count != n) {
        fprintf(stderr, "zombies: only %ld of %ld forks succeeded\n", count, n);
        return 3;
    }
    return 0;
}
