/* Helper for tests/it/tenancy.rs: real processes calling glibc's NSS (and so the module).
 *   cancel NAME          a thread inside getpwnam(NAME) is cancelled; prints "cleanup ran"
 *   idle PAUSE_MS NAMES  forks one child per name: it looks the name up and then idles;
 *                        prints each child's pid, then "ready"; kills them at EOF on stdin
 *   fork NAME N [ent]    two threads loop getpwnam(NAME) (with `ent`, one loops
 *                        setpwent/getpwent/endpwent instead) while the main thread forks N
 *                        children: each checks that it inherited no connection to the
 *                        daemon, looks NAME up 3 times and (`ent`) enumerates through the
 *                        module; prints "failures=K", and on stderr which child and lookup
 *                        failed and how (rc, errno, the module's status, time taken)
 *   every NAME MS N      looks NAME up N times, MS apart; prints "pid P" first, then for
 *                        each lookup "ok|fail SOCKETS T": the connections to the daemon
 *                        this process holds afterwards, and ms since the first lookup
 */
#include <dirent.h>
#include <execinfo.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
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

/* Sockets of this process connected to the daemon: their peer is bound in TOOLFORGE_NSS_DIR
 * (under a temporary name the daemon renames to `socket`). glibc's own attempts to reach
 * nscd are other, unconnected sockets. */
static int module_sockets(void) {
    const char *dir = getenv("TOOLFORGE_NSS_DIR");
    char prefix[108];
    if (!dir || snprintf(prefix, sizeof prefix, "%s/", dir) >= (int)sizeof prefix) return 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        struct sockaddr_un peer;
        socklen_t len = sizeof peer;
        memset(&peer, 0, sizeof peer);
        if (e->d_name[0] == '.' || fd == dirfd(d)) continue;
        if (getpeername(fd, (struct sockaddr *)&peer, &len) == 0 && peer.sun_family == AF_UNIX &&
            !strncmp(peer.sun_path, prefix, strlen(prefix))) {
            n++;
        }
    }
    closedir(d);
    return n;
}

typedef int (*getpwnam_fn)(const char *, struct passwd *, char *, size_t, int *);
typedef int (*setpwent_fn)(int);
typedef int (*getpwent_fn)(struct passwd *, char *, size_t, int *);

/* A function of the module (loaded by glibc before any fork here), or NULL. */
static void *module_fn(const char *name) {
    void *h = dlopen("libnss_toolforge.so.2", RTLD_LAZY | RTLD_NOLOAD);
    return h ? dlsym(h, name) : NULL;
}

#define STATUSES "(1 success, 0 notfound, -1 unavail, -2 tryagain)"

/* The module's own answer (status and errno), asked directly: says why a lookup failed. */
static void module_says(const char *name) {
    getpwnam_fn f = (getpwnam_fn)module_fn("_nss_toolforge_getpwnam_r");
    if (!f) {
        dprintf(2, "  the module is not loaded\n");
        return;
    }
    struct passwd pw;
    char buf[4096];
    int err = 0;
    int status = f(name, &pw, buf, sizeof buf, &err);
    dprintf(2, "  asked again, the module says status=%d " STATUSES " errno=%d (%s)\n", status,
            err, strerror(err));
}

/* The module's enumeration, called directly (glibc's own getpwent lock is not reset in a
 * child): the first entry after setpwent, or a message on stderr and -1. */
static int module_enumerates(int child) {
    setpwent_fn set = (setpwent_fn)module_fn("_nss_toolforge_setpwent");
    getpwent_fn get = (getpwent_fn)module_fn("_nss_toolforge_getpwent_r");
    setpwent_fn end = (setpwent_fn)module_fn("_nss_toolforge_endpwent");
    if (!set || !get || !end) {
        dprintf(2, "child %d: the module is not loaded\n", child);
        return -1;
    }
    struct passwd pw;
    char buf[4096];
    int err = 0;
    int st0 = set(0);
    int st1 = get(&pw, buf, sizeof buf, &err);
    end(0);
    if (st0 != 1 || st1 != 1) {
        dprintf(2, "child %d: setpwent status=%d, getpwent_r status=%d " STATUSES " errno=%d (%s)\n",
                child, st0, st1, err, strerror(err));
        return -1;
    }
    return 0;
}

/* A child still looking up when its alarm rings: where it is stuck, then exit 4. */
static void stuck(int sig) {
    (void)sig;
    void *frames[64];
    int n = backtrace(frames, 64);
    dprintf(2, "a child is stuck; its stack:\n");
    backtrace_symbols_fd(frames, n, 2);
    _exit(4);
}

static volatile int stop = 0;
static volatile int parent_failures = 0;

static void parent_failed(const char *what, int rc) {
    if (__sync_fetch_and_add(&parent_failures, 1) < 5)
        dprintf(2, "parent thread: %s: rc=%d (%s)\n", what, rc, strerror(rc));
}

static void *loop_lookups(void *name) {
    while (!stop) {
        struct passwd pw, *res = NULL;
        char buf[4096];
        int rc = getpwnam_r((const char *)name, &pw, buf, sizeof buf, &res);
        if (rc != 0 || !res) parent_failed("getpwnam_r found nothing", rc);
    }
    return NULL;
}

static void *loop_enumerations(void *unused) {
    (void)unused;
    while (!stop) {
        struct passwd pw, *res = NULL;
        char buf[4096];
        int n = 0, rc;
        setpwent();
        while ((rc = getpwent_r(&pw, buf, sizeof buf, &res)) == 0 && res) n++;
        endpwent();
        if (n == 0) parent_failed("getpwent_r listed nothing", rc);
    }
    return NULL;
}

/* fork mode, in the child: no socket of the parent's, NAME found 3 times, and with `ent` the
 * module enumerates. Exit 0 when all is well. */
static int child_checks(int i, const char *name, int ent) {
    int leaked = module_sockets();
    if (leaked) {
        dprintf(2, "child %d: %d socket(s) of the parent's inherited open\n", i, leaked);
        return 3;
    }
    for (int k = 0; k < 3; k++) {
        struct passwd pw, *res = NULL;
        char buf[4096];
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        errno = 0;
        int rc = getpwnam_r(name, &pw, buf, sizeof buf, &res);
        int e = errno;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc != 0 || !res) {
            long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
            dprintf(2, "child %d lookup %d of %s: getpwnam_r rc=%d (%s) errno=%d (%s), %s, after %ld ms\n",
                    i, k, name, rc, strerror(rc), e, strerror(e), res ? "found" : "nothing", ms);
            module_says(name);
            return 2;
        }
    }
    if (ent && module_enumerates(i) != 0) return 5;
    return 0;
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
        int n = atoi(argv[3]), failures = 0, ent = argc >= 5 && !strcmp(argv[4], "ent");
        /* NSS and the module loaded before any thread runs: a fork while another thread is
         * inside dlopen leaves the child a half-loaded object (glibc resets the loader's lock
         * in the child), which is glibc's limit, not the module's. */
        struct passwd pw, *res = NULL;
        char buf[4096];
        if (getpwnam_r(argv[2], &pw, buf, sizeof buf, &res) != 0 || !res) {
            fprintf(stderr, "the first lookup of %s found nothing\n", argv[2]);
            return 1;
        }
        void *warm[1];
        backtrace(warm, 1); /* loads libgcc_s now, not in a signal handler */
        signal(SIGALRM, stuck);
        fflush(NULL); /* nothing buffered is inherited and printed twice */
        pthread_t t[2];
        pthread_create(&t[0], NULL, loop_lookups, argv[2]);
        pthread_create(&t[1], NULL, ent ? loop_enumerations : loop_lookups, argv[2]);
        for (int i = 0; i < n; i++) {
            pid_t c = fork();
            if (c == 0) {
                alarm(30); /* well past the lookups' budget: a child stuck on a lock dies here */
                _exit(child_checks(i, argv[2], ent));
            }
            int st = 0;
            waitpid(c, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                failures++;
                if (WIFSIGNALED(st)) fprintf(stderr, "child %d: killed by signal %d\n", i, WTERMSIG(st));
            }
        }
        stop = 1;
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        if (parent_failures) fprintf(stderr, "parent_failures=%d\n", parent_failures);
        printf("failures=%d\n", failures);
        return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "every")) {
        long pause_ms = atol(argv[3]);
        int n = atoi(argv[4]);
        struct timespec t0, t;
        printf("pid %d\n", (int)getpid());
        fflush(stdout);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < n; i++) {
            if (i) sleep_ms(pause_ms);
            struct passwd pw, *res = NULL;
            char buf[4096];
            int rc = getpwnam_r(argv[2], &pw, buf, sizeof buf, &res);
            clock_gettime(CLOCK_MONOTONIC, &t);
            long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
            printf("%s %d %ld\n", rc == 0 && res ? "ok" : "fail", module_sockets(), ms);
            fflush(stdout);
        }
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top\n");
    return 2;
}
