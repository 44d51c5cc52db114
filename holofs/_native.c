/* holofs._native: a fresh reflink restore's directories and files, in C threads.
 *
 * Python costs 30-50 us per file around six system calls that take the kernel ~25 us, and
 * per-directory Python work on top; the loop below does the same calls with the GIL released,
 * in its own threads. It is an accelerator only: every item it does not finish is left
 * uncreated (or removed again), and the caller redoes it on the general Python path, which
 * also produces the user-facing error.
 *
 * build_tree(lib_fd, root_fd, dir_parents, dir_names, file_dirs, digests, names, modes, sizes, rewrites,
 *            ident, verified, chmod_mask, dir_mode, mtime_ns, decode, reflink, threads, counter)
 *   -> (dir_fds, made, unverified, hashed, dirs_stamped)
 *   Directory 0 is root_fd (open, not closed here); directory i > 0 is made as
 *   dir_names[i] (mode dir_mode) under directory dir_parents[i], and opened O_NOFOLLOW.
 *   File i is created O_EXCL|O_NOFOLLOW as names[i] in directory file_dirs[i] (non-
 *   decreasing) with modes[i] (fchmod'ed when modes[i] & chmod_mask), reflinked (FICLONE)
 *   from the raw blob of digests[i] (lowercase hex: at RCC's "ab/cd/ef/abcdef..." under lib_fd)
 *   and stamped mtime=atime=mtime_ns;
 *   where the filesystems cannot reflink (reflink=0, or the first FICLONE says so) it is
 *   copied instead: written from memory when the blob was just hashed, else by
 *   copy_file_range, else by read/write;
 *   sizes[i] is the catalog size; `ident` (bytes) is written at each offset of rewrites[i] (a
 *   tuple; the caller checks that every range lies inside the file). A blob of another size
 *   is compressed and is decoded into the new file (gzip/zstd; one that does not decode to
 *   exactly sizes[i] bytes is left: the Python path reports it).
 *   Hashing, `decode` (the verification policy): 2 hashes nothing (--verify skip); 1 hashes a
 *   blob unless its key (holofs.verification.blob_key: "<digest> <st_dev> <st_ino> <st_size>
 *   <st_mtime_ns> <st_ctime_ns>", the digest being the blob's file name) is a line of
 *   `verified` (bytes: the verification log); 0 hashes every blob. A hashed blob's content
 *   (a raw one before its clone, a compressed one once decoded) must have the digest its name
 *   says (SHA-256 for 64 hex digits, RCC's SipHash-2-4-128 for 32), else the file is left
 *   uncreated: a bad blob never gets a name, and the Python path reports it.
 *   dir_fds[i]: the directory's new fd (the caller closes it), or -1 if it was not made.
 *   made[i] (bytes): MADE_CLONE (reflinked, or empty), MADE_DECODE, MADE_COPY_RANGE,
 *   MADE_COPY, or 0: not made (left for the caller: not raw and not decodable here, or not as
 *   its digest says; or not tried because the first errno, of a file or a directory, stops
 *   every thread). unverified: {i: blob key} for the clones whose blob had to be hashed but
 *   could not be here (a raw one over HASH_MAX, or SHA-256 without libcrypto): the caller
 *   hashes those. hashed: {i: blob key} for the files made from a blob hashed here and found
 *   right (the caller records them as verified).
 *   dirs_stamped: True when, after every file, each directory made (and directory 0) got mode
 *   dir_mode (fchmod'ed when dir_mode & chmod_mask) and atime=mtime=mtime_ns; False if one
 *   of those calls failed or an error stopped the threads (the caller then stamps them).
 *   counter: None or a writable 8-byte buffer, atomically increased by each file made (progress
 *   for a caller polling from another thread).
 *
 * decode_file(src_fd, blob_size, dst_fd, size, sha256, ident, offsets) -> bytes | None
 *   One compressed blob (gzip members or a zstd frame, blob_size bytes read from offset 0 of
 *   src_fd) decoded into dst_fd (the caller's new, empty file): exactly `size` bytes, `ident` written at
 *   each offset of the tuple `offsets` (the caller checks the ranges). With sha256=True it
 *   returns the SHA-256 of the decoded content as recorded (before relocation), else b"".
 *   None when it cannot do it here (not a format known here, corrupt, another size, bigger
 *   than DECODE_MAX, or no SHA-256 built in): nothing was written then, and the caller's own
 *   path decodes or reports it. OSError for a failed read or write. The GIL is released for
 *   all of it (a mount's cache fills and the general materialize path run it in threads).
 *
 * fill_file(blob, tmp, final, size, mode, expect, same, ident, offsets) -> (fd, blob_ident) | None
 *   A mount's cache fill in one call: the compressed blob at path `blob` decoded (as decode_file)
 *   into `tmp`, created O_EXCL with `mode`, and renamed to `final`; returns a new read-only fd of
 *   `final` (-1 if it was gone again before it could be opened) and the blob's (st_dev, st_ino,
 *   st_size, st_mtime_ns, st_ctime_ns) as read.
 *   `expect`: b"" (no hashing) or the 32-byte SHA-256 the content must have as recorded;
 *   `same`: None, or the identity the blob file must still have (the caller skips hashing a
 *   blob verified as that file). None when it is not for this path, with nothing left behind:
 *   a missing, raw (the caller may reflink it), too big, changed or undecodable blob, or a
 *   digest mismatch; the caller's own path then does it or names the problem. OSError (tmp
 *   removed) for a failed create, write or rename. One GIL release for all of it: a fill made
 *   of a dozen Python-level calls costs ~4x the CPU when threads contend for the GIL.
 *
 * verify_blob(fd, digest, expected_size) -> int | None
 *   `holofs verify`'s check of one blob file (open at fd): decoded as holofs.library's
 *   detect_encoding says (raw when no gzip/zstd magic, or when its size is the expected one;
 *   without an expected size, a blob that does not decode is tried as raw, as the Python check
 *   does), it must hash to `digest` (SHA-256 or SipHash-2-4-128 by its length) and, with
 *   expected_size >= 0, have that size. Returns the decoded size of a good blob; None for
 *   anything else (bad, over HASH_MAX stored or decoded, a size not stated in the stream,
 *   not checkable here): the
 *   caller's path then checks it and names the problem. OSError if fstat or read fails (EIO:
 *   None). The GIL is released throughout.
 *
 * set_parent_death_signal(signum): prctl(PR_SET_PDEATHSIG) for forked workers (importing
 *   ctypes for this one call costs a worker ~15 ms of start-up).
 *
 * sha256(data) -> bytes | None
 *   The SHA-256 of a bytes object (None without OpenSSL here), for holofs.paths.path_key: a
 *   restore from the catalog index then needs no hashlib (~3 ms of start-up).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#ifdef HAVE_ZLIB
#include <zlib.h>
#endif
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif
#ifdef HAVE_OPENSSL
#include <openssl/evp.h>
#endif
#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h> /* whole-buffer gzip decoding, 2-3x zlib's speed */
#endif
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define NOT_RAW (-1)
#define NOT_TRIED (-2)
#define BAD_DIGEST (-4) /* the blob's content is not what its name says: left to the Python path, which names it */
#define MADE_CLONE 1
#define MADE_DECODE 2
#define MADE_COPY_RANGE 3 /* a raw blob copied by copy_file_range (no reflink here) */
#define MADE_COPY 4       /* a raw blob copied by write */
#define UNIT 32 /* files handed to a thread at a time */
#define DECODE_MAX (256LL << 20) /* bigger blobs are left to the (streaming) Python path */
#define HASH_MAX (64LL << 20)    /* raw blobs hashed in memory here, at most; verify_blob's limit on a blob and on its content */

enum { DIR_TODO, DIR_MAKING, DIR_READY, DIR_FAILED };

/* A read-only hash set of the verified blob keys: the lines of the log (pointers into it). */
typedef struct {
    const char *k;
    size_t n;
} keyref_t;

typedef struct {
    keyref_t *slot; /* k == NULL: empty */
    size_t mask;
} keyset_t;

/* A key starts with its digest (random hex) and ends with the blob's ctime in nanoseconds:
 * hashing the first and the last 16 bytes spreads keys as well as hashing all ~120 and takes a
 * fraction of the time (building the set of a 200k-key record: 0.10 -> 0.03-0.05 s). */
static size_t key_hash(const char *s, size_t n) {
    size_t h = 1469598103934665603ULL ^ n;
    size_t head = n < 16 ? n : 16, tail = n < 32 ? n - head : 16;
    for (size_t i = 0; i < head; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    for (size_t i = n - tail; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static int keyset_has(const keyset_t *ks, const char *key, size_t n) {
    if (ks->slot == NULL)
        return 0;
    for (size_t i = key_hash(key, n) & ks->mask;; i = (i + 1) & ks->mask) {
        const keyref_t *k = &ks->slot[i];
        if (k->k == NULL)
            return 0;
        if (k->n == n && memcmp(k->k, key, n) == 0)
            return 1;
    }
}

/* The complete lines of log[0:len] as a keyset (a partial last line is ignored); -1 if out of
 * memory. Runs without the GIL (the log is an immutable bytes object the caller holds). */
static int keyset_build(const char *log, size_t len, keyset_t *ks) {
    size_t lines = 0, cap = 16;
    for (const char *p = log, *end = log + len; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        lines++;
    while (cap < 2 * lines)
        cap *= 2;
    ks->slot = calloc(cap, sizeof(keyref_t));
    if (ks->slot == NULL)
        return -1;
    ks->mask = cap - 1;
    for (const char *p = log, *end = log + len, *nl; p < end && (nl = memchr(p, '\n', (size_t)(end - p))); p = nl + 1) {
        size_t n = (size_t)(nl - p);
        if (n == 0)
            continue;
        size_t i = key_hash(p, n) & ks->mask;
        while (ks->slot[i].k != NULL && !(ks->slot[i].n == n && memcmp(ks->slot[i].k, p, n) == 0))
            i = (i + 1) & ks->mask; /* probe until a free slot, or the same key (a duplicate line) */
        ks->slot[i].k = p;
        ks->slot[i].n = n;
    }
    return 0;
}

/* keyset_build in a thread of its own (build_tree's, while it reads the lists). */
typedef struct {
    const char *log;
    size_t len;
    keyset_t *ks;
    int rc;
} keyset_job_t;

static void *keyset_thread(void *arg) {
    keyset_job_t *job = arg;
    job->rc = keyset_build(job->log, job->len, job->ks);
    return NULL;
}

typedef struct {
    const char *blob;
    const char *name;
    unsigned int mode;
    long long size;
    int err; /* 0 done, NOT_RAW, NOT_TRIED, BAD_DIGEST or errno */
    const long long *offs; /* rewrite offsets */
    Py_ssize_t noffs;
    unsigned char made;  /* MADE_* when done */
    unsigned char check;  /* a clone whose blob the caller must hash */
    unsigned char hashed; /* made from a blob hashed (and found right) here */
    struct stat st;
} item_t;

typedef struct {
    const char *name;
    int parent;
    int fd;
    int state;   /* DIR_*, atomic */
    int pending; /* atomic: its units and its subdirectories not yet done; at 0 it is stamped */
} dir_t;

typedef struct {
    int dir;
    Py_ssize_t start, end; /* files [start, end) of that directory */
} unit_t;

typedef struct {
    int lib_fd;
    unsigned int chmod_mask, dir_mode;
    int decode; /* 0 never, 1 blobs whose key is in `verified`, 2 all */
    int no_reflink; /* atomic: FICLONE is not supported here (raw files are copied) */
    int no_cfr;     /* atomic: nor is copy_file_range (raw files are read and written) */
    const char *ident; /* written at each rewrite offset */
    size_t ident_len;
    keyset_t verified;
    struct timespec times[2];
    dir_t *dirs;
    item_t *items;
    unit_t *units;
    Py_ssize_t nunits;
    Py_ssize_t next; /* atomic: the next unit to take */
    int stop;        /* atomic: an errno was met */
    int unstamped;   /* atomic: a directory's fchmod or futimens failed */
    long long *counter;
} tree_t;

/* Per-thread decoder state, reused from file to file. */
typedef struct {
#ifdef HAVE_LIBDEFLATE
    struct libdeflate_decompressor *ld;
#endif
#ifdef HAVE_ZLIB
    z_stream zs;
    int zs_ready;
#endif
#ifdef HAVE_ZSTD
    ZSTD_DCtx *dctx;
#endif
    unsigned char *in, *out; /* buffers, grown as needed (a fresh big malloc faults every page) */
    size_t in_cap, out_cap;
} codec_t;

/* *buf with room for n bytes (NULL if out of memory). */
static unsigned char *room(unsigned char **buf, size_t *cap, size_t n) {
    if (n > *cap) {
        unsigned char *bigger = realloc(*buf, n);
        if (bigger == NULL)
            return NULL;
        *buf = bigger;
        *cap = n;
    }
    return *buf;
}

static void codec_free(codec_t *c) {
#ifdef HAVE_LIBDEFLATE
    if (c->ld != NULL)
        libdeflate_free_decompressor(c->ld);
#endif
#ifdef HAVE_ZLIB
    if (c->zs_ready)
        inflateEnd(&c->zs);
#endif
#ifdef HAVE_ZSTD
    ZSTD_freeDCtx(c->dctx);
#endif
    free(c->in);
    free(c->out);
}

/* Decode `in` (gzip members or zstd frames) into exactly `size` bytes at `out` (room for
 * size + 1): 0, or -1 if it is not a format known here, is corrupt, or has another size. */
static int decode_blob(codec_t *c, const unsigned char *in, size_t n, unsigned char *out, size_t size) {
#ifdef HAVE_LIBDEFLATE
    if (n >= 2 && in[0] == 0x1f && in[1] == 0x8b) {
        if (c->ld == NULL && (c->ld = libdeflate_alloc_decompressor()) == NULL)
            return -1;
        size_t done = 0;
        while (n > 0) { /* one gzip member at a time; its CRC and length are checked */
            size_t used = 0, made = 0;
            if (n < 2 || in[0] != 0x1f || in[1] != 0x8b ||
                libdeflate_gzip_decompress_ex(c->ld, in, n, out + done, size + 1 - done, &used, &made) != LIBDEFLATE_SUCCESS)
                return -1; /* corrupt, truncated, trailing bytes, or more output than the catalog says */
            in += used;
            n -= used;
            done += made;
        }
        return done == size ? 0 : -1;
    }
#elif defined(HAVE_ZLIB)
    if (n >= 2 && in[0] == 0x1f && in[1] == 0x8b) {
        if (!c->zs_ready) {
            memset(&c->zs, 0, sizeof c->zs);
            if (inflateInit2(&c->zs, 16 + MAX_WBITS) != Z_OK)
                return -1;
            c->zs_ready = 1;
        } else if (inflateReset(&c->zs) != Z_OK) {
            return -1;
        }
        c->zs.next_in = (unsigned char *)in;
        c->zs.avail_in = (uInt)n;
        c->zs.next_out = out;
        c->zs.avail_out = (uInt)(size + 1);
        for (;;) {
            int rc = inflate(&c->zs, Z_FINISH);
            if (rc == Z_STREAM_END) {
                if (c->zs.avail_in == 0)
                    break;
                if (inflateReset(&c->zs) != Z_OK) /* a further gzip member */
                    return -1;
                continue;
            }
            if (rc != Z_OK && rc != Z_BUF_ERROR)
                return -1;
            if (rc == Z_BUF_ERROR || c->zs.avail_out == 0)
                return -1; /* truncated, or more output than the catalog says */
        }
        return (size_t)(c->zs.next_out - out) == size ? 0 : -1;
    }
#endif
#ifdef HAVE_ZSTD
    if (n >= 4 && in[0] == 0x28 && in[1] == 0xb5 && in[2] == 0x2f && in[3] == 0xfd) {
        if (c->dctx == NULL && (c->dctx = ZSTD_createDCtx()) == NULL)
            return -1;
        size_t got = ZSTD_decompressDCtx(c->dctx, out, size + 1, in, n);
        return !ZSTD_isError(got) && got == size ? 0 : -1;
    }
#endif
    (void)c, (void)in, (void)n, (void)out, (void)size;
    return -1;
}

static int read_all(int fd, unsigned char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? errno : EIO;
        got += (size_t)r;
    }
    return 0;
}

static int write_all(int fd, const unsigned char *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0)
            return EIO;
        done += (size_t)w;
    }
    return 0;
}

/* " <v>" in decimal at p (room for 22 bytes); the end. (snprintf's format parsing cost ~1 %
 * of a restore's CPU here, once per blob.) */
static char *put_number(char *p, long long v) {
    char digits[20];
    int n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do
        digits[n++] = (char)('0' + u % 10);
    while (u /= 10);
    *p++ = ' ';
    if (v < 0)
        *p++ = '-';
    while (n)
        *p++ = digits[--n];
    return p;
}

/* The blob's key as holofs.verification.blob_key formats it ("<digest> <dev> <ino> <size>
 * <mtime_ns> <ctime_ns>"); its length, or -1. */
static int blob_key(const item_t *it, char *key, size_t cap) {
    const char *slash = strrchr(it->blob, '/'), *digest = slash ? slash + 1 : it->blob;
    size_t len = strlen(digest);
    if (len + 5 * 22 >= cap)
        return -1;
    memcpy(key, digest, len);
    char *p = key + len;
    /* dev and ino are unsigned: as long long they stay exact below 2^63, as every Linux one is */
    p = put_number(p, (long long)it->st.st_dev);
    p = put_number(p, (long long)it->st.st_ino);
    p = put_number(p, (long long)it->st.st_size);
    p = put_number(p, (long long)it->st.st_mtim.tv_sec * 1000000000LL + it->st.st_mtim.tv_nsec);
    p = put_number(p, (long long)it->st.st_ctim.tv_sec * 1000000000LL + it->st.st_ctim.tv_nsec);
    *p = '\0';
    return (int)(p - key);
}

#define KEY_MAX 512

static int trusted(const tree_t *t, const item_t *it) {
    if (t->decode != 1)
        return t->decode == 2;
    char key[KEY_MAX];
    int n = blob_key(it, key, sizeof key);
    return n > 0 && keyset_has(&t->verified, key, (size_t)n);
}

/* The end of a new file dst: the mode bits the umask took, the mother time, close; on any
 * error (err, or one of these) the file is removed again. Returns the error. */
static int finish_file(const tree_t *t, int dir_fd, const item_t *it, int dst, int err) {
    if (!err && (it->mode & t->chmod_mask) && fchmod(dst, it->mode & 07777) < 0)
        err = errno;
    if (!err && futimens(dst, t->times) < 0)
        err = errno;
    if (close(dst) < 0 && !err)
        err = errno;
    if (err)
        unlinkat(dir_fd, it->name, 0);
    return err;
}

/* SipHash-2-4 with a 128-bit result (Aumasson and Bernstein's specification): the digest RCC
 * gives the blobs of a library kept without compression. */
static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void store_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

static void sip_rounds(uint64_t v[4], int rounds) {
    while (rounds--) {
        v[0] += v[1], v[1] = ROTL64(v[1], 13), v[1] ^= v[0], v[0] = ROTL64(v[0], 32);
        v[2] += v[3], v[3] = ROTL64(v[3], 16), v[3] ^= v[2];
        v[0] += v[3], v[3] = ROTL64(v[3], 21), v[3] ^= v[0];
        v[2] += v[1], v[1] = ROTL64(v[1], 17), v[1] ^= v[2], v[2] = ROTL64(v[2], 32);
    }
}

static void siphash24_128(const unsigned char *in, size_t n, const unsigned char key[16], unsigned char out[16]) {
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t v[4] = {0x736f6d6570736575ULL ^ k0, 0x646f72616e646f6dULL ^ k1 ^ 0xee, 0x6c7967656e657261ULL ^ k0,
                     0x7465646279746573ULL ^ k1};
    size_t whole = n & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load_le64(in + i);
        v[3] ^= m;
        sip_rounds(v, 2);
        v[0] ^= m;
    }
    uint64_t last = (uint64_t)n << 56;
    for (size_t i = 0; i < (n & 7); i++)
        last |= (uint64_t)in[whole + i] << (8 * i);
    v[3] ^= last;
    sip_rounds(v, 2);
    v[0] ^= last;
    v[2] ^= 0xee;
    sip_rounds(v, 4);
    store_le64(out, v[0] ^ v[1] ^ v[2] ^ v[3]);
    v[1] ^= 0xdd;
    sip_rounds(v, 4);
    store_le64(out + 8, v[0] ^ v[1] ^ v[2] ^ v[3]);
}

static const unsigned char RCC_SIPHASH_KEY[16] = "Very_Random-Seed"; /* holofs.digest.SIPHASH_KEY */

/* Whether content buf[0:n] has the digest named by blob path `blob` (its last component, 64
 * hex digits: SHA-256, 32: SipHash-2-4-128): 1 yes, 0 no, -1 not checkable here (another
 * name, or SHA-256 without libcrypto). */
static int content_matches(const char *blob, const unsigned char *buf, size_t n) {
    const char *slash = strrchr(blob, '/'), *name = slash ? slash + 1 : blob;
    size_t len = strlen(name);
    unsigned char md[32];
    if (len == 32) {
        siphash24_128(buf, n, RCC_SIPHASH_KEY, md);
    } else if (len == 64) {
#ifdef HAVE_OPENSSL
        unsigned int mdlen = 0;
        if (!EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL))
            return -1;
#else
        return -1;
#endif
    } else {
        return -1;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len / 2; i++)
        if (name[2 * i] != hex[md[i] >> 4] || name[2 * i + 1] != hex[md[i] & 15])
            return 0;
    return 1;
}

/* Read blob src (n bytes) into c's buffers and decode it to exactly `size` bytes; with md
 * (32 bytes) set, hash the decoded content (as recorded) into it; with `expect` (the blob's
 * path) set, check the content against the digest it names (BAD_DIGEST if it differs); then
 * write ident at each of the noffs offsets. 0 with *out_p the content; NOT_RAW if it does not
 * decode here (or cannot be hashed); or an errno. Shared by build_tree, decode_file and fill_file. */
static int decode_relocated(codec_t *c, int src, size_t n, size_t size, const long long *offs, Py_ssize_t noffs,
                            const char *ident, size_t ident_len, unsigned char *md, const char *expect,
                            unsigned char **out_p) {
    unsigned char *in = room(&c->in, &c->in_cap, n ? n : 1), *out = room(&c->out, &c->out_cap, size + 1);
    int err = in == NULL || out == NULL ? ENOMEM : read_all(src, in, n);
    if (err)
        return err;
    if (decode_blob(c, in, n, out, size) < 0)
        return NOT_RAW;
    if (md != NULL) {
#ifdef HAVE_OPENSSL
        unsigned int mdlen = 0;
        if (!EVP_Digest(out, size, md, &mdlen, EVP_sha256(), NULL))
            return NOT_RAW;
#else
        return NOT_RAW;
#endif
    }
    if (expect != NULL) {
        int ok = content_matches(expect, out, size);
        if (ok <= 0)
            return ok == 0 ? BAD_DIGEST : NOT_RAW;
    }
    for (Py_ssize_t k = 0; k < noffs; k++)
        memcpy(out + offs[k], ident, ident_len);
    *out_p = out;
    return 0;
}

/* The decoded blob (src, already fstat'ed into it->st) as a new file, its content checked
 * against the blob's digest first if `check`; it->err as clone_one. */
static void decode_one(const tree_t *t, codec_t *c, int dir_fd, item_t *it, int src, int check) {
    unsigned char *out = NULL;
    int err = decode_relocated(c, src, (size_t)it->st.st_size, (size_t)it->size, it->offs, it->noffs, t->ident,
                               t->ident_len, NULL, check ? it->blob : NULL, &out);
    if (err) {
        it->err = err;
        return;
    }
    int dst = openat(dir_fd, it->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, it->mode & 07777);
    if (dst < 0) {
        it->err = errno;
        return;
    }
    err = finish_file(t, dir_fd, it, dst, write_all(dst, out, (size_t)it->size));
    it->err = err;
    it->made = err ? 0 : MADE_DECODE;
    it->hashed = !err && check;
}

static int unsupported(int err) {
    return err == EOPNOTSUPP || err == EXDEV || err == EINVAL || err == ENOTTY || err == ENOSYS;
}

/* Copy the raw blob src (n bytes) into the new file dst: from `buf` when its content is in
 * memory already (it was hashed), else copy_file_range (in the kernel), else read/write
 * through c's buffer. Sets *made (MADE_COPY_RANGE or MADE_COPY); returns 0 or an errno. */
static int copy_raw(tree_t *t, codec_t *c, int dst, int src, size_t n, const unsigned char *buf,
                    unsigned char *made) {
    if (buf != NULL) {
        *made = MADE_COPY;
        return write_all(dst, buf, n);
    }
    size_t done = 0;
    if (!__atomic_load_n(&t->no_cfr, __ATOMIC_RELAXED)) {
        while (done < n) {
            loff_t in = (loff_t)done, out = (loff_t)done;
            ssize_t r = copy_file_range(src, &in, dst, &out, n - done, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && done == 0 && unsupported(errno)) {
                __atomic_store_n(&t->no_cfr, 1, __ATOMIC_RELAXED);
                break;
            }
            if (r <= 0)
                return r < 0 ? errno : EIO; /* 0: the blob shrank meanwhile */
            done += (size_t)r;
        }
        if (done == n) {
            *made = MADE_COPY_RANGE;
            return 0;
        }
    }
    size_t chunk = n < (1u << 20) ? n : (1u << 20);
    unsigned char *tmp = room(&c->in, &c->in_cap, chunk ? chunk : 1);
    if (tmp == NULL)
        return ENOMEM;
    for (done = 0; done < n;) {
        ssize_t r = pread(src, tmp, n - done < chunk ? n - done : chunk, (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? errno : EIO;
        int err = write_all(dst, tmp, (size_t)r);
        if (err)
            return err;
        done += (size_t)r;
    }
    *made = MADE_COPY;
    return 0;
}

static void clone_one(tree_t *t, codec_t *c, int dir_fd, item_t *it) {
    int src = openat(t->lib_fd, it->blob, O_RDONLY | O_CLOEXEC);
    if (src < 0) {
        it->err = errno;
        return;
    }
    if (fstat(src, &it->st) < 0) {
        it->err = errno;
        close(src);
        return;
    }
    int check = !trusted(t, it);
    if (!S_ISREG(it->st.st_mode) || (long long)it->st.st_size != it->size) {
        if (S_ISREG(it->st.st_mode) && it->size <= DECODE_MAX && it->st.st_size <= DECODE_MAX)
            decode_one(t, c, dir_fd, it, src, check);
        else
            it->err = NOT_RAW;
        close(src);
        return;
    }
    int hashed = 0, in_memory = 0;
    if (check && it->size <= HASH_MAX) { /* hash the blob first: a bad one never gets a name */
        unsigned char *buf = room(&c->in, &c->in_cap, it->size ? (size_t)it->size : 1);
        int err = buf == NULL ? ENOMEM : read_all(src, buf, (size_t)it->size);
        int ok = err ? -1 : content_matches(it->blob, buf, (size_t)it->size);
        if (err || ok == 0) {
            it->err = err ? err : BAD_DIGEST;
            close(src);
            return;
        }
        hashed = ok == 1;
        in_memory = 1;
    }
    int dst = openat(dir_fd, it->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     it->mode & 07777);
    if (dst < 0) {
        it->err = errno;
        close(src);
        return;
    }
    int err = 0;
    unsigned char made = MADE_CLONE;
    if (it->size > 0) {
        int cloned = 0;
        if (!__atomic_load_n(&t->no_reflink, __ATOMIC_RELAXED)) {
            if (ioctl(dst, FICLONE, src) == 0)
                cloned = 1;
            else if (unsupported(errno)) /* these filesystems cannot share extents: copy from now on */
                __atomic_store_n(&t->no_reflink, 1, __ATOMIC_RELAXED);
            else
                err = errno;
        }
        if (!err && !cloned)
            err = copy_raw(t, c, dst, src, (size_t)it->size, in_memory ? c->in : NULL, &made);
    }
    for (Py_ssize_t k = 0; !err && k < it->noffs; k++) /* relocate on top of the clone or copy */
        if (pwrite(dst, t->ident, t->ident_len, (off_t)it->offs[k]) != (ssize_t)t->ident_len)
            err = errno ? errno : EIO;
    err = finish_file(t, dir_fd, it, dst, err);
    close(src);
    it->err = err;
    if (!err) {
        it->made = made;
        it->hashed = (unsigned char)hashed;
        it->check = check && !hashed;
    }
}

/* One of directory d's units or subdirectories is done; after the last, its mode and the
 * mother time, as the caller would set them (nothing is created in it after that). */
static void dir_done(tree_t *t, int d) {
    dir_t *dir = &t->dirs[d];
    if (__atomic_sub_fetch(&dir->pending, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (((t->dir_mode & t->chmod_mask) && fchmod(dir->fd, t->dir_mode & 07777) < 0) || futimens(dir->fd, t->times) < 0)
        __atomic_store_n(&t->unstamped, 1, __ATOMIC_RELAXED);
}

/* The fd of directory d, made (parents first) by whichever thread needs it first; -1 if it
 * cannot be made (the stop flag is then set). */
static int ensure_dir(tree_t *t, int d) {
    dir_t *dir = &t->dirs[d];
    for (;;) {
        int state = __atomic_load_n(&dir->state, __ATOMIC_ACQUIRE);
        if (state == DIR_READY)
            return dir->fd;
        if (state == DIR_FAILED)
            return -1;
        int expected = DIR_TODO;
        if (state == DIR_MAKING ||
            !__atomic_compare_exchange_n(&dir->state, &expected, DIR_MAKING, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            sched_yield(); /* another thread is making it: a mkdir and an open */
            continue;
        }
        int parent_fd = ensure_dir(t, dir->parent);
        int fd = -1;
        if (parent_fd >= 0 && mkdirat(parent_fd, dir->name, t->dir_mode) == 0) {
            fd = openat(parent_fd, dir->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                unlinkat(parent_fd, dir->name, AT_REMOVEDIR);
        }
        dir->fd = fd;
        if (fd < 0)
            __atomic_store_n(&t->stop, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&dir->state, fd < 0 ? DIR_FAILED : DIR_READY, __ATOMIC_RELEASE);
        if (fd >= 0)
            dir_done(t, dir->parent);
        return fd;
    }
}

static void *tree_worker(void *arg) {
    tree_t *t = arg;
    codec_t codec;
    memset(&codec, 0, sizeof codec);
    while (!__atomic_load_n(&t->stop, __ATOMIC_RELAXED)) {
        Py_ssize_t u = __atomic_fetch_add(&t->next, 1, __ATOMIC_RELAXED);
        if (u >= t->nunits)
            break;
        const unit_t *unit = &t->units[u];
        int fd = ensure_dir(t, unit->dir);
        if (fd < 0)
            break;
        long long made = 0;
        Py_ssize_t i = unit->start;
        for (; i < unit->end && !__atomic_load_n(&t->stop, __ATOMIC_RELAXED); i++) {
            clone_one(t, &codec, fd, &t->items[i]);
            if (t->items[i].err > 0) {
                __atomic_store_n(&t->stop, 1, __ATOMIC_RELAXED);
                break;
            }
            made += t->items[i].err == 0;
        }
        if (t->counter != NULL && made)
            __atomic_fetch_add(t->counter, made, __ATOMIC_RELAXED);
        if (i == unit->end) /* after an error the caller stamps every directory itself */
            dir_done(t, unit->dir);
    }
    codec_free(&codec);
    return NULL;
}

/* Encode str items of `list` into `keep` (which owns the bytes) and point `out` at them. */
static int encode_names(PyObject *list, PyObject *keep, Py_ssize_t offset, const char **out, Py_ssize_t stride,
                        Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyUnicode_EncodeFSDefault(PyList_GET_ITEM(list, i));
        if (b == NULL)
            return -1;
        PyList_SET_ITEM(keep, offset + i, b);
        *(const char **)((char *)out + i * stride) = PyBytes_AS_STRING(b);
    }
    return 0;
}

/* Units: each directory's files in slices of UNIT (a directory without files gets one empty
 * unit, so that it is made). */
static unit_t *make_units(Py_ssize_t ndirs, const int *file_dirs, Py_ssize_t nfiles, Py_ssize_t *nunits) {
    unit_t *units = PyMem_Calloc((size_t)(ndirs + nfiles / UNIT + 1), sizeof(unit_t));
    if (units == NULL)
        return NULL;
    Py_ssize_t n = 0, i = 0;
    for (int d = 0; d < ndirs; d++) {
        Py_ssize_t start = i;
        while (i < nfiles && file_dirs[i] == d)
            i++;
        Py_ssize_t s = start;
        do {
            Py_ssize_t e = s + UNIT < i ? s + UNIT : i;
            units[n].dir = d;
            units[n].start = s;
            units[n].end = e;
            n++;
            s = e;
        } while (s < i);
    }
    *nunits = n;
    return units;
}

#define KEEP_BUFFERS (4LL << 20) /* decode_file keeps per-thread buffers up to this size */

/* decode_file's buffers and decoders: one set per thread, freed when the thread ends. */
static pthread_key_t codec_key;
static pthread_once_t codec_once = PTHREAD_ONCE_INIT;

static void codec_destroy(void *c) {
    codec_free(c);
    free(c);
}

static void codec_key_make(void) { (void)pthread_key_create(&codec_key, codec_destroy); }

static codec_t *thread_codec(void) {
    pthread_once(&codec_once, codec_key_make);
    codec_t *c = pthread_getspecific(codec_key);
    if (c == NULL && (c = calloc(1, sizeof *c)) != NULL && pthread_setspecific(codec_key, c) != 0) {
        free(c);
        c = NULL;
    }
    return c;
}

static void shrink_codec(codec_t *c) {
    if (c->in_cap > KEEP_BUFFERS) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    if (c->out_cap > KEEP_BUFFERS) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
}

/* The rewrite offsets (a tuple of ints) as a PyMem array; NULL with an exception set if one
 * is not an int or its range [off, off + ident_len) leaves a file of `size` bytes. */
static long long *parse_offsets(PyObject *offsets, long long size, Py_ssize_t ident_len) {
    Py_ssize_t noffs = PyTuple_GET_SIZE(offsets);
    long long *offs = PyMem_Malloc(sizeof(long long) * (size_t)(noffs ? noffs : 1));
    if (offs == NULL)
        return (long long *)PyErr_NoMemory();
    for (Py_ssize_t k = 0; k < noffs; k++) {
        offs[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(offsets, k));
        if ((offs[k] == -1 && PyErr_Occurred()) || offs[k] < 0 || offs[k] + ident_len > size) {
            PyMem_Free(offs);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a rewrite offset lies outside the file");
            return NULL;
        }
    }
    return offs;
}

static PyObject *decode_file(PyObject *Py_UNUSED(self), PyObject *args) {
    int src, dst, sha256;
    long long blob_size, size;
    const char *ident;
    Py_ssize_t ident_len;
    PyObject *offsets;
    if (!PyArg_ParseTuple(args, "iLiLpy#O!", &src, &blob_size, &dst, &size, &sha256, &ident, &ident_len,
                          &PyTuple_Type, &offsets))
        return NULL;
    Py_ssize_t noffs = PyTuple_GET_SIZE(offsets);
    long long *offs = parse_offsets(offsets, size, ident_len);
    if (offs == NULL)
        return NULL;
#ifndef HAVE_OPENSSL
    if (sha256) {
        PyMem_Free(offs);
        Py_RETURN_NONE;
    }
#endif
    if (blob_size < 0 || size < 0 || blob_size > DECODE_MAX || size > DECODE_MAX) {
        PyMem_Free(offs);
        Py_RETURN_NONE;
    }
    int err = 0, decoded = 0;
    unsigned char md[32];
    Py_BEGIN_ALLOW_THREADS
    codec_t *c = thread_codec();
    unsigned char *out = NULL;
    err = c == NULL ? ENOMEM : decode_relocated(c, src, (size_t)blob_size, (size_t)size, offs, noffs, ident,
                                                 (size_t)ident_len, sha256 ? md : NULL, NULL, &out);
    if (err == NOT_RAW)
        err = 0; /* not decodable here: None */
    else if (!err) {
        decoded = 1;
        err = write_all(dst, out, (size_t)size);
    }
    if (c != NULL)
        shrink_codec(c);
    Py_END_ALLOW_THREADS
    PyMem_Free(offs);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (!decoded)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(sha256 ? (const char *)md : "", sha256 ? 32 : 0);
}

/* fill_file's work, without the GIL: NOT_RAW (nothing left behind: the caller's path does
 * it), 0 with *fd_out open on `final` (or -1 if it could not be opened after the rename), or an
 * errno (tmp removed). */
static int fill_one(const char *blob, const char *tmp, const char *final, long long size, int mode,
                    const unsigned char *expect, const long long *same, const long long *offs, Py_ssize_t noffs,
                    const char *ident, size_t ident_len, struct stat *st, int *fd_out) {
    int src = open(blob, O_RDONLY | O_CLOEXEC);
    if (src < 0)
        return errno == ENOENT ? NOT_RAW : errno; /* a missing blob: the caller names it */
    int err = fstat(src, st) < 0 ? errno : 0;
    long long mtime = (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
    long long ctime = (long long)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
    if (!err && (!S_ISREG(st->st_mode) || st->st_size == size || st->st_size > DECODE_MAX ||
                 (same != NULL && ((long long)st->st_dev != same[0] || (long long)st->st_ino != same[1] ||
                                   (long long)st->st_size != same[2] || mtime != same[3] || ctime != same[4]))))
        err = NOT_RAW; /* raw (the caller may reflink it), too big, or not the blob file verified */
    codec_t *c = err ? NULL : thread_codec();
    unsigned char *out = NULL, md[32];
    if (!err)
        err = c == NULL ? ENOMEM : decode_relocated(c, src, (size_t)st->st_size, (size_t)size, offs, noffs, ident,
                                                     ident_len, expect ? md : NULL, NULL, &out);
    close(src);
    if (!err && expect != NULL && memcmp(md, expect, 32) != 0)
        err = NOT_RAW; /* corrupt: the caller's path reports both digests */
    int dst = -1;
    if (!err && (dst = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)) < 0)
        err = errno;
    if (dst >= 0) {
        err = write_all(dst, out, (size_t)size);
        if (!err && fchmod(dst, mode) < 0) /* whatever the umask took */
            err = errno;
        if (close(dst) < 0 && !err)
            err = errno;
        if (!err && rename(tmp, final) < 0)
            err = errno;
        if (err)
            unlink(tmp);
        else
            *fd_out = open(final, O_RDONLY | O_CLOEXEC); /* -1: made, but removed meanwhile (gc) */
    }
    if (c != NULL)
        shrink_codec(c);
    return err;
}

static PyObject *fill_file(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *blob, *tmp, *final, *ident, *expect;
    Py_ssize_t ident_len, expect_len;
    long long size, same[5];
    int mode;
    PyObject *offsets, *same_obj;
    if (!PyArg_ParseTuple(args, "yyyLiy#Oy#O!", &blob, &tmp, &final, &size, &mode, &expect, &expect_len,
                          &same_obj, &ident, &ident_len, &PyTuple_Type, &offsets))
        return NULL;
    if (same_obj != Py_None && !PyArg_ParseTuple(same_obj, "LLLLL", &same[0], &same[1], &same[2], &same[3], &same[4]))
        return NULL;
#ifndef HAVE_OPENSSL
    if (expect_len)
        Py_RETURN_NONE;
#endif
    if ((expect_len != 0 && expect_len != 32) || size < 0 || size > DECODE_MAX)
        Py_RETURN_NONE;
    long long *offs = parse_offsets(offsets, size, ident_len);
    if (offs == NULL)
        return NULL;
    struct stat st;
    int fd = -1, err;
    Py_BEGIN_ALLOW_THREADS
    err = fill_one(blob, tmp, final, size, mode, expect_len ? (const unsigned char *)expect : NULL,
                   same_obj == Py_None ? NULL : same, offs, PyTuple_GET_SIZE(offsets), ident, (size_t)ident_len, &st,
                   &fd);
    Py_END_ALLOW_THREADS
    PyMem_Free(offs);
    if (err == NOT_RAW)
        Py_RETURN_NONE;
    if (err) {
        errno = err;
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, final);
    }
    return Py_BuildValue("i(KKLLL)", fd, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                         (long long)st.st_size,
                         (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec,
                         (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec);
}

/* verify_blob's decoded size for a compressed blob in[0:n] without a recorded size: gzip's
 * ISIZE trailer (right for one member under 4 GiB), zstd's frame content size; -1 if unknown. */
static long long stated_size(const unsigned char *in, size_t n) {
    if (n >= 18 && in[0] == 0x1f && in[1] == 0x8b)
        return (long long)in[n - 4] | (long long)in[n - 3] << 8 | (long long)in[n - 2] << 16 | (long long)in[n - 1] << 24;
#ifdef HAVE_ZSTD
    if (n >= 4 && in[0] == 0x28 && in[1] == 0xb5 && in[2] == 0x2f && in[3] == 0xfd) {
        unsigned long long size = ZSTD_getFrameContentSize(in, n);
        return size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR ? -1 : (long long)size;
    }
#endif
    return -1;
}

/* flatten_rows(dir_rows, perms, perm, ident_len)
 *   -> (file_dirs, digests, names, modes, sizes, rewrites, left)
 * The lists build_tree takes, from each directory's files as rows (name, size, go_mode,
 * digest, rewrite offsets (a tuple), symlink), dir_rows[i] being directory i's: what Python
 * took ~0.5 us a file for. Each mode is perms[go_mode] (perm(go_mode) the first time, stored in
 * perms). Rewrites are kept only when ident_len > 0. Left for the caller, as (i, name) pairs
 * in `left`: symlinks, and files whose rewrite range leaves the file (the general path reports
 * those). */
static PyObject *flatten_rows(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *dir_rows, *perms, *perm;
    Py_ssize_t ident_len;
    if (!PyArg_ParseTuple(args, "O!O!On", &PyList_Type, &dir_rows, &PyDict_Type, &perms, &perm, &ident_len))
        return NULL;
    PyObject *lists[7] = {NULL};
    for (int k = 0; k < 7; k++)
        if ((lists[k] = PyList_New(0)) == NULL)
            goto fail;
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(dir_rows); i++) {
        PyObject *rows = PySequence_Fast(PyList_GET_ITEM(dir_rows, i), "flatten_rows: rows must be a sequence");
        if (rows == NULL)
            goto fail_empty;
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL) {
            Py_DECREF(rows);
            goto fail_empty;
        }
        int bad = 0;
        for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(rows) && !bad; j++) {
            PyObject *row = PySequence_Fast_GET_ITEM(rows, j);
            if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 6) {
                PyErr_SetString(PyExc_TypeError, "flatten_rows: a row must be a 6-tuple");
                bad = 1;
                break;
            }
            PyObject *name = PyTuple_GET_ITEM(row, 0), *size = PyTuple_GET_ITEM(row, 1);
            PyObject *go_mode = PyTuple_GET_ITEM(row, 2), *digest = PyTuple_GET_ITEM(row, 3);
            PyObject *rewrite = PyTuple_GET_ITEM(row, 4), *symlink = PyTuple_GET_ITEM(row, 5);
            if (!PyTuple_Check(rewrite) || !PyUnicode_Check(symlink)) {
                PyErr_SetString(PyExc_TypeError, "flatten_rows: rewrite must be a tuple and symlink a str");
                bad = 1;
                break;
            }
            PyObject *offsets = ident_len > 0 ? rewrite : empty;
            int leave = PyUnicode_GET_LENGTH(symlink) > 0;
            if (!leave && PyTuple_GET_SIZE(offsets) > 0) {
                long long limit = PyLong_AsLongLong(size) - (long long)ident_len;
                for (Py_ssize_t o = 0; o < PyTuple_GET_SIZE(offsets) && !leave; o++) {
                    long long at = PyLong_AsLongLong(PyTuple_GET_ITEM(offsets, o));
                    leave = at < 0 || at > limit;
                }
                if (PyErr_Occurred()) {
                    bad = 1;
                    break;
                }
            }
            if (leave) {
                PyObject *pair = PyTuple_Pack(2, index, name);
                if (pair == NULL || PyList_Append(lists[6], pair) < 0)
                    bad = 1;
                Py_XDECREF(pair);
                continue;
            }
            PyObject *mode = PyDict_GetItemWithError(perms, go_mode); /* borrowed */
            if (mode == NULL) {
                if (PyErr_Occurred() || (mode = PyObject_CallOneArg(perm, go_mode)) == NULL) {
                    bad = 1;
                    break;
                }
                int stored = PyDict_SetItem(perms, go_mode, mode);
                Py_DECREF(mode); /* the dict holds it now */
                if (stored < 0) {
                    bad = 1;
                    break;
                }
            }
            if (PyList_Append(lists[0], index) < 0 || PyList_Append(lists[1], digest) < 0 ||
                PyList_Append(lists[2], name) < 0 || PyList_Append(lists[3], mode) < 0 ||
                PyList_Append(lists[4], size) < 0 || PyList_Append(lists[5], offsets) < 0)
                bad = 1;
        }
        Py_DECREF(index);
        Py_DECREF(rows);
        if (bad)
            goto fail_empty;
    }
    Py_DECREF(empty);
    return Py_BuildValue("(NNNNNNN)", lists[0], lists[1], lists[2], lists[3], lists[4], lists[5], lists[6]);
fail_empty:
    Py_DECREF(empty);
fail:
    for (int k = 0; k < 7; k++)
        Py_XDECREF(lists[k]);
    return NULL;
}

static PyObject *verify_blob(PyObject *Py_UNUSED(self), PyObject *args) {
    int fd;
    const char *digest;
    long long expected;
    if (!PyArg_ParseTuple(args, "isL", &fd, &digest, &expected))
        return NULL;
    long long good = -1;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    struct stat st;
    codec_t *c = NULL;
    if (fstat(fd, &st) < 0)
        err = errno;
    else if (S_ISREG(st.st_mode) && st.st_size <= HASH_MAX && (c = thread_codec()) != NULL) {
        size_t n = (size_t)st.st_size;
        unsigned char *in = room(&c->in, &c->in_cap, n ? n : 1);
        err = in == NULL ? ENOMEM : read_all(fd, in, n);
        int magic = !err && n >= 4 &&
                    ((in[0] == 0x1f && in[1] == 0x8b) || (in[0] == 0x28 && in[1] == 0xb5 && in[2] == 0x2f && in[3] == 0xfd));
        if (err) {
            /* reported by the caller's path */
        } else if (!magic || (long long)n == expected) { /* raw, as holofs.library.detect_encoding says */
            if (content_matches(digest, in, n) == 1 && (expected < 0 || (long long)n == expected))
                good = (long long)n;
        } else {
            long long size = expected >= 0 ? expected : stated_size(in, n);
            unsigned char *out = size >= 0 && size <= HASH_MAX ? room(&c->out, &c->out_cap, (size_t)size + 1) : NULL;
            if (out != NULL && decode_blob(c, in, n, out, (size_t)size) == 0 && content_matches(digest, out, (size_t)size) == 1)
                good = size;
            else if (expected < 0 && content_matches(digest, in, n) == 1)
                good = (long long)n; /* a raw blob whose content starts like gzip/zstd (a .gz file) */
        }
        shrink_codec(c);
    }
    Py_END_ALLOW_THREADS
    if (err && err != EIO) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (good < 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(good);
}

static PyObject *set_parent_death_signal(PyObject *Py_UNUSED(self), PyObject *arg) {
    long signum = PyLong_AsLong(arg);
    if (signum == -1 && PyErr_Occurred())
        return NULL;
    if (prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *sha256(PyObject *Py_UNUSED(self), PyObject *arg) {
#ifdef HAVE_OPENSSL
    char *data;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &data, &n) < 0)
        return NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data, (size_t)n, md, &mdlen, EVP_sha256(), NULL))
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)md, mdlen);
#else
    (void)arg;
    Py_RETURN_NONE;
#endif
}

/* rewrites[i]: a tuple of offsets, each range [off, off + ident_len) inside file i. */
static int parse_rewrites(PyObject *rewrites, item_t *items, Py_ssize_t n, size_t ident_len, long long **out) {
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(rewrites, i);
        if (!PyTuple_Check(r)) {
            PyErr_SetString(PyExc_TypeError, "build_tree: rewrites[i] must be a tuple");
            return -1;
        }
        total += PyTuple_GET_SIZE(r);
    }
    long long *all = PyMem_Calloc(total ? (size_t)total : 1, sizeof(long long));
    if (all == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *out = all;
    for (Py_ssize_t i = 0, at = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(rewrites, i);
        items[i].offs = &all[at];
        items[i].noffs = PyTuple_GET_SIZE(r);
        for (Py_ssize_t j = 0; j < items[i].noffs; j++, at++) {
            all[at] = PyLong_AsLongLong(PyTuple_GET_ITEM(r, j));
            if (all[at] == -1 && PyErr_Occurred())
                return -1;
            if (all[at] < 0 || all[at] + (long long)ident_len > items[i].size) {
                PyErr_SetString(PyExc_ValueError, "build_tree: a rewrite range lies outside its file");
                return -1;
            }
        }
    }
    return 0;
}

/* Point items[i].blob at RCC's fan-out path of digests[i] ("ab/cd/ef/abcdef..."), all in one
 * block (returned; the caller frees it). NULL with an exception set if a digest is not at
 * least 6 lowercase hex digits (the catalog is validated: this only keeps paths inside). */
static char *blob_paths(PyObject *digests, item_t *items, Py_ssize_t n) {
    size_t total = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyList_GET_ITEM(digests, i);
        Py_ssize_t len;
        const char *hex = PyUnicode_Check(d) ? PyUnicode_AsUTF8AndSize(d, &len) : NULL;
        if (hex == NULL || len < 6 || strspn(hex, "0123456789abcdef") != (size_t)len) {
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_UnicodeError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError, "build_tree: a digest is not lowercase hex");
            }
            return NULL;
        }
        total += (size_t)len + 10;
    }
    char *block = PyMem_Malloc(total), *p = block;
    if (block == NULL)
        return (char *)PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *hex = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(digests, i), &len);
        items[i].blob = p; /* "ab/cd/ef/abcdef..." */
        for (int k = 0; k < 3; k++) {
            *p++ = hex[2 * k];
            *p++ = hex[2 * k + 1];
            *p++ = '/';
        }
        memcpy(p, hex, (size_t)len + 1);
        p += len + 1;
    }
    return block;
}

static PyObject *build_tree(PyObject *Py_UNUSED(self), PyObject *args) {
    int lib_fd, root_fd, decode, reflink, nthreads;
    PyObject *dir_parents, *dir_names, *file_dirs, *digests, *names, *modes, *sizes, *rewrites, *counter_obj;
    const char *ident, *verified;
    Py_ssize_t ident_len, verified_len;
    unsigned int chmod_mask, dir_mode;
    long long mtime_ns;
    if (!PyArg_ParseTuple(args, "iiO!O!O!O!O!O!O!O!y#y#IILiiiO", &lib_fd, &root_fd, &PyList_Type, &dir_parents,
                          &PyList_Type, &dir_names, &PyList_Type, &file_dirs, &PyList_Type, &digests,
                          &PyList_Type, &names, &PyList_Type, &modes, &PyList_Type, &sizes, &PyList_Type, &rewrites,
                          &ident, &ident_len, &verified, &verified_len,
                          &chmod_mask, &dir_mode, &mtime_ns, &decode, &reflink, &nthreads, &counter_obj))
        return NULL;
    Py_ssize_t ndirs = PyList_GET_SIZE(dir_parents), n = PyList_GET_SIZE(digests);
    if (ndirs < 1 || PyList_GET_SIZE(dir_names) != ndirs || PyList_GET_SIZE(file_dirs) != n ||
        PyList_GET_SIZE(names) != n || PyList_GET_SIZE(modes) != n || PyList_GET_SIZE(sizes) != n ||
        PyList_GET_SIZE(rewrites) != n) {
        PyErr_SetString(PyExc_ValueError, "build_tree: lists of different lengths");
        return NULL;
    }
    Py_buffer counter = {0};
    if (counter_obj != Py_None) {
        if (PyObject_GetBuffer(counter_obj, &counter, PyBUF_WRITABLE) < 0)
            return NULL;
        if (counter.len != sizeof(long long) || ((uintptr_t)counter.buf % sizeof(long long))) {
            PyBuffer_Release(&counter);
            PyErr_SetString(PyExc_ValueError, "build_tree: counter must be an aligned 8-byte buffer");
            return NULL;
        }
    }
    tree_t t = {.lib_fd = lib_fd, .chmod_mask = chmod_mask, .dir_mode = dir_mode, .decode = decode,
                .no_reflink = !reflink,
                .ident = ident, .ident_len = (size_t)ident_len,
                .counter = counter_obj != Py_None ? counter.buf : NULL};
    t.times[0].tv_sec = t.times[1].tv_sec = (time_t)(mtime_ns / 1000000000LL);
    t.times[0].tv_nsec = t.times[1].tv_nsec = (long)(mtime_ns % 1000000000LL);
    /* The verified keys' set is built in a thread of its own while this one reads the lists
     * (~2 ms each for the corpus); the GIL is not needed for it. */
    keyset_job_t keys = {.log = verified, .len = (size_t)verified_len, .ks = &t.verified};
    pthread_t keys_tid;
    int keys_thread = decode == 1 && pthread_create(&keys_tid, NULL, keyset_thread, &keys) == 0;
    t.dirs = PyMem_Calloc((size_t)ndirs, sizeof(dir_t));
    t.items = PyMem_Calloc(n ? (size_t)n : 1, sizeof(item_t));
    int *fdirs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(int));
    PyObject *keep = PyList_New(ndirs + n); /* owns the encoded names while the GIL is released */
    char *paths = NULL; /* the blob paths */
    PyObject *out = NULL, *fds = NULL, *made = NULL, *unverified = NULL, *hashed = NULL;
    long long *offsets = NULL;
    int dirs_stamped = 0;
    if (t.dirs == NULL || t.items == NULL || fdirs == NULL || keep == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < ndirs; i++) {
        PyList_SET_ITEM(keep, i, Py_NewRef(Py_None));
        long parent = PyLong_AsLong(PyList_GET_ITEM(dir_parents, i));
        if (PyErr_Occurred())
            goto done;
        if (i > 0 && (parent < 0 || parent >= i)) {
            PyErr_SetString(PyExc_ValueError, "build_tree: a directory's parent must come before it");
            goto done;
        }
        t.dirs[i].parent = (int)parent;
        t.dirs[i].fd = -1;
        t.dirs[i].state = DIR_TODO;
        if (i > 0)
            t.dirs[parent].pending++;
    }
    t.dirs[0].fd = root_fd;
    t.dirs[0].state = DIR_READY;
    /* encode_names fills keep[offset + i] after the placeholders set above are replaced */
    for (Py_ssize_t i = 1; i < ndirs; i++) {
        PyObject *b = PyUnicode_EncodeFSDefault(PyList_GET_ITEM(dir_names, i));
        if (b == NULL)
            goto done;
        PyList_SetItem(keep, i, b);
        t.dirs[i].name = PyBytes_AS_STRING(b);
    }
    if ((paths = blob_paths(digests, t.items, n)) == NULL ||
        encode_names(names, keep, ndirs, &t.items[0].name, sizeof(item_t), n) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        long d = PyLong_AsLong(PyList_GET_ITEM(file_dirs, i));
        t.items[i].mode = (unsigned int)PyLong_AsUnsignedLong(PyList_GET_ITEM(modes, i));
        t.items[i].size = PyLong_AsLongLong(PyList_GET_ITEM(sizes, i));
        t.items[i].err = NOT_TRIED;
        if (PyErr_Occurred())
            goto done;
        if (d < 0 || d >= ndirs || (i > 0 && d < fdirs[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "build_tree: file_dirs must be non-decreasing directory indexes");
            goto done;
        }
        fdirs[i] = (int)d;
    }
    if (parse_rewrites(rewrites, t.items, n, (size_t)ident_len, &offsets) < 0)
        goto done;
    t.units = make_units(ndirs, fdirs, n, &t.nunits);
    if (t.units == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t u = 0; u < t.nunits; u++)
        t.dirs[t.units[u].dir].pending++;
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > 64)
        nthreads = 64;
    Py_BEGIN_ALLOW_THREADS
    if (decode == 1) {
        if (keys_thread) {
            pthread_join(keys_tid, NULL);
            keys_thread = 0;
        } else {
            keys.rc = keyset_build(verified, (size_t)verified_len, &t.verified);
        }
        if (keys.rc < 0)
            t.decode = 0; /* no memory for the lookup: every blob is hashed */
    }
    pthread_t tids[64];
    int started = 0;
    for (; started < nthreads - 1; started++)
        if (pthread_create(&tids[started], NULL, tree_worker, &t) != 0)
            break;
    tree_worker(&t); /* this thread works too */
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    /* Without an error, every directory got its mode and the mother time after its last file (dir_done). */
    dirs_stamped = !t.stop && !t.unstamped;
    Py_END_ALLOW_THREADS
    fds = PyList_New(ndirs);
    made = PyBytes_FromStringAndSize(NULL, n);
    unverified = PyDict_New();
    hashed = PyDict_New();
    if (fds == NULL || made == NULL || unverified == NULL || hashed == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < ndirs; i++)
        PyList_SET_ITEM(fds, i, PyLong_FromLong(t.dirs[i].state == DIR_READY ? t.dirs[i].fd : -1));
    char *mp = PyBytes_AS_STRING(made);
    for (Py_ssize_t i = 0; i < n; i++) {
        const item_t *it = &t.items[i];
        mp[i] = (char)(it->err ? 0 : it->made);
        if (it->err || !(it->check || it->hashed))
            continue;
        char key[KEY_MAX];
        int len = blob_key(it, key, sizeof key);
        PyObject *k = len > 0 ? PyUnicode_DecodeFSDefaultAndSize(key, len) : NULL, *idx = PyLong_FromSsize_t(i);
        int rc = k != NULL && idx != NULL ? PyDict_SetItem(it->check ? unverified : hashed, idx, k) : -1;
        Py_XDECREF(k);
        Py_XDECREF(idx);
        if (rc < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "build_tree: blob key too long");
            goto done;
        }
    }
    out = Py_BuildValue("(OOOOO)", fds, made, unverified, hashed, dirs_stamped ? Py_True : Py_False);
done:
    Py_XDECREF(fds);
    Py_XDECREF(made);
    Py_XDECREF(unverified);
    Py_XDECREF(hashed);
    if (out == NULL && t.dirs != NULL) /* an error after directories were opened: close them */
        for (Py_ssize_t i = 1; i < ndirs; i++)
            if (t.dirs[i].state == DIR_READY)
                close(t.dirs[i].fd);
    if (counter_obj != Py_None)
        PyBuffer_Release(&counter);
    Py_XDECREF(keep);
    PyMem_Free(paths);
    PyMem_Free(t.units);
    if (keys_thread) /* an error before the workers: the set is dropped unused */
        pthread_join(keys_tid, NULL);
    free(t.verified.slot);
    PyMem_Free(offsets);
    PyMem_Free(fdirs);
    PyMem_Free(t.items);
    PyMem_Free(t.dirs);
    return out;
}

static PyMethodDef methods[] = {
    {"build_tree", build_tree, METH_VARARGS,
     "Make a fresh tree's directories and reflink its files from raw blobs (see the module source)."},
    {"flatten_rows", flatten_rows, METH_VARARGS,
     "build_tree's file lists from each directory's rows (see the module source)."},
    {"verify_blob", verify_blob, METH_VARARGS,
     "The decoded size of a good blob (see the module source), else None."},
    {"decode_file", decode_file, METH_VARARGS,
     "Decode one gzip/zstd blob into a file, hashing it with SHA-256 (see the module source)."},
    {"fill_file", fill_file, METH_VARARGS,
     "Decode one gzip/zstd blob into a new cache file, renamed into place (see the module source)."},
    {"set_parent_death_signal", set_parent_death_signal, METH_O,
     "prctl(PR_SET_PDEATHSIG, signum): the signal this process gets when its parent dies."},
    {"sha256", sha256, METH_O, "The SHA-256 of a bytes object, or None where OpenSSL is not built in."},
    {NULL, NULL, 0, NULL},
};
#else
static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};
#endif

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "holofs._native", "Native per-file loops (Linux).", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
#ifdef HAVE_OPENSSL
    if (m != NULL && PyModule_AddIntConstant(m, "HAS_SHA256", 1) < 0)
#else
    if (m != NULL && PyModule_AddIntConstant(m, "HAS_SHA256", 0) < 0)
#endif
        Py_CLEAR(m);
    if (m != NULL && (PyModule_AddIntConstant(m, "DECODE_MAX", (long)DECODE_MAX) < 0 ||
                      PyModule_AddIntConstant(m, "HASH_MAX", (long)HASH_MAX) < 0))
        Py_CLEAR(m);
    return m;
}
