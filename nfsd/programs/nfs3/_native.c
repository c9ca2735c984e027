/*
 * nfsd.programs.nfs3._native: a folder's READDIRPLUS entries encoded in C.
 *
 * Why: the first READDIRPLUS listing of a folder of 10,000 entries encoded
 * each entry with a struct call and a tuple of its 17 attribute fields
 * (nfsd.programs.nfs3.fastattr.entryplus3_bytes, ~1 us an entry) from a
 * Python loop paging through them.  nfsd.programs.nfs3.readdir now encodes
 * a listing's entries at once, here: one bytes object an entry, no
 * intermediate object.
 *
 * What it must equal: entries_plus(cookies, rows, fsid, handles, ftypes) is
 *     [fastattr.entryplus3_bytes(c, name.encode("utf-8", "surrogateescape"),
 *                                a, fsid, fh)
 *      for c, (name, a), fh in zip(cookies, rows, handles)]
 * byte for byte (its twin, readdir._entries_plus_py; XDR of RFC 1813's
 * entryplus3 with the TRUE that announces it: fileid, name, cookie,
 * post_op_attr with fattr3, post_op_fh3).  Where the twin would raise (a
 * name over 255 bytes, a handle over 64, a value out of its XDR range, a
 * kind not in ``ftypes``) or a value does not fit a C long long, it returns
 * None: the caller then encodes entry by entry as before, and raises where
 * it always did.
 *
 * Bounds: each entry's bytes object is allocated at its exact size
 * (120 + padded name + padded handle, both bounded above) before anything
 * is written; names and handles are copied with their lengths; the cookies
 * are read through the buffer protocol only as 8-byte signed items, and
 * only as many as there are rows (else None).
 *
 * handles(names, fileids, depth, prefix, hashed, key): the READDIRPLUS
 * handles of a folder's entries, as nfsd.programs.handles makes them one at a
 * time (HandleCodec._encoder, its twin: HandleCodec._handles_py).  Each is
 *     body = struct.pack(">BBQ", 1, depth, fileid) + prefix
 *            (+ blake2b(name.encode("utf-8", "surrogateescape"), digest_size=4)
 *               if hashed)
 *     handle = body + HMAC-SHA256(key, body)[:10]
 * byte for byte.  The HMAC is RFC 2104's with the key's pads hashed once a
 * call (the same libcrypto SHA-256, SHA-NI where the CPU has it, that the
 * interpreter's hashlib runs); BLAKE2b is libb2's, as merge/_native.c.  Why:
 * a Python call a handle (a path tuple, two hash objects copied, five
 * digests) was ~1.3 us, 13 ms of a first listing of 10,000 entries.  Where
 * the twin would raise (a fileid out of 64 bits, a name that cannot be
 * encoded) or an argument is not what it should be, None: the twin then
 * raises where it always did.  Bounds: the body is at most 10 + 44 + 4
 * bytes in a fixed buffer (a longer prefix is refused before anything is
 * written); names are hashed with their lengths.
 */
#ifndef OPENSSL_SUPPRESS_DEPRECATED
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_CTX: a state copied by value, no EVP object */
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <blake2.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define MAXNAMLEN 255
#define FHSIZE 64
#define BILLION 1000000000LL

static PyObject *s_kind, *s_mode, *s_nlink, *s_uid, *s_gid, *s_size, *s_used, *s_fileid,
    *s_atime, *s_mtime, *s_ctime;

static unsigned char *put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    return p + 4;
}

static unsigned char *put64(unsigned char *p, uint64_t v) {
    return put32(put32(p, (uint32_t)(v >> 32)), (uint32_t)v);
}

static unsigned char *opaque(unsigned char *p, const char *data, size_t n) {
    memcpy(p, data, n);
    size_t pad = (4 - (n & 3)) & 3;
    memset(p + n, 0, pad);
    return p + n + pad;
}

/* An attribute as a long long: 1 ok, 0 not an int that fits (ask the twin), -1 error. */
static int get(PyObject *a, PyObject *name, long long *out) {
    PyObject *v = PyObject_GetAttr(a, name);
    if (v == NULL)
        return -1;
    int ok = 1;
    if (!PyLong_Check(v)) {
        ok = 0;
    } else {
        int overflow = 0;
        *out = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow)
            ok = 0;
        else if (*out == -1 && PyErr_Occurred())
            ok = -1;
    }
    Py_DECREF(v);
    return ok;
}

static int u32(long long v) { return v >= 0 && v <= 0xFFFFFFFFLL; }

/* Python's t // 1e9 & 0xFFFFFFFF and t % 1e9 (floor division). */
static void split(long long t, uint32_t *sec, uint32_t *nsec) {
    long long q = t / BILLION, r = t % BILLION;
    if (r < 0) {
        r += BILLION;
        q -= 1;
    }
    *sec = (uint32_t)((unsigned long long)q & 0xFFFFFFFFULL);
    *nsec = (uint32_t)r;
}

/* The name's bytes on the wire (UTF-8, surrogate-escaped) in *data, *len: the
 * str's own buffer if ASCII, else the new bytes object *raw (the caller's to
 * release).  -1 with an error set where the encoding fails. */
static int wire_name(PyObject *name, PyObject **raw, const char **data, Py_ssize_t *len) {
    *raw = NULL;
    if (PyUnicode_IS_ASCII(name)) {
        *data = (const char *)PyUnicode_DATA(name);
        *len = PyUnicode_GET_LENGTH(name);
        return 0;
    }
    if ((*raw = PyUnicode_AsEncodedString(name, "utf-8", "surrogateescape")) == NULL)
        return -1;
    *data = PyBytes_AS_STRING(*raw);
    *len = PyBytes_GET_SIZE(*raw);
    return 0;
}

/* One entry; NULL with no error set: ask the twin. */
static PyObject *entry(long long cookie, PyObject *row, unsigned long long fsid, PyObject *fh,
                       PyObject *ftypes) {
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 2 || !PyBytes_Check(fh))
        return NULL;
    PyObject *name = PyTuple_GET_ITEM(row, 0), *a = PyTuple_GET_ITEM(row, 1);
    if (!PyUnicode_Check(name))
        return NULL;
    PyObject *raw;
    const char *nbytes;
    Py_ssize_t nlen;
    if (wire_name(name, &raw, &nbytes, &nlen) < 0)
        return NULL; /* an error set: raised */
    Py_ssize_t flen = PyBytes_GET_SIZE(fh);
    PyObject *out = NULL;
    long long kind_ft = 0, v[10];
    PyObject *const fields[10] = {s_mode, s_nlink, s_uid, s_gid, s_size,
                                  s_used, s_fileid, s_atime, s_mtime, s_ctime};
    if (nlen > MAXNAMLEN || flen > FHSIZE || cookie < 0)
        goto done;
    {
        PyObject *kind = PyObject_GetAttr(a, s_kind);
        if (kind == NULL)
            goto done;
        PyObject *ft = PyDict_GetItemWithError(ftypes, kind); /* borrowed */
        Py_DECREF(kind);
        if (ft == NULL)
            goto done; /* an error, or a kind the twin's dict refuses: the twin */
        int overflow = 0;
        kind_ft = PyLong_Check(ft) ? PyLong_AsLongLongAndOverflow(ft, &overflow) : -1;
        if (overflow || !u32(kind_ft)) {
            PyErr_Clear();
            goto done;
        }
    }
    for (int k = 0; k < 10; k++) {
        int ok = get(a, fields[k], &v[k]);
        if (ok != 1)
            goto done;
    }
    /* mode nlink uid gid: XDR unsigned ints; size used fileid: unsigned hypers */
    if (!u32(v[0]) || !u32(v[1]) || !u32(v[2]) || !u32(v[3]) || v[4] < 0 || v[5] < 0 ||
        v[6] < 0)
        goto done;
    {
        size_t pn = ((size_t)nlen + 3) & ~(size_t)3, pf = ((size_t)flen + 3) & ~(size_t)3;
        out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(120 + pn + pf));
        if (out == NULL)
            goto done;
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
        uint32_t s, ns;
        p = put32(p, 1);
        p = put64(p, (uint64_t)v[6]);
        p = put32(p, (uint32_t)nlen);
        p = opaque(p, nbytes, (size_t)nlen);
        p = put64(p, (uint64_t)cookie);
        p = put32(p, 1); /* post_op_attr: attributes follow */
        p = put32(p, (uint32_t)kind_ft);
        for (int k = 0; k < 4; k++)
            p = put32(p, (uint32_t)v[k]);
        p = put64(p, (uint64_t)v[4]);
        p = put64(p, (uint64_t)v[5]);
        p = put32(p, 0); /* rdev */
        p = put32(p, 0);
        p = put64(p, fsid);
        p = put64(p, (uint64_t)v[6]);
        for (int k = 7; k < 10; k++) {
            split(v[k], &s, &ns);
            p = put32(put32(p, s), ns);
        }
        p = put32(p, 1); /* post_op_fh3: a handle follows */
        p = put32(p, (uint32_t)flen);
        p = opaque(p, PyBytes_AS_STRING(fh), (size_t)flen);
    }
done:
    Py_XDECREF(raw);
    return out;
}

static PyObject *entries_plus(PyObject *self, PyObject *args) {
    PyObject *cookies, *rows, *handles, *ftypes, *fsid_obj;
    if (!PyArg_ParseTuple(args, "OO!OO!O!:entries_plus", &cookies, &PyList_Type, &rows,
                          &fsid_obj, &PyList_Type, &handles, &PyDict_Type, &ftypes))
        return NULL;
    if (!PyLong_Check(fsid_obj))
        Py_RETURN_NONE; /* the twin says what it thinks of it */
    unsigned long long fsid = PyLong_AsUnsignedLongLong(fsid_obj);
    if (fsid == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* negative or past 64 bits: the twin raises */
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(cookies, &view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) != 0)
        return NULL;
    PyObject *result = NULL, *list = NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    if (view.itemsize != 8 || view.format == NULL ||
        (strcmp(view.format, "q") != 0 && strcmp(view.format, "l") != 0) ||
        view.len / 8 != n || PyList_GET_SIZE(handles) != n) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    list = PyList_New(n);
    if (list == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n && i < PyList_GET_SIZE(rows) && i < PyList_GET_SIZE(handles);
         i++) {
        long long cookie;
        memcpy(&cookie, (const char *)view.buf + 8 * i, 8);
        PyObject *row = PyList_GET_ITEM(rows, i), *fh = PyList_GET_ITEM(handles, i);
        Py_INCREF(row); /* held while attributes are read (their code may run Python) */
        Py_INCREF(fh);
        PyObject *e = entry(cookie, row, fsid, fh, ftypes);
        Py_DECREF(row);
        Py_DECREF(fh);
        if (e == NULL) {
            if (!PyErr_Occurred())
                result = Py_NewRef(Py_None);
            goto done;
        }
        PyList_SET_ITEM(list, i, e);
    }
    if (PyList_GET_SIZE(rows) != n || PyList_GET_SIZE(handles) != n) {
        result = Py_NewRef(Py_None); /* changed while read: the twin */
        goto done;
    }
    result = Py_NewRef(list);
done:
    Py_XDECREF(list);
    PyBuffer_Release(&view);
    return result;
}

#define HANDLE_BODY_MAX (10 + 4 * 11 + 4) /* head, the folder's hashes, the name's */
#define MAC_SIZE 10

/* The inner and outer SHA-256 states of HMAC with ``key`` (RFC 2104), pads hashed. */
static void hmac_pads(const unsigned char *key, size_t n, SHA256_CTX *inner, SHA256_CTX *outer) {
    unsigned char block[SHA256_CBLOCK], digest[SHA256_DIGEST_LENGTH];
    memset(block, 0, sizeof block);
    if (n > SHA256_CBLOCK) {
        SHA256(key, n, digest);
        memcpy(block, digest, sizeof digest);
    } else {
        memcpy(block, key, n);
    }
    unsigned char pad[SHA256_CBLOCK];
    for (int k = 0; k < SHA256_CBLOCK; k++)
        pad[k] = block[k] ^ 0x36;
    SHA256_Init(inner);
    SHA256_Update(inner, pad, sizeof pad);
    for (int k = 0; k < SHA256_CBLOCK; k++)
        pad[k] = block[k] ^ 0x5C;
    SHA256_Init(outer);
    SHA256_Update(outer, pad, sizeof pad);
}

static PyObject *handles(PyObject *self, PyObject *args) {
    PyObject *names, *fileids;
    int depth, hashed;
    Py_buffer prefix, key;
    if (!PyArg_ParseTuple(args, "O!O!iy*py*", &PyList_Type, &names, &PyList_Type, &fileids,
                          &depth, &prefix, &hashed, &key))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = PyList_GET_SIZE(names);
    if (depth < 0 || depth > 255 || prefix.len > 4 * 11 || PyList_GET_SIZE(fileids) != n) {
        out = Py_None; /* the twin decides */
        Py_INCREF(out);
        goto done;
    }
    SHA256_CTX inner0, outer0;
    hmac_pads(key.buf, (size_t)key.len, &inner0, &outer0);
    unsigned char body[HANDLE_BODY_MAX + MAC_SIZE];
    body[0] = 1; /* VERSION */
    body[1] = (unsigned char)depth;
    memcpy(body + 10, prefix.buf, (size_t)prefix.len);
    size_t size = 10 + (size_t)prefix.len + (hashed ? 4 : 0);
    if ((out = PyList_New(n)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyList_GET_ITEM(names, i), *fileid = PyList_GET_ITEM(fileids, i);
        if (!PyLong_Check(fileid) || !PyUnicode_Check(name))
            goto twin;
        unsigned long long id = PyLong_AsUnsignedLongLong(fileid);
        if (id == (unsigned long long)-1 && PyErr_Occurred())
            goto twin; /* negative or past 64 bits: struct.error from the twin */
        put64(body + 2, id);
        if (hashed) {
            PyObject *raw;
            const char *data;
            Py_ssize_t len;
            if (wire_name(name, &raw, &data, &len) < 0)
                goto twin;
            int bad = blake2b(body + 10 + prefix.len, data, NULL, 4, (size_t)len, 0);
            Py_XDECREF(raw);
            if (bad != 0)
                goto twin;
        }
        SHA256_CTX ctx = inner0;
        unsigned char digest[SHA256_DIGEST_LENGTH];
        SHA256_Update(&ctx, body, size);
        SHA256_Final(digest, &ctx);
        ctx = outer0;
        SHA256_Update(&ctx, digest, sizeof digest);
        SHA256_Final(digest, &ctx);
        memcpy(body + size, digest, MAC_SIZE);
        PyObject *handle = PyBytes_FromStringAndSize((const char *)body, (Py_ssize_t)(size + MAC_SIZE));
        if (handle == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, handle);
    }
    goto done;
twin:
    PyErr_Clear();
    Py_DECREF(out);
    out = Py_None;
    Py_INCREF(out);
done:
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&key);
    return out;
}

static PyMethodDef methods[] = {
    {"handles", handles, METH_VARARGS,
     "handles(names, fileids, depth, prefix, hashed, key) -> list[bytes] | None: each entry's "
     "handle, as nfsd.programs.handles makes it (None: ask the twin)."},
    {"entries_plus", entries_plus, METH_VARARGS,
     "entries_plus(cookies, rows, fsid, handles, ftypes) -> list[bytes] | None: each row's "
     "READDIRPLUS entry, as fastattr.entryplus3_bytes makes it (None: ask the twin)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "nfsd.programs.nfs3._native",
                                    "A folder's READDIRPLUS entries encoded in C (see readdir).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject **names[] = {&s_kind, &s_mode, &s_nlink, &s_uid, &s_gid, &s_size,
                          &s_used, &s_fileid, &s_atime, &s_mtime, &s_ctime};
    const char *text[] = {"kind", "mode", "nlink", "uid", "gid", "size",
                          "used", "fileid", "atime_ns", "mtime_ns", "ctime_ns"};
    for (int k = 0; k < 11; k++)
        if ((*names[k] = PyUnicode_InternFromString(text[k])) == NULL)
            return NULL;
    return PyModule_Create(&module);
}
