/* pop3_transaction.c: issue 18's prototype of "a compiled hot path".
 *
 * For the benchmark only: nothing here is installed or imported by popframe.
 * benchmarks/ceiling/popframe_compiled.py loads it (servers.py compiles it
 * against the interpreter that runs the prototype).
 *
 * After a login, popframe's protocol makes a Transaction of the connection's
 * socket and its session's listing and lets the reactor call its step()
 * instead of the connection's doRead: step() reads what the client sent
 * and answers STAT, LIST, UIDL and RETR of wire-ready files (one open,
 * read, close and sendmsg each) in C, on the reactor's thread, without
 * entering Python again, until a command it does not take (QUIT, DELE,
 * TOP, anything malformed or out of range: the Python core decides those,
 * with its own replies), the end of the input, an error, or a reply the
 * socket did not take whole.  Then it returns (pending, retrieved, unsent)
 * and popframe takes the connection back.  The replies are the
 * session's own texts (English).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define LINE_MAX_OCTETS 255
#define BIGGEST_RETR (4 << 20) /* longer messages stream through popframe */

typedef struct {
    PyObject_HEAD
    int fd;
    Py_ssize_t n;
    char **paths; /* NULL: not wire-ready, or not where listed */
    long long *sizes;
    char **uids;
    unsigned char *deleted;
    Py_ssize_t count;
    long long octets;
    char in[1024];
    size_t inlen;
    Py_ssize_t *retrieved;
    Py_ssize_t nretrieved;
    char *buf;
    size_t bufcap;
    char *unsent; /* what the socket did not take of the last reply */
    size_t nunsent;
} Txn;

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 65536;
    while (c < need) c *= 2;
    char *b = realloc(*buf, c);
    if (b == NULL) return -1;
    *buf = b;
    *cap = c;
    return 0;
}

/* One sendmsg; what it does not take is kept in t->unsent (the reactor
 * then writes it, with Twisted's back-pressure).  -1: the socket failed. */
static int send_iov(Txn *t, struct iovec *iov, int cnt) {
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = cnt;
    ssize_t s;
    do s = sendmsg(t->fd, &m, MSG_NOSIGNAL);
    while (s < 0 && errno == EINTR);
    if (s < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        s = 0;
    }
    size_t left = 0;
    for (int i = 0; i < cnt; i++) left += iov[i].iov_len;
    left -= (size_t)s;
    if (left == 0) return 0;
    t->unsent = malloc(left);
    if (t->unsent == NULL) return -1;
    for (int i = 0; i < cnt; i++) {
        size_t l = iov[i].iov_len;
        if ((size_t)s >= l) {
            s -= (ssize_t)l;
            continue;
        }
        memcpy(t->unsent + t->nunsent, (char *)iov[i].iov_base + s, l - (size_t)s);
        t->nunsent += l - (size_t)s;
        s = 0;
    }
    return 0;
}

static int send_buf(Txn *t, const char *data, size_t len) {
    struct iovec v = {(void *)data, len};
    return send_iov(t, &v, 1);
}

/* "KW" or "KW N" with N a message that exists and is not deleted: the
 * keyword in kw, N in *number (0: none).  0 for anything else. */
static int parse(const char *line, size_t len, char kw[5], Py_ssize_t n,
                 const unsigned char *deleted, Py_ssize_t *number) {
    if (len < 4) return 0;
    for (int i = 0; i < 4; i++) {
        char c = line[i];
        if (c >= 'a' && c <= 'z') c -= 32;
        if (c < 'A' || c > 'Z') return 0;
        kw[i] = c;
    }
    kw[4] = 0;
    *number = 0;
    if (len == 4) return 1;
    if (line[4] != ' ' || len > 4 + 1 + 9) return 0;
    long long v = 0;
    for (size_t i = 5; i < len; i++) {
        if (line[i] < '0' || line[i] > '9') return 0;
        v = v * 10 + (line[i] - '0');
    }
    if (len == 5 || v < 1 || v > n || deleted[v - 1]) return 0;
    *number = (Py_ssize_t)v;
    return 1;
}

static int listing(Txn *t, int uidl) {
    size_t need = 64;
    for (Py_ssize_t i = 0; i < t->n; i++) need += 24 + (uidl ? strlen(t->uids[i]) : 20);
    if (grow(&t->buf, &t->bufcap, need + 4) < 0) return -1;
    size_t at = uidl ? (size_t)sprintf(t->buf, "+OK unique-id listing follows\r\n")
                     : (size_t)sprintf(t->buf, "+OK %zd messages (%lld octets)\r\n", t->count, t->octets);
    for (Py_ssize_t i = 0; i < t->n; i++) {
        if (t->deleted[i]) continue;
        at += uidl ? (size_t)sprintf(t->buf + at, "%zd %s\r\n", i + 1, t->uids[i])
                   : (size_t)sprintf(t->buf + at, "%zd %lld\r\n", i + 1, t->sizes[i]);
    }
    memcpy(t->buf + at, ".\r\n", 3);
    return send_buf(t, t->buf, at + 3);
}

static int retr(Txn *t, Py_ssize_t number) {
    Py_ssize_t i = number - 1;
    long long size = t->sizes[i];
    if (t->paths[i] == NULL || size > BIGGEST_RETR) return 0;
    int f = open(t->paths[i], O_RDONLY | O_CLOEXEC);
    if (f < 0) return 0;
    if (grow(&t->buf, &t->bufcap, (size_t)size + 1) < 0) {
        close(f);
        return -1;
    }
    long long got = 0;
    while (got <= size) { /* one octet more than listed: a changed file goes back */
        ssize_t r = read(f, t->buf + got, (size_t)(size + 1 - got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += r;
    }
    close(f);
    if (got != size) return 0;
    char head[48];
    int hl = snprintf(head, sizeof head, "+OK %lld octets\r\n", size);
    struct iovec v[3] = {{head, (size_t)hl}, {t->buf, (size_t)size}, {".\r\n", 3}};
    if (send_iov(t, v, 3) < 0) return -1;
    t->retrieved[t->nretrieved++] = i;
    return 1;
}

/* 1: answered; 0: not ours (popframe answers it); -1: the socket failed. */
static int handle(Txn *t, const char *line, size_t len) {
    char kw[5];
    Py_ssize_t number;
    char out[128];
    if (!parse(line, len, kw, t->n, t->deleted, &number)) return 0;
    if (!strcmp(kw, "RETR")) return number ? retr(t, number) : 0;
    if (!strcmp(kw, "STAT") && !number) {
        int l = snprintf(out, sizeof out, "+OK %zd %lld\r\n", t->count, t->octets);
        return send_buf(t, out, (size_t)l) < 0 ? -1 : 1;
    }
    if (!strcmp(kw, "LIST") || !strcmp(kw, "UIDL")) {
        int uidl = kw[0] == 'U';
        if (!number) return listing(t, uidl) < 0 ? -1 : 1;
        int l = uidl ? snprintf(out, sizeof out, "+OK %zd %s\r\n", number, t->uids[number - 1])
                     : snprintf(out, sizeof out, "+OK %zd %lld\r\n", number, t->sizes[number - 1]);
        return send_buf(t, out, (size_t)l) < 0 ? -1 : 1;
    }
    return 0;
}

/* What popframe takes back: (pending input, retrieved indexes, unsent
 * output).  Why does not matter to it: its own doRead and core meet the
 * end of the input, an error or the command again. */
static PyObject *give_back(Txn *t) {
    PyObject *done = PyList_New(t->nretrieved);
    if (done == NULL) return NULL;
    for (Py_ssize_t i = 0; i < t->nretrieved; i++)
        PyList_SET_ITEM(done, i, PyLong_FromSsize_t(t->retrieved[i]));
    t->nretrieved = 0;
    PyObject *r = Py_BuildValue("y#Ny#", t->in, (Py_ssize_t)t->inlen, done,
                                t->unsent ? t->unsent : "", (Py_ssize_t)t->nunsent);
    t->inlen = 0;
    free(t->unsent);
    t->unsent = NULL;
    t->nunsent = 0;
    return r;
}

/* step(input): serve input (what Twisted read) or, with none, one read of
 * the socket (the reactor saw it readable); None until the client's next
 * line (epoll is level-triggered), else give_back(). */
static PyObject *txn_step(Txn *t, PyObject *arg) {
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(arg, &data, &len) < 0) return NULL;
    if ((size_t)len > sizeof t->in - t->inlen) {
        PyErr_SetString(PyExc_ValueError, "input over 1 KiB");
        return NULL;
    }
    memcpy(t->in + t->inlen, data, (size_t)len);
    t->inlen += (size_t)len;
    int may_read = len == 0;
    for (;;) {
        char *eol = memmem(t->in, t->inlen, "\r\n", 2);
        if (eol == NULL) {
            if (t->inlen > LINE_MAX_OCTETS) return give_back(t);
            if (!may_read) Py_RETURN_NONE;
            may_read = 0;
            ssize_t got;
            do got = recv(t->fd, t->in + t->inlen, sizeof t->in - t->inlen, 0);
            while (got < 0 && errno == EINTR);
            if (got == 0) return give_back(t);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) Py_RETURN_NONE;
                return give_back(t);
            }
            t->inlen += (size_t)got;
            continue;
        }
        size_t line = (size_t)(eol - t->in);
        int h = handle(t, t->in, line);
        if (h == 0) return give_back(t);
        if (h < 0) return give_back(t);
        t->inlen -= line + 2;
        memmove(t->in, eol + 2, t->inlen);
        if (t->unsent != NULL) return give_back(t);
    }
}

static void txn_dealloc(Txn *t) {
    for (Py_ssize_t i = 0; i < t->n; i++) {
        if (t->paths) free(t->paths[i]);
        if (t->uids) free(t->uids[i]);
    }
    free(t->paths);
    free(t->uids);
    free(t->sizes);
    free(t->deleted);
    free(t->retrieved);
    free(t->buf);
    free(t->unsent);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static char *copy_bytes(PyObject *o) {
    char *s;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(o, &s, &len) < 0) return NULL;
    char *c = malloc((size_t)len + 1);
    if (c == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(c, s, (size_t)len);
    c[len] = 0;
    return c;
}

/* Transaction(fd, paths, sizes, uids, deleted): paths a list of bytes or
 * None per message, sizes ints, uids bytes, deleted a bytes of 0/1 per
 * message. */
static int txn_init(Txn *t, PyObject *args, PyObject *kwds) {
    PyObject *paths, *sizes, *uids;
    Py_buffer deleted;
    if (!PyArg_ParseTuple(args, "iO!O!O!y*", &t->fd, &PyList_Type, &paths, &PyList_Type, &sizes,
                          &PyList_Type, &uids, &deleted))
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(paths);
    if (t->paths != NULL || PyList_GET_SIZE(sizes) != n || PyList_GET_SIZE(uids) != n || deleted.len != n) {
        PyBuffer_Release(&deleted);
        PyErr_SetString(PyExc_ValueError, "once, with one entry per message in each list");
        return -1;
    }
    t->n = n;
    t->paths = calloc((size_t)n + 1, sizeof(char *));
    t->uids = calloc((size_t)n + 1, sizeof(char *));
    t->sizes = calloc((size_t)n + 1, sizeof(long long));
    t->deleted = calloc((size_t)n + 1, 1);
    t->retrieved = calloc((size_t)n + 1, sizeof(Py_ssize_t));
    if (!t->paths || !t->uids || !t->sizes || !t->deleted || !t->retrieved) {
        PyBuffer_Release(&deleted);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(t->deleted, deleted.buf, (size_t)n);
    PyBuffer_Release(&deleted);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(paths, i);
        if (p != Py_None && (t->paths[i] = copy_bytes(p)) == NULL) return -1;
        if ((t->uids[i] = copy_bytes(PyList_GET_ITEM(uids, i))) == NULL) return -1;
        t->sizes[i] = PyLong_AsLongLong(PyList_GET_ITEM(sizes, i));
        if (t->sizes[i] == -1 && PyErr_Occurred()) return -1;
        if (!t->deleted[i]) {
            t->count++;
            t->octets += t->sizes[i];
        }
    }
    return 0;
}

static PyMethodDef txn_methods[] = {
    {"step", (PyCFunction)txn_step, METH_O, "Serve what the client sent; None while it would block."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TxnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_pop3_transaction.Transaction",
    .tp_basicsize = sizeof(Txn),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)txn_init,
    .tp_dealloc = (destructor)txn_dealloc,
    .tp_methods = txn_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pop3_transaction", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__pop3_transaction(void) {
    if (PyType_Ready(&TxnType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&TxnType);
    if (PyModule_AddObject(m, "Transaction", (PyObject *)&TxnType) < 0) {
        Py_DECREF(&TxnType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
