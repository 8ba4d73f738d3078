/* pop3_load: the load generator's check and drain scenarios in C, for the
 * benchmark only (loadgen.py --engine c runs it; nothing here is installed).
 *
 * Why: on a 2-core machine the load generator shares the cores with the
 * server it measures.  loadgen.py (Python, uvloop) spends ~0.2 ms of CPU
 * per check session and ~55 us per drained message, a third of a core or
 * more that neither server can use, and a whole core against the C ceiling
 * server.  This one does the same sessions and the same checks at a small
 * fraction of that, so a run measures the servers, not the client.
 *
 *   pop3_load PORT USERS SCENARIO CONCURRENCY DURATION MAX_SESSIONS TIMEOUT CRC
 *
 * USERS, written by loadgen.py from the corpus manifest: a line
 * "U name password count" per user, then "M uid size crc" per message.
 * SCENARIO: check (greeting, USER, PASS, STAT, UIDL, QUIT) or drain (the
 * same with LIST and a RETR of every message before QUIT).  Checks, as
 * loadgen.py's: STAT's count, every UIDL known, LIST's octets, each RETR's
 * octets after un-stuffing against LIST and (CRC 1) the CRC-32 of the
 * un-stuffed octets against the corpus.  Prints loadgen.py's result as JSON.
 * Only 127.0.0.1.  New sessions start until DURATION seconds have passed
 * or MAX_SESSIONS have started; the rest then get TIMEOUT seconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

typedef struct { char *uid; long size; unsigned long crc; } Msg;
typedef struct { char *name; char *password; int count; Msg *msgs; } User;

enum { S_GREETING, S_USER, S_PASS, S_STAT, S_UIDL, S_LIST, S_RETR, S_QUIT };
static const char *STAGE[] = {"greeting", "USER", "PASS", "STAT", "UIDL", "LIST", "RETR", "QUIT"};

typedef struct {
    int fd, active, state, user, retr, nlisted;
    char *buf; size_t len, cap, scan;
    long least;              /* octets the awaited body has at least */
    long *sizes;             /* LIST's sizes, by message number - 1 */
    Msg **bynum;             /* the corpus's message, by number - 1 (from UIDL) */
    double started, sent, pass_sent;
} Conn;

static User *users; static int nusers;
static int *free_q, q_head, q_len;
static int crc_check;
static long sessions_ok, sessions_failed, sessions_started, messages, octets;
static double *lat_session, *lat_open, *lat_uidl, *lat_retr;
static long n_session, n_open, n_uidl, n_retr, cap_session, cap_open, cap_uidl, cap_retr;
#define MAX_KINDS 32
static char *err_kind[MAX_KINDS]; static long err_count[MAX_KINDS]; static int n_kinds;
static char samples[20][300]; static int n_samples;
static double last_end;

static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void push(double **a, long *n, long *cap, double v) {
    if (*n == *cap) { *cap = *cap ? *cap * 2 : 4096; *a = realloc(*a, *cap * sizeof **a); }
    (*a)[(*n)++] = v;
}

static void error(const char *kind, const char *detail) {
    int i;
    for (i = 0; i < n_kinds && strcmp(err_kind[i], kind); i++) ;
    if (i == n_kinds && n_kinds < MAX_KINDS) err_kind[n_kinds++] = strdup(kind);
    if (i < MAX_KINDS) err_count[i]++;
    if (n_samples < 20) snprintf(samples[n_samples++], 300, "%s: %s", kind, detail);
}

static int cmp_uid(const void *a, const void *b) { return strcmp(((const Msg *)a)->uid, ((const Msg *)b)->uid); }

static Msg *find(User *u, const char *uid) {
    Msg key = {(char *)uid, 0, 0};
    return bsearch(&key, u->msgs, u->count, sizeof(Msg), cmp_uid);
}

static void load_users(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); exit(2); }
    char line[1024], a[512], b[512]; long size; unsigned long crc; int count, m = 0;
    User *u = NULL;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "U %511s %511s %d", a, b, &count) == 3) {
            users = realloc(users, (nusers + 1) * sizeof(User));
            u = &users[nusers++];
            u->name = strdup(a); u->password = strdup(b); u->count = count;
            u->msgs = calloc(count ? count : 1, sizeof(Msg)); m = 0;
        } else if (u && sscanf(line, "M %511s %ld %lu", a, &size, &crc) == 3 && m < u->count) {
            u->msgs[m].uid = strdup(a); u->msgs[m].size = size; u->msgs[m].crc = crc; m++;
            if (m == u->count) qsort(u->msgs, u->count, sizeof(Msg), cmp_uid);
        }
    }
    fclose(f);
}

static int ep;
static struct sockaddr_in target;

static void send_line(Conn *c, const char *fmt, const char *arg, int n) {
    char out[600]; int len;
    if (arg) len = snprintf(out, sizeof out, fmt, arg); else len = snprintf(out, sizeof out, fmt, n);
    c->sent = now();
    c->scan = 0;
    if (write(c->fd, out, len) != len) error("write", strerror(errno));
}

/* A user no session is using any more: free for the next session. */
static void give_back(int user) { free_q[(q_head + q_len++) % nusers] = user; }

static void finish(Conn *c, int ok) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    give_back(c->user);
    free(c->sizes); c->sizes = NULL;
    free(c->bynum); c->bynum = NULL;
    c->active = 0; c->len = 0;
    if (ok) {
        double t = now();
        sessions_ok++; last_end = t;
        push(&lat_session, &n_session, &cap_session, t - c->started);
    } else {
        sessions_failed++;
    }
}

static int start(Conn *c) {
    if (!q_len) return 0;
    c->user = free_q[q_head]; q_head = (q_head + 1) % nusers; q_len--;
    sessions_started++;
    c->started = now();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        error("connect", strerror(errno)); close(c->fd); c->fd = -1;
        give_back(c->user);
        sessions_failed++;
        return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->active = 1; c->state = S_GREETING; c->len = 0; c->scan = 0; c->least = 0; c->sent = c->started;
    return 1;
}

/* One reply complete?  Returns its length consumed (0: not yet); sets the
 * status line (NUL-terminated in place) and the body (still stuffed, with
 * its final CRLF, without the "." line). */
static size_t parse(Conn *c, int multi, char **status, char **body, size_t *body_len) {
    char *buf = c->buf, *eol = memmem(buf, c->len, "\r\n", 2);
    if (!eol) return 0;
    size_t e = eol - buf;
    *body = NULL; *body_len = 0; *status = buf;
    if (!multi || strncmp(buf, "+OK", 3)) { buf[e] = 0; return e + 2; }
    size_t start = e + 2;
    if (c->len >= start + 3 && !memcmp(buf + start, ".\r\n", 3)) {
        buf[e] = 0; *body = buf + start; return start + 3;
    }
    size_t from = start;
    if (c->scan > from) from = c->scan;
    if (c->least > 2 && start + c->least - 2 > from) from = start + c->least - 2;
    char *end = from < c->len ? memmem(buf + from, c->len - from, "\r\n.\r\n", 5) : NULL;
    if (!end) { c->scan = c->len > start + 4 ? c->len - 4 : start; return 0; }
    buf[e] = 0;
    *body = buf + start; *body_len = (end - buf) + 2 - start;
    return (end - buf) + 5;
}

/* The un-stuffed length and CRC-32 of a RETR body. */
static long unstuff(const char *body, size_t len, unsigned long *crc) {
    size_t pos = 0; long got = 0; unsigned long c = crc32(0L, Z_NULL, 0);
    if (len >= 2 && body[0] == '.' && body[1] == '.') pos = 1;
    while (pos < len) {
        const char *hit = memmem(body + pos, len - pos, "\r\n..", 4);
        size_t stop = hit ? (size_t)(hit - body) + 3 : len;  /* keep "\r\n.", skip the 2nd dot */
        if (crc_check) c = crc32(c, (const unsigned char *)body + pos, stop - pos);
        got += stop - pos;
        pos = hit ? stop + 1 : len;
    }
    *crc = c;
    return got;
}

static void advance(Conn *c, int drain) {
    for (;;) {
        int multi = c->state == S_UIDL || c->state == S_LIST || c->state == S_RETR;
        char *status, *body; size_t blen;
        size_t used = parse(c, multi, &status, &body, &blen);
        if (!used) return;
        double t = now();
        User *u = &users[c->user];
        char detail[200];
        if (strncmp(status, "+OK", 3)) {
            snprintf(detail, sizeof detail, "%s: %.150s", u->name, status);
            char kind[40];
            if (c->state == S_GREETING) snprintf(kind, sizeof kind, "greeting");
            else snprintf(kind, sizeof kind, "-ERR %s", STAGE[c->state]);
            error(kind, detail);
            finish(c, 0);
            return;
        }
        switch (c->state) {
        case S_GREETING: send_line(c, "USER %s\r\n", u->name, 0); c->state = S_USER; break;
        case S_USER: c->pass_sent = now(); send_line(c, "PASS %s\r\n", u->password, 0); c->state = S_PASS; break;
        case S_PASS: send_line(c, "STAT\r\n", NULL, 0); c->state = S_STAT; break;
        case S_STAT: {
            push(&lat_open, &n_open, &cap_open, t - c->pass_sent);
            int count = atoi(status + 4);
            if (count != u->count) {
                snprintf(detail, sizeof detail, "%s: STAT %d, corpus %d", u->name, count, u->count);
                error("stat-count", detail);
            }
            send_line(c, "UIDL\r\n", NULL, 0); c->state = S_UIDL; break;
        }
        case S_UIDL: {
            push(&lat_uidl, &n_uidl, &cap_uidl, t - c->pass_sent);
            long unknown = 0; char *p = body, *stop = body + blen;
            c->bynum = calloc(u->count + 1, sizeof(Msg *));
            while (p < stop) {
                char *nl = memmem(p, stop - p, "\r\n", 2); if (!nl) break;
                *nl = 0;
                char *sp = strchr(p, ' ');
                if (sp) {
                    char *colon = strchr(sp + 1, ':'); if (colon) *colon = 0;
                    Msg *m = find(u, sp + 1); long n = atol(p);
                    if (!m) unknown++;
                    else if (n >= 1 && n <= u->count) c->bynum[n - 1] = m;
                }
                p = nl + 2;
            }
            if (unknown) {
                snprintf(detail, sizeof detail, "%s: %ld UIDs not in the corpus", u->name, unknown);
                error("uidl-unknown", detail);
            }
            if (drain) {
                send_line(c, "LIST\r\n", NULL, 0); c->state = S_LIST;
            } else {
                send_line(c, "QUIT\r\n", NULL, 0); c->state = S_QUIT;
            }
            break;
        }
        case S_LIST: {
            c->sizes = calloc(u->count + 1, sizeof(long)); c->nlisted = 0;
            char *p = body, *stop = body + blen;
            while (p < stop) {
                char *nl = memmem(p, stop - p, "\r\n", 2); if (!nl) break;
                *nl = 0;
                long n, size;
                if (sscanf(p, "%ld %ld", &n, &size) == 2 && n >= 1 && n <= u->count) {
                    c->sizes[n - 1] = size; if (n > c->nlisted) c->nlisted = n;
                    Msg *m = c->bynum[n - 1];
                    if (m && m->size != size) {
                        snprintf(detail, sizeof detail, "%s msg %ld: LIST %ld, corpus %ld", u->name, n, size, m->size);
                        error("list-size", detail);
                    }
                }
                p = nl + 2;
            }
            c->retr = 1;
            if (c->nlisted) { c->least = c->sizes[0]; send_line(c, "RETR %d\r\n", NULL, 1); c->state = S_RETR; }
            else { send_line(c, "QUIT\r\n", NULL, 0); c->state = S_QUIT; }
            break;
        }
        case S_RETR: {
            push(&lat_retr, &n_retr, &cap_retr, t - c->sent);
            unsigned long crc; long got = unstuff(body, blen, &crc);
            long listed = c->sizes[c->retr - 1];
            if (got != listed) {
                snprintf(detail, sizeof detail, "msg %d: received %ld octets, LIST said %ld", c->retr, got, listed);
                error("retr-size", detail);
            }
            Msg *m = c->bynum[c->retr - 1];
            if (crc_check && m) {
                if (m->crc != crc) {
                    snprintf(detail, sizeof detail, "msg %d: content differs from the corpus", c->retr);
                    error("retr-crc", detail);
                }
            }
            messages++; octets += got;
            c->least = 0;
            if (++c->retr <= c->nlisted) {
                c->least = c->sizes[c->retr - 1];
                send_line(c, "RETR %d\r\n", NULL, c->retr);
            } else {
                send_line(c, "QUIT\r\n", NULL, 0); c->state = S_QUIT;
            }
            break;
        }
        case S_QUIT:
            finish(c, 1);
            return;
        }
        c->len -= used;
        if (c->len) memmove(c->buf, c->buf + used, c->len);
    }
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y);
}

static void pct(const char *key, double *v, long n, double p) {
    if (!n) { printf("\"%s\": null, ", key); return; }
    long i = (long)(p / 100 * (n - 1) + 0.5);
    printf("\"%s\": %.3f, ", key, v[i] * 1e3);
}

int main(int argc, char **argv) {
    if (argc != 9) { fprintf(stderr, "usage: pop3_load PORT USERS SCENARIO C DURATION MAX TIMEOUT CRC\n"); return 2; }
    int port = atoi(argv[1]); int drain = !strcmp(argv[3], "drain");
    if (!drain && strcmp(argv[3], "check")) { fprintf(stderr, "pop3_load: check or drain\n"); return 2; }
    int conc = atoi(argv[4]); double duration = atof(argv[5]);
    long max_sessions = atol(argv[6]); double timeout = atof(argv[7]); crc_check = atoi(argv[8]);
    load_users(argv[2]);
    if (!nusers) { fprintf(stderr, "pop3_load: no users\n"); return 2; }
    free_q = malloc(nusers * sizeof(int));
    for (int i = 0; i < nusers; i++) free_q[i] = i;
    q_len = nusers;
    if (conc > nusers) conc = nusers;
    target.sin_family = AF_INET; target.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &target.sin_addr);
    ep = epoll_create1(0);
    Conn *conns = calloc(conc, sizeof(Conn));
    for (int i = 0; i < conc; i++) { conns[i].cap = 1 << 16; conns[i].buf = malloc(conns[i].cap); }
    struct rusage r0, r1; getrusage(RUSAGE_SELF, &r0);
    double t0 = now(), deadline = t0 + duration; last_end = t0;
    struct epoll_event events[256];
    for (;;) {
        double t = now();
        int running = 0;
        for (int i = 0; i < conc; i++) {
            Conn *c = &conns[i];
            if (!c->active && t < deadline && sessions_started < max_sessions && q_len) start(c);
            running += c->active;
        }
        if (!running) break;
        int n = epoll_wait(ep, events, 256, 100);
        for (int i = 0; i < n; i++) {
            Conn *c = events[i].data.ptr;
            if (!c->active) continue;
            for (;;) {
                if (c->cap - c->len < 65536) { c->cap *= 2; c->buf = realloc(c->buf, c->cap); }
                size_t room = c->cap - c->len;
                ssize_t got = read(c->fd, c->buf + c->len, room);
                if (got > 0) {  /* a short read took all there was (epoll is level-triggered) */
                    c->len += got;
                    if ((size_t)got < room) break;
                    continue;
                }
                if (got < 0 && errno == EAGAIN) break;
                char detail[100];
                snprintf(detail, sizeof detail, "%s: in %s", users[c->user].name, STAGE[c->state]);
                error(got == 0 ? "eof" : errno == ECONNREFUSED ? "connect" : "reset", detail);
                finish(c, 0);
                break;
            }
            if (c->active) advance(c, drain);
        }
        t = now();
        for (int i = 0; i < conc; i++) {
            Conn *c = &conns[i];
            if (c->active && t - c->started > timeout) {
                char kind[40]; snprintf(kind, sizeof kind, "timeout in %s", STAGE[c->state]);
                error(kind, users[c->user].name);
                finish(c, 0);
            }
        }
    }
    getrusage(RUSAGE_SELF, &r1);
    double wall = last_end - t0; if (wall < 1e-9) wall = 1e-9;
    double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6
               + (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    qsort(lat_session, n_session, sizeof(double), cmp_d);
    qsort(lat_open, n_open, sizeof(double), cmp_d);
    qsort(lat_uidl, n_uidl, sizeof(double), cmp_d);
    qsort(lat_retr, n_retr, sizeof(double), cmp_d);
    printf("{\"scenario\": \"%s\", \"concurrency\": %d, \"wall_s\": %.4f, ", argv[3], conc, wall);
    printf("\"sessions_ok\": %ld, \"sessions_failed\": %ld, \"sessions_per_s\": %.3f, ",
           sessions_ok, sessions_failed, sessions_ok / wall);
    printf("\"messages\": %ld, \"messages_per_s\": %.3f, \"octets\": %ld, \"mb_per_s\": %.4f, \"deleted\": 0, ",
           messages, messages / wall, octets, octets / wall / 1e6);
    pct("session_p50_ms", lat_session, n_session, 50); pct("session_p99_ms", lat_session, n_session, 99);
    pct("open_p50_ms", lat_open, n_open, 50); pct("open_p99_ms", lat_open, n_open, 99);
    pct("uidl_p50_ms", lat_uidl, n_uidl, 50);
    pct("retr_p50_ms", lat_retr, n_retr, 50); pct("retr_p99_ms", lat_retr, n_retr, 99);
    printf("\"loadgen_cpu_s\": %.3f, \"loadgen_cpu_share\": %.4f, \"errors\": {", cpu, cpu / wall);
    for (int i = 0; i < n_kinds; i++) printf("%s\"%s\": %ld", i ? ", " : "", err_kind[i], err_count[i]);
    printf("}, \"error_samples\": [");
    for (int i = 0; i < n_samples; i++) {
        printf("%s\"", i ? ", " : "");
        for (char *p = samples[i]; *p; p++) if (*p != '"' && *p != '\\' && (unsigned char)*p >= 32) putchar(*p);
        printf("\"");
    }
    printf("]}\n");
    return 0;
}
