/* The skim's Python binding: a Skimmer object around the C core in skim_c/ (whose
 * skim.h states the contract). It parses arguments, lets go of the GIL while a walk runs
 * and packs what the walk kept for detector/skim.py.
 *
 * Why C: the rest of the pipeline costs ~15 us per frame in Python, the walk over the
 * record headers alone ~0.6 us; on a tap 90+ % of frames are bulk (TCP data and ACKs,
 * QUIC short headers), so the bulk must leave in C to replay at libpcap's speed.
 * aioquic takes the same way for its buffer (src/aioquic/_buffer.c).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#include "skim_c/skim.h"

typedef struct {
    PyObject_HEAD
    Skim skim;
} Skimmer;

static PyObject *walk_result(Skimmer *self, SkimWalk *w, int status, size_t pos) {
    Skim *s = &self->skim;
    PyObject *kept = PyBytes_FromStringAndSize((const char *)w->kept, (Py_ssize_t)(w->n_kept * sizeof(SkimKept)));
    PyMem_Free(w->kept);
    if (!kept) return NULL;
    PyObject *drops = PyTuple_New(N_DROPS);
    for (int i = 0; drops && i < N_DROPS; i++) {
        PyObject *count = PyLong_FromUnsignedLongLong(s->drops[i]);
        if (!count) Py_CLEAR(drops);
        else PyTuple_SET_ITEM(drops, i, count);
    }
    memset(s->drops, 0, sizeof s->drops);
    if (!drops) {
        Py_DECREF(kept);
        return NULL;
    }
    PyObject *last = isnan(w->last_ts) ? Py_NewRef(Py_None) : PyFloat_FromDouble(w->last_ts);
    PyObject *lo = isnan(w->ts_min) ? Py_NewRef(Py_None) : PyFloat_FromDouble(w->ts_min);
    PyObject *hi = isnan(w->ts_max) ? Py_NewRef(Py_None) : PyFloat_FromDouble(w->ts_max);
    return Py_BuildValue("(innNNNNN)", status, (Py_ssize_t)pos, (Py_ssize_t)w->walked, kept, last, lo, hi, drops);
}

/* Check the span a walk is asked for and set the walk up; on failure the error is set and
 * the buffer released. */
static int walk_start(SkimWalk *w, Py_buffer *view, Py_ssize_t pos, Py_ssize_t end) {
    if (pos < 0 || end > view->len || pos > end) {
        PyErr_Format(PyExc_ValueError, "bad span %zd:%zd of %zd bytes", pos, end, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    SkimKept *kept = PyMem_Malloc(SKIM_MAX_KEPT * sizeof(SkimKept));
    if (!kept) {
        PyErr_NoMemory();
        PyBuffer_Release(view);
        return -1;
    }
    skim_walk_start(w, kept);
    return 0;
}

static int ready(Skimmer *self) {
    if (self->skim.slots) return 1;
    PyErr_SetString(PyExc_RuntimeError, "Skimmer.__init__ was not called");
    return 0;
}

PyDoc_STRVAR(walk_pcap_doc,
"walk_pcap(buf, pos, end, big_endian, nanoseconds, linktype)\n--\n\n"
"Walk classic pcap records in buf[pos:end] until the buffer ends (END), a frame at or\n"
"past `until` (TICK), MAX_KEPT kept frames or a kept frame it could not read through\n"
"(FULL: Python reads them, then walks on) or a record too long to be a packet (CORRUPT).\n"
"Returns (status, pos, walked, kept, last_ts, ts_min, ts_max, drops): `kept`\n"
"packs (serial, ts, offset, caplen, linktype, hint) as \"=QdQIII4x\"; `drops` counts, in the\n"
"order of DROP_KEYS, what was dropped since the last call.");

static PyObject *walk_pcap(Skimmer *self, PyObject *args) {
    if (!ready(self)) return NULL;
    Py_buffer view;
    Py_ssize_t pos, end;
    int big, nanos;
    unsigned int linktype;
    if (!PyArg_ParseTuple(args, "y*nnppI", &view, &pos, &end, &big, &nanos, &linktype)) return NULL;
    SkimWalk w;
    if (walk_start(&w, &view, pos, end) < 0) return NULL;
    size_t at = (size_t)pos;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = skim_walk_pcap(&self->skim, &w, view.buf, &at, (size_t)end, big, nanos, linktype);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return walk_result(self, &w, status, at);
}

PyDoc_STRVAR(walk_pcapng_doc,
"walk_pcapng(buf, pos, end, big_endian, interfaces)\n--\n\n"
"As walk_pcap, over pcapng Enhanced Packet Blocks; `interfaces` packs (linktype,\n"
"seconds per tick, offset) per interface as \"=I4xdq\". Stops with BLOCK at any other\n"
"block, and at an EPB it cannot take whole (unknown interface, bad lengths), for the\n"
"Python reader to handle.");

static PyObject *walk_pcapng(Skimmer *self, PyObject *args) {
    if (!ready(self)) return NULL;
    Py_buffer view, ifview;
    Py_ssize_t pos, end;
    int big;
    if (!PyArg_ParseTuple(args, "y*nnpy*", &view, &pos, &end, &big, &ifview)) return NULL;
    SkimInterface ifaces[SKIM_MAX_INTERFACES];
    size_t n_if = (size_t)ifview.len / sizeof(SkimInterface);
    int whole = ifview.len % sizeof(SkimInterface) == 0;
    if (n_if > SKIM_MAX_INTERFACES) n_if = SKIM_MAX_INTERFACES; /* more: Python takes the packets of the others */
    memcpy(ifaces, ifview.buf, n_if * sizeof(SkimInterface));
    PyBuffer_Release(&ifview);
    if (!whole) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "interface table not in whole %zu-byte entries", sizeof(SkimInterface));
    }
    SkimWalk w;
    if (walk_start(&w, &view, pos, end) < 0) return NULL;
    size_t at = (size_t)pos;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = skim_walk_pcapng(&self->skim, &w, view.buf, &at, (size_t)end, big, ifaces, n_if);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return walk_result(self, &w, status, at);
}

PyDoc_STRVAR(walk_frames_doc,
"walk_frames(buf, frames, linktype)\n--\n\n"
"As walk_pcap, over the frames of a live capture's batch: `frames` packs (seconds,\n"
"microseconds, offset in buf, caplen) per frame as \"=IIII\", and a walk starts at the\n"
"frame `pos` (the first call 0, then the pos a walk returned). CORRUPT: a frame lies\n"
"outside buf.");

static PyObject *walk_frames(Skimmer *self, PyObject *args) {
    if (!ready(self)) return NULL;
    Py_buffer view, meta;
    Py_ssize_t pos;
    unsigned int linktype;
    if (!PyArg_ParseTuple(args, "y*y*nI", &view, &meta, &pos, &linktype)) return NULL;
    size_t n = (size_t)meta.len / sizeof(SkimFrame);
    if (meta.len % sizeof(SkimFrame) || pos < 0 || (size_t)pos > n) {
        PyBuffer_Release(&meta);
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "frames not in whole %zu-byte entries, or pos %zd past them",
                            sizeof(SkimFrame), pos);
    }
    SkimWalk w;
    if (walk_start(&w, &view, 0, view.len) < 0) {
        PyBuffer_Release(&meta);
        return NULL;
    }
    size_t next = (size_t)pos;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = skim_walk_frames(&self->skim, &w, view.buf, (size_t)view.len, meta.buf, n, &next, linktype);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&meta);
    PyBuffer_Release(&view);
    return walk_result(self, &w, status, next);
}

PyDoc_STRVAR(set_names_doc,
"set_names(keys)\n--\n\n"
"Triage DNS over UDP by name from now on: `keys` are the signature keys joined by NUL\n"
"bytes (SignatureSet.prefilter_keys); a message none of whose names equals a key or ends\n"
"in \".\" and a key is dropped and counted. ValueError if a key is not 1-253 bytes of\n"
"[a-z0-9.-] or there are more than 2**20; the index is then left as it was.");

static PyObject *set_names(Skimmer *self, PyObject *args) {
    if (!ready(self)) return NULL;
    Py_buffer keys;
    if (!PyArg_ParseTuple(args, "y*", &keys)) return NULL;
    int failed = self->skim.keep_all ? -2 : skim_set_names(&self->skim, keys.buf, (size_t)keys.len);
    PyBuffer_Release(&keys);
    if (failed == -2) return PyErr_Format(PyExc_ValueError, "a skimmer that keeps every frame triages no names");
    if (failed) return PyErr_Format(PyExc_ValueError, "signature keys: at most %d of 1-%d bytes of [a-z0-9.-]",
                                    SKIM_MAX_NAMES, SKIM_MAX_NAME);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(set_tunnel_port_doc,
"set_tunnel_port(port, kind)\n--\n\n"
"UDP `port` opens the tunnel `kind` (decode.py's codes: VXLAN 1 .. GRE-in-UDP 7) from now on.");

static PyObject *set_tunnel_port(Skimmer *self, PyObject *args) {
    if (!ready(self)) return NULL;
    unsigned int port, kind;
    if (!PyArg_ParseTuple(args, "II", &port, &kind)) return NULL;
    if (skim_set_tunnel_port(&self->skim, port, kind) < 0)
        return PyErr_Format(PyExc_ValueError, "a tunnel port is 0-65535 and its kind %d-%d", SKIM_VXLAN, SKIM_GRE_IN_UDP);
    Py_RETURN_NONE;
}

static PyObject *clear_names(Skimmer *self, PyObject *unused) {
    skim_clear_names(&self->skim);
    Py_RETURN_NONE;
}

static PyObject *next_serial(Skimmer *self, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(++self->skim.serial);
}

PyDoc_STRVAR(hash_doc,
"flow_hash(src_ip, sport, dst_ip, dport)\n--\n\n"
"The key the skim gives one direction of a TCP flow (addresses as 4 or 16 raw bytes).");

static PyObject *py_flow_hash(Skimmer *self, PyObject *args) {
    Py_buffer src, dst;
    unsigned int sport, dport;
    if (!PyArg_ParseTuple(args, "y*Iy*I", &src, &sport, &dst, &dport)) return NULL;
    PyObject *result = NULL;
    if (src.len != dst.len || (src.len != 4 && src.len != 16) || sport > 0xFFFF || dport > 0xFFFF)
        PyErr_SetString(PyExc_ValueError, "addresses of 4 or 16 bytes and 16-bit ports expected");
    else
        result = PyLong_FromUnsignedLongLong(skim_flow_hash(&self->skim, src.buf, dst.buf, (int)src.len, sport, dport));
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

PyDoc_STRVAR(track_doc,
"track(flow, tracked)\n--\n\n"
"Whether Python tracks this flow (a flow_hash) now that it has read a frame of it.");

static PyObject *track(Skimmer *self, PyObject *args) {
    if (!ready(self)) return NULL;
    unsigned long long key;
    int tracked;
    if (!PyArg_ParseTuple(args, "Kp", &key, &tracked)) return NULL;
    skim_track(&self->skim, key, tracked);
    Py_RETURN_NONE;
}

static int set_ports(uint8_t *set, PyObject *ports) {
    PyObject *it = PyObject_GetIter(ports), *item;
    if (!it) return -1;
    while ((item = PyIter_Next(it))) {
        long port = PyLong_AsLong(item);
        Py_DECREF(item);
        if (port < 0 || port > 0xFFFF) {
            Py_DECREF(it);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "port out of range");
            return -1;
        }
        skim_add_port(set, (unsigned)port);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static int set_methods(Skim *s, PyObject *starts) {
    PyObject *seq = PySequence_Fast(starts, "request_starts must be a sequence of bytes");
    if (!seq) return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *m = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(m) ||
            skim_add_method(s, (const uint8_t *)PyBytes_AS_STRING(m), (size_t)PyBytes_GET_SIZE(m)) < 0) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "request starts: at most 32 bytes objects of 1-16 bytes");
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static int Skimmer_init(Skimmer *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"dns_ports", "quic_ports", "request_starts", "max_flows", "seed",
                             "keep_all", "worker", "workers", NULL};
    PyObject *dns, *quic, *starts;
    Py_ssize_t max_flows;
    unsigned long long seed;
    int keep_all = 0;
    unsigned int worker = 0, workers = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOnK|pII", kwlist, &dns, &quic, &starts, &max_flows, &seed,
                                     &keep_all, &worker, &workers))
        return -1;
    if (workers < 1 || worker >= workers || (keep_all && workers > 1)) {
        PyErr_SetString(PyExc_ValueError, "worker must be below workers, and keep_all needs one worker");
        return -1;
    }
    if (max_flows < 1 || max_flows > SKIM_MAX_FLOWS) {
        PyErr_SetString(PyExc_ValueError, "max_flows out of range");
        return -1;
    }
    skim_free(&self->skim);
    if (skim_init(&self->skim, (uint64_t)max_flows, seed, keep_all, worker, workers) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (set_ports(self->skim.dns_port, dns) < 0 || set_ports(self->skim.quic_port, quic) < 0 ||
        set_methods(&self->skim, starts) < 0) {
        skim_free(&self->skim);
        return -1;
    }
    return 0;
}

static void Skimmer_dealloc(Skimmer *self) {
    skim_free(&self->skim);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t Skimmer_len(Skimmer *self) { return (Py_ssize_t)self->skim.used; }

static PyObject *get_until(Skimmer *self, void *closure) { return PyFloat_FromDouble(self->skim.until); }
static int set_until(Skimmer *self, PyObject *value, void *closure) {
    double v = value ? PyFloat_AsDouble(value) : NAN;
    if (v == -1.0 && PyErr_Occurred()) return -1;
    if (isnan(v)) {
        PyErr_SetString(PyExc_ValueError, "until must be a number");
        return -1;
    }
    self->skim.until = v;
    return 0;
}
static PyObject *get_serial(Skimmer *self, void *closure) { return PyLong_FromUnsignedLongLong(self->skim.serial); }
static PyObject *get_keep_all(Skimmer *self, void *closure) { return PyBool_FromLong(self->skim.keep_all); }
static PyObject *get_worker(Skimmer *self, void *closure) { return PyLong_FromUnsignedLong(self->skim.worker); }
static PyObject *get_triage(Skimmer *self, void *closure) { return PyBool_FromLong(self->skim.names != NULL); }

static PyGetSetDef Skimmer_getset[] = {
    {"until", (getter)get_until, (setter)set_until,
     "a walk stops after the first frame at or past this capture time (a clock is due)", NULL},
    {"serial", (getter)get_serial, NULL, "frames walked so far, over every buffer", NULL},
    {"keep_all", (getter)get_keep_all, NULL, "whether every frame is kept (nothing skimmed)", NULL},
    {"worker", (getter)get_worker, NULL, "which share of the flows is kept; 0 also keeps what no share holds", NULL},
    {"triage", (getter)get_triage, NULL, "whether DNS over UDP is triaged by name (set_names)", NULL},
    {NULL},
};

static PyMethodDef Skimmer_methods[] = {
    {"walk_pcap", (PyCFunction)walk_pcap, METH_VARARGS, walk_pcap_doc},
    {"walk_pcapng", (PyCFunction)walk_pcapng, METH_VARARGS, walk_pcapng_doc},
    {"walk_frames", (PyCFunction)walk_frames, METH_VARARGS, walk_frames_doc},
    {"set_names", (PyCFunction)set_names, METH_VARARGS, set_names_doc},
    {"set_tunnel_port", (PyCFunction)set_tunnel_port, METH_VARARGS, set_tunnel_port_doc},
    {"clear_names", (PyCFunction)clear_names, METH_NOARGS, "stop triaging names: every DNS message goes to Python"},
    {"next_serial", (PyCFunction)next_serial, METH_NOARGS, "count a frame the Python reader took itself"},
    {"flow_hash", (PyCFunction)py_flow_hash, METH_VARARGS, hash_doc},
    {"track", (PyCFunction)track, METH_VARARGS, track_doc},
    {NULL},
};

static PySequenceMethods Skimmer_as_sequence = {.sq_length = (lenfunc)Skimmer_len};

static PyTypeObject SkimmerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "detector._skim.Skimmer",
    .tp_doc = PyDoc_STR("Walks capture buffers, keeping the frames the Python pipeline reads. "
                        "One per thread: a walk runs without the GIL."),
    .tp_basicsize = sizeof(Skimmer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Skimmer_init,
    .tp_dealloc = (destructor)Skimmer_dealloc,
    .tp_methods = Skimmer_methods,
    .tp_getset = Skimmer_getset,
    .tp_as_sequence = &Skimmer_as_sequence,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "detector._skim", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__skim(void) {
    if (PyType_Ready(&SkimmerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Skimmer", (PyObject *)&SkimmerType) < 0 ||
        PyModule_AddIntConstant(m, "END", SKIM_END) < 0 || PyModule_AddIntConstant(m, "TICK", SKIM_TICK) < 0 ||
        PyModule_AddIntConstant(m, "FULL", SKIM_FULL) < 0 || PyModule_AddIntConstant(m, "BLOCK", SKIM_BLOCK) < 0 ||
        PyModule_AddIntConstant(m, "CORRUPT", SKIM_CORRUPT) < 0 ||
        PyModule_AddIntConstant(m, "HINT_UNWANTED_HELLO", SKIM_HINT_UNWANTED_HELLO) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RECORD", SKIM_MAX_RECORD) < 0 ||
        PyModule_AddIntConstant(m, "MAX_BLOCK", SKIM_MAX_BLOCK) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
