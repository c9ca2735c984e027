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

static PyMethodDef methods[] = {
    {"untrack", untrack, METH_O,
     "untrack(pieces): take each tuple of ints among them off the cyclic collector's "
     "lists (a map's pieces: instant.rangemap)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "instant._native",
    "The overlay maps' pieces kept out of the cyclic collector (instant.rangemap).", -1,
    methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
