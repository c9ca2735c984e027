/*
 * nfsd._fastcall: the per-call bookkeeping of the transport's loop and of the
 * NFS fast path, in C.
 *
 * Why: a random 4 KiB READ on one connection is all overhead (the data is
 * one page): the server's CPU per call went mostly to the interpreter
 * (perf: ~70 % in libpython), in steps each of a few struct/slice/list
 * operations.  Each function here does one such step in one call.  It
 * decides nothing: every decision (the credential cache, the access check,
 * the handle, the namespace's answers, the pool) stays in Python.
 *
 * What it must equal: each function has a pure-Python twin that it equals
 * exactly, result for result (tests/unit/test_fastcall.py runs both on
 * generated and hostile inputs):
 *
 *   parse_call     nfsd.programs.nfs3.fastpath.parse_call_py
 *   pread_full     nfsd.programs.nfs3.read._read (one run at 0 of a buffer)
 *   cut_records    nfsd.transport.record.cut_records_py
 *   send_replies   nfsd.transport.server.send_replies_py
 *
 * Bounds: every read of a record is checked against its length before it is
 * made (the arithmetic is on sizes already capped: a credential at most
 * MAX_AUTH_BYTES, a handle at most NFS3_FHSIZE, a name at most MAXNAMLEN, so
 * no sum overflows); a fragment's length is compared with the bytes there
 * are, never trusted.  The two system calls (preadv2, sendmsg) run with the
 * GIL released, on buffers whose exports (Py_buffer) pin them meanwhile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* The protocol numbers the fast path serves (checked against xdr/ by the tests). */
#define CALL 0
#define RPC_VERSION 2
#define NFS_PROGRAM 100003
#define AUTH_SYS 1
#define MAX_AUTH_BYTES 400
#define NFS3_FHSIZE 64
#define MAXNAMLEN 255
#define PROC_GETATTR 1
#define PROC_LOOKUP 3
#define PROC_ACCESS 4
#define PROC_READ 6
#define PROC_WRITE 7
#define PROC_READDIRPLUS 17
#define READDIRPLUS_ARGS 24 /* cookie, cookie verifier, dircount, maxcount */
#define LAST_FRAGMENT 0x80000000u
#define MAX_IOV 1024 /* the kernel's IOV_MAX */

static inline uint32_t
be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline size_t
padded(size_t n)
{
    return (n + 3) & ~(size_t)3;
}

/* parse_call(record: bytes) -> (xid, proc, cred, fh, pos, a, b) | None
 *
 * An RPC v2 CALL of NFSv3 GETATTR, LOOKUP, ACCESS, READ, WRITE or READDIRPLUS with an
 * AUTH_SYS credential (its bytes: ``cred``) and a null verifier, and the
 * arguments that follow the handle: None for anything else.  ``pos`` is the
 * offset just past the handle's padding; (a, b) are READ's (offset, count),
 * ACCESS's (mask, 0), LOOKUP's (name, 0), else (0, 0) (READDIRPLUS's
 * arguments are read by the caller).  Past the handle the
 * record must hold no byte more or less than the arguments, but for a WRITE,
 * whose handle (cut short by the record's end, as a slice is) and ``pos``
 * are handed on as they are.
 */
static PyObject *
parse_call(PyObject *self, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_call: bytes expected");
        return NULL;
    }
    const unsigned char *r = (const unsigned char *)PyBytes_AS_STRING(arg);
    size_t size = (size_t)PyBytes_GET_SIZE(arg);
    if (size < 32 + 12)
        Py_RETURN_NONE;
    uint32_t xid = be32(r), mtype = be32(r + 4), rpcvers = be32(r + 8), prog = be32(r + 12);
    uint32_t vers = be32(r + 16), proc = be32(r + 20), flavor = be32(r + 24), n = be32(r + 28);
    if ((proc != PROC_GETATTR && proc != PROC_LOOKUP && proc != PROC_ACCESS
         && proc != PROC_READ && proc != PROC_WRITE && proc != PROC_READDIRPLUS)
        || mtype != CALL || rpcvers != RPC_VERSION || prog != NFS_PROGRAM || vers != 3
        || flavor != AUTH_SYS || n > MAX_AUTH_BYTES)
        Py_RETURN_NONE;
    size_t end = 32 + padded(n); /* n <= 400: no overflow */
    if (end + 12 > size)
        Py_RETURN_NONE;
    uint32_t vflavor = be32(r + end), vlen = be32(r + end + 4), fhlen = be32(r + end + 8);
    if (vflavor || vlen || fhlen > NFS3_FHSIZE)
        Py_RETURN_NONE;
    size_t pos = end + 12;
    size_t fh_end = pos + fhlen < size ? pos + fhlen : size; /* a slice stops at the end */
    size_t fh_len = fh_end > pos ? fh_end - pos : 0;
    pos += padded(fhlen);
    PyObject *a = NULL;
    unsigned long long va = 0, vb = 0;
    switch (proc) {
    case PROC_WRITE:
        break;
    case PROC_LOOKUP: {
        if (pos + 4 > size)
            Py_RETURN_NONE;
        uint32_t namelen = be32(r + pos);
        if (namelen > MAXNAMLEN || size != pos + 4 + padded(namelen))
            Py_RETURN_NONE;
        a = PyBytes_FromStringAndSize((const char *)r + pos + 4, namelen);
        if (a == NULL)
            return NULL;
        break;
    }
    case PROC_READDIRPLUS:
        if (size != pos + READDIRPLUS_ARGS)
            Py_RETURN_NONE;
        break;
    case PROC_GETATTR:
        if (size != pos)
            Py_RETURN_NONE;
        break;
    case PROC_ACCESS:
        if (size != pos + 4)
            Py_RETURN_NONE;
        va = be32(r + pos);
        break;
    default: /* READ */
        if (size != pos + 12)
            Py_RETURN_NONE;
        va = ((unsigned long long)be32(r + pos) << 32) | be32(r + pos + 4);
        vb = be32(r + pos + 8);
        break;
    }
    if (a == NULL && (a = PyLong_FromUnsignedLongLong(va)) == NULL)
        return NULL;
    return Py_BuildValue(
        "(kky#y#nNK)", (unsigned long)xid, (unsigned long)proc, (const char *)r + 32,
        (Py_ssize_t)n, (const char *)r + end + 12, (Py_ssize_t)fh_len, (Py_ssize_t)pos, a, vb);
}

/* pread_full(fd, buffer, offset, length, nowait) -> int
 *
 * Read ``length`` bytes of ``fd`` at ``offset`` into the start of a writable
 * buffer, looping over short reads: ``length`` when all came, else how many
 * did before the file ended, or -1 when the read would have waited
 * (EAGAIN; with ``nowait`` - RWF_NOWAIT - also a short read, EOPNOTSUPP or
 * EINVAL: the caller then serves the call on a worker).  Other errors raise
 * OSError.  The GIL is released during each preadv2.
 */
static PyObject *
pread_full(PyObject *self, PyObject *args)
{
    int fd, nowait;
    Py_buffer view;
    long long offset;
    Py_ssize_t length;
    if (!PyArg_ParseTuple(args, "iw*Lnp", &fd, &view, &offset, &length, &nowait))
        return NULL;
    if (length < 0 || length > view.len || offset < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "pread_full: length or offset out of range");
        return NULL;
    }
    int flags = nowait ? RWF_NOWAIT : 0;
    Py_ssize_t at = 0;
    while (at < length) {
        struct iovec iov = {(char *)view.buf + at, (size_t)(length - at)};
        ssize_t got;
        int err;
        Py_BEGIN_ALLOW_THREADS
        got = preadv2(fd, &iov, 1, (off_t)(offset + at), flags);
        err = errno;
        Py_END_ALLOW_THREADS
        if (got < 0) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    PyBuffer_Release(&view);
                    return NULL;
                }
                continue;
            }
            PyBuffer_Release(&view);
            if (err == EAGAIN || (flags && (err == EOPNOTSUPP || err == EINVAL)))
                return PyLong_FromLong(-1);
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (got < length - at && flags) {
            PyBuffer_Release(&view);
            return PyLong_FromLong(-1); /* partly cached: all of it on a worker */
        }
        if (got == 0)
            break; /* the file ended */
        at += got;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(at);
}

/* cut_records(data, pos, max_record) -> (records, pos)
 *
 * The complete records of one last fragment each at ``pos`` of ``data`` (a
 * bytes-like object), cut as bytes, up to the first that is not (a fragment
 * that does not end its record, one over ``max_record`` bytes, one not all
 * there, fewer than 4 bytes); the offset where it stopped.  The reader's
 * Python loop takes it from there (RecordReader.feed, with no fragment held).
 */
static PyObject *
cut_records(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, max_record;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &pos, &max_record))
        return NULL;
    PyObject *records = PyList_New(0);
    if (records == NULL || pos < 0 || pos > view.len) {
        if (records != NULL) {
            Py_DECREF(records);
            PyErr_SetString(PyExc_ValueError, "cut_records: pos out of range");
        }
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len;
    while (end - pos >= 4) {
        uint32_t header = be32(p + pos);
        Py_ssize_t length = (Py_ssize_t)(header & ~LAST_FRAGMENT);
        if (!(header & LAST_FRAGMENT) || length > max_record || end - pos - 4 < length)
            break;
        PyObject *rec = PyBytes_FromStringAndSize((const char *)p + pos + 4, length);
        if (rec == NULL || PyList_Append(records, rec) < 0) {
            Py_XDECREF(rec);
            Py_DECREF(records);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(rec);
        pos += 4 + length;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nn)", records, pos);
}

/* send_replies(fd, replies, max_iov, flags) -> (sent, total) | None
 *
 * The replies (each a list of buffers) framed as one last fragment each, in
 * one sendmsg: the bytes sent and the bytes there were.  None, with nothing
 * sent, when a part is not a contiguous buffer (a FileRun: the queue sends
 * it) or the batch takes more than ``max_iov`` buffers (the headers
 * included), or a reply is too long for one fragment.  A failed sendmsg
 * raises OSError (BlockingIOError when the socket takes nothing now).
 */
static PyObject *
send_replies(PyObject *self, PyObject *args)
{
    int fd, flags;
    PyObject *replies;
    Py_ssize_t max_iov;
    if (!PyArg_ParseTuple(args, "iO!ni", &fd, &PyList_Type, &replies, &max_iov, &flags))
        return NULL;
    if (max_iov < 0 || max_iov > MAX_IOV) {
        PyErr_SetString(PyExc_ValueError, "send_replies: max_iov out of range");
        return NULL;
    }
    Py_ssize_t nreplies = PyList_GET_SIZE(replies);
    struct iovec iov[MAX_IOV];
    uint32_t heads[MAX_IOV];
    Py_buffer *views = PyMem_Malloc(sizeof(Py_buffer) * (size_t)(max_iov ? max_iov : 1));
    if (views == NULL)
        return PyErr_NoMemory();
    Py_ssize_t nviews = 0, niov = 0, total = 0;
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < nreplies; i++) {
        PyObject *parts = PyList_GET_ITEM(replies, i);
        if (!PyList_Check(parts)) {
            PyErr_SetString(PyExc_TypeError, "send_replies: a reply's parts must be a list");
            goto done;
        }
        Py_ssize_t nparts = PyList_GET_SIZE(parts);
        if (niov + 1 + nparts > max_iov) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        Py_ssize_t head_at = niov++;
        Py_ssize_t length = 0;
        for (Py_ssize_t j = 0; j < nparts; j++) {
            Py_buffer *v = &views[nviews];
            if (PyObject_GetBuffer(PyList_GET_ITEM(parts, j), v, PyBUF_SIMPLE) < 0) {
                PyErr_Clear(); /* a FileRun, or no contiguous buffer: the queue's */
                result = Py_NewRef(Py_None);
                goto done;
            }
            nviews++;
            iov[niov].iov_base = v->buf;
            iov[niov].iov_len = (size_t)v->len;
            niov++;
            length += v->len;
        }
        if (length > (Py_ssize_t)~LAST_FRAGMENT) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        heads[head_at] = htonl(LAST_FRAGMENT | (uint32_t)length);
        iov[head_at].iov_base = &heads[head_at];
        iov[head_at].iov_len = 4;
        total += 4 + length;
    }
    {
        struct msghdr msg = {0};
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)niov;
        ssize_t sent;
        int err;
        for (;;) {
            Py_BEGIN_ALLOW_THREADS
            sent = sendmsg(fd, &msg, flags);
            err = errno;
            Py_END_ALLOW_THREADS
            if (sent >= 0 || err != EINTR)
                break;
            if (PyErr_CheckSignals() < 0)
                goto done;
        }
        if (sent < 0) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        result = Py_BuildValue("(nn)", (Py_ssize_t)sent, total);
    }
done:
    for (Py_ssize_t k = 0; k < nviews; k++)
        PyBuffer_Release(&views[k]);
    PyMem_Free(views);
    return result;
}

static PyMethodDef methods[] = {
    {"parse_call", parse_call, METH_O, "An NFSv3 fast call's header and arguments, or None."},
    {"pread_full", pread_full, METH_VARARGS, "preadv2 into a buffer until full or at the end."},
    {"cut_records", cut_records, METH_VARARGS, "Complete one-fragment records, as bytes."},
    {"send_replies", send_replies, METH_VARARGS, "Framed replies in one sendmsg."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "nfsd._fastcall",
    "The transport's and the NFS fast path's per-call steps in C (see the source).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__fastcall(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "CALL", CALL) < 0
        || PyModule_AddIntConstant(m, "RPC_VERSION", RPC_VERSION) < 0
        || PyModule_AddIntConstant(m, "NFS_PROGRAM", NFS_PROGRAM) < 0
        || PyModule_AddIntConstant(m, "AUTH_SYS", AUTH_SYS) < 0
        || PyModule_AddIntConstant(m, "MAX_AUTH_BYTES", MAX_AUTH_BYTES) < 0
        || PyModule_AddIntConstant(m, "NFS3_FHSIZE", NFS3_FHSIZE) < 0
        || PyModule_AddIntConstant(m, "MAXNAMLEN", MAXNAMLEN) < 0
        || PyModule_AddIntConstant(m, "MAX_IOV", MAX_IOV) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
