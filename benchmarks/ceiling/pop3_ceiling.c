/* pop3_ceiling: a minimal POP3 server for the benchmark only.
 *
 * It answers what the load generator asks (CAPA, USER, PASS, STAT, UIDL,
 * LIST, RETR, DELE, NOOP, RSET, QUIT) for the benchmark corpus, with every
 * message already in memory in its wire form, so a run against it measures
 * what the kernel, loopback and the load generator allow on this machine:
 * the ceiling no POP3 server here can pass.  It does the same password work
 * as the servers it is compared with (SSHA512 with OpenSSL's SHA-512,
 * SHA512-CRYPT with libcrypt), and nothing else a real server does: no
 * locks, no disk, no logs, no TLS, no deletions (DELE only marks).
 *
 *   pop3_ceiling PORT MAILDIRS PASSWD WORKERS
 *
 * MAILDIRS/USER/Maildir/{cur,new} as benchmarks/corpus.py writes them; the
 * UIDL is the file's base name (up to ':'), as both real servers are
 * configured to show.  WORKERS processes share the listening socket, each
 * with an epoll loop of its own (EPOLLEXCLUSIVE), like popframe --workers
 * and Dovecot's process per connection share the two cores.
 *
 * Not part of popframe: nothing here is installed or imported.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <crypt.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    char *uid;
    char *wire;        /* "+OK ...\r\n" + stuffed body + ".\r\n" */
    size_t wire_len;
    size_t size;       /* octets as LIST reports them: CRLF, not stuffed */
} Message;

typedef struct {
    char *name;
    char *secret;      /* "{SCHEME}..." from the passwd-file */
    Message *messages;
    size_t count;
    size_t octets;
    char *uidl;        /* the whole UIDL reply */
    size_t uidl_len;
    char *list;        /* the whole LIST reply */
    size_t list_len;
} User;

static User *users;
static size_t user_count;

static void die(const char *what) { perror(what); exit(1); }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("malloc");
    return p;
}

typedef struct { char *p; size_t len, cap; } Buf;

static void buf_add(Buf *b, const char *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) die("realloc");
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void buf_printf(Buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_add(b, tmp, (size_t)n);
}

/* stored bytes -> (size as LIST says, wire form after the +OK line) */
static void wire_form(const char *data, size_t n, Buf *out, size_t *size) {
    size_t listed = 0;
    int line_start = 1;
    for (size_t i = 0; i < n; i++) {
        char c = data[i];
        if (line_start && c == '.') buf_add(out, ".", 1);
        line_start = 0;
        if (c == '\n') {
            if (i == 0 || data[i - 1] != '\r') { buf_add(out, "\r", 1); listed++; }
            line_start = 1;
        }
        buf_add(out, &c, 1);
        listed++;
    }
    if (n && data[n - 1] != '\n') { buf_add(out, "\r\n", 2); listed += 2; }
    buf_add(out, ".\r\n", 3);
    *size = listed;
}

static int by_uid(const void *a, const void *b) {
    return strcmp(((const Message *)a)->uid, ((const Message *)b)->uid);
}

static void load_dir(const char *path, Message **msgs, size_t *count, size_t *cap) {
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char file[4096];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        int fd = open(file, O_RDONLY);
        if (fd < 0) continue;
        struct stat st;
        fstat(fd, &st);
        char *data = xmalloc((size_t)st.st_size);
        size_t got = 0;
        while (got < (size_t)st.st_size) {
            ssize_t r = read(fd, data + got, (size_t)st.st_size - got);
            if (r <= 0) break;
            got += (size_t)r;
        }
        close(fd);
        Buf body = {0};
        size_t size;
        wire_form(data, got, &body, &size);
        free(data);
        Buf wire = {0};
        buf_printf(&wire, "+OK %zu octets\r\n", size);
        buf_add(&wire, body.p, body.len);
        free(body.p);
        if (*count == *cap) {
            *cap = *cap * 2 + 16;
            *msgs = realloc(*msgs, *cap * sizeof(Message));
        }
        Message *m = &(*msgs)[(*count)++];
        m->uid = strndup(e->d_name, strcspn(e->d_name, ":"));
        m->wire = wire.p;
        m->wire_len = wire.len;
        m->size = size;
    }
    closedir(d);
}

static void load(const char *maildirs, const char *passwd) {
    FILE *f = fopen(passwd, "r");
    if (!f) die(passwd);
    char line[4096];
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = 0;
        char *secret = colon + 1;
        secret[strcspn(secret, ":\n")] = 0;
        if (user_count == cap) {
            cap = cap * 2 + 16;
            users = realloc(users, cap * sizeof(User));
        }
        User *u = &users[user_count++];
        memset(u, 0, sizeof *u);
        u->name = strdup(line);
        u->secret = strdup(secret);
        size_t mcap = 0;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s/Maildir/cur", maildirs, u->name);
        load_dir(path, &u->messages, &u->count, &mcap);
        snprintf(path, sizeof path, "%s/%s/Maildir/new", maildirs, u->name);
        load_dir(path, &u->messages, &u->count, &mcap);
        qsort(u->messages, u->count, sizeof(Message), by_uid);
        Buf uidl = {0}, list = {0};
        buf_add(&uidl, "+OK\r\n", 5);
        buf_add(&list, "+OK\r\n", 5);
        for (size_t i = 0; i < u->count; i++) {
            u->octets += u->messages[i].size;
            buf_printf(&uidl, "%zu %s\r\n", i + 1, u->messages[i].uid);
            buf_printf(&list, "%zu %zu\r\n", i + 1, u->messages[i].size);
        }
        buf_add(&uidl, ".\r\n", 3);
        buf_add(&list, ".\r\n", 3);
        u->uidl = uidl.p; u->uidl_len = uidl.len;
        u->list = list.p; u->list_len = list.len;
    }
    fclose(f);
}

/* The same check the real servers make for the corpus's schemes. */
static int password_ok(const char *secret, const char *password) {
    if (strncmp(secret, "{SSHA512}", 9) == 0) {
        unsigned char raw[512];
        int n = EVP_DecodeBlock(raw, (const unsigned char *)secret + 9, (int)strlen(secret + 9));
        const char *end = secret + strlen(secret);
        while (end > secret && end[-1] == '=') { end--; n--; }
        if (n <= SHA512_DIGEST_LENGTH) return 0;
        size_t plen = strlen(password), slen = (size_t)n - SHA512_DIGEST_LENGTH;
        unsigned char *in = xmalloc(plen + slen), digest[SHA512_DIGEST_LENGTH];
        memcpy(in, password, plen);
        memcpy(in + plen, raw + SHA512_DIGEST_LENGTH, slen);
        SHA512(in, plen + slen, digest);
        free(in);
        return memcmp(digest, raw, SHA512_DIGEST_LENGTH) == 0;
    }
    if (strncmp(secret, "{SHA512-CRYPT}", 14) == 0) {
        struct crypt_data data;
        memset(&data, 0, sizeof data);
        const char *hash = crypt_r(password, secret + 14, &data);
        return hash && strcmp(hash, secret + 14) == 0;
    }
    if (strncmp(secret, "{PLAIN}", 7) == 0) return strcmp(secret + 7, password) == 0;
    return 0;
}

enum { AUTHORIZATION, TRANSACTION };

typedef struct { const char *p; size_t len; int owned; } Segment;

typedef struct {
    int fd, state;
    User *user;
    char in[1024];
    size_t in_len;
    Segment *out;
    size_t out_head, out_len, out_cap, out_off;
    int closing;
} Conn;

static void queue(Conn *c, const char *p, size_t len, int owned) {
    if (c->out_len == c->out_cap) {
        if (c->out_head) {
            memmove(c->out, c->out + c->out_head, (c->out_len - c->out_head) * sizeof(Segment));
            c->out_len -= c->out_head;
            c->out_head = 0;
        }
        if (c->out_len == c->out_cap) {
            c->out_cap = c->out_cap * 2 + 8;
            c->out = realloc(c->out, c->out_cap * sizeof(Segment));
        }
    }
    c->out[c->out_len++] = (Segment){p, len, owned};
}

static void reply(Conn *c, const char *text) { queue(c, text, strlen(text), 0); }

static void replyf(Conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void replyf(Conn *c, const char *fmt, ...) {
    char *s;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) die("vasprintf");
    queue(c, s, (size_t)n, 1);
}

static Message *message_arg(Conn *c, const char *arg) {
    char *end;
    long n = strtol(arg, &end, 10);
    if (end == arg || n < 1 || (size_t)n > c->user->count) {
        reply(c, "-ERR no such message\r\n");
        return NULL;
    }
    return &c->user->messages[n - 1];
}

static void command(Conn *c, char *line) {
    char *arg = strchr(line, ' ');
    if (arg) *arg++ = 0; else arg = "";
    for (char *p = line; *p; p++) if (*p >= 'a' && *p <= 'z') *p -= 32;
    if (!strcmp(line, "QUIT")) { reply(c, "+OK bye\r\n"); c->closing = 1; return; }
    if (!strcmp(line, "CAPA")) { reply(c, "+OK\r\nUSER\r\nUIDL\r\nTOP\r\nPIPELINING\r\n.\r\n"); return; }
    if (!strcmp(line, "NOOP") || !strcmp(line, "RSET")) { reply(c, "+OK\r\n"); return; }
    if (c->state == AUTHORIZATION) {
        if (!strcmp(line, "USER")) {
            c->user = NULL;
            for (size_t i = 0; i < user_count; i++)
                if (!strcmp(users[i].name, arg)) c->user = &users[i];
            reply(c, "+OK\r\n");
        } else if (!strcmp(line, "PASS") && c->user && password_ok(c->user->secret, arg)) {
            c->state = TRANSACTION;
            reply(c, "+OK logged in\r\n");
        } else {
            reply(c, "-ERR [AUTH] authentication failed\r\n");
        }
        return;
    }
    User *u = c->user;
    Message *m;
    if (!strcmp(line, "STAT")) replyf(c, "+OK %zu %zu\r\n", u->count, u->octets);
    else if (!strcmp(line, "UIDL") && !*arg) queue(c, u->uidl, u->uidl_len, 0);
    else if (!strcmp(line, "LIST") && !*arg) queue(c, u->list, u->list_len, 0);
    else if (!strcmp(line, "UIDL")) { if ((m = message_arg(c, arg))) replyf(c, "+OK %s %s\r\n", arg, m->uid); }
    else if (!strcmp(line, "LIST")) { if ((m = message_arg(c, arg))) replyf(c, "+OK %s %zu\r\n", arg, m->size); }
    else if (!strcmp(line, "RETR")) { if ((m = message_arg(c, arg))) queue(c, m->wire, m->wire_len, 0); }
    else if (!strcmp(line, "DELE")) { if (message_arg(c, arg)) reply(c, "+OK marked\r\n"); }
    else reply(c, "-ERR unknown command\r\n");
}

/* 1: all sent; 0: the kernel is full; -1: the connection is gone */
static int flush(Conn *c) {
    while (c->out_head < c->out_len) {
        struct iovec iov[64];
        int n = 0;
        for (size_t i = c->out_head; i < c->out_len && n < 64; i++, n++) {
            size_t skip = i == c->out_head ? c->out_off : 0;
            iov[n].iov_base = (void *)(c->out[i].p + skip);
            iov[n].iov_len = c->out[i].len - skip;
        }
        ssize_t sent = writev(c->fd, iov, n);
        if (sent < 0) return errno == EAGAIN ? 0 : -1;
        size_t left = (size_t)sent;
        while (left && c->out_head < c->out_len) {
            Segment *s = &c->out[c->out_head];
            size_t rest = s->len - c->out_off;
            if (left < rest) { c->out_off += left; left = 0; break; }
            left -= rest;
            if (s->owned) free((void *)s->p);
            c->out_head++;
            c->out_off = 0;
        }
    }
    c->out_head = c->out_len = 0;
    return 1;
}

static void drop(int epfd, Conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    for (size_t i = c->out_head; i < c->out_len; i++)
        if (c->out[i].owned) free((void *)c->out[i].p);
    free(c->out);
    free(c);
}

static void serve(int listener) {
    int epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev) < 0) die("epoll_ctl");
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        for (int i = 0; i < n; i++) {
            Conn *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    reply(c, "+OK ceiling ready\r\n");
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev);
                    if (flush(c) < 0) drop(epfd, c);
                }
                continue;
            }
            if (events[i].events & (EPOLLHUP | EPOLLERR)) { drop(epfd, c); continue; }
            int gone = 0;
            for (;;) {  /* edge-triggered: read until the kernel has nothing */
                if (flush(c) != 1) break;          /* replies first: back-pressure */
                if (c->closing) { gone = 1; break; }
                ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
                if (r == 0 || (r < 0 && errno != EAGAIN)) { gone = 1; break; }
                if (r < 0) break;
                c->in_len += (size_t)r;
                char *start = c->in, *nl;
                while (!c->closing && (nl = memchr(start, '\n', c->in_len - (size_t)(start - c->in)))) {
                    *nl = 0;
                    if (nl > start && nl[-1] == '\r') nl[-1] = 0;
                    command(c, start);
                    start = nl + 1;
                }
                c->in_len -= (size_t)(start - c->in);
                memmove(c->in, start, c->in_len);
                if (c->in_len == sizeof c->in) { gone = 1; break; }
            }
            if (gone) drop(epfd, c);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s PORT MAILDIRS PASSWD WORKERS\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    load(argv[2], argv[3]);
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  /* loopback only */
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, 1024) < 0) die("listen");
    int workers = atoi(argv[4]);
    for (int w = 1; w < workers; w++)
        if (fork() == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);  /* stop with the first */
            serve(listener);
        }
    serve(listener);
}
