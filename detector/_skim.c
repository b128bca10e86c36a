/* The skim: walk the records of a pcap or pcapng buffer and keep the few frames worth
 * decoding in Python, dropping the bulk after a few byte checks, without building any
 * object for it.
 *
 * Why C: the rest of the pipeline costs ~15 us per frame in Python, the walk over the
 * record headers alone ~0.6 us; on a tap 90+ % of frames are bulk (TCP data and ACKs,
 * QUIC short headers), so the bulk must leave in C to replay at libpcap's speed.
 * aioquic takes the same way for its buffer (src/aioquic/_buffer.c).
 *
 * The contract, tested frame by frame against the Python pipeline with nothing skimmed
 * (tests/test_skim.py): a frame is dropped here only when detector/pipeline.py would
 * read nothing from it, and the counters it would have bumped are bumped here instead.
 * Everything this file does not fully understand (other link types, tunnels, ARP,
 * IP fragments, IPv6 extension headers, truncated headers) is kept for Python.
 *
 * The one piece of state is the set of TCP flows (one direction) whose later segments
 * Python may still need: a flow enters it at a SYN or at a segment that starts a TLS
 * ClientHello or an HTTP request, as the Python flight table's flows start, and Python
 * reports after each TCP frame it reads whether it tracks that flow, and each flow its
 * table forgets (Skimmer.track). Walks and Python's reading alternate: every frame kept by
 * one walk is read before the next walk, and every start is a kept frame, so when a walk
 * begins the set is exactly Python's flows. Within a walk it only grows, by the starts the
 * walk sees; at worst a segment is kept that Python then drops (and counts, as here). A
 * start the walk cannot see (inside a tunnel, say) is in a frame it cannot read through,
 * and such a frame ends the walk.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_RECORD (256 * 1024)       /* sources/pcapfile.py MAX_RECORD */
#define MAX_BLOCK (16 * 1024 * 1024)  /* sources/pcapfile.py MAX_BLOCK */
#define MAX_KEPT 4096                 /* kept frames handed to Python per call */
#define MAX_METHODS 32
#define MAX_METHOD_LEN 16

enum { END = 0, TICK = 1, FULL = 2, BLOCK = 3, CORRUPT = 4 };
enum { DROP_PACKETS, DROP_BYTES, SKIM_UDP, SKIM_TCP, QUIC_SERVER_LONG, TABLE_FULL, OTHER_TRANSPORT, N_DROPS };

#define ETH_IPV4 0x0800
#define ETH_IPV6 0x86DD
#define PCAPNG_EPB 6
#define TCP_SYN 0x02
#define TCP_ACK 0x10
#define TLS_HANDSHAKE 0x16

typedef struct {
    uint32_t linktype;
    uint32_t pad;
    double tick;
    int64_t offset;
} Interface; /* packed by sources/pcapfile.py, one per pcapng interface */

typedef struct {
    uint64_t serial;
    double ts;
    uint64_t offset;
    uint32_t caplen;
    uint32_t linktype;
} Kept; /* "=QdQII" */
_Static_assert(sizeof(Kept) == 32, "skim.KEPT unpacks 32 bytes");
_Static_assert(sizeof(Interface) == 24, "pcapfile.INTERFACE packs 24 bytes");

typedef struct {
    PyObject_HEAD
    int keep_all;
    unsigned worker, workers; /* this process's share of the flows, for replay --workers */
    double until;
    uint64_t serial;
    uint64_t seed;
    uint8_t dns_port[8192];
    uint8_t quic_port[8192];
    uint8_t method_first[256];
    uint8_t methods[MAX_METHODS][MAX_METHOD_LEN];
    uint8_t method_len[MAX_METHODS];
    int n_methods;
    uint64_t *slots; /* flow keys, 0 = empty */
    int saturated;
    uint64_t mask;
    uint64_t used;
    uint64_t drops[N_DROPS];
} Skimmer;

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p, int big) {
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}
static inline int has_port(const uint8_t *set, unsigned port) { return set[port >> 3] >> (port & 7) & 1; }

/* Seeded, so nobody outside can make two flows collide (a collision could only make a
 * report drop the other flow's later segments). */
static uint64_t flow_hash(const Skimmer *s, const uint8_t *src, const uint8_t *dst, int alen,
                          unsigned sport, unsigned dport) {
    uint64_t h = s->seed ^ (uint64_t)alen;
    for (int i = 0; i < alen; i++) h = (h ^ src[i]) * 0x100000001b3ULL;
    for (int i = 0; i < alen; i++) h = (h ^ dst[i]) * 0x100000001b3ULL;
    h = (h ^ (sport << 16 | dport)) * 0x100000001b3ULL;
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL; h ^= h >> 33;
    return h ? h : 1;
}

/* Which worker reads a flow: the same for both directions, so one worker sees all of it. */
static int foreign(const Skimmer *s, const uint8_t *src, const uint8_t *dst, int alen, unsigned sport,
                   unsigned dport) {
    if (s->workers < 2) return 0;
    uint64_t h = (uint64_t)alen;
    for (int i = 0; i < alen; i++) h = (h ^ (uint8_t)(src[i] ^ dst[i])) * 0x100000001b3ULL;
    h = (h ^ (sport ^ dport)) * 0x100000001b3ULL;
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33;
    return h % s->workers != s->worker;
}

/* -- the flow set: open addressing, linear probing, backward-shift deletion ------------ */

static uint64_t *find(Skimmer *s, uint64_t key) {
    for (uint64_t i = key & s->mask;; i = (i + 1) & s->mask) {
        if (s->slots[i] == key || s->slots[i] == 0) return &s->slots[i];
    }
}

/* A set too full to add to keeps every segment from then on (it cannot know which flows
 * it missed). Never reached while Python reports: the set is sized for its flow table. */
static int contains(Skimmer *s, uint64_t key) {
    if (s->saturated) {
        s->drops[TABLE_FULL]++;
        return 1;
    }
    return *find(s, key) == key;
}

static void add(Skimmer *s, uint64_t key) {
    if (s->used * 2 > s->mask) {
        s->saturated = 1;
        return;
    }
    uint64_t *slot = find(s, key);
    if (*slot == 0) {
        *slot = key;
        s->used++;
    }
}

static void discard(Skimmer *s, uint64_t key) {
    uint64_t *slot = find(s, key);
    if (*slot != key) return;
    uint64_t i = (uint64_t)(slot - s->slots);
    for (uint64_t j = (i + 1) & s->mask; s->slots[j]; j = (j + 1) & s->mask) {
        uint64_t home = s->slots[j] & s->mask;
        /* move j back into the hole at i unless its home lies cyclically in (i, j] */
        if (((j - home) & s->mask) >= ((j - i) & s->mask)) {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }
    s->slots[i] = 0;
    s->used--;
}

/* -- what Python would do with one frame -------------------------------------------- */

/* pipeline._starts_message: can this segment be the first of a ClientHello or request? */
static int starts_message(const Skimmer *s, const uint8_t *p, size_t n) {
    static const uint8_t ccs[6] = {0x14, 0x03, 0x03, 0x00, 0x01, 0x01};
    if (n >= 6 && memcmp(p, ccs, 6) == 0) {
        p += 6;
        n -= 6;
        if (n == 0) return 0;
    }
    if (p[0] == TLS_HANDSHAKE) return n < 6 || (p[1] == 3 && p[5] == 1);
    if (!s->method_first[p[0]]) return 0;
    for (int i = 0; i < s->n_methods; i++) {
        if (n >= s->method_len[i] && memcmp(p, s->methods[i], s->method_len[i]) == 0) return 1;
    }
    return 0;
}

enum { FOREIGN = -1, DROPPED = 0, KEEP = 1, KEEP_UNREAD = 2 };

/* What to do with one frame (dropped frames counted as Python would count them). Frames
 * of another worker's flows are FOREIGN. A frame this walk cannot read through (a tunnel,
 * an IPv6 extension header, another link type) is the first worker's, and ends the walk
 * (KEEP_UNREAD): it may start a TCP flow the walk did not see start, whose plain segments
 * must not be judged before Python has read it and reported the flow. */
#define KEEP_HERE (s->worker == 0 ? KEEP_UNREAD : FOREIGN)
/* ARP: the first worker's too, but it cannot start a TCP flow. */
#define KEEP_FIRST (s->worker == 0 ? KEEP : FOREIGN)
#define ETH_ARP 0x0806

/* IP protocols that may carry a TCP segment further in: IP-in-IP, IPv6-in-IP, GRE, and
 * the IPv6 extension headers (hop-by-hop, routing, fragment, AH, destination options,
 * mobility, HIP, shim6), which decode.py walks. */
static int may_carry_tcp(unsigned proto) {
    switch (proto) {
    case 4: case 41: case 47: case 0: case 43: case 44: case 51: case 60: case 135: case 139: case 140:
        return 1;
    default:
        return 0;
    }
}
static int classify(Skimmer *s, const uint8_t *f, size_t caplen, uint32_t linktype) {
    size_t pos;
    switch (linktype) {
    case 1:   /* Ethernet */
    case 113: /* Linux SLL: the same ethertype walk, 2 bytes later */
        pos = linktype == 1 ? 12 : 14;
        for (;;) {
            if (pos + 2 > caplen) return KEEP_HERE;
            unsigned et = be16(f + pos);
            if (et == 0x8100 || et == 0x88A8 || et == 0x9100) {
                if (pos + 6 > caplen) return KEEP_HERE;
                pos += 4;
                continue;
            }
            if (et == ETH_ARP) return KEEP_FIRST;
            if (et != ETH_IPV4 && et != ETH_IPV6) return KEEP_HERE;
            pos += 2;
            break;
        }
        break;
    case 276: { /* Linux SLL2 (tcpdump -i any): the protocol first, the packet at 20 */
        if (caplen < 20) return KEEP_HERE;
        unsigned et = be16(f);
        if (et == ETH_ARP) return KEEP_FIRST;
        if (et != ETH_IPV4 && et != ETH_IPV6) return KEEP_HERE;
        pos = 20;
        break;
    }
    case 101: case 228: case 229: case 14: /* raw IP */
        pos = 0;
        break;
    default:
        return KEEP_HERE;
    }
    if (pos >= caplen) return KEEP_HERE;
    const uint8_t *src, *dst;
    int alen;
    unsigned proto;
    size_t end, l4;
    if (f[pos] >> 4 == 4) {
        if (pos + 20 > caplen) return KEEP_HERE;
        size_t ihl = (size_t)(f[pos] & 0x0F) * 4, total = be16(f + pos + 2);
        if (ihl < 20 || total < ihl || (be16(f + pos + 6) & 0x1FFF)) return KEEP_HERE;
        proto = f[pos + 9];
        src = f + pos + 12;
        dst = f + pos + 16;
        alen = 4;
        end = pos + total < caplen ? pos + total : caplen;
        l4 = pos + ihl;
    } else if (f[pos] >> 4 == 6) {
        if (pos + 40 > caplen) return KEEP_HERE;
        proto = f[pos + 6];
        src = f + pos + 8;
        dst = f + pos + 24;
        alen = 16;
        end = pos + 40 + be16(f + pos + 4);
        if (end > caplen) end = caplen;
        l4 = pos + 40;
    } else {
        return KEEP_HERE;
    }
    if (proto == 17) { /* UDP */
        if (l4 + 8 > end) return KEEP_HERE;
        unsigned sport = be16(f + l4), dport = be16(f + l4 + 2);
        if (foreign(s, src, dst, alen, sport, dport)) return FOREIGN;
        if (dport == 4789 || dport == 2152) return KEEP_UNREAD; /* VXLAN, GTP-U: Python opens them */
        if (has_port(s->dns_port, sport) || has_port(s->dns_port, dport)) return KEEP;
        int long_header = l4 + 8 < end && f[l4 + 8] >= 0x80;
        if (long_header && has_port(s->quic_port, dport)) return KEEP;
        if (long_header && has_port(s->quic_port, sport)) {
            s->drops[QUIC_SERVER_LONG]++;
            return DROPPED;
        }
        if ((sport == 67 || sport == 68) && (dport == 67 || dport == 68)) return KEEP;
        s->drops[SKIM_UDP]++;
        return DROPPED;
    }
    if (proto != 6) {
        if (may_carry_tcp(proto)) return KEEP_HERE;
        if (s->worker != 0) return FOREIGN; /* ICMP and the like: no flow, the first worker counts it */
        s->drops[OTHER_TRANSPORT]++;
        return DROPPED;
    }
    if (l4 + 20 > end) return KEEP_HERE;
    size_t doff = (size_t)(f[l4 + 12] >> 4) * 4;
    if (doff < 20) return KEEP_HERE;
    unsigned sport = be16(f + l4), dport = be16(f + l4 + 2), flags = f[l4 + 13];
    if (foreign(s, src, dst, alen, sport, dport)) return FOREIGN;
    int dns = has_port(s->dns_port, sport) || has_port(s->dns_port, dport);
    if (flags & TCP_SYN) {
        if (!(flags & TCP_ACK) || has_port(s->dns_port, sport)) {
            add(s, flow_hash(s, src, dst, alen, sport, dport));
            return KEEP;
        }
        return DROPPED; /* a SYN-ACK: Python only reads those of DNS servers */
    }
    if (l4 + doff >= end) return DROPPED; /* no payload */
    if (dns) return KEEP;
    uint64_t key = flow_hash(s, src, dst, alen, sport, dport);
    if (starts_message(s, f + l4 + doff, end - l4 - doff)) {
        add(s, key);
        return KEEP;
    }
    if (contains(s, key)) return KEEP;
    s->drops[SKIM_TCP]++;
    return DROPPED;
}

/* -- walking a buffer ----------------------------------------------------------------- */

typedef struct {
    Kept *kept;
    Py_ssize_t n_kept;
    Py_ssize_t walked;
    double last_ts, ts_min, ts_max;
} Walk;

/* One frame at buf[offset:offset+caplen]; returns the status that ends the walk, or -1. */
static int frame(Skimmer *s, Walk *w, const uint8_t *buf, size_t offset, size_t caplen, uint32_t linktype,
                 double ts) {
    uint64_t serial = ++s->serial;
    w->walked++;
    w->last_ts = ts;
    if (isnan(w->ts_min) || ts < w->ts_min) w->ts_min = ts;
    if (isnan(w->ts_max) || ts > w->ts_max) w->ts_max = ts;
    int verdict = s->keep_all ? KEEP : classify(s, buf + offset, caplen, linktype);
    if (verdict >= KEEP) {
        Kept *k = &w->kept[w->n_kept++];
        k->serial = serial;
        k->ts = ts;
        k->offset = offset;
        k->caplen = (uint32_t)caplen;
        k->linktype = linktype;
    } else if (verdict == DROPPED) {
        s->drops[DROP_PACKETS]++;
        s->drops[DROP_BYTES] += caplen;
    }
    if (ts >= s->until) return TICK;
    if (w->n_kept == MAX_KEPT || verdict == KEEP_UNREAD) return FULL;
    return -1;
}

static PyObject *walk_result(Skimmer *s, Walk *w, int status, Py_ssize_t pos) {
    PyObject *kept = PyBytes_FromStringAndSize((const char *)w->kept, w->n_kept * (Py_ssize_t)sizeof(Kept));
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
    return Py_BuildValue("(innNNNNN)", status, pos, w->walked, kept, last, lo, hi, drops);
}

/* Check the span a walk is asked for and set the walk up; on failure the error is set and
 * the buffer released. */
static int walk_start(Walk *w, Py_buffer *view, Py_ssize_t pos, Py_ssize_t end) {
    if (pos < 0 || end > view->len || pos > end) {
        PyErr_Format(PyExc_ValueError, "bad span %zd:%zd of %zd bytes", pos, end, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    w->kept = PyMem_Malloc(MAX_KEPT * sizeof(Kept));
    if (!w->kept) {
        PyErr_NoMemory();
        PyBuffer_Release(view);
        return -1;
    }
    w->n_kept = w->walked = 0;
    w->last_ts = w->ts_min = w->ts_max = NAN;
    return 0;
}

PyDoc_STRVAR(walk_pcap_doc,
"walk_pcap(buf, pos, end, big_endian, nanoseconds, linktype)\n--\n\n"
"Walk classic pcap records in buf[pos:end] until the buffer ends (END), a frame at or\n"
"past `until` (TICK), MAX_KEPT kept frames or a kept frame it could not read through\n"
"(FULL: Python reads them, then walks on) or a record too long to be a packet (CORRUPT). Returns (status, pos, walked, kept, last_ts, ts_min, ts_max, drops): `kept`\n"
"packs (serial, ts, offset, caplen, linktype) as \"=QdQII\"; `drops` counts, in the\n"
"order of DROP_KEYS, what was dropped since the last call.");

static int ready(Skimmer *s) {
    if (s->slots) return 1;
    PyErr_SetString(PyExc_RuntimeError, "Skimmer.__init__ was not called");
    return 0;
}

static PyObject *walk_pcap(Skimmer *s, PyObject *args) {
    if (!ready(s)) return NULL;
    Py_buffer view;
    Py_ssize_t pos, end;
    int big, nanos;
    unsigned int linktype;
    if (!PyArg_ParseTuple(args, "y*nnppI", &view, &pos, &end, &big, &nanos, &linktype)) return NULL;
    Walk w;
    if (walk_start(&w, &view, pos, end) < 0) return NULL;
    const uint8_t *buf = view.buf;
    double unit = nanos ? 1e-9 : 1e-6;
    int status = END;
    Py_BEGIN_ALLOW_THREADS
    while (pos + 16 <= end) {
        const uint8_t *h = buf + pos;
        uint32_t caplen = rd32(h + 8, big);
        if (caplen > MAX_RECORD) {
            status = CORRUPT;
            break;
        }
        if (pos + 16 + (Py_ssize_t)caplen > end) break;
        double ts = (double)rd32(h, big) + (double)rd32(h + 4, big) * unit;
        int stop = frame(s, &w, buf, (size_t)pos + 16, caplen, linktype, ts);
        pos += 16 + caplen;
        if (stop >= 0) {
            status = stop;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return walk_result(s, &w, status, pos);
}

PyDoc_STRVAR(walk_pcapng_doc,
"walk_pcapng(buf, pos, end, big_endian, interfaces)\n--\n\n"
"As walk_pcap, over pcapng Enhanced Packet Blocks; `interfaces` packs (linktype,\n"
"seconds per tick, offset) per interface as \"=I4xdq\". Stops with BLOCK at any other\n"
"block, and at an EPB it cannot take whole (unknown interface, bad lengths), for the\n"
"Python reader to handle.");

static PyObject *walk_pcapng(Skimmer *s, PyObject *args) {
    if (!ready(s)) return NULL;
    Py_buffer view, ifview;
    Py_ssize_t pos, end;
    int big;
    if (!PyArg_ParseTuple(args, "y*nnpy*", &view, &pos, &end, &big, &ifview)) return NULL;
    Interface ifaces[64];
    size_t n_if = (size_t)ifview.len / sizeof(Interface);
    int whole = ifview.len % sizeof(Interface) == 0;
    if (n_if > 64) n_if = 64; /* more: Python takes the packets of the others */
    memcpy(ifaces, ifview.buf, n_if * sizeof(Interface));
    PyBuffer_Release(&ifview);
    if (!whole) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "interface table not in whole %zu-byte entries", sizeof(Interface));
    }
    Walk w;
    if (walk_start(&w, &view, pos, end) < 0) return NULL;
    const uint8_t *buf = view.buf;
    int status = END;
    Py_BEGIN_ALLOW_THREADS
    while (pos + 8 <= end) {
        const uint8_t *b = buf + pos;
        uint32_t type = rd32(b, big), total = rd32(b + 4, big);
        if (type != PCAPNG_EPB) {
            status = BLOCK;
            break;
        }
        if (total < 12 || total % 4 || total > MAX_BLOCK) {
            status = CORRUPT;
            break;
        }
        if (pos + (Py_ssize_t)total > end) break;
        if (total < 8 + 24) { /* too short for an EPB's fields: Python counts it */
            status = BLOCK;
            break;
        }
        uint32_t iface = rd32(b + 8, big), caplen = rd32(b + 20, big);
        if (iface >= n_if || caplen > total - 8 - 24) {
            status = BLOCK;
            break;
        }
        uint64_t ticks = (uint64_t)rd32(b + 12, big) << 32 | rd32(b + 16, big);
        double ts = (double)ticks * ifaces[iface].tick + (double)ifaces[iface].offset;
        int stop = frame(s, &w, buf, (size_t)pos + 28, caplen, ifaces[iface].linktype, ts);
        pos += total;
        if (stop >= 0) {
            status = stop;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return walk_result(s, &w, status, pos);
}

static PyObject *next_serial(Skimmer *s, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(++s->serial);
}

PyDoc_STRVAR(hash_doc,
"flow_hash(src_ip, sport, dst_ip, dport)\n--\n\n"
"The key the skim gives one direction of a TCP flow (addresses as 4 or 16 raw bytes).");

static PyObject *py_flow_hash(Skimmer *s, PyObject *args) {
    Py_buffer src, dst;
    unsigned int sport, dport;
    if (!PyArg_ParseTuple(args, "y*Iy*I", &src, &sport, &dst, &dport)) return NULL;
    PyObject *result = NULL;
    if (src.len != dst.len || (src.len != 4 && src.len != 16) || sport > 0xFFFF || dport > 0xFFFF)
        PyErr_SetString(PyExc_ValueError, "addresses of 4 or 16 bytes and 16-bit ports expected");
    else
        result = PyLong_FromUnsignedLongLong(flow_hash(s, src.buf, dst.buf, (int)src.len, sport, dport));
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

PyDoc_STRVAR(track_doc,
"track(flow, tracked)\n--\n\n"
"Whether Python tracks this flow (a flow_hash) now that it has read a frame of it.");

static PyObject *track(Skimmer *s, PyObject *args) {
    if (!ready(s)) return NULL;
    unsigned long long key;
    int tracked;
    if (!PyArg_ParseTuple(args, "Kp", &key, &tracked)) return NULL;
    if (key && tracked)
        add(s, key);
    else if (key)
        discard(s, key);
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
        set[port >> 3] |= (uint8_t)(1 << (port & 7));
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static int Skimmer_init(Skimmer *s, PyObject *args, PyObject *kwds) {
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
    s->worker = worker;
    s->workers = workers;
    if (max_flows < 1 || max_flows > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "max_flows out of range");
        return -1;
    }
    memset(s->dns_port, 0, sizeof s->dns_port);
    memset(s->quic_port, 0, sizeof s->quic_port);
    memset(s->method_first, 0, sizeof s->method_first);
    if (set_ports(s->dns_port, dns) < 0 || set_ports(s->quic_port, quic) < 0) return -1;
    PyObject *seq = PySequence_Fast(starts, "request_starts must be a sequence of bytes");
    if (!seq) return -1;
    s->n_methods = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *m = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(m) || PyBytes_GET_SIZE(m) < 1 || PyBytes_GET_SIZE(m) > MAX_METHOD_LEN ||
            s->n_methods == MAX_METHODS) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "request starts: at most 32 bytes objects of 1-16 bytes");
            return -1;
        }
        memcpy(s->methods[s->n_methods], PyBytes_AS_STRING(m), (size_t)PyBytes_GET_SIZE(m));
        s->method_len[s->n_methods++] = (uint8_t)PyBytes_GET_SIZE(m);
        s->method_first[(uint8_t)PyBytes_AS_STRING(m)[0]] = 1;
    }
    Py_DECREF(seq);
    /* Python's flows plus the triggers of one call, at most a quarter full. */
    uint64_t want = 4 * ((uint64_t)max_flows + MAX_KEPT), slots = 1024;
    while (slots < want) slots <<= 1;
    PyMem_Free(s->slots);
    s->slots = PyMem_Calloc(slots, sizeof(uint64_t));
    if (!s->slots) {
        PyErr_NoMemory();
        return -1;
    }
    s->mask = slots - 1;
    s->used = 0;
    s->saturated = 0;
    s->keep_all = keep_all;
    s->seed = seed;
    s->serial = 0;
    s->until = INFINITY;
    memset(s->drops, 0, sizeof s->drops);
    return 0;
}

static void Skimmer_dealloc(Skimmer *s) {
    PyMem_Free(s->slots);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static Py_ssize_t Skimmer_len(Skimmer *s) { return (Py_ssize_t)s->used; }

static PyObject *get_until(Skimmer *s, void *closure) { return PyFloat_FromDouble(s->until); }
static int set_until(Skimmer *s, PyObject *value, void *closure) {
    double v = value ? PyFloat_AsDouble(value) : NAN;
    if (v == -1.0 && PyErr_Occurred()) return -1;
    if (isnan(v)) {
        PyErr_SetString(PyExc_ValueError, "until must be a number");
        return -1;
    }
    s->until = v;
    return 0;
}
static PyObject *get_serial(Skimmer *s, void *closure) { return PyLong_FromUnsignedLongLong(s->serial); }
static PyObject *get_keep_all(Skimmer *s, void *closure) { return PyBool_FromLong(s->keep_all); }
static PyObject *get_worker(Skimmer *s, void *closure) { return PyLong_FromUnsignedLong(s->worker); }

static PyGetSetDef Skimmer_getset[] = {
    {"until", (getter)get_until, (setter)set_until,
     "a walk stops after the first frame at or past this capture time (a clock is due)", NULL},
    {"serial", (getter)get_serial, NULL, "frames walked so far, over every buffer", NULL},
    {"keep_all", (getter)get_keep_all, NULL, "whether every frame is kept (nothing skimmed)", NULL},
    {"worker", (getter)get_worker, NULL, "which share of the flows is kept; 0 also keeps what no share holds", NULL},
    {NULL},
};

static PyMethodDef Skimmer_methods[] = {
    {"walk_pcap", (PyCFunction)walk_pcap, METH_VARARGS, walk_pcap_doc},
    {"walk_pcapng", (PyCFunction)walk_pcapng, METH_VARARGS, walk_pcapng_doc},
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
        PyModule_AddIntConstant(m, "END", END) < 0 || PyModule_AddIntConstant(m, "TICK", TICK) < 0 ||
        PyModule_AddIntConstant(m, "FULL", FULL) < 0 || PyModule_AddIntConstant(m, "BLOCK", BLOCK) < 0 ||
        PyModule_AddIntConstant(m, "CORRUPT", CORRUPT) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RECORD", MAX_RECORD) < 0 ||
        PyModule_AddIntConstant(m, "MAX_BLOCK", MAX_BLOCK) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
