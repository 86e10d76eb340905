/* Helper for tests/it/tenancy.rs: real processes calling glibc's NSS (and so the module).
 *   cancel NAME          a thread inside getpwnam(NAME) is cancelled; prints "cleanup ran"
 *   idle PAUSE_MS NAMES  forks one child per name: it looks the name up and then idles;
 *                        prints each child's pid, then "ready"; kills them at EOF on stdin
 *   fork NAME N          a thread loops getpwnam(NAME) while the main thread forks N
 *                        children that each look NAME up; prints "failures=K"
 */
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile int cleaned = 0;
static void cleanup(void *arg) { (void)arg; cleaned = 1; }

static void *lookup_then_test(void *name) {
    pthread_cleanup_push(cleanup, NULL);
    struct passwd pw, *res = NULL;
    char buf[4096];
    getpwnam_r((const char *)name, &pw, buf, sizeof buf, &res);
    for (;;) pthread_testcancel(); /* cancelled here, after the module returned */
    pthread_cleanup_pop(0);
    return NULL;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static volatile int stop = 0;
static void *loop_lookups(void *name) {
    while (!stop) {
        struct passwd pw, *res = NULL;
        char buf[4096];
        getpwnam_r((const char *)name, &pw, buf, sizeof buf, &res);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "cancel")) {
        pthread_t t;
        pthread_create(&t, NULL, lookup_then_test, argv[2]);
        sleep_ms(150);
        pthread_cancel(t);
        void *ret;
        pthread_join(t, &ret);
        printf("%s\n", ret == PTHREAD_CANCELED && cleaned ? "cleanup ran" : "not cancelled");
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "idle")) {
        long pause_ms = atol(argv[2]);
        int n = argc - 3;
        pid_t *pids = calloc(n, sizeof *pids);
        for (int i = 0; i < n; i++) {
            int p[2];
            if (pipe(p) != 0) return 1;
            pid_t c = fork();
            if (c == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
                if (getppid() == 1) _exit(1);
                close(p[0]);
                struct passwd pw, *res = NULL;
                char buf[4096];
                getpwnam_r(argv[3 + i], &pw, buf, sizeof buf, &res);
                char ok = res ? 'y' : 'n';
                if (write(p[1], &ok, 1) != 1) _exit(1);
                for (;;) pause();
            }
            close(p[1]);
            char ok;
            if (read(p[0], &ok, 1) != 1) return 1;
            close(p[0]);
            pids[i] = c;
            printf("%d %c\n", (int)c, ok);
            fflush(stdout);
            sleep_ms(pause_ms);
        }
        printf("ready\n");
        fflush(stdout);
        char b[64];
        while (fread(b, 1, sizeof b, stdin) > 0) {}
        for (int i = 0; i < n; i++) kill(pids[i], SIGKILL);
        for (int i = 0; i < n; i++) waitpid(pids[i], NULL, 0);
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "fork")) {
        int n = atoi(argv[3]), failures = 0;
        pthread_t t[2];
        for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, loop_lookups, argv[2]);
        for (int i = 0; i < n; i++) {
            pid_t c = fork();
            if (c == 0) {
                alarm(5); /* a child stuck on a lock its parent's thread held dies here */
                for (int k = 0; k < 3; k++) {
                    struct passwd pw, *res = NULL;
                    char buf[4096];
                    if (getpwnam_r(argv[2], &pw, buf, sizeof buf, &res) != 0 || !res) _exit(2);
                }
                _exit(0);
            }
            int st = 0;
            waitpid(c, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failures++;
        }
        stop = 1;
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        printf("failures=%d\n", failures);
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top\n");
    return 2;
}
