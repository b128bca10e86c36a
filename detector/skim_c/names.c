/* Name triage: the names of a DNS message over UDP, read as detector/extract/dns.py reads
 * them, against an index of the signature keys.
 *
 * Most DNS on a tap asks for names no signature holds; Python would parse each message,
 * build a string per name and look each up, only to count it. Here a message whose names
 * cannot match is dropped and counted under the same keys (observations.dns-query and
 * .dns-answer, parse_error.dns and .dns_partial). Anything else goes to Python, which
 * stays the reference and writes the event: a name that may match, a name with a byte
 * outside printable ASCII (Python writes those as \xNN and compares the escaped text, which
 * this code does not reproduce), or a response with more distinct answers than
 * SKIM_MAX_ANSWERS.
 *
 * The index holds seeded 64-bit hashes of the keys only: a hash that collides keeps a
 * frame Python then counts as no match, so a collision costs time, never a name. A name
 * may match when it equals a key or ends in "." and a key, which holds for every entry
 * kind (an exact name, a suffix, a regex's literal domain: match.py).
 *
 * dns.py's reading rules, which this mirrors byte for byte (tests/test_skim.py holds the
 * two equal on random messages, fuzz/fuzz_skim.c on whatever libFuzzer makes): a name is
 * labels of < 0x40 octets or backward pointers (to before the start of the run of labels
 * that holds them), at most 127 pointers and fewer than 255 octets; 0x40..0xBF is a fault;
 * a name that runs off the message is a fault. The questions are read, then (if none
 * faulted) each answer's owner, and the target of a CNAME, DNAME, SVCB or HTTPS record,
 * which must end inside its RDATA. A query reports its questions, a response its answer
 * names, each distinct name once; the root name is never reported. A response whose
 * question may match is kept too (uncounted), for the one-way view.
 */
#include <stdlib.h>
#include <string.h>

#include "skim.h"

#define DNS_HEADER 12
#define DNS_QUESTION_FIXED 4
#define DNS_RR_FIXED 10
#define DNS_MAX_POINTERS 127
#define DNS_MAX_WIRE 255
#define TYPE_CNAME 5
#define TYPE_DNAME 39
#define TYPE_SVCB 64
#define TYPE_HTTPS 65
#define PRIME 0x100000001b3ULL


static uint64_t finish_hash(uint64_t h) {
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL; h ^= h >> 33;
    return h ? h : 1;
}

static int indexed(const Skim *s, uint64_t h) {
    for (uint64_t i = h & s->names_mask;; i = (i + 1) & s->names_mask) {
        if (s->names[i] == h) return 1;
        if (s->names[i] == 0) return 0;
    }
}

/* The hashes run from the last byte to the first, so each label suffix's hash is a step
 * on the way to the whole name's: every suffix is looked up in one pass. */
static int may_match(const Skim *s, const uint8_t *text, size_t len) {
    uint64_t h = s->seed;
    for (size_t i = len; i-- > 0;) {
        if (text[i] == '.' && indexed(s, finish_hash(h))) return 1;
        h = (h ^ text[i]) * PRIME;
    }
    return indexed(s, finish_hash(h));
}

static uint64_t key_hash(const Skim *s, const uint8_t *text, size_t len) {
    uint64_t h = s->seed;
    for (size_t i = len; i-- > 0;) h = (h ^ text[i]) * PRIME;
    return finish_hash(h);
}

static int key_byte(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-'; }

int skim_set_names(Skim *s, const uint8_t *packed, size_t len) {
    size_t n = 1;
    for (size_t i = 0; i < len; i++) n += packed[i] == 0;
    if (len == 0) n = 0;
    if (n > SKIM_MAX_NAMES) return -1;
    uint64_t slots = 64;
    while (slots < 4 * n) slots <<= 1;
    uint64_t *table = calloc(slots, sizeof(uint64_t));
    if (!table) return -1;
    uint64_t *old = s->names, old_mask = s->names_mask;
    s->names = table;
    s->names_mask = slots - 1;
    for (size_t start = 0; start < len;) {
        size_t end = start;
        while (end < len && packed[end]) {
            if (!key_byte(packed[end])) end = len + 1; /* a byte a key cannot hold */
            else end++;
        }
        if (end > len || end == start || end - start > SKIM_MAX_NAME) {
            free(table);
            s->names = old;
            s->names_mask = old_mask;
            return -1;
        }
        uint64_t h = key_hash(s, packed + start, end - start), i = h & s->names_mask;
        while (table[i] && table[i] != h) i = (i + 1) & s->names_mask;
        table[i] = h;
        start = end + 1;
    }
    free(old);
    return 0;
}

void skim_clear_names(Skim *s) {
    free(s->names);
    s->names = NULL;
    s->names_mask = 0;
}

/* -- reading a message ---------------------------------------------------------------- */

typedef struct {
    uint8_t text[DNS_MAX_WIRE + 1]; /* labels joined by ".", lowercased */
    size_t len;
    int odd; /* a byte outside printable ASCII: Python escapes it */
} Name;

/* The name at pos (dns.py _read_name): the offset just past its bytes at pos, or -1 when
 * it faults. Fewer than 255 octets are copied, so text never overflows. */
static long read_name(const uint8_t *m, size_t n, size_t pos, Name *name) {
    size_t run_start = pos, octets = 0;
    long after = -1;
    int pointers = 0;
    name->len = 0;
    name->odd = 0;
    for (;;) {
        if (pos >= n) return -1;
        unsigned length = m[pos];
        if (length == 0) break;
        if (length < 0x40) {
            octets += length + 1;
            if (octets >= DNS_MAX_WIRE || pos + 1 + length >= n) return -1;
            if (name->len) name->text[name->len++] = '.';
            for (size_t i = pos + 1; i <= pos + length; i++) {
                uint8_t c = m[i];
                if (c < 0x20 || c > 0x7E) name->odd = 1;
                name->text[name->len++] = c >= 'A' && c <= 'Z' ? (uint8_t)(c | 0x20) : c;
            }
            pos += 1 + length;
            continue;
        }
        if (length < 0xC0 || pos + 1 >= n) return -1;
        size_t target = (size_t)(length & 0x3F) << 8 | m[pos + 1];
        if (target >= run_start || ++pointers > DNS_MAX_POINTERS) return -1;
        if (after < 0) after = (long)(pos + 2);
        pos = run_start = target;
    }
    return after < 0 ? (long)(pos + 1) : after;
}

typedef struct {
    const Skim *s;
    int keep;                               /* Python must read the message */
    size_t count;                           /* names reported */
    uint64_t seen[SKIM_MAX_ANSWERS];        /* hashes of the distinct answers so far */
    uint8_t seen_len[SKIM_MAX_ANSWERS];
    uint8_t seen_text[SKIM_MAX_ANSWERS][DNS_MAX_WIRE + 1];
} Report;

/* A name the message reports; distinct: answers count each text once. */
static void report(Report *r, const Name *name, int distinct) {
    if (r->keep || name->len == 0) return;
    if (name->odd || may_match(r->s, name->text, name->len)) {
        r->keep = 1;
        return;
    }
    if (distinct) {
        uint64_t h = key_hash(r->s, name->text, name->len);
        for (size_t i = 0; i < r->count; i++) {
            if (r->seen[i] == h && r->seen_len[i] == name->len && memcmp(r->seen_text[i], name->text, name->len) == 0)
                return;
        }
        if (r->count == SKIM_MAX_ANSWERS) {
            r->keep = 1;
            return;
        }
        memcpy(r->seen_text[r->count], name->text, name->len);
        r->seen[r->count] = h;
        r->seen_len[r->count] = (uint8_t)name->len;
    }
    r->count++;
}

int skim_dns(Skim *s, const uint8_t *m, size_t n) {
    if (n < DNS_HEADER || (be16(m + 4) == 0 && be16(m + 6) == 0)) {
        s->drops[DROP_DNS_ERROR]++;
        return SKIM_DROPPED;
    }
    unsigned qdcount = be16(m + 4), ancount = be16(m + 6);
    int response = m[2] & 0x80, malformed = 0;
    Report r;
    r.s = s;
    r.keep = 0;
    r.count = 0;
    Name name;
    size_t pos = DNS_HEADER;
    /* Each pass consumes at least 5 (question) or 11 (record) bytes or stops. */
    for (unsigned i = 0; i < qdcount && !malformed; i++) {
        long after = read_name(m, n, pos, &name);
        if (after < 0) {
            malformed = 1;
            break;
        }
        if (!response) report(&r, &name, 0);
        /* A response's question is Python's to read when it may match: the query may not
         * have been seen (a tap that sees one direction), and then the question is the name
         * (pipeline.py reports it as seen in the response only). Not counted here: Python
         * counts it only when it reports it. */
        else if (name.len && (name.odd || may_match(s, name.text, name.len))) r.keep = 1;
        pos = (size_t)after + DNS_QUESTION_FIXED;
        if (pos > n) malformed = 1;
    }
    for (unsigned i = 0; i < ancount && !malformed && !r.keep; i++) {
        long after = read_name(m, n, pos, &name);
        if (after < 0) {
            malformed = 1;
            break;
        }
        if (response) report(&r, &name, 1);
        pos = (size_t)after;
        if (pos + DNS_RR_FIXED > n) {
            malformed = 1;
            break;
        }
        unsigned type = be16(m + pos), rdlength = be16(m + pos + 8);
        size_t rdata = pos + DNS_RR_FIXED;
        pos = rdata + rdlength;
        if (pos > n) {
            malformed = 1;
            break;
        }
        size_t target;
        if (type == TYPE_CNAME || type == TYPE_DNAME) target = rdata;
        else if (type == TYPE_HTTPS || type == TYPE_SVCB) target = rdata + 2;
        else continue;
        after = read_name(m, n, target, &name);
        if (after < 0 || (size_t)after > pos) {
            malformed = 1;
            break;
        }
        if (response) report(&r, &name, 1);
    }
    if (r.keep) return SKIM_KEEP;
    s->drops[response ? DROP_DNS_ANSWER_NAMES : DROP_DNS_QUERY_NAMES] += r.count;
    if (malformed) s->drops[DROP_DNS_PARTIAL]++;
    return SKIM_DROPPED;
}

/* -- a ClientHello in one segment (detector/extract/clienthello.py) ------------------- */

#define TLS_HANDSHAKE_RECORD 22
#define TLS_MAX_RECORD (16384 + 2048)
#define TLS_MAX_HELLO (64 * 1024)
#define EXT_SERVER_NAME 0x0000
#define EXT_ALPN 0x0010
#define EXT_SUPPORTED_VERSIONS 0x002B
#define EXT_ECH 0xFE0D

/* _server_name: 1 and the first host_name entry (*name NULL if none), or 0 when malformed. */
static int server_name(const uint8_t *b, size_t p, size_t end, const uint8_t **name, size_t *len) {
    *name = NULL;
    if (end - p < 2 || be16(b + p) != end - p - 2) return 0;
    p += 2;
    while (p + 3 <= end) {
        unsigned type = b[p];
        size_t n = be16(b + p + 1);
        p += 3;
        if (p + n > end) return 0;
        if (type == 0 && *name == NULL) {
            *name = b + p;
            *len = n;
        }
        p += n;
    }
    return p == end;
}

static int alpn_ok(const uint8_t *b, size_t p, size_t end) {
    if (end - p < 2 || be16(b + p) != end - p - 2) return 0;
    for (p += 2; p < end;) {
        size_t n = b[p++];
        if (n == 0 || p + n > end) return 0;
        p += n;
    }
    return 1;
}

static int versions_ok(const uint8_t *b, size_t p, size_t end) {
    return end - p >= 1 && b[p] == end - p - 1 && !(b[p] & 1);
}

/* _parse_body, as far as the server name: 1 with *sni set (NULL: no name, the hello
 * still valid), or 0 when Python would find the hello malformed or it carries ECH (the
 * name is then an outer one, and Python may infer the real one from a DNS answer). */
static int hello_body(const uint8_t *b, size_t n, const uint8_t **sni, size_t *sni_len) {
    *sni = NULL;
    if (n < 35) return 0;
    size_t sid = b[34], p = 35 + sid;
    if (sid > 32 || p + 2 > n) return 0;
    size_t cs = be16(b + p);
    p += 2 + cs;
    if (cs < 2 || cs & 1 || p + 1 > n) return 0;
    size_t cm = b[p];
    p += 1 + cm;
    if (cm < 1 || p > n) return 0;
    if (p == n) return 1;
    if (p + 2 > n) return 0;
    size_t end = p + 2 + be16(b + p);
    p += 2;
    if (end > n) return 0;
    int seen_sni = 0, seen_alpn = 0, seen_versions = 0, faulted = 0;
    while (p + 4 <= end) {
        unsigned type = be16(b + p);
        size_t q = p + 4 + be16(b + p + 2);
        p += 4;
        if (q > end) {
            faulted = 1;
            break;
        }
        if (type == EXT_ECH) return 0;
        if (type == EXT_SERVER_NAME && !seen_sni) {
            seen_sni = 1;
            if (!server_name(b, p, q, sni, sni_len)) return 0;
        } else if (type == EXT_ALPN && !seen_alpn) {
            seen_alpn = 1;
            if (!alpn_ok(b, p, q)) {
                faulted = 1;
                break;
            }
        } else if (type == EXT_SUPPORTED_VERSIONS && !seen_versions) {
            seen_versions = 1;
            if (!versions_ok(b, p, q)) {
                faulted = 1;
                break;
            }
        }
        p = q;
    }
    return !((faulted || p != end) && *sni == NULL);
}

int skim_hello(const Skim *s, const uint8_t *p, size_t n) {
    /* client_hello_from_records, for a hello whose handshake message lies in the first
     * record of the segment (a hello over several records goes to Python) */
    if (n < 5 || p[0] != TLS_HANDSHAKE_RECORD || p[1] != 3) return 0;
    size_t length = be16(p + 3), avail = n - 5 < length ? n - 5 : length;
    if (length == 0 || length > TLS_MAX_RECORD || avail < 4 || p[5] != 1) return 0;
    size_t need = 4 + ((size_t)p[6] << 16 | (size_t)p[7] << 8 | p[8]);
    if (need - 4 > TLS_MAX_HELLO || need > avail) return 0;
    const uint8_t *raw;
    size_t raw_len = 0;
    if (!hello_body(p + 9, need - 4, &raw, &raw_len) || raw == NULL) return 0;
    /* normalize_name: lowercased, trailing dots stripped, 1..253 characters */
    while (raw_len > 0 && raw[raw_len - 1] == '.') raw_len--;
    if (raw_len == 0 || raw_len > SKIM_MAX_NAME) return 0;
    uint8_t text[SKIM_MAX_NAME];
    for (size_t i = 0; i < raw_len; i++) {
        uint8_t c = raw[i];
        if (c < 0x20 || c > 0x7E) return 0; /* Python writes U+FFFD for it */
        text[i] = c >= 'A' && c <= 'Z' ? (uint8_t)(c | 0x20) : c;
    }
    return !may_match(s, text, raw_len);
}
