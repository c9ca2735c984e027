/*
 * merge._native: two loops over a large storage folder, in C.
 *
 * 1. times_match: merge.watch's pass (below).
 * 2. scan: merge.passthrough's scan of a folder whose entries are all
 *    regular files and folders (see scan's own comment further down).
 * 3. hash64: BLAKE2b-64 of many names (the file ids scan makes, and
 *    nfsd.programs.listings's cookies), by libb2.
 *
 * Why: past its span, a watched folder of 10,000 entries is renewed only
 * after every entry's lstat shows the four fields a change without an
 * inotify event can move (ctime, mtime, atime, blocks: merge.watch's design
 * notes).  In Python that is an os.lstat and a stat_result per entry, ~15 ms
 * of CPU for 10,000; here the names and the kept values are copied out of
 * the listing with the GIL held, the fstatat calls are made with it released
 * (they may wait on the disk), and the comparison costs nothing.
 *
 * What it must equal: merge.watch._times_match_py (its twin), for every
 * input: the same entries in the same (the dict's) order, False at the first
 * entry whose fields differ, the OSError of the first fstatat that fails
 * before any difference (errno and file name: the name as given), the
 * ValueError of a name holding a NUL byte at that name's turn.  (The values
 * are merge.layer.Entry objects: one without ``attrs`` fails before any
 * fstatat, where the twin would fail at its turn.)  Names are encoded as os.fsencode does
 * (UTF-8, surrogateescape).  A kept value that is not an int of 64 bits
 * (never made by merge.attrs, but possible in a hand-made Attrs) makes it
 * return None: the caller runs the twin (exact Python ints).
 *
 * Bounds: every name is copied, with its length, into one buffer this call
 * owns (a dict changed while the GIL is released cannot move what is read);
 * the buffer's size is summed with overflow checks; nothing is read past a
 * name's length, and fstatat gets the NUL-terminated copy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <blake2.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#define NO_NAME ((size_t)-1) /* a name holding a NUL byte: ValueError at its turn, as lstat */

typedef struct {
    size_t at;      /* offset of the NUL-terminated name in the buffer, or NO_NAME */
    long long ctime, mtime, atime, used;
} Want;

static PyObject *s_attrs, *s_ctime, *s_mtime, *s_atime, *s_used;

/* A kept field as a C long long; 0 and *ok = 0 if it is not an int that fits. */
static long long field(PyObject *a, PyObject *name, int *ok) {
    PyObject *v = PyObject_GetAttr(a, name);
    if (v == NULL) {
        *ok = -1;
        return 0;
    }
    long long out = 0;
    if (!PyLong_Check(v)) {
        *ok = 0;
    } else {
        int overflow = 0;
        out = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (out == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            *ok = 0;
        }
    }
    Py_DECREF(v);
    return out;
}

/* tv_sec * 1e9 + tv_nsec as os.stat's st_*_ns; *ok = 0 past 64 bits. */
static long long ns(struct timespec t, int *ok) {
    long long out;
    if (__builtin_mul_overflow((long long)t.tv_sec, 1000000000LL, &out) ||
        __builtin_add_overflow(out, (long long)t.tv_nsec, &out)) {
        *ok = 0;
        return 0;
    }
    return out;
}

static PyObject *times_match(PyObject *self, PyObject *args) {
    int fd;
    PyObject *entries;
    if (!PyArg_ParseTuple(args, "iO!:times_match", &fd, &PyDict_Type, &entries))
        return NULL;
    Py_ssize_t n = PyDict_Size(entries);
    Want *want = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(Want));
    if (want == NULL)
        return PyErr_NoMemory();
    char *buf = NULL;
    size_t cap = 0, len = 0;
    PyObject *result = NULL, *key, *value;
    Py_ssize_t pos = 0, i = 0;
    int exact = 1;

    /* 1. with the GIL: each name and its kept values, copied */
    while (PyDict_Next(entries, &pos, &key, &value)) {
        if (i >= n) { /* the dict grew under us: cannot happen with the GIL held */
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            goto done;
        }
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "entry names must be str");
            goto done;
        }
        PyObject *encoded = PyUnicode_EncodeFSDefault(key); /* UTF-8, surrogateescape */
        if (encoded == NULL)
            goto done;
        Py_ssize_t size = PyBytes_GET_SIZE(encoded);
        const char *bytes = PyBytes_AS_STRING(encoded);
        int nul = memchr(bytes, 0, (size_t)size) != NULL; /* refused when its turn comes */
        size_t need;
        if (__builtin_add_overflow(len, (size_t)size + 1, &need)) {
            Py_DECREF(encoded);
            PyErr_NoMemory();
            goto done;
        }
        if (need > cap) {
            size_t grown = cap ? cap : 4096;
            while (grown < need) {
                if (__builtin_mul_overflow(grown, (size_t)2, &grown)) {
                    Py_DECREF(encoded);
                    PyErr_NoMemory();
                    goto done;
                }
            }
            char *more = PyMem_Realloc(buf, grown);
            if (more == NULL) {
                Py_DECREF(encoded);
                PyErr_NoMemory();
                goto done;
            }
            buf = more;
            cap = grown;
        }
        memcpy(buf + len, bytes, (size_t)size);
        buf[len + (size_t)size] = '\0';
        Py_DECREF(encoded);
        want[i].at = nul ? NO_NAME : len;
        len = need;

        Py_INCREF(value); /* held: its attributes' code may change the dict */
        PyObject *a = PyObject_GetAttr(value, s_attrs);
        Py_DECREF(value);
        if (a == NULL)
            goto done;
        int ok = 1;
        want[i].ctime = field(a, s_ctime, &ok);
        if (ok > 0) want[i].mtime = field(a, s_mtime, &ok);
        if (ok > 0) want[i].atime = field(a, s_atime, &ok);
        if (ok > 0) want[i].used = field(a, s_used, &ok);
        Py_DECREF(a);
        if (ok < 0)
            goto done;
        if (ok == 0)
            exact = 0; /* still read every attribute first, as the twin would */
        i++;
    }
    if (!exact) {
        result = Py_NewRef(Py_None);
        goto done;
    }

    /* 2. without the GIL: one fstatat an entry, in order, up to the first difference */
    Py_ssize_t failed = -1, differs = -1, refused = -1;
    int err = 0, wide = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < i; k++) {
        struct stat st;
        if (want[k].at == NO_NAME) {
            refused = k;
            break;
        }
        if (fstatat(fd, buf + want[k].at, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            err = errno;
            failed = k;
            break;
        }
        int ok = 1;
        long long c = ns(st.st_ctim, &ok), m = ns(st.st_mtim, &ok), t = ns(st.st_atim, &ok);
        long long used;
        if (__builtin_mul_overflow((long long)st.st_blocks, 512LL, &used))
            ok = 0;
        if (!ok) {
            wide = 1; /* a value past 64 bits: the twin decides */
            break;
        }
        if (c != want[k].ctime || m != want[k].mtime || t != want[k].atime || used != want[k].used) {
            differs = k;
            break;
        }
    }
    Py_END_ALLOW_THREADS

    if (wide) {
        result = Py_NewRef(Py_None);
    } else if (refused >= 0) {
        PyErr_SetString(PyExc_ValueError, "lstat: embedded null character in path");
    } else if (failed >= 0) {
        PyObject *name = PyUnicode_DecodeFSDefault(buf + want[failed].at);
        if (name != NULL) {
            errno = err;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
            Py_DECREF(name);
        }
    } else {
        result = Py_NewRef(differs >= 0 ? Py_False : Py_True);
    }
done:
    PyMem_Free(buf);
    PyMem_Free(want);
    return result;
}


/* ------------------------------------------------------------------------
 * BLAKE2b, unkeyed, 8-byte digests, with a personalization: the hash of
 * merge.attrs's file ids (persistent: the same bytes as
 * hashlib.blake2b(data, digest_size=8, person=...) or the test fails) and
 * of nfsd's cookies, read as a big-endian integer, as the Python does.
 * The hash itself is libb2's (Debian's libb2-dev: the BLAKE2 authors'
 * implementation, with its SIMD dispatch): only the parameter block and
 * the byte order are here.
 * ------------------------------------------------------------------------ */

/* The state for 8-byte digests with this 16-byte personalization, before any input. */
static int b2_start(blake2b_state *start, const unsigned char person[16]) {
    blake2b_param p;
    memset(&p, 0, sizeof p);
    p.digest_length = 8;
    p.fanout = 1; /* sequential mode, as hashlib's defaults */
    p.depth = 1;
    memcpy(p.personal, person, sizeof p.personal);
    if (blake2b_init_param(start, &p) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "blake2b_init_param failed");
        return -1;
    }
    return 0;
}

/* BLAKE2b-64 of a ++ b ++ c from the state start, as a big-endian integer. */
static uint64_t b2_hash3(const blake2b_state *start, const char *a, size_t na, const char *b,
                         size_t nb, const char *c, size_t nc) {
    blake2b_state st = *start; /* a copy: start serves every name */
    unsigned char out[8];
    blake2b_update(&st, (const uint8_t *)a, na);
    blake2b_update(&st, (const uint8_t *)b, nb);
    blake2b_update(&st, (const uint8_t *)c, nc);
    blake2b_final(&st, out, sizeof out);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | out[i];
    return v;
}

/* A str's bytes as os.fsencode / .encode("utf-8", "surrogateescape") make them:
 * *data points into the str (ASCII) or into *hold (a new bytes object). */
static int name_bytes(PyObject *name, const char **data, Py_ssize_t *size, PyObject **hold) {
    *hold = NULL;
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "names must be str");
        return -1;
    }
    if (PyUnicode_IS_ASCII(name)) {
        *data = (const char *)PyUnicode_DATA(name);
        *size = PyUnicode_GET_LENGTH(name);
        return 0;
    }
    *hold = PyUnicode_AsEncodedString(name, "utf-8", "surrogateescape");
    if (*hold == NULL)
        return -1;
    *data = PyBytes_AS_STRING(*hold);
    *size = PyBytes_GET_SIZE(*hold);
    return 0;
}

static int person_of(PyObject *person, unsigned char out[16]) {
    if (!PyBytes_Check(person) || PyBytes_GET_SIZE(person) > 16) {
        PyErr_SetString(PyExc_ValueError, "person: bytes of at most 16");
        return -1;
    }
    memset(out, 0, 16);
    memcpy(out, PyBytes_AS_STRING(person), (size_t)PyBytes_GET_SIZE(person));
    return 0;
}

/* hash64(names, person, prefix, suffix) -> list[int]: for each name,
 * int.from_bytes(blake2b(prefix + name + suffix, digest_size=8,
 * person=person).digest(), "big"), the name encoded as utf-8 with
 * surrogateescape.  (nfsd.programs.listings's cookies.) */
static PyObject *hash64(PyObject *self, PyObject *args) {
    PyObject *names, *person;
    Py_buffer prefix, suffix;
    if (!PyArg_ParseTuple(args, "O!O!y*y*:hash64", &PyList_Type, &names, &PyBytes_Type, &person,
                          &prefix, &suffix))
        return NULL;
    PyObject *out = NULL;
    unsigned char pers[16];
    blake2b_state start;
    if (person_of(person, pers) != 0)
        goto done;
    if (b2_start(&start, pers) != 0)
        goto done;
    Py_ssize_t n = PyList_GET_SIZE(names);
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n && i < PyList_GET_SIZE(names); i++) {
        const char *data;
        Py_ssize_t size;
        PyObject *hold, *name = PyList_GET_ITEM(names, i);
        if (name_bytes(name, &data, &size, &hold) != 0) {
            Py_CLEAR(out);
            goto done;
        }
        uint64_t v = b2_hash3(&start, prefix.buf, (size_t)prefix.len, data, (size_t)size,
                              suffix.buf, (size_t)suffix.len);
        Py_XDECREF(hold);
        PyObject *num = PyLong_FromUnsignedLongLong(v);
        if (num == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, num);
    }
    if (out != NULL && PyList_GET_SIZE(names) != n) { /* cannot shrink with the GIL held */
        Py_CLEAR(out);
        PyErr_SetString(PyExc_RuntimeError, "names changed size");
    }
done:
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&suffix);
    return out;
}

/* ------------------------------------------------------------------------
 * scan(path, before, fileid, folder, want_checks, max_checks)
 *    -> (entries, checks) | None
 *
 * Why: the first listing of a folder of 10,000 entries spent ~20 ms of its
 * ~45 in os.scandir and DirEntry.stat (a DirEntry and a stat_result an
 * entry), the rest in the Python loop that made an Attrs, a Stored and an
 * Entry of each.  Here readdir and fstatat run without the GIL, and the
 * three objects are made as merge.attrs.attrs_of and merge.layer.stored_entry
 * make them (object.__new__, then each slot set through its own descriptor,
 * the shared small ints of merge.attrs for mode and used).
 *
 * What it must equal: the loop of merge.passthrough.Passthrough.listing
 * (its twin, _scan_py there) for a folder whose every entry lstat()s as a
 * regular file or a folder: the same entries dict (each name's Entry: the
 * one in ``before`` if merge.attrs.stat_matches holds for its attributes,
 * else a new one with ``fileid(name)``; ``fileid`` may instead be
 * merge.attrs.id_hash's (person, prefix): the same id, hashed here), and
 * the same checks (the entries
 * with nlink > 1 or folders, None past ``max_checks`` or if not wanted).
 * Anything else (a symbolic link, a special file, an entry that vanished
 * between readdir and fstatat, a folder that cannot be opened or read, a
 * value past 64 bits, a name longer than NAME_MAX) returns None: the caller
 * runs the Python loop from the start, which presents or withholds such
 * entries (and raises) as it always did.
 *
 * Bounds: names are copied with their lengths (d_name is NUL-terminated,
 * at most NAME_MAX, 255 bytes, here) into one growing buffer, every size
 * summed with overflow checks; the rows array grows the same way.
 * ------------------------------------------------------------------------ */

typedef struct {
    size_t at, len; /* the name in the buffer (NUL-terminated there) */
    long long size, used, atime, mtime, ctime;
    unsigned long long nlink;
    unsigned long long uid, gid;
    unsigned int mode;
} Row;

/* What scan builds with, given once by merge.passthrough (layout()). */
static PyObject *L_new;   /* object.__new__ */
static PyObject *L_types; /* (Attrs, Stored, Entry) */
static PyObject *L_sets;  /* descriptors: Attrs' 11 fields, Stored's folder, name, Entry's 3 */
static PyObject *L_kinds; /* (Kind.REG, Kind.DIR) */
static PyObject *L_perms; /* merge.attrs._PERMS */
static PyObject *L_used;  /* merge.attrs._USED */
static PyObject *L_zero;  /* Entry.depth */

enum { A_KIND, A_SIZE, A_USED, A_MODE, A_NLINK, A_UID, A_GID, A_FILEID, A_ATIME, A_MTIME,
       A_CTIME, S_FOLDER, S_NAME, E_ATTRS, E_ORIGIN, E_DEPTH, N_SETS };

static PyObject *layout(PyObject *self, PyObject *args) {
    PyObject *new, *types, *sets, *kinds, *perms, *used, *zero;
    if (!PyArg_ParseTuple(args, "OO!O!O!O!O!O:layout", &new, &PyTuple_Type, &types, &PyTuple_Type,
                          &sets, &PyTuple_Type, &kinds, &PyTuple_Type, &perms, &PyTuple_Type, &used,
                          &zero))
        return NULL;
    if (PyTuple_GET_SIZE(types) != 3 || PyTuple_GET_SIZE(sets) != N_SETS ||
        PyTuple_GET_SIZE(kinds) != 2 || PyTuple_GET_SIZE(perms) <= 0555 ||
        PyTuple_GET_SIZE(used) < 1) {
        PyErr_SetString(PyExc_ValueError, "layout: wrong sizes");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < N_SETS; k++) {
        PyObject *d = PyTuple_GET_ITEM(sets, k);
        if (Py_TYPE(d)->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "layout: not a settable descriptor");
            return NULL;
        }
    }
    for (Py_ssize_t k = 0; k < 3; k++)
        if (!PyType_Check(PyTuple_GET_ITEM(types, k))) {
            PyErr_SetString(PyExc_TypeError, "layout: not a type");
            return NULL;
        }
    Py_XSETREF(L_new, Py_NewRef(new));
    Py_XSETREF(L_types, Py_NewRef(types));
    Py_XSETREF(L_sets, Py_NewRef(sets));
    Py_XSETREF(L_kinds, Py_NewRef(kinds));
    Py_XSETREF(L_perms, Py_NewRef(perms));
    Py_XSETREF(L_used, Py_NewRef(used));
    Py_XSETREF(L_zero, Py_NewRef(zero));
    Py_RETURN_NONE;
}

/* Set slot k of obj to value (a new reference, stolen); -1 on error. */
static int put(PyObject *obj, int k, PyObject *value) {
    if (value == NULL)
        return -1;
    PyObject *d = PyTuple_GET_ITEM(L_sets, k);
    int rc = Py_TYPE(d)->tp_descr_set(d, obj, value);
    Py_DECREF(value);
    return rc;
}

static PyObject *fresh(int k) { /* object.__new__(types[k]) */
    return PyObject_CallOneArg(L_new, PyTuple_GET_ITEM(L_types, k));
}

/* An Attrs, Stored or Entry made here holds only ints, strs, a Kind and
 * objects made here: it can be in no reference cycle (the types are frozen),
 * so the cyclic GC need never look at it, as CPython itself untracks a tuple
 * of atomic values.  30,000 objects a folder of 10,000 entries the young
 * collections no longer walk (~4-6 ms of a first listing). */
static PyObject *untracked(PyObject *obj) {
    if (obj != NULL && PyObject_IS_GC(obj) && PyObject_GC_IsTracked(obj))
        PyObject_GC_UnTrack(obj);
    return obj;
}

/* attrs_of(st, fileid) of merge.attrs, from a row. */
static PyObject *make_attrs(const Row *r, PyObject *fileid) {
    PyObject *a = fresh(0);
    if (a == NULL)
        return NULL;
    int is_dir = S_ISDIR(r->mode);
    long long blocks = r->used / 512;
    unsigned long long nlink = is_dir ? (r->nlink > 2 ? r->nlink : 2) : 1;
    if (put(a, A_KIND, Py_NewRef(PyTuple_GET_ITEM(L_kinds, is_dir))) ||
        put(a, A_SIZE, PyLong_FromLongLong(r->size)) ||
        put(a, A_USED,
            blocks < PyTuple_GET_SIZE(L_used) ? Py_NewRef(PyTuple_GET_ITEM(L_used, blocks))
                                              : PyLong_FromLongLong(r->used)) ||
        put(a, A_MODE, Py_NewRef(PyTuple_GET_ITEM(L_perms, r->mode & 0555))) ||
        put(a, A_NLINK, PyLong_FromUnsignedLongLong(nlink)) ||
        put(a, A_UID, PyLong_FromUnsignedLongLong(r->uid)) ||
        put(a, A_GID, PyLong_FromUnsignedLongLong(r->gid)) ||
        put(a, A_FILEID, Py_NewRef(fileid)) || put(a, A_ATIME, PyLong_FromLongLong(r->atime)) ||
        put(a, A_MTIME, PyLong_FromLongLong(r->mtime)) ||
        put(a, A_CTIME, PyLong_FromLongLong(r->ctime))) {
        Py_DECREF(a);
        return NULL;
    }
    return untracked(a);
}

/* stored_entry(attrs, folder, name) of merge.layer (attrs stolen). */
static PyObject *make_entry(PyObject *attrs, PyObject *folder, PyObject *name) {
    PyObject *origin = fresh(1), *entry = NULL;
    if (origin == NULL || put(origin, S_FOLDER, Py_NewRef(folder)) ||
        put(origin, S_NAME, Py_NewRef(name)))
        goto fail;
    entry = fresh(2);
    if (entry == NULL || put(entry, E_ATTRS, Py_NewRef(attrs)) ||
        put(entry, E_ORIGIN, Py_NewRef(origin)) || put(entry, E_DEPTH, Py_NewRef(L_zero)))
        goto fail;
    untracked(origin);
    Py_DECREF(origin);
    Py_DECREF(attrs);
    return untracked(entry);
fail:
    Py_XDECREF(entry);
    Py_XDECREF(origin);
    Py_DECREF(attrs);
    return NULL;
}

/* a.<field> == v, as Python's == (1 equal, 0 not, -1 error). */
static int same(PyObject *a, int k, PyObject *v) {
    static const char *const names[] = {"kind", "size", "used", "mode", "nlink", "uid",
                                        "gid", "fileid", "atime_ns", "mtime_ns", "ctime_ns"};
    PyObject *got = PyObject_GetAttrString(a, names[k]);
    if (got == NULL || v == NULL) {
        Py_XDECREF(got);
        Py_XDECREF(v);
        return -1;
    }
    int eq = PyObject_RichCompareBool(got, v, Py_EQ);
    Py_DECREF(got);
    Py_DECREF(v);
    return eq;
}

/* merge.attrs.stat_matches(a, st), in its order (1, 0, -1 error). */
static int matches(PyObject *a, const Row *r) {
    int is_dir = S_ISDIR(r->mode), eq;
    unsigned long long nlink = is_dir ? (r->nlink > 2 ? r->nlink : 2) : 1;
#define SAME(k, v)                                                                                 \
    if ((eq = same(a, k, v)) != 1)                                                                 \
        return eq;
    SAME(A_CTIME, PyLong_FromLongLong(r->ctime))
    SAME(A_MTIME, PyLong_FromLongLong(r->mtime))
    SAME(A_SIZE, PyLong_FromLongLong(r->size))
    SAME(A_ATIME, PyLong_FromLongLong(r->atime))
    SAME(A_USED, PyLong_FromLongLong(r->used))
    SAME(A_MODE, PyLong_FromLong((long)(r->mode & 07777 & 0555)))
    SAME(A_KIND, Py_NewRef(PyTuple_GET_ITEM(L_kinds, is_dir)))
    SAME(A_NLINK, PyLong_FromUnsignedLongLong(nlink))
    SAME(A_UID, PyLong_FromUnsignedLongLong(r->uid))
    SAME(A_GID, PyLong_FromUnsignedLongLong(r->gid))
#undef SAME
    return 1;
}

/* Grow *p (of *cap elements of size each) to hold need; 0 or -1 (ENOMEM). */
static int grow(void **p, size_t *cap, size_t need, size_t each) {
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256, bytes;
    while (n < need)
        if (__builtin_mul_overflow(n, (size_t)2, &n))
            return -1;
    if (__builtin_mul_overflow(n, each, &bytes))
        return -1;
    void *more = realloc(*p, bytes);
    if (more == NULL)
        return -1;
    *p = more;
    *cap = n;
    return 0;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    PyObject *path, *before, *fileid_fn, *folder;
    int want_checks;
    Py_ssize_t max_checks;
    if (!PyArg_ParseTuple(args, "O&O!OUpn:scan", PyUnicode_FSConverter, &path, &PyDict_Type,
                          &before, &fileid_fn, &folder, &want_checks, &max_checks))
        return NULL;
    if (L_sets == NULL) {
        Py_DECREF(path);
        PyErr_SetString(PyExc_RuntimeError, "scan: layout() not called");
        return NULL;
    }
    /* fileid: a callable, or (person, prefix): merge.attrs.ids_in's hash, made here */
    blake2b_state id_start;
    const char *id_prefix = NULL;
    Py_ssize_t id_prefix_len = 0;
    if (PyTuple_Check(fileid_fn)) {
        unsigned char pers[16];
        PyObject *person, *prefix;
        if (!PyArg_ParseTuple(fileid_fn, "O!O!:scan's fileid", &PyBytes_Type, &person,
                              &PyBytes_Type, &prefix) ||
            person_of(person, pers) != 0 || b2_start(&id_start, pers) != 0) {
            Py_DECREF(path);
            return NULL;
        }
        id_prefix = PyBytes_AS_STRING(prefix); /* the tuple holds it for the call */
        id_prefix_len = PyBytes_GET_SIZE(prefix);
    }
    Row *rows = NULL;
    char *buf = NULL;
    size_t nrows = 0, rcap = 0, len = 0, cap = 0;
    int bail = 0;

    /* 1. without the GIL: every name and its lstat */
    Py_BEGIN_ALLOW_THREADS
    DIR *d = opendir(PyBytes_AS_STRING(path));
    if (d == NULL) {
        bail = 1;
    } else {
        int dfd = dirfd(d);
        for (;;) {
            errno = 0;
            struct dirent *de = readdir(d);
            if (de == NULL) {
                bail = errno != 0; /* an error reading it: the twin raises it */
                break;
            }
            const char *n = de->d_name;
            if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0')))
                continue;
            if (de->d_type != DT_REG && de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) {
                bail = 1; /* a link, a special file: the twin's other path */
                break;
            }
            struct stat st;
            if (fstatat(dfd, n, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
                bail = 1;
                break;
            }
            size_t nlen = strnlen(n, NAME_MAX + 1), need;
            if (nlen > NAME_MAX) {
                bail = 1; /* a FUSE or CIFS name too long to present: the twin withholds it */
                break;
            }
            Row r;
            int ok = 1;
            r.atime = ns(st.st_atim, &ok);
            r.mtime = ns(st.st_mtim, &ok);
            r.ctime = ns(st.st_ctim, &ok);
            if (__builtin_mul_overflow((long long)st.st_blocks, 512LL, &r.used) || !ok ||
                (unsigned long long)st.st_nlink > (unsigned long long)LLONG_MAX ||
                __builtin_add_overflow(len, nlen + 1, &need) ||
                grow((void **)&buf, &cap, need, 1) != 0 ||
                grow((void **)&rows, &rcap, nrows + 1, sizeof(Row)) != 0) {
                bail = 1;
                break;
            }
            memcpy(buf + len, n, nlen + 1);
            r.at = len;
            r.len = nlen;
            len = need;
            r.size = (long long)st.st_size;
            r.nlink = (unsigned long long)st.st_nlink;
            r.uid = (unsigned long long)st.st_uid;
            r.gid = (unsigned long long)st.st_gid;
            r.mode = (unsigned int)st.st_mode;
            rows[nrows++] = r;
        }
        closedir(d);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(path);

    PyObject *entries = NULL, *checks = NULL, *result = NULL;
    if (bail) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    /* 2. with the GIL: the entries, as the twin makes them */
    entries = PyDict_New();
    if (entries == NULL)
        goto done;
    if (want_checks && (checks = PyList_New(0)) == NULL)
        goto done;
    for (size_t k = 0; k < nrows; k++) {
        const Row *r = &rows[k];
        PyObject *name = PyUnicode_DecodeFSDefaultAndSize(buf + r->at, (Py_ssize_t)r->len);
        if (name == NULL)
            goto done;
        PyObject *entry = NULL, *old = PyDict_GetItemWithError(before, name); /* borrowed */
        if (old == NULL && PyErr_Occurred()) {
            Py_DECREF(name);
            goto done;
        }
        if (old != NULL) {
            Py_INCREF(old); /* held: comparing its attributes may run Python code */
            PyObject *a = PyObject_GetAttr(old, s_attrs);
            int eq = a == NULL ? -1 : matches(a, r);
            Py_XDECREF(a);
            if (eq < 0) {
                Py_DECREF(old);
                Py_DECREF(name);
                goto done;
            }
            if (eq)
                entry = Py_NewRef(old);
            Py_DECREF(old);
        }
        if (entry == NULL) {
            PyObject *fid;
            if (id_prefix != NULL) { /* merge.attrs._fileid: 63 bits, never 0 nor the root's */
                uint64_t v = b2_hash3(&id_start, id_prefix, (size_t)id_prefix_len,
                                      buf + r->at, r->len, "", 1) &
                             0x7FFFFFFFFFFFFFFFULL;
                fid = PyLong_FromUnsignedLongLong(v > 1 ? v : 2);
            } else {
                fid = PyObject_CallOneArg(fileid_fn, name);
            }
            PyObject *attrs = fid == NULL ? NULL : make_attrs(r, fid);
            Py_XDECREF(fid);
            entry = attrs == NULL ? NULL : make_entry(attrs, folder, name);
        }
        int rc = entry == NULL ? -1 : PyDict_SetItem(entries, name, entry);
        if (rc == 0 && checks != NULL && (r->nlink > 1 || S_ISDIR(r->mode))) {
            PyObject *pair = PyTuple_Pack(2, name, entry);
            rc = pair == NULL ? -1 : PyList_Append(checks, pair);
            Py_XDECREF(pair);
            if (rc == 0 && PyList_GET_SIZE(checks) > max_checks)
                Py_CLEAR(checks); /* renewing would cost what a scan does */
        }
        Py_DECREF(name);
        Py_XDECREF(entry);
        if (rc != 0)
            goto done;
    }
    result = PyTuple_Pack(2, entries, checks != NULL ? checks : Py_None);
done:
    Py_XDECREF(entries);
    Py_XDECREF(checks);
    free(rows);
    free(buf);
    return result;
}

static PyMethodDef methods[] = {
    {"layout", layout, METH_VARARGS,
     "layout(object_new, (Attrs, Stored, Entry), descriptors, (REG, DIR), perms, used, 0): "
     "what scan builds with (merge.passthrough gives it once)."},
    {"hash64", hash64, METH_VARARGS,
     "hash64(names, person, prefix, suffix) -> list[int]: each name's 8-byte BLAKE2b "
     "(of prefix + name + suffix, utf-8 with surrogateescape) as a big-endian int."},
    {"scan", scan, METH_VARARGS,
     "scan(path, before, fileid, folder, want_checks, max_checks) -> (entries, checks) | None: "
     "merge.passthrough's scan of a folder of regular files and folders in C (None: ask the "
     "twin)."},
    {"times_match", times_match, METH_VARARGS,
     "times_match(folder_fd, entries) -> bool | None: merge.watch._times_match_py in C "
     "(None: a value past 64 bits, ask the twin)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "merge._native",
    "Loops over a large storage folder in C (merge.watch, merge.passthrough).", -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    s_attrs = PyUnicode_InternFromString("attrs");
    s_ctime = PyUnicode_InternFromString("ctime_ns");
    s_mtime = PyUnicode_InternFromString("mtime_ns");
    s_atime = PyUnicode_InternFromString("atime_ns");
    s_used = PyUnicode_InternFromString("used");
    if (!s_attrs || !s_ctime || !s_mtime || !s_atime || !s_used)
        return NULL;
    return PyModule_Create(&module);
}
