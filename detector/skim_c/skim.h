/* The skim's C core, apart from Python so that it can be fuzzed and tested on its own
 * (fuzz/fuzz_skim.c) and wrapped by the extension (detector/_skim.c).
 *
 * triage.c decides what to do with one frame (keep it for Python, drop it and count the
 * drop, or leave it to another worker) and holds the set of TCP flows Python still reads;
 * names.c reads the names of a DNS message over UDP and drops it when none of them can
 * match a signature; walk.c walks the records of a pcap or pcapng buffer, or the frames
 * of a live capture's batch, and hands each frame to triage.
 *
 * The contract, tested frame by frame against the Python pipeline with nothing skimmed
 * (tests/test_skim.py): a frame is dropped here only when detector/pipeline.py would
 * write nothing from it (no binding, no observation of a wanted name, no change to its
 * reassembly tables), and the counters it would have bumped are bumped here instead.
 * Everything the core does not fully understand (other link types, IP-in-IP,
 * ARP, IP fragments, IPv6 extension headers, truncated headers, DNS over TCP) is kept
 * for Python.
 *
 * Bounds: every read of a frame is checked against its caplen, every read of a record
 * against the span the caller gives; the flow set and the name index are allocated
 * before a walk, at their full size. Nothing here allocates during a walk, takes a lock
 * or calls Python, so a walk runs without the GIL. A skim is not to be shared between
 * threads.
 */
#ifndef DETECTOR_SKIM_H
#define DETECTOR_SKIM_H

#include <stddef.h>
#include <stdint.h>

#define SKIM_MAX_RECORD (256 * 1024)      /* sources/pcapfile.py MAX_RECORD */
#define SKIM_MAX_BLOCK (16 * 1024 * 1024) /* sources/pcapfile.py MAX_BLOCK */
/* Kept frames handed to Python per walk, and the least flow-set size. The fuzz target
 * makes both small so that full walks and a saturated set are within its reach. */
#ifndef SKIM_MAX_KEPT
#define SKIM_MAX_KEPT 4096
#endif
#ifndef SKIM_MIN_SLOTS
#define SKIM_MIN_SLOTS 1024
#endif
#define SKIM_MAX_METHODS 32
#define SKIM_MAX_METHOD_LEN 16
#define SKIM_MAX_FLOWS (1 << 24)
#define SKIM_MAX_INTERFACES 64
/* Signature keys the name index holds at most, and the longest (RFC 1035 presentation form). */
#define SKIM_MAX_NAMES (1 << 20)
#define SKIM_MAX_NAME 253
/* Distinct answer names a dropped DNS response may carry: more go to Python, which
 * counts them (the C count needs each name compared with those before it). */
#define SKIM_MAX_ANSWERS 32
/* Tunnels inside tunnels: decode.py's MAX_ENCAPSULATION. */
#define SKIM_MAX_ENCAPSULATION 3
/* The UDP tunnels, by decode.py's codes; CAPWAP on either port, the others on the destination. */
enum {
    SKIM_VXLAN = 1, SKIM_GTP_U = 2, SKIM_GENEVE = 3, SKIM_CAPWAP = 4, SKIM_CAPWAP_CONTROL = 5, SKIM_TZSP = 6,
    SKIM_GRE_IN_UDP = 7
};

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* Why a walk stopped. */
enum { SKIM_END = 0, SKIM_TICK = 1, SKIM_FULL = 2, SKIM_BLOCK = 3, SKIM_CORRUPT = 4 };
/* What a walk counts, in the order of skim.DROP_KEYS. */
enum {
    DROP_PACKETS, DROP_BYTES, DROP_UDP, DROP_TCP, DROP_QUIC_SERVER_LONG, DROP_TABLE_FULL, DROP_OTHER_TRANSPORT,
    DROP_DNS_QUERY_NAMES, DROP_DNS_ANSWER_NAMES, DROP_DNS_ERROR, DROP_DNS_PARTIAL, N_DROPS
};
/* What triage makes of one frame. */
enum { SKIM_FOREIGN = -1, SKIM_DROPPED = 0, SKIM_KEEP = 1, SKIM_KEEP_UNREAD = 2 };
/* What triage tells Python of a kept frame: nothing, or that the segment holds a whole
 * ClientHello whose server name can match no signature (Python still keeps its flight
 * table in step, and parses the hello itself unless its stream is this segment alone). */
enum { SKIM_HINT_NONE = 0, SKIM_HINT_UNWANTED_HELLO = 1 };

typedef struct {
    int keep_all;
    unsigned worker, workers; /* this process's share of the flows, for replay --workers */
    double until;             /* a walk stops after the first frame at or past this time */
    uint64_t serial;          /* frames walked so far */
    uint64_t seed;
    uint8_t dns_port[8192];
    uint8_t quic_port[8192];
    uint8_t udp_tunnel[65536]; /* the tunnel (SKIM_VXLAN...) a UDP port opens, 0: none */
    uint8_t method_first[256];
    uint8_t methods[SKIM_MAX_METHODS][SKIM_MAX_METHOD_LEN];
    uint8_t method_len[SKIM_MAX_METHODS];
    int n_methods;
    uint64_t *slots; /* flow keys, 0 = empty */
    int saturated;
    uint64_t mask;
    uint64_t used;
    uint64_t *names; /* hashes of the signature keys, 0 = empty; NULL: no name triage */
    uint64_t names_mask;
    uint32_t hint; /* SKIM_HINT_* of the frame last classified */
    uint64_t drops[N_DROPS];
} Skim;

typedef struct {
    uint32_t linktype;
    uint32_t pad;
    double tick;
    int64_t offset;
} SkimInterface; /* packed by sources/pcapfile.py, one per pcapng interface */

typedef struct {
    uint64_t serial;
    double ts;
    uint64_t offset;
    uint32_t caplen;
    uint32_t linktype;
    uint32_t hint;
    uint32_t pad;
} SkimKept; /* "=QdQIII4x" */
_Static_assert(sizeof(SkimKept) == 40, "skim.KEPT unpacks 40 bytes");
_Static_assert(sizeof(SkimInterface) == 24, "pcapfile.INTERFACE packs 24 bytes");

typedef struct {
    uint32_t sec, usec, offset, caplen;
} SkimFrame; /* one frame of a live capture's batch: pcapy's next_batch metadata */
_Static_assert(sizeof(SkimFrame) == 16, "a live batch's metadata is 4 unsigned ints per frame");

typedef struct {
    SkimKept *kept; /* room for SKIM_MAX_KEPT, the caller's */
    size_t n_kept;
    size_t walked;
    double last_ts, ts_min, ts_max; /* NAN until a frame is walked */
} SkimWalk;

/* triage.c */
/* Set up a skim for up to max_flows Python flows (1..SKIM_MAX_FLOWS): 0, or -1 when out of
 * memory or out of range. Ports and request starts are set afterwards with the setters. */
int skim_init(Skim *s, uint64_t max_flows, uint64_t seed, int keep_all, unsigned worker, unsigned workers);
void skim_free(Skim *s);
void skim_add_port(uint8_t *set, unsigned port);
/* UDP `port` opens tunnel `kind` (SKIM_VXLAN..SKIM_GRE_IN_UDP): 0, or -1 when either is out of range. */
int skim_set_tunnel_port(Skim *s, unsigned port, unsigned kind);
/* The tunnel a datagram opens: its destination port's, or its source port's if that is CAPWAP's
 * and the destination port is not a well-known one (decode.py FIRST_UNPRIVILEGED_PORT). */
static inline unsigned skim_udp_tunnel(const Skim *s, unsigned sport, unsigned dport) {
    unsigned kind = s->udp_tunnel[dport];
    if (kind || dport < 1024) return kind;
    kind = s->udp_tunnel[sport];
    return kind == SKIM_CAPWAP || kind == SKIM_CAPWAP_CONTROL ? kind : 0;
}
/* Add a request start (an HTTP method and its space): 0, or -1 when it does not fit. */
int skim_add_method(Skim *s, const uint8_t *method, size_t len);
uint64_t skim_flow_hash(const Skim *s, const uint8_t *src, const uint8_t *dst, int alen, unsigned sport,
                        unsigned dport);
/* Python tracks this flow (tracked) or has forgotten it. */
void skim_track(Skim *s, uint64_t key, int tracked);
int skim_classify(Skim *s, const uint8_t *frame, size_t caplen, uint32_t linktype);

/* names.c */
/* Triage names from now on: a DNS message over UDP is dropped (and its names and faults
 * counted as detector/pipeline.py counts them) when no name it reports equals a key or
 * ends in "." and a key. `packed` holds the keys separated by NUL bytes, each 1..253
 * bytes of [a-z0-9.-] (SignatureSet.prefilter_keys). 0, or -1 when a key is not of that
 * form, there are too many, or memory runs out; then the index is left as it was. */
int skim_set_names(Skim *s, const uint8_t *packed, size_t len);
/* Stop triaging names: every DNS message goes to Python (the `names` command). */
void skim_clear_names(Skim *s);
/* A DNS message over UDP: SKIM_DROPPED (counted) or SKIM_KEEP. Needs an index. */
int skim_dns(Skim *s, const uint8_t *message, size_t len);
/* 1 when a TCP payload is a whole ClientHello (its handshake message in the first record)
 * that detector/extract/clienthello.py reads as well formed, without ECH, with a server
 * name that can match no key; else 0. Needs an index. */
int skim_hello(const Skim *s, const uint8_t *payload, size_t len);

/* walk.c: walk buf[*pos:end]; *pos moves past every record walked. Returns why it stopped. */
void skim_walk_start(SkimWalk *w, SkimKept *kept);
int skim_walk_pcap(Skim *s, SkimWalk *w, const uint8_t *buf, size_t *pos, size_t end, int big, int nanos,
                   uint32_t linktype);
int skim_walk_pcapng(Skim *s, SkimWalk *w, const uint8_t *buf, size_t *pos, size_t end, int big,
                     const SkimInterface *ifaces, size_t n_ifaces);
/* Walk frames[*next:n] of a live capture's batch, each at buf[offset:offset+caplen] (a frame
 * that does not lie inside buf is SKIM_CORRUPT); *next moves past every frame walked. */
int skim_walk_frames(Skim *s, SkimWalk *w, const uint8_t *buf, size_t len, const SkimFrame *frames, size_t n,
                     size_t *next, uint32_t linktype);

#endif
