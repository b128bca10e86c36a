/* Triage: what to do with one frame, and the set of TCP flows Python still reads.
 *
 * The one piece of state is the set of TCP flows (one direction) whose later segments
 * Python may still need: a flow enters it at a SYN or at a segment that starts a TLS
 * ClientHello or an HTTP request, as the Python flight table's flows start, and Python
 * reports after each TCP frame it reads whether it tracks that flow, and each flow its
 * table forgets (skim_track). Walks and Python's reading alternate: every frame kept by
 * one walk is read before the next walk, and every start is a kept frame, so when a walk
 * begins the set is exactly Python's flows. Within a walk it only grows, by the starts the
 * walk sees; at worst a segment is kept that Python then drops (and counts, as here). A
 * start the walk cannot see (inside a tunnel, say) is in a frame it cannot read through,
 * and such a frame ends the walk.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "skim.h"

#define ETH_IPV4 0x0800
#define ETH_IPV6 0x86DD
#define ETH_ARP 0x0806
#define TCP_SYN 0x02
#define TCP_ACK 0x10
#define TLS_HANDSHAKE 0x16
#define ETH_TEB 0x6558
#define ETH_ERSPAN_II 0x88BE
#define ETH_ERSPAN_III 0x22EB
#define TZSP_PADDING 0
#define TZSP_END 1

static inline int has_port(const uint8_t *set, unsigned port) { return set[port >> 3] >> (port & 7) & 1; }

/* Seeded, so nobody outside can make two flows collide (a collision could only make a
 * report drop the other flow's later segments). */
uint64_t skim_flow_hash(const Skim *s, const uint8_t *src, const uint8_t *dst, int alen,
                          unsigned sport, unsigned dport) {
    uint64_t h = s->seed ^ (uint64_t)alen;
    for (int i = 0; i < alen; i++) h = (h ^ src[i]) * 0x100000001b3ULL;
    for (int i = 0; i < alen; i++) h = (h ^ dst[i]) * 0x100000001b3ULL;
    h = (h ^ (sport << 16 | dport)) * 0x100000001b3ULL;
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL; h ^= h >> 33;
    return h ? h : 1;
}

/* Which worker reads a flow: the same for both directions, so one worker sees all of it. */
static int foreign(const Skim *s, const uint8_t *src, const uint8_t *dst, int alen, unsigned sport,
                   unsigned dport) {
    if (s->workers < 2) return 0;
    uint64_t h = (uint64_t)alen;
    for (int i = 0; i < alen; i++) h = (h ^ (uint8_t)(src[i] ^ dst[i])) * 0x100000001b3ULL;
    h = (h ^ (sport ^ dport)) * 0x100000001b3ULL;
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33;
    return h % s->workers != s->worker;
}

/* -- the flow set: open addressing, linear probing, backward-shift deletion ------------ */

static uint64_t *find(Skim *s, uint64_t key) {
    for (uint64_t i = key & s->mask;; i = (i + 1) & s->mask) {
        if (s->slots[i] == key || s->slots[i] == 0) return &s->slots[i];
    }
}

/* A set too full to add to keeps every segment from then on (it cannot know which flows
 * it missed). Never reached while Python reports: the set is sized for its flow table. */
static int contains(Skim *s, uint64_t key) {
    if (s->saturated) {
        s->drops[DROP_TABLE_FULL]++;
        return 1;
    }
    return *find(s, key) == key;
}

static void add(Skim *s, uint64_t key) {
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

static void discard(Skim *s, uint64_t key) {
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
static int starts_message(const Skim *s, const uint8_t *p, size_t n) {
    static const uint8_t ccs[6] = {0x14, 0x03, 0x03, 0x00, 0x01, 0x01};
    /* A PROXY protocol header (a load balancer's, before the client's first bytes). */
    static const uint8_t proxy_v2[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    if ((n >= 6 && memcmp(p, "PROXY ", 6) == 0) || (n >= 12 && memcmp(p, proxy_v2, 12) == 0)) return 1;
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

/* What to do with one frame (dropped frames counted as Python would count them). Frames
 * of another worker's flows are SKIM_FOREIGN. A frame this walk cannot read through (IP-in-IP,
 * an IPv6 extension header, another link type, a tunnel's frame decode.py counts and skips)
 * is the first worker's, and ends the walk (SKIM_KEEP_UNREAD): it may start a TCP flow the
 * walk did not see start, whose plain segments must not be judged before Python has read it
 * and reported the flow. The tunnels of traffic mirrors, remote SPAN and controller-based
 * Wi-Fi (VXLAN, Geneve, GTP-U, TZSP, CAPWAP data, GRE with ERSPAN or bridged Ethernet or IP
 * inside) are opened here as decode.py opens them, and their inner packet is judged like any
 * other. */
#define KEEP_HERE (s->worker == 0 ? SKIM_KEEP_UNREAD : SKIM_FOREIGN)
/* ARP: the first worker's too, but it cannot start a TCP flow. */
#define KEEP_FIRST (s->worker == 0 ? SKIM_KEEP : SKIM_FOREIGN)
/* A UDP tunnel's header did not hold: the datagram is judged as a plain one. */
#define NOT_OPENED (-3)

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

/* Every datagram extract/tunnels.py may recognise as a client's first VPN or DoQ packet (a
 * few more: Python counts those as it counts other UDP): a WireGuard handshake initiation on
 * any port, IKE to 500, IKE behind the non-ESP marker to 4500, an OpenVPN hard reset to
 * 1194, a padded QUIC client Initial to 853. */
static int may_be_tunnel(const uint8_t *p, size_t n, unsigned dport) {
    if (n == 148 && p[0] == 1 && !p[1] && !p[2] && !p[3]) return 1;
    if (dport == 500) return 1;
    if (dport == 4500) return n >= 4 && !p[0] && !p[1] && !p[2] && !p[3];
    if (dport == 853) return n >= 1200 && (p[0] & 0xC0) == 0xC0;
    return dport == 1194 && n >= 10 && (p[0] == 7 << 3 || p[0] == 10 << 3);
}

/* -- tunnel headers: each the twin of decode.py's function of the same name ---------- */

/* _gtp_u_payload: the offset of a G-PDU's user packet in f[pos:end], or 0. */
static size_t gtp_u_payload(const uint8_t *f, size_t pos, size_t end) {
    if (pos + 8 > end || f[pos] >> 5 != 1 || f[pos + 1] != 0xFF) return 0;
    unsigned flags = f[pos];
    pos += 8;
    if (flags & 0x07) { /* sequence number, N-PDU number and next extension type follow */
        if (pos + 4 > end) return 0;
        unsigned next = f[pos + 3];
        pos += 4;
        while (next) { /* each extension: length in 4-byte units, its last byte the next type */
            if (pos >= end || !f[pos]) return 0;
            size_t length = (size_t)f[pos] * 4;
            if (pos + length > end) return 0;
            next = f[pos + length - 1];
            pos += length;
        }
    }
    return pos;
}

/* _geneve_payload: the inner packet's offset (its protocol type in *proto), or 0. */
static size_t geneve_payload(const uint8_t *f, size_t pos, size_t end, unsigned *proto) {
    if (pos + 8 > end || f[pos] >> 6) return 0;
    size_t inner = pos + 8 + (size_t)(f[pos] & 0x3F) * 4;
    if (inner > end) return 0;
    *proto = be16(f + pos + 2);
    return inner;
}

/* _tzsp_payload: the frame's offset after the tagged fields (its encapsulation in *encap), or 0. */
static size_t tzsp_payload(const uint8_t *f, size_t pos, size_t end, unsigned *encap) {
    if (pos + 4 > end || f[pos] != 1 || f[pos + 1] > 1) return 0;
    *encap = be16(f + pos + 2);
    pos += 4;
    while (pos < end) {
        unsigned tag = f[pos];
        if (tag == TZSP_END) return pos + 1;
        if (tag == TZSP_PADDING) {
            pos += 1;
        } else if (pos + 2 > end) {
            return 0;
        } else {
            pos += 2 + (size_t)f[pos + 1];
        }
    }
    return 0;
}

/* _capwap_payload: CAPWAP_8023 or CAPWAP_80211 with the frame's offset in *inner,
 * CAPWAP_FRAGMENT for a non-first fragment, or 0 when the header does not hold. */
enum { CAPWAP_8023 = 1, CAPWAP_80211 = 2, CAPWAP_FRAGMENT = 3 };
static int capwap_payload(const uint8_t *f, size_t pos, size_t end, size_t *inner) {
    if (pos + 8 > end || f[pos] != 0) return 0;
    size_t header = (size_t)(f[pos + 1] >> 3) * 4;
    unsigned native = f[pos + 2] & 0x01, wbid = f[pos + 2] >> 1 & 0x1F, flags = f[pos + 3];
    if (header < 8 || pos + header > end || (flags & 0x08)) return 0;
    if (native && wbid != 1) return 0;
    if ((flags & 0x80) && (be16(f + pos + 6) >> 3)) return CAPWAP_FRAGMENT;
    *inner = pos + header;
    return native ? CAPWAP_80211 : CAPWAP_8023;
}

/* _dot11: the offset of the packet after an 802.11 data frame's LLC/SNAP header (its
 * ethertype in *ethertype), or 0 for a frame decode.py counts and skips. */
static size_t dot11_payload(const uint8_t *f, size_t pos, size_t end, unsigned *ethertype) {
    if (pos + 24 > end) return 0;
    unsigned control = f[pos], ds_flags = f[pos + 1];
    if (control & 0x03) { /* Cisco's byte order */
        control = f[pos + 1];
        ds_flags = f[pos];
    }
    unsigned subtype = control >> 4, ds = ds_flags & 0x03;
    if ((control & 0x0F) != 0x08 || (subtype & 0x04) || (ds_flags & 0x40)) return 0;
    size_t header = ds == 3 ? 30 : 24;
    if (subtype & 0x08) header += (ds_flags & 0x80) ? 6 : 2;
    size_t llc = pos + header;
    static const uint8_t snap[5] = {0xAA, 0xAA, 0x03, 0x00, 0x00};
    if (llc + 8 > end || memcmp(f + llc, snap, 5) != 0 || (f[llc + 5] != 0x00 && f[llc + 5] != 0xF8)) return 0;
    *ethertype = be16(f + llc + 6);
    return llc + 8;
}

/* decode.py's ARUBA_*: an Aruba controller's GRE protocol types, each an 802.11 frame inside. */
static int aruba(unsigned proto) { return (proto >= 0x8200 && proto <= 0x8370 && !(proto & 0x0F)) || proto == 0x9000; }

/* _erspan: the mirrored Ethernet frame's offset, or 0 for a packet decode.py counts and skips. */
static size_t erspan_payload(const uint8_t *f, unsigned proto, int sequenced, size_t pos, size_t end) {
    size_t inner = pos;
    if (proto == ETH_ERSPAN_III || sequenced) {
        unsigned version = proto == ETH_ERSPAN_II ? 1 : 2;
        size_t header = version == 1 ? 8 : 12;
        if (pos + header > end || f[pos] >> 4 != version) return 0;
        inner = pos + header;
        if (version == 2) {
            if ((f[pos + 10] >> 2) & 0x1F) return 0;
            if (f[pos + 11] & 0x01) inner += 8;
        }
    }
    return inner + 14 <= end ? inner : 0;
}

static int link_frame(Skim *s, const uint8_t *f, size_t caplen, uint32_t linktype, int depth);
static int udp_tunnel(Skim *s, const uint8_t *f, unsigned kind, size_t pos, size_t end, int depth);
static int gre(Skim *s, const uint8_t *f, size_t pos, size_t end, int depth);

/* The IP packet at f[pos:caplen], inside `depth` tunnels. */
static int ip_packet(Skim *s, const uint8_t *f, size_t pos, size_t caplen, int depth) {
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
        if (depth < SKIM_MAX_ENCAPSULATION) {
            unsigned kind = skim_udp_tunnel(s, sport, dport);
            int verdict = kind ? udp_tunnel(s, f, kind, l4 + 8, end, depth + 1) : NOT_OPENED;
            if (verdict != NOT_OPENED) return verdict;
        }
        if (foreign(s, src, dst, alen, sport, dport)) return SKIM_FOREIGN;
        if (has_port(s->dns_port, sport) || has_port(s->dns_port, dport))
            return s->names ? skim_dns(s, f + l4 + 8, end - l4 - 8) : SKIM_KEEP;
        int long_header = l4 + 8 < end && f[l4 + 8] >= 0x80;
        if (long_header && has_port(s->quic_port, dport)) return SKIM_KEEP;
        if (long_header && has_port(s->quic_port, sport)) {
            s->drops[DROP_QUIC_SERVER_LONG]++;
            return SKIM_DROPPED;
        }
        if ((sport == 67 || sport == 68) && (dport == 67 || dport == 68)) return SKIM_KEEP;
        if ((sport == 546 || sport == 547) && (dport == 546 || dport == 547)) return SKIM_KEEP; /* DHCPv6 */
        if (may_be_tunnel(f + l4 + 8, end - l4 - 8, dport)) return SKIM_KEEP;
        s->drops[DROP_UDP]++;
        return SKIM_DROPPED;
    }
    if (proto != 6) {
        if (proto == 47 && depth < SKIM_MAX_ENCAPSULATION && l4 + 4 <= end) return gre(s, f, l4, end, depth + 1);
        if (may_carry_tcp(proto)) return KEEP_HERE;
        /* ICMPv6 neighbour solicitations and advertisements bind a MAC to an IPv6 address
         * (decode.py ICMPV6_NEIGHBOR_TYPES): the first worker's, as ARP is. */
        if (proto == 58 && alen == 16 && l4 < end && (f[l4] == 135 || f[l4] == 136)) return KEEP_FIRST;
        if (s->worker != 0) return SKIM_FOREIGN; /* ICMP and the like: no flow, the first worker counts it */
        s->drops[DROP_OTHER_TRANSPORT]++;
        return SKIM_DROPPED;
    }
    if (l4 + 20 > end) return KEEP_HERE;
    size_t doff = (size_t)(f[l4 + 12] >> 4) * 4;
    if (doff < 20) return KEEP_HERE;
    unsigned sport = be16(f + l4), dport = be16(f + l4 + 2), flags = f[l4 + 13];
    if (foreign(s, src, dst, alen, sport, dport)) return SKIM_FOREIGN;
    int dns = has_port(s->dns_port, sport) || has_port(s->dns_port, dport);
    if (flags & TCP_SYN) {
        if (!(flags & TCP_ACK) || has_port(s->dns_port, sport)) {
            add(s, skim_flow_hash(s, src, dst, alen, sport, dport));
            return SKIM_KEEP;
        }
        /* A SYN-ACK: Python reads those of DNS servers, and those answering a flow it tracks
         * (the tap sees the server too: the flow is not one-way). */
        if (contains(s, skim_flow_hash(s, dst, src, alen, dport, sport))) return SKIM_KEEP;
        return SKIM_DROPPED;
    }
    if (l4 + doff >= end) return SKIM_DROPPED; /* no payload */
    if (dns) return SKIM_KEEP;
    uint64_t key = skim_flow_hash(s, src, dst, alen, sport, dport);
    if (starts_message(s, f + l4 + doff, end - l4 - doff)) {
        add(s, key);
        /* To 853 (DNS over TLS) Python writes an unwanted name's hello as a blind spot. */
        if (s->names && dport != 853 && skim_hello(s, f + l4 + doff, end - l4 - doff))
            s->hint = SKIM_HINT_UNWANTED_HELLO;
        return SKIM_KEEP;
    }
    if (contains(s, key)) return SKIM_KEEP;
    s->drops[DROP_TCP]++;
    return SKIM_DROPPED;
}

/* The packet after an ethertype at f[pos:end] inside a tunnel: IP is judged, ARP is the
 * first worker's, the rest (MPLS, PPPoE, what decode.py counts and skips) kept for Python. */
static int inner_ethertype(Skim *s, const uint8_t *f, unsigned ethertype, size_t pos, size_t end, int depth) {
    if (ethertype == ETH_IPV4 || ethertype == ETH_IPV6) return ip_packet(s, f, pos, end, depth);
    return ethertype == ETH_ARP ? KEEP_FIRST : KEEP_HERE;
}

static int dot11(Skim *s, const uint8_t *f, size_t pos, size_t end, int depth) {
    unsigned ethertype;
    size_t inner = dot11_payload(f, pos, end, &ethertype);
    return inner ? inner_ethertype(s, f, ethertype, inner, end, depth) : KEEP_HERE;
}

/* decode.py _udp_tunnel: the verdict on the packet inside, or NOT_OPENED. */
static int udp_tunnel(Skim *s, const uint8_t *f, unsigned kind, size_t pos, size_t end, int depth) {
    size_t inner;
    unsigned type;
    switch (kind) {
    case SKIM_VXLAN:
        return pos + 8 + 14 <= end ? link_frame(s, f + pos + 8, end - pos - 8, 1, depth) : NOT_OPENED;
    case SKIM_GTP_U:
        inner = gtp_u_payload(f, pos, end);
        return inner ? ip_packet(s, f, inner, end, depth) : NOT_OPENED;
    case SKIM_GENEVE:
        inner = geneve_payload(f, pos, end, &type);
        if (!inner) return NOT_OPENED;
        if (type != ETH_TEB) return inner_ethertype(s, f, type, inner, end, depth);
        return inner + 14 <= end ? link_frame(s, f + inner, end - inner, 1, depth) : NOT_OPENED;
    case SKIM_TZSP:
        inner = tzsp_payload(f, pos, end, &type);
        if (!inner) return NOT_OPENED;
        if (type == 18) return dot11(s, f, inner, end, depth);
        return type == 1 && inner + 14 <= end ? link_frame(s, f + inner, end - inner, 1, depth) : NOT_OPENED;
    case SKIM_CAPWAP:
        switch (capwap_payload(f, pos, end, &inner)) {
        case CAPWAP_80211:
            return dot11(s, f, inner, end, depth);
        case CAPWAP_8023:
            return inner + 14 <= end ? link_frame(s, f + inner, end - inner, 1, depth) : NOT_OPENED;
        case CAPWAP_FRAGMENT:
            return KEEP_HERE;
        default:
            return NOT_OPENED;
        }
    case SKIM_GRE_IN_UDP:
        return pos + 4 <= end ? gre(s, f, pos, end, depth) : NOT_OPENED;
    default: /* CAPWAP control, a plain or DTLS preamble: Python counts it */
        return pos < end && f[pos] <= 1 ? KEEP_FIRST : NOT_OPENED;
    }
}

/* decode.py's GRE: ERSPAN and bridged Ethernet opened, IP judged, the rest kept for Python. */
static int gre(Skim *s, const uint8_t *f, size_t pos, size_t end, int depth) {
    unsigned flags = f[pos], ethertype = be16(f + pos + 2);
    size_t inner = pos + 4 + 4 * (size_t)(!!(flags & 0x80) + !!(flags & 0x20) + !!(flags & 0x10));
    if (ethertype == ETH_ERSPAN_II || ethertype == ETH_ERSPAN_III) {
        inner = erspan_payload(f, ethertype, flags & 0x10, inner, end);
        return inner ? link_frame(s, f + inner, end - inner, 1, depth) : KEEP_HERE;
    }
    if (ethertype == ETH_TEB) return inner + 14 <= end ? link_frame(s, f + inner, end - inner, 1, depth) : KEEP_HERE;
    if (aruba(ethertype)) return dot11(s, f, inner, end, depth);
    return inner_ethertype(s, f, ethertype, inner, end, depth);
}

static int link_frame(Skim *s, const uint8_t *f, size_t caplen, uint32_t linktype, int depth) {
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
            if (et == 0x8926 || et == 0x893F) { /* VN-Tag, E-Tag */
                pos += et == 0x8926 ? 6 : 8;
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
    return ip_packet(s, f, pos, caplen, depth);
}

int skim_classify(Skim *s, const uint8_t *f, size_t caplen, uint32_t linktype) {
    s->hint = SKIM_HINT_NONE;
    return link_frame(s, f, caplen, linktype, 0);
}

/* -- set-up ---------------------------------------------------------------------------- */

int skim_init(Skim *s, uint64_t max_flows, uint64_t seed, int keep_all, unsigned worker, unsigned workers) {
    if (max_flows < 1 || max_flows > SKIM_MAX_FLOWS || workers < 1 || worker >= workers ||
        (keep_all && workers > 1))
        return -1;
    memset(s, 0, sizeof *s);
    /* Python's flows plus the triggers of one walk, at most a quarter full. */
    uint64_t want = 4 * (max_flows + SKIM_MAX_KEPT), slots = SKIM_MIN_SLOTS;
    while (slots < want) slots <<= 1;
    s->slots = calloc(slots, sizeof(uint64_t));
    if (!s->slots) return -1;
    s->mask = slots - 1;
    s->keep_all = keep_all;
    s->worker = worker;
    s->workers = workers;
    s->seed = seed;
    s->until = INFINITY;
    return 0;
}

void skim_free(Skim *s) {
    free(s->slots);
    s->slots = NULL;
    skim_clear_names(s);
}

void skim_add_port(uint8_t *set, unsigned port) { set[(port & 0xFFFF) >> 3] |= (uint8_t)(1 << (port & 7)); }

int skim_set_tunnel_port(Skim *s, unsigned port, unsigned kind) {
    if (port > 0xFFFF || kind < SKIM_VXLAN || kind > SKIM_GRE_IN_UDP) return -1;
    s->udp_tunnel[port] = (uint8_t)kind;
    return 0;
}

int skim_add_method(Skim *s, const uint8_t *method, size_t len) {
    if (len < 1 || len > SKIM_MAX_METHOD_LEN || s->n_methods == SKIM_MAX_METHODS) return -1;
    memcpy(s->methods[s->n_methods], method, len);
    s->method_len[s->n_methods++] = (uint8_t)len;
    s->method_first[method[0]] = 1;
    return 0;
}

void skim_track(Skim *s, uint64_t key, int tracked) {
    if (key && tracked)
        add(s, key);
    else if (key)
        discard(s, key);
}
