/*
 * instant._native: the overlay maps' pieces kept out of the cyclic collector.
 *
 * untrack(pieces): each item that is a tuple (a Piece: a NamedTuple) whose
 * every field is an int, and whose type gives it no instance dict, is
 * taken off the cyclic garbage collector's lists (PyObject_GC_UnTrack).
 *
 * Why: a VM's random 4 KiB writes leave a piece each in the file's map
 * (instant.rangemap), 890,000 for a 16 GiB disk.  CPython untracks a plain
 * tuple of numbers by itself, at a collection, but never an instance of a
 * tuple's subclass, so a full collection walked every piece of every map
 * the process holds with the GIL held: 0.19 s a map of 890,000 pieces here,
 * a pause of every call the process serves (the lock refreshes and heartbeat
 * GETATTRs of a hypervisor must be answered within 1 s), once every few
 * hundred thousand new objects.  An untracked piece costs the collector
 * nothing; the chunk lists that hold the pieces stay tracked (a few per
 * thousand pieces).
 *
 * Why it is safe: an object the collector does not track is still freed by
 * its reference count; only a reference cycle through it could leak, and a
 * tuple of ints with no instance dict can be part of none (its fields are
 * ints, nothing else it refers to can refer back).  So anything else (a
 * tuple holding a non-int, a subclass with a __dict__, any other object) is
 * left as it is.  A piece that is never untracked (the pure-Python twin,
 * instant.rangemap._untrack_py, which does nothing) is only scanned.
 *
 * Bounds: one pass over the list or tuple given (PySequence_Fast), nothing
 * allocated but that view, no call into Python.
 *
 * put(map, piece, load, Piece, Edits): RangeMap.put's common case, in C.
 *
 * Why: a VM's random 4 KiB writes make one put a WRITE on the committer, with
 * the GIL held: 6 us of Python at ~100,000 pieces in the server (its bisects,
 * slices, the kept set, the Edits), about a tenth of the group's map work.
 *
 * What it does: exactly what instant.rangemap.RangeMap.put does (read that
 * first; the names are its names) when the piece's window lies in one chunk
 * and that chunk stays within its bounds after the change, so no chunk is cut
 * or joined (the put of nearly every WRITE).  Anything else (an empty map, a
 * window over two chunks, a chunk that would be cut or joined, a value or a
 * sum of them past 64 bits, a piece that is not a tuple of four ints) returns
 * None *before* anything changed, and the Python method does the whole put.  The map's
 * lists are RangeMap's own (_chunks, _starts, _firsts, _len): changed in
 * place as the Python code changes them.  New pieces are made as Piece does
 * (a tuple subclass of four ints, no instance dict) and untracked as
 * untrack() does.  tests/unit/test_instant_rangemap.py runs the model tests
 * with and without it (RECOVERY_FS_PURE=1), with small chunks so that both
 * the fast case and the fallback are met.
 *
 * apply(map, removed, added, load, Piece): RangeMap.apply (a read cache following a
 * commit's edits, on the committer before the group's replies) the same way:
 * its steps in its order, each while it changes one chunk in place (a removal
 * that leaves its chunk within bounds, an insertion that does not make it too
 * large); it stops before the first that would not (a chunk to cut, join or
 * drop, a start with no piece), and returns how many removals and additions it
 * made; the Python method makes the rest, from there, as it would have.
 *
 * Both touch only pieces of exactly the Piece type given (a NamedTuple of ints:
 * comparing or dropping one runs no Python code, so nothing can change the
 * map's lists under them) and values whose sums fit in 64 bits; anything else
 * is left to Python.  Wrong argument types raise TypeError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int all_ints(PyObject *t) {
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(t, i)))
            return 0;
    }
    return 1;
}

static PyObject *untrack(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "untrack: a list or tuple of pieces");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = items[i];
        if (PyTuple_Check(o) && Py_TYPE(o)->tp_dictoffset == 0 && PyObject_GC_IsTracked(o) &&
            all_ints(o))
            PyObject_GC_UnTrack(o);
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}


static PyObject *s_chunks, *s_starts, *s_firsts, *s_len;

/* The int64 value of a Python int; -1 with *bad set when it is not one. */
static long long as_i64(PyObject *o, int *bad) {
    if (!PyLong_CheckExact(o)) {
        *bad = 1;
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        *bad = 1;
    }
    return v;
}

/* a + b and a - b, with *bad set when they do not fit in 64 bits (Python's ints
 * would: the caller then leaves the work to Python). */
static long long add(long long a, long long b, int *bad) {
    long long r;
    if (__builtin_add_overflow(a, b, &r))
        *bad = 1;
    return r;
}

static long long sub(long long a, long long b, int *bad) {
    long long r;
    if (__builtin_sub_overflow(a, b, &r))
        *bad = 1;
    return r;
}

/* bisect_left / bisect_right over a list of ints; -1 with *bad set on a non-int. */
static Py_ssize_t bisect(PyObject *list, long long x, Py_ssize_t lo, int right, int *bad) {
    Py_ssize_t hi = PyList_GET_SIZE(list);
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        long long v = as_i64(PyList_GET_ITEM(list, mid), bad);
        if (*bad)
            return -1;
        if (right ? (x < v) : (v >= x))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* A new instance of a tuple subclass (Piece, Edits) holding `items` (stolen). */
static PyObject *make(PyTypeObject *type, Py_ssize_t n, PyObject **items) {
    PyObject *o = type->tp_alloc(type, n);
    if (o == NULL) {
        for (Py_ssize_t k = 0; k < n; k++)
            Py_XDECREF(items[k]);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        if (items[k] == NULL) {
            Py_DECREF(o);
            for (Py_ssize_t m = k + 1; m < n; m++)
                Py_XDECREF(items[m]);
            return NULL;
        }
        PyTuple_SET_ITEM(o, k, items[k]);
    }
    return o;
}

static PyObject *new_piece(PyTypeObject *type, long long start, long long length, long long log,
                           long long pos) {
    PyObject *items[4] = {PyLong_FromLongLong(start), PyLong_FromLongLong(length),
                          PyLong_FromLongLong(log), PyLong_FromLongLong(pos)};
    PyObject *p = make(type, 4, items);
    if (p != NULL && PyObject_GC_IsTracked(p))
        PyObject_GC_UnTrack(p); /* four ints: see untrack() */
    return p;
}

/* A piece's four fields; 0 if it is not a tuple of four int64s. */
static int fields(PyObject *p, long long f[4]) {
    if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 4)
        return 0;
    int bad = 0;
    for (int k = 0; k < 4; k++)
        f[k] = as_i64(PyTuple_GET_ITEM(p, k), &bad);
    return !bad;
}

/* fields(), of an object of exactly the Piece type: comparing, removing or
 * dropping it then runs no Python code (no __eq__, no __del__ of its own). */
static int is_piece(PyObject *p, PyTypeObject *piece_t, long long f[4]) {
    return Py_TYPE(p) == piece_t && fields(p, f);
}

/* Whether `t` is a NamedTuple of ints as Piece and Edits are: a tuple subclass
 * with the tuple's layout, compare, no instance dict, no finalizer, a `_fields`
 * (a struct sequence such as os.stat_result, with a layout and a dealloc of its
 * own, is not one).  The last two types that passed are kept (strong refs). */
static PyTypeObject *ok_types[2];

static int named_tuple_type(PyObject *o) {
    if (!PyType_Check(o))
        return 0;
    PyTypeObject *t = (PyTypeObject *)o;
    if (t == ok_types[0] || t == ok_types[1])
        return 1;
    if (t->tp_base != &PyTuple_Type || t->tp_dictoffset != 0 ||
        t->tp_basicsize != PyTuple_Type.tp_basicsize ||
        t->tp_itemsize != PyTuple_Type.tp_itemsize ||
        t->tp_richcompare != PyTuple_Type.tp_richcompare || t->tp_finalize != NULL ||
        t->tp_del != NULL)
        return 0;
    int has = PyObject_HasAttrString(o, "_fields");
    if (has <= 0)
        return 0;
    Py_INCREF(t);
    Py_XSETREF(ok_types[1], ok_types[0]);
    ok_types[0] = t;
    return 1;
}

/* A RangeMap's own lists (_chunks, _starts, _firsts: new references in lists[0..2])
 * and its count (*total); -1 with an exception set, 0 when they are not lists of a
 * RangeMap (the caller leaves the work to Python), 1 when they are. */
static int map_lists(PyObject *map, PyObject *lists[3], long long *total) {
    PyObject *names[3] = {s_chunks, s_starts, s_firsts};
    lists[0] = lists[1] = lists[2] = NULL;
    for (int k = 0; k < 3; k++) {
        lists[k] = PyObject_GetAttr(map, names[k]);
        if (lists[k] == NULL)
            return -1;
    }
    PyObject *lenobj = PyObject_GetAttr(map, s_len);
    if (lenobj == NULL)
        return -1;
    int bad = 0;
    *total = as_i64(lenobj, &bad);
    Py_DECREF(lenobj);
    return !bad && PyList_CheckExact(lists[0]) && PyList_CheckExact(lists[1]) &&
           PyList_CheckExact(lists[2]);
}

/* Chunk c's lists: its starts (*cs) and its pieces (*cp), borrowed; 0 if they are
 * not two lists of one length (not a RangeMap's: the caller leaves it to Python). */
static int chunk(PyObject *starts, PyObject *chunks, Py_ssize_t c, PyObject **cs, PyObject **cp) {
    *cs = PyList_GET_ITEM(starts, c);
    *cp = PyList_GET_ITEM(chunks, c);
    return PyList_CheckExact(*cs) && PyList_CheckExact(*cp) &&
           PyList_GET_SIZE(*cs) == PyList_GET_SIZE(*cp);
}

/* Append to `out` each item of `items` equal to none of `others` (its start, field 0,
 * if `starts`, else the item itself): Python's `[p for p in items if p not in kept]`. */
static int not_in(PyObject *items, PyObject *others, PyObject *out, int starts) {
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(items); k++) {
        PyObject *p = PyList_GET_ITEM(items, k);
        int kept = 0;
        for (Py_ssize_t m = 0; m < PyList_GET_SIZE(others) && !kept; m++) {
            kept = PyObject_RichCompareBool(p, PyList_GET_ITEM(others, m), Py_EQ);
            if (kept < 0)
                return -1;
        }
        if (!kept && PyList_Append(out, starts ? PyTuple_GET_ITEM(p, 0) : p) < 0)
            return -1;
    }
    return 0;
}

static PyObject *put(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "put(map, piece, load, Piece, Edits)");
        return NULL;
    }
    PyObject *map = args[0], *piece = args[1];
    PyTypeObject *piece_t = (PyTypeObject *)args[3], *edits_t = (PyTypeObject *)args[4];
    if (!named_tuple_type(args[3]) || !named_tuple_type(args[4])) {
        if (PyErr_Occurred())
            return NULL;
        PyErr_SetString(PyExc_TypeError, "put: Piece and Edits must be NamedTuple types");
        return NULL;
    }
    int bad = 0;
    long long load = as_i64(args[2], &bad);
    long long pf[4];
    if (bad || load < 1 || !is_piece(piece, piece_t, pf) || pf[1] < 1 || pf[0] < 0 ||
        pf[0] > LLONG_MAX - pf[1])
        Py_RETURN_NONE;
    long long start = pf[0], end = pf[0] + pf[1];

    PyObject *result = NULL, *lists[3], *old = NULL, *new = NULL, *new_starts = NULL;
    PyObject *removed = NULL, *added = NULL, *middle = NULL;
    long long total;
    int got = map_lists(map, lists, &total);
    PyObject *chunks = lists[0], *starts = lists[1], *firsts = lists[2];
    if (got < 0)
        goto done;
    if (got == 0)
        goto fallback;
    Py_ssize_t nch = PyList_GET_SIZE(chunks);
    if (nch == 0 || PyList_GET_SIZE(starts) != nch || PyList_GET_SIZE(firsts) != nch)
        goto fallback;

    /* _before(start): the last piece that starts before it, to join a piece it continues. */
    long long s = start;
    Py_ssize_t c = bisect(firsts, start, 0, 0, &bad) - 1;
    if (bad)
        goto fallback;
    if (c >= 0) {
        PyObject *cs, *cp;
        if (!chunk(starts, chunks, c, &cs, &cp))
            goto fallback;
        Py_ssize_t k = bisect(cs, start, 0, 0, &bad) - 1;
        long long prev[4];
        if (bad || k < 0 || !is_piece(PyList_GET_ITEM(cp, k), piece_t, prev))
            goto fallback;
        long long prev_end = add(prev[0], prev[1], &bad), prev_next = add(prev[3], prev[1], &bad);
        long long joined = add(prev[1], pf[1], &bad);
        if (bad)
            goto fallback;
        if (prev_end == start && prev[2] == pf[2] && prev_next == pf[3]) {
            s = prev[0]; /* joined: the piece from the previous one's start */
            middle = new_piece(piece_t, prev[0], joined, prev[2], prev[3]);
            if (middle == NULL)
                goto done;
        }
    }
    if (middle == NULL) {
        middle = piece;
        Py_INCREF(middle);
    }

    /* _window(s, end): one chunk only. */
    if (nch < 2)
        c = 0;
    else {
        c = bisect(firsts, s, 0, 1, &bad) - 1;
        if (bad)
            goto fallback;
        if (c < 0)
            c = 0;
    }
    if (c + 1 < nch) {
        long long next_first = as_i64(PyList_GET_ITEM(firsts, c + 1), &bad);
        if (bad || next_first < end)
            goto fallback; /* the window spans two chunks */
    }
    PyObject *pieces, *cst;
    if (!chunk(starts, chunks, c, &cst, &pieces))
        goto fallback;
    Py_ssize_t n = PyList_GET_SIZE(pieces);
    Py_ssize_t i = bisect(cst, s, 0, 1, &bad) - 1;
    if (bad)
        goto fallback;
    long long f[4];
    if (i >= 0) {
        if (!is_piece(PyList_GET_ITEM(pieces, i), piece_t, f))
            goto fallback;
        long long f_end = add(f[0], f[1], &bad);
        if (bad)
            goto fallback;
        if (f_end <= s)
            i += 1;
    } else
        i += 1;
    Py_ssize_t j = bisect(cst, end, i, 0, &bad);
    if (bad)
        goto fallback;

    /* The pieces in place of [i, j): a head cut from the first, middle, a tail of the last. */
    new = PyList_New(0);
    if (new == NULL)
        goto done;
    long long first[4] = {0, 0, 0, 0}, last[4] = {0, 0, 0, 0};
    long long head_len = 0, last_end = 0, tail_len = 0, tail_pos = 0;
    if (i < j) {
        for (Py_ssize_t k = i; k < j; k++) { /* every piece it compares and cuts */
            if (!is_piece(PyList_GET_ITEM(pieces, k), piece_t, last))
                goto fallback;
        }
        if (!fields(PyList_GET_ITEM(pieces, i), first))
            goto fallback;
        head_len = sub(s, first[0], &bad);
        last_end = add(last[0], last[1], &bad);
        tail_len = sub(last_end, end, &bad);
        tail_pos = add(last[3], sub(end, last[0], &bad), &bad);
        if (bad)
            goto fallback;
        if (first[0] < s) {
            PyObject *h = new_piece(piece_t, first[0], head_len, first[2], first[3]);
            if (h == NULL || PyList_Append(new, h) < 0) {
                Py_XDECREF(h);
                goto done;
            }
            Py_DECREF(h);
        }
    }
    if (PyList_Append(new, middle) < 0)
        goto done;
    if (i < j && last_end > end) {
        PyObject *t = new_piece(piece_t, end, tail_len, last[2], tail_pos);
        if (t == NULL || PyList_Append(new, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    Py_ssize_t nnew = PyList_GET_SIZE(new);
    Py_ssize_t after = n - (j - i) + nnew;
    /* _put_back's case that changes the chunk in place: within its bounds (the last
     * chunk may be smaller).  Anything else cuts or joins chunks: Python's. */
    long long low = load / 4 ? load / 4 : 1;
    if (after > 2 * load || (after < low && c + 1 < nch))
        goto fallback;
    /* The caller's piece, as _untrack does (it is a Piece of four ints: is_piece);
     * one made here is untracked already. */
    if (middle == piece && PyObject_GC_IsTracked(piece))
        PyObject_GC_UnTrack(piece);
    new_starts = PyList_New(nnew);
    old = PyList_GetSlice(pieces, i, j);
    removed = PyList_New(0);
    added = PyList_New(0);
    if (new_starts == NULL || old == NULL || removed == NULL || added == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < nnew; k++) {
        PyObject *st = PyTuple_GET_ITEM(PyList_GET_ITEM(new, k), 0);
        Py_INCREF(st);
        PyList_SET_ITEM(new_starts, k, st);
    }
    /* Edits: a piece kept whole (the same value before and after) is no edit. */
    Py_ssize_t nold = PyList_GET_SIZE(old);
    if (not_in(old, new, removed, 1) < 0 || not_in(new, old, added, 0) < 0)
        goto done;
    PyObject *edits_items[2] = {removed, added};
    Py_INCREF(removed);
    Py_INCREF(added);
    result = make(edits_t, 2, edits_items);
    if (result == NULL)
        goto done;
    long long count = add(total, nnew - nold, &bad);
    if (bad) {
        Py_CLEAR(result);
        goto fallback;
    }
    /* Only now the map changes (nothing above can fail after this point but memory). */
    PyObject *newlen = PyLong_FromLongLong(count);
    if (newlen == NULL || PyList_SetSlice(pieces, i, j, new) < 0 ||
        PyList_SetSlice(cst, i, j, new_starts) < 0) {
        Py_XDECREF(newlen);
        Py_CLEAR(result);
        goto done;
    }
    PyObject *head = PyList_GET_ITEM(cst, 0);
    Py_INCREF(head);
    if (PyList_SetItem(firsts, c, head) < 0 || /* steals head */
        PyObject_SetAttr(map, s_len, newlen) < 0)
        Py_CLEAR(result);
    Py_DECREF(newlen);
    goto done;

fallback:
    result = Py_None;
    Py_INCREF(result);
done:
    Py_XDECREF(chunks);
    Py_XDECREF(starts);
    Py_XDECREF(firsts);
    Py_XDECREF(old);
    Py_XDECREF(new);
    Py_XDECREF(new_starts);
    Py_XDECREF(removed);
    Py_XDECREF(added);
    Py_XDECREF(middle);
    return result;
}

/* apply(map, removed, added, load): RangeMap.apply's steps while each is its common
 * case; (removals done, additions done): the Python method does the rest. */
static PyObject *apply(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_CheckExact(args[1]) || !PyList_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "apply(map, removed: list, added: list, load, Piece)");
        return NULL;
    }
    if (!named_tuple_type(args[4])) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "apply: Piece must be a NamedTuple type");
        return NULL;
    }
    PyObject *map = args[0], *removed = args[1], *added = args[2];
    PyTypeObject *piece_t = (PyTypeObject *)args[4];
    int bad = 0;
    long long load = as_i64(args[3], &bad);
    Py_ssize_t r = 0, a = 0, nrem = PyList_GET_SIZE(removed), nadd = PyList_GET_SIZE(added);
    PyObject *result = NULL, *lists[3];
    long long total;
    int got = map_lists(map, lists, &total);
    PyObject *chunks = lists[0], *starts = lists[1], *firsts = lists[2];
    if (got < 0)
        goto done;
    if (got == 0 || bad || load < 1)
        goto out;
    long long low = load / 4 ? load / 4 : 1;
    for (; r < nrem; r++) {
        Py_ssize_t nch = PyList_GET_SIZE(chunks);
        long long x = as_i64(PyList_GET_ITEM(removed, r), &bad);
        if (bad || nch == 0 || PyList_GET_SIZE(starts) != nch || PyList_GET_SIZE(firsts) != nch)
            goto out;
        Py_ssize_t c = bisect(firsts, x, 0, 1, &bad) - 1;
        if (bad || c < 0)
            goto out; /* no piece there: Python's ValueError */
        PyObject *cs, *cp;
        if (!chunk(starts, chunks, c, &cs, &cp))
            goto out;
        Py_ssize_t n = PyList_GET_SIZE(cs), k = bisect(cs, x, 0, 0, &bad);
        long long gone[4];
        if (bad || k == n || as_i64(PyList_GET_ITEM(cs, k), &bad) != x || bad ||
            !is_piece(PyList_GET_ITEM(cp, k), piece_t, gone) || total < 1)
            goto out;
        /* _put_back after it: in place unless the chunk empties or is to be joined */
        if (n - 1 < 1 || (n - 1 < low && c + 1 < nch))
            goto out;
        if (PySequence_DelItem(cs, k) < 0 || PySequence_DelItem(cp, k) < 0)
            goto done;
        total -= 1;
        PyObject *head = PyList_GET_ITEM(cs, 0);
        Py_INCREF(head);
        if (PyList_SetItem(firsts, c, head) < 0)
            goto done;
    }
    for (; a < nadd; a++) {
        Py_ssize_t nch = PyList_GET_SIZE(chunks);
        PyObject *p = PyList_GET_ITEM(added, a);
        long long f[4];
        if (nch == 0 || PyList_GET_SIZE(starts) != nch || PyList_GET_SIZE(firsts) != nch ||
            !is_piece(p, piece_t, f) || total == LLONG_MAX)
            goto out;
        Py_ssize_t c = bisect(firsts, f[0], 0, 1, &bad) - 1;
        if (bad)
            goto out;
        if (c < 0)
            c = 0;
        PyObject *cs, *cp;
        if (!chunk(starts, chunks, c, &cs, &cp) || PyList_GET_SIZE(cp) + 1 > 2 * load)
            goto out; /* a chunk to cut: Python's */
        Py_ssize_t k = bisect(cs, f[0], 0, 0, &bad);
        if (bad)
            goto out;
        PyObject *st = PyTuple_GET_ITEM(p, 0);
        if (PyList_Insert(cs, k, st) < 0)
            goto done;
        if (PyList_Insert(cp, k, p) < 0) {
            PySequence_DelItem(cs, k);
            goto done;
        }
        total += 1;
        if (k == 0) {
            Py_INCREF(st);
            if (PyList_SetItem(firsts, c, st) < 0)
                goto done;
        }
    }
out:
    result = Py_BuildValue("(nn)", r, a);
done:
    if (r > 0 || a > 0) {
        /* the count of what was done, even when a step failed after it */
        PyObject *newlen = PyLong_FromLongLong(total);
        if (newlen == NULL || PyObject_SetAttr(map, s_len, newlen) < 0)
            Py_CLEAR(result);
        Py_XDECREF(newlen);
    }
    Py_XDECREF(chunks);
    Py_XDECREF(starts);
    Py_XDECREF(firsts);
    return result;
}

static PyMethodDef methods[] = {
    {"untrack", untrack, METH_O,
     "untrack(pieces): take each tuple of ints among them off the cyclic collector's "
     "lists (a map's pieces: instant.rangemap)."},
    {"put", (PyCFunction)(void (*)(void))put, METH_FASTCALL,
     "put(map, piece, load, Piece, Edits): RangeMap.put when its window lies in one chunk "
     "that stays within its bounds (the Edits); None, nothing changed, otherwise."},
    {"apply", (PyCFunction)(void (*)(void))apply, METH_FASTCALL,
     "apply(map, removed, added, load, Piece): RangeMap.apply's steps while each changes "
     "one chunk in place; (removals done, additions done)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "instant._native",
    "The overlay maps' pieces kept out of the cyclic collector (instant.rangemap).", -1,
    methods};

PyMODINIT_FUNC PyInit__native(void) {
    s_chunks = PyUnicode_InternFromString("_chunks");
    s_starts = PyUnicode_InternFromString("_starts");
    s_firsts = PyUnicode_InternFromString("_firsts");
    s_len = PyUnicode_InternFromString("_len");
    if (s_chunks == NULL || s_starts == NULL || s_firsts == NULL || s_len == NULL)
        return NULL;
    return PyModule_Create(&module);
}
