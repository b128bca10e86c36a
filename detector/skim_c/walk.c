/* Walk: the records of a pcap or pcapng buffer, each frame handed to triage.
 *
 * A walk stops at the end of the span (SKIM_END: the caller reads on and walks again from
 * *pos), at the first frame at or past skim->until (SKIM_TICK: a clock is due), when
 * SKIM_MAX_KEPT frames are kept or a kept frame could not be read through (SKIM_FULL:
 * Python reads them, then walks on), at a pcapng block that is not a plain Enhanced Packet
 * Block (SKIM_BLOCK: Python reads it) or at a record too long to be a packet
 * (SKIM_CORRUPT). A record that does not fit whole in the span is left for the next walk.
 */
#include <math.h>

#include "skim.h"

#define PCAPNG_EPB 6
#define PCAP_RECORD_HEADER 16
#define EPB_FIXED 28 /* block type and length, interface, timestamp, captured and original length */

static inline uint32_t rd32(const uint8_t *p, int big) {
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

void skim_walk_start(SkimWalk *w, SkimKept *kept) {
    w->kept = kept;
    w->n_kept = w->walked = 0;
    w->last_ts = w->ts_min = w->ts_max = NAN;
}

/* One frame at buf[offset:offset+caplen]; returns the status that ends the walk, or -1. */
static int frame(Skim *s, SkimWalk *w, const uint8_t *buf, size_t offset, size_t caplen, uint32_t linktype,
                 double ts) {
    uint64_t serial = ++s->serial;
    w->walked++;
    w->last_ts = ts;
    if (isnan(w->ts_min) || ts < w->ts_min) w->ts_min = ts;
    if (isnan(w->ts_max) || ts > w->ts_max) w->ts_max = ts;
    int verdict = s->keep_all ? SKIM_KEEP : skim_classify(s, buf + offset, caplen, linktype);
    if (verdict >= SKIM_KEEP) {
        SkimKept *k = &w->kept[w->n_kept++];
        k->serial = serial;
        k->ts = ts;
        k->offset = offset;
        k->caplen = (uint32_t)caplen;
        k->linktype = linktype;
        k->hint = s->keep_all ? SKIM_HINT_NONE : s->hint;
        k->pad = 0;
    } else if (verdict == SKIM_DROPPED) {
        s->drops[DROP_PACKETS]++;
        s->drops[DROP_BYTES] += caplen;
    }
    if (ts >= s->until) return SKIM_TICK;
    if (w->n_kept == SKIM_MAX_KEPT || verdict == SKIM_KEEP_UNREAD) return SKIM_FULL;
    return -1;
}

int skim_walk_pcap(Skim *s, SkimWalk *w, const uint8_t *buf, size_t *pos, size_t end, int big, int nanos,
                   uint32_t linktype) {
    double unit = nanos ? 1e-9 : 1e-6;
    size_t p = *pos;
    int status = SKIM_END;
    while (p <= end && end - p >= PCAP_RECORD_HEADER) {
        const uint8_t *h = buf + p;
        uint32_t caplen = rd32(h + 8, big);
        if (caplen > SKIM_MAX_RECORD) {
            status = SKIM_CORRUPT;
            break;
        }
        if (end - p - PCAP_RECORD_HEADER < caplen) break;
        double ts = (double)rd32(h, big) + (double)rd32(h + 4, big) * unit;
        int stop = frame(s, w, buf, p + PCAP_RECORD_HEADER, caplen, linktype, ts);
        p += PCAP_RECORD_HEADER + caplen;
        if (stop >= 0) {
            status = stop;
            break;
        }
    }
    *pos = p;
    return status;
}

int skim_walk_pcapng(Skim *s, SkimWalk *w, const uint8_t *buf, size_t *pos, size_t end, int big,
                     const SkimInterface *ifaces, size_t n_ifaces) {
    size_t p = *pos;
    int status = SKIM_END;
    while (p <= end && end - p >= 8) {
        const uint8_t *b = buf + p;
        uint32_t type = rd32(b, big), total = rd32(b + 4, big);
        if (type != PCAPNG_EPB) {
            status = SKIM_BLOCK;
            break;
        }
        if (total < 12 || total % 4 || total > SKIM_MAX_BLOCK) {
            status = SKIM_CORRUPT;
            break;
        }
        if (end - p < total) break;
        if (total < EPB_FIXED + 4) { /* too short for an EPB's fields: Python counts it */
            status = SKIM_BLOCK;
            break;
        }
        uint32_t iface = rd32(b + 8, big), caplen = rd32(b + 20, big);
        if (iface >= n_ifaces || caplen > total - EPB_FIXED - 4) {
            status = SKIM_BLOCK;
            break;
        }
        uint64_t ticks = (uint64_t)rd32(b + 12, big) << 32 | rd32(b + 16, big);
        double ts = (double)ticks * ifaces[iface].tick + (double)ifaces[iface].offset;
        int stop = frame(s, w, buf, p + EPB_FIXED, caplen, ifaces[iface].linktype, ts);
        p += total;
        if (stop >= 0) {
            status = stop;
            break;
        }
    }
    *pos = p;
    return status;
}

int skim_walk_frames(Skim *s, SkimWalk *w, const uint8_t *buf, size_t len, const SkimFrame *frames, size_t n,
                     size_t *next, uint32_t linktype) {
    size_t i = *next;
    int status = SKIM_END;
    while (i < n) {
        const SkimFrame *f = &frames[i];
        if (f->offset > len || f->caplen > len - f->offset || f->caplen > SKIM_MAX_RECORD) {
            status = SKIM_CORRUPT;
            break;
        }
        int stop = frame(s, w, buf, f->offset, f->caplen, linktype, (double)f->sec + (double)f->usec * 1e-6);
        i++;
        if (stop >= 0) {
            status = stop;
            break;
        }
    }
    *next = i;
    return status;
}
