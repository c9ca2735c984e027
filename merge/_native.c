/*
 * merge._native: the loop of merge.watch's pass over a large folder, in C.
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

#include <errno.h>
#include <fcntl.h>
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

        PyObject *a = PyObject_GetAttr(value, s_attrs);
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

static PyMethodDef methods[] = {
    {"times_match", times_match, METH_VARARGS,
     "times_match(folder_fd, entries) -> bool | None: merge.watch._times_match_py in C "
     "(None: a value past 64 bits, ask the twin)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "merge._native",
                                    "The loop of merge.watch's pass, in C (see merge.watch).",
                                    -1, methods};

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
