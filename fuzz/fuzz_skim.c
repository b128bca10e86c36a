/* Fuzz the skim's C core (detector/skim_c/) under AddressSanitizer and
 * UndefinedBehaviorSanitizer: the pcap and pcapng record walks, the triage of every frame
 * (its tunnels opened: VXLAN, Geneve, GTP-U, TZSP, CAPWAP, GRE-in-UDP, GRE, ERSPAN, Aruba), the DNS name reader and index, the flow set, and the split of
 * flows among replay --workers.
 *
 * Build and run alone (what fuzz/run.py does):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *       -Idetector/skim_c fuzz/fuzz_skim.c -o fuzz/build/fuzz_skim
 *   fuzz/build/fuzz_skim -dict=fuzz/dicts/skim.dict fuzz/corpus/skim
 *
 * The core's sources are included, not linked, so that the target can also check the
 * flow set's private state against a model. SKIM_MAX_KEPT and SKIM_MIN_SLOTS are made
 * small so that full walks and a saturated flow set are within the fuzzer's reach.
 *
 * Input: 8 bytes of set-up, then the records of a capture (no file header):
 *   [0] bit 0 pcapng, bit 1 big-endian, bit 2 nanoseconds, bit 3 keep_all, bit 4 DNS
 *       and ClientHellos triaged by name (then the records' bytes are also read as one
 *       DNS message and as one TCP payload)
 *   [1] workers - 1 (low 2 bits), the worker this skim is (next 2 bits, modulo workers)
 *   [2] linktype of the pcap, or of each pcapng interface (with [3..5]), from LINKTYPES
 *       (low 3 bits); its top 2 bits: pcapng interfaces - 1
 *   [6] max_flows - 1 (low 3 bits)
 *   [7] seconds between clock ticks (0: none), which stop a walk as the pipeline's
 *       housekeeping does
 * What counts as a finding, besides a sanitizer report: a walk that does not account for
 * every record, a kept frame outside the buffer, a flow set that disagrees with its model,
 * a frame that no worker or two workers take, a DNS message counted as more names
 * than it has bytes for, and a hint on a frame of a skim that triages no names.
 */
#define SKIM_MAX_KEPT 4
#define SKIM_MIN_SLOTS 16
#include "../detector/skim_c/names.c"
#include "../detector/skim_c/triage.c"
#include "../detector/skim_c/walk.c"

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz_skim: %s:%d: %s does not hold\n", __FILE__, __LINE__, #cond); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

#define SETUP 8
#define MAX_WORKERS 4
#define MODEL_FLOWS 256
static const uint32_t LINKTYPES[8] = {1, 113, 276, 101, 228, 229, 14, 147};
static const uint8_t *REQUEST_STARTS[] = {(const uint8_t *)"GET ", (const uint8_t *)"POST ",
                                          (const uint8_t *)"CONNECT "};
/* Signature keys, as SignatureSet.prefilter_keys gives them (NUL-separated). */
static const char KEYS[] = "tiktok.com\0tiktokv.com\0ibyteimg.com\0musical.ly\0byteoversea.com";

/* What Python last reported of each flow: after the reports, a tracked flow is in the set
 * (unless the set is saturated) and a forgotten one is not. */
typedef struct {
    uint64_t keys[MODEL_FLOWS];
    uint8_t tracked[MODEL_FLOWS];
    size_t n;
} Model;

static void model_track(Model *m, uint64_t key, int tracked) {
    for (size_t i = 0; i < m->n; i++) {
        if (m->keys[i] == key) {
            m->tracked[i] = (uint8_t)tracked;
            return;
        }
    }
    if (m->n < MODEL_FLOWS) {
        m->keys[m->n] = key;
        m->tracked[m->n++] = (uint8_t)tracked;
    }
}

static void model_check(Skim *s, const Model *m) {
    uint64_t used = 0;
    for (uint64_t i = 0; i <= s->mask; i++) used += s->slots[i] != 0;
    CHECK(used == s->used);
    for (size_t i = 0; i < m->n; i++) {
        int held = *find(s, m->keys[i]) == m->keys[i];
        CHECK(m->tracked[i] ? held || s->saturated : !held);
    }
}

static int setup(Skim *s, const uint8_t *in, unsigned worker, unsigned workers, int keep_all) {
    if (skim_init(s, 1 + (in[6] & 7), 0x9e3779b97f4a7c15ULL, keep_all, worker, workers) < 0) return -1;
    if (in[0] >> 4 & 1 && !keep_all) CHECK(skim_set_names(s, (const uint8_t *)KEYS, sizeof KEYS - 1) == 0);
    skim_add_port(s->dns_port, 53);
    skim_add_port(s->dns_port, 5353);
    skim_add_port(s->quic_port, 443);
    /* decode.py's UDP tunnel ports, and one an operator added. */
    static const unsigned TUNNEL_PORTS[][2] = {{4789, SKIM_VXLAN}, {8472, SKIM_VXLAN}, {2152, SKIM_GTP_U},
                                               {6081, SKIM_GENEVE}, {5247, SKIM_CAPWAP},
                                               {5246, SKIM_CAPWAP_CONTROL}, {37008, SKIM_TZSP},
                                               {4754, SKIM_GRE_IN_UDP}};
    for (size_t i = 0; i < sizeof TUNNEL_PORTS / sizeof *TUNNEL_PORTS; i++)
        CHECK(skim_set_tunnel_port(s, TUNNEL_PORTS[i][0], TUNNEL_PORTS[i][1]) == 0);
    for (size_t i = 0; i < sizeof REQUEST_STARTS / sizeof *REQUEST_STARTS; i++)
        CHECK(skim_add_method(s, REQUEST_STARTS[i], strlen((const char *)REQUEST_STARTS[i])) == 0);
    return 0;
}

static uint64_t ip_key(const Skim *s, const uint8_t *f, size_t pos, size_t n, uint8_t *flags, int depth);

/* The key and flags Python would report for a TCP frame, or 0 when the frame holds no TCP
 * header the triage reads. The model's own walk over the headers the triage knows (link
 * types, VLAN tags, IPv4 with options, IPv6), so that every flow the triage can add to its
 * set is one the model hears of, as Python reports every TCP frame it reads. */
static uint64_t tcp_key(const Skim *s, const uint8_t *f, size_t n, uint32_t linktype, uint8_t *flags, int depth) {
    size_t pos;
    if (linktype == 1 || linktype == 113) {
        pos = linktype == 1 ? 12 : 14;
        for (; pos + 2 <= n; pos += 4) {
            unsigned et = be16(f + pos);
            if (et == 0x8926 || et == 0x893F) pos += et == 0x8926 ? 2 : 4; /* VN-Tag, E-Tag: 6 and 8 bytes */
            else if (et != 0x8100 && et != 0x88A8 && et != 0x9100) break;
        }
        if (pos + 2 > n || (be16(f + pos) != 0x0800 && be16(f + pos) != 0x86DD)) return 0;
        pos += 2;
    } else if (linktype == 276) {
        if (n < 20 || (be16(f) != 0x0800 && be16(f) != 0x86DD)) return 0;
        pos = 20;
    } else if (linktype == 101 || linktype == 228 || linktype == 229 || linktype == 14) {
        pos = 0;
    } else {
        return 0;
    }
    return ip_key(s, f, pos, n, flags, depth);
}

/* The key of the packet after an ethertype inside a tunnel, or of an 802.11 frame's. */
static uint64_t ethertype_key(const Skim *s, const uint8_t *f, unsigned et, size_t pos, size_t n, uint8_t *flags,
                              int depth) {
    return et == 0x0800 || et == 0x86DD ? ip_key(s, f, pos, n, flags, depth) : 0;
}

static uint64_t dot11_key(const Skim *s, const uint8_t *f, size_t pos, size_t n, uint8_t *flags, int depth) {
    unsigned et;
    size_t inner = dot11_payload(f, pos, n, &et);
    return inner ? ethertype_key(s, f, et, inner, n, flags, depth) : 0;
}

static uint64_t ethernet_key(const Skim *s, const uint8_t *f, size_t pos, size_t n, uint8_t *flags, int depth) {
    return pos + 14 <= n ? tcp_key(s, f + pos, n - pos, 1, flags, depth) : 0;
}

static uint64_t gre_key(const Skim *s, const uint8_t *f, size_t pos, size_t n, uint8_t *flags, int depth);

/* The key inside a UDP tunnel (as decode.py opens them), or 0. */
static uint64_t udp_tunnel_key(const Skim *s, const uint8_t *f, unsigned kind, size_t pos, size_t n, uint8_t *flags,
                               int depth) {
    size_t inner = 0;
    unsigned type = 0;
    switch (kind) {
    case SKIM_VXLAN:
        return ethernet_key(s, f, pos + 8, n, flags, depth);
    case SKIM_GTP_U:
        inner = gtp_u_payload(f, pos, n);
        return inner ? ip_key(s, f, inner, n, flags, depth) : 0;
    case SKIM_GENEVE:
        inner = geneve_payload(f, pos, n, &type);
        if (!inner) return 0;
        return type == 0x6558 ? ethernet_key(s, f, inner, n, flags, depth)
                              : ethertype_key(s, f, type, inner, n, flags, depth);
    case SKIM_TZSP:
        inner = tzsp_payload(f, pos, n, &type);
        if (!inner) return 0;
        return type == 18 ? dot11_key(s, f, inner, n, flags, depth)
                          : type == 1 ? ethernet_key(s, f, inner, n, flags, depth) : 0;
    case SKIM_CAPWAP:
        switch (capwap_payload(f, pos, n, &inner)) {
        case CAPWAP_80211: return dot11_key(s, f, inner, n, flags, depth);
        case CAPWAP_8023: return ethernet_key(s, f, inner, n, flags, depth);
        default: return 0;
        }
    case SKIM_GRE_IN_UDP:
        return pos + 4 <= n ? gre_key(s, f, pos, n, flags, depth) : 0;
    default:
        return 0;
    }
}

/* The key inside GRE: ERSPAN, bridged Ethernet or IP. */
static uint64_t gre_key(const Skim *s, const uint8_t *f, size_t pos, size_t n, uint8_t *flags, int depth) {
    unsigned gflags = f[pos], et = be16(f + pos + 2);
    size_t inner = pos + 4 + 4 * (size_t)(!!(gflags & 0x80) + !!(gflags & 0x20) + !!(gflags & 0x10));
    if (et == 0x88BE || et == 0x22EB) {
        inner = erspan_payload(f, et, gflags & 0x10, inner, n);
        return inner ? ethernet_key(s, f, inner, n, flags, depth) : 0;
    }
    if (et == 0x6558) return ethernet_key(s, f, inner, n, flags, depth);
    if (aruba(et)) return dot11_key(s, f, inner, n, flags, depth);
    return ethertype_key(s, f, et, inner, n, flags, depth);
}

/* The IP part of tcp_key; a tunnel's inner one (as decode.py opens them). */
static uint64_t ip_key(const Skim *s, const uint8_t *f, size_t pos, size_t n, uint8_t *flags, int depth) {
    if (pos >= n) return 0;
    const uint8_t *src, *dst;
    int alen;
    unsigned proto;
    size_t l4, end;
    if (f[pos] >> 4 == 4) {
        if (pos + 20 > n) return 0;
        size_t ihl = (size_t)(f[pos] & 0x0F) * 4, total = be16(f + pos + 2);
        if (ihl < 20 || total < ihl || (be16(f + pos + 6) & 0x1FFF)) return 0;
        proto = f[pos + 9];
        src = f + pos + 12, dst = f + pos + 16, alen = 4;
        l4 = pos + ihl;
        end = pos + total < n ? pos + total : n;
    } else if (f[pos] >> 4 == 6) {
        if (pos + 40 > n) return 0;
        proto = f[pos + 6];
        src = f + pos + 8, dst = f + pos + 24, alen = 16;
        l4 = pos + 40;
        end = pos + 40 + be16(f + pos + 4) < n ? pos + 40 + be16(f + pos + 4) : n;
    } else {
        return 0;
    }
    if (proto == 17 && l4 + 8 <= end && depth < SKIM_MAX_ENCAPSULATION) {
        unsigned kind = skim_udp_tunnel(s, be16(f + l4), be16(f + l4 + 2));
        return kind ? udp_tunnel_key(s, f, kind, l4 + 8, end, flags, depth + 1) : 0;
    }
    if (proto == 47 && l4 + 4 <= end && depth < SKIM_MAX_ENCAPSULATION) return gre_key(s, f, l4, end, flags, depth + 1);
    if (proto != 6 || l4 + 20 > end) return 0;
    *flags = f[l4 + 13];
    return skim_flow_hash(s, src, dst, alen, be16(f + l4), be16(f + l4 + 2));
}

/* Walk the whole buffer as the reader does: on after each stop, over blocks it skips. With
 * `frames`, collect every kept frame (a keep_all walk: all of them). */
static size_t walk_all(Skim *s, const uint8_t *in, const uint8_t *buf, size_t size, SkimKept *frames,
                       size_t max_frames, Model *model) {
    static SkimKept kept[SKIM_MAX_KEPT];
    int pcapng = in[0] & 1, big = in[0] >> 1 & 1, nanos = in[0] >> 2 & 1;
    SkimInterface ifaces[4];
    for (int i = 0; i < 4; i++)
        ifaces[i] = (SkimInterface){.linktype = LINKTYPES[in[2 + i] & 7], .tick = nanos ? 1e-9 : 1e-6};
    size_t pos = 0, n_frames = 0, n_ifaces = 1 + (in[2] >> 6);
    for (;;) {
        SkimWalk w;
        skim_walk_start(&w, kept);
        size_t before = pos;
        uint64_t serial = s->serial;
        int status = pcapng ? skim_walk_pcapng(s, &w, buf, &pos, size, big, ifaces, n_ifaces)
                            : skim_walk_pcap(s, &w, buf, &pos, size, big, nanos, ifaces[0].linktype);
        CHECK(before <= pos && pos <= size);
        CHECK(w.n_kept <= SKIM_MAX_KEPT && w.n_kept <= w.walked);
        CHECK(s->serial == serial + w.walked);
        CHECK(w.walked > 0 || status == SKIM_END || status == SKIM_BLOCK || status == SKIM_CORRUPT);
        for (size_t i = 0; i < w.n_kept; i++) {
            const SkimKept *k = &w.kept[i];
            CHECK(k->offset >= before && k->offset <= pos && k->caplen <= pos - k->offset);
            CHECK(k->serial > serial && k->serial <= s->serial);
            CHECK(k->hint == SKIM_HINT_NONE || (k->hint == SKIM_HINT_UNWANTED_HELLO && s->names));
            if (frames && n_frames < max_frames) frames[n_frames++] = *k;
            /* Python reads the frame and reports its flow: tracked unless it is a FIN/RST. */
            uint8_t flags = 0;
            uint64_t key = model ? tcp_key(s, buf + k->offset, k->caplen, k->linktype, &flags, 0) : 0;
            if (key) {
                int tracked = !(flags & 0x05);
                skim_track(s, key, tracked);
                model_track(model, key, tracked);
            }
        }
        if (model) model_check(s, model);
        if (in[7] && !isnan(w.last_ts) && status == SKIM_TICK) s->until = floor(w.last_ts) + in[7];
        if (status == SKIM_TICK || status == SKIM_FULL) continue;
        if (status != SKIM_BLOCK || size - pos < 12) break;
        uint32_t total = rd32(buf + pos + 4, big); /* Python reads the block and walks on */
        if (total < 12 || total % 4 || total > size - pos) break;
        pos += total;
    }
    return n_frames;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < SETUP) return 0;
    const uint8_t *in = data;
    /* A copy of exactly the records' size, so that a read past them is a heap overflow. */
    size_t n = size - SETUP;
    uint8_t *buf = malloc(n ? n : 1);
    memcpy(buf, data + SETUP, n);
#ifdef FUZZ_PLANTED_OVERREAD
    n += 1; /* the sanitizer self-test: the walk is told the buffer is one byte longer */
#endif
    unsigned workers = 1 + (in[1] & 3), worker = (in[1] >> 2 & 3) % workers;
    int keep_all = in[0] >> 3 & 1 && workers == 1;

    /* Every frame, from a keep_all walk; then each must belong to exactly one worker. */
    static SkimKept frames[1024];
    Skim all;
    if (setup(&all, in, 0, 1, 1) < 0) abort();
    size_t n_frames = walk_all(&all, in, buf, n, frames, 1024, NULL);
    skim_free(&all);
    Skim shares[MAX_WORKERS];
    for (unsigned i = 0; i < workers; i++)
        if (setup(&shares[i], in, i, workers, 0) < 0) abort();
    for (size_t i = 0; i < n_frames; i++) {
        int takers = 0;
        for (unsigned j = 0; j < workers; j++)
            takers += skim_classify(&shares[j], buf + frames[i].offset, frames[i].caplen, frames[i].linktype) !=
                      SKIM_FOREIGN;
        CHECK(takers == 1);
    }
    for (unsigned i = 0; i < workers; i++) skim_free(&shares[i]);

    /* The walk a replay makes, with Python's reports of the flows it tracks. */
    Skim s;
    Model model = {.n = 0};
    if (setup(&s, in, worker, workers, keep_all) < 0) abort();
    if (in[7]) s.until = in[7];
    walk_all(&s, in, buf, n, NULL, 0, &model);
    if (s.names) { /* the records' bytes as one DNS message: each name counted takes a byte at least */
        memset(s.drops, 0, sizeof s.drops);
        int verdict = skim_dns(&s, buf, n);
        CHECK(verdict == SKIM_KEEP || verdict == SKIM_DROPPED);
        CHECK(s.drops[DROP_DNS_QUERY_NAMES] + s.drops[DROP_DNS_ANSWER_NAMES] <= n);
        CHECK(verdict == SKIM_DROPPED || s.drops[DROP_DNS_QUERY_NAMES] + s.drops[DROP_DNS_ANSWER_NAMES] == 0);
        int hello = skim_hello(&s, buf, n);
        CHECK(hello == 0 || hello == 1);
        CHECK(!hello || (n >= 9 + 35 && buf[0] == 22 && buf[5] == 1)); /* a record holding a hello body */
    }
    skim_free(&s);
    free(buf);
    return 0;
}
