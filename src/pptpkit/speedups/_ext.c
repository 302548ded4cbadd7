/* pptpkit.speedups._ext: the compiled primitives of the per-packet path.
 *
 * Primitives only, no protocol state: RC4 with the whole-packet MPPE operations (the same
 * interface as the Python backends in pptpkit.crypto.rc4), the RFC 3079 key change with its
 * SHA-1, the stateless receiver's whole frame (PPP header, MPPE header checks, key change,
 * decryption: rekey_unseal_frame), the Internet checksum sum and the GRE socket's batched
 * receive and gathered send.  The engines decide what to call; every function here has a
 * pure-Python twin that the tests compare it with (tests/unit/test_speedups.py).
 *
 * Written for CPython's stable-enough C API (3.11+); no third-party library, so building needs
 * only a C compiler and the Python headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* ---------------------------------------------------------------------------------------- */
/* RC4
 *
 * Two implementations behind one state: libcrypto's RC4_set_key/RC4 (assembly on x86-64, about
 * a third faster per octet than portable C here), looked up with dlopen at import so building
 * needs no OpenSSL headers, and checked against the built-in one before use; and the built-in
 * one, used when libcrypto has no RC4 (OpenSSL built without the legacy ciphers).  Each Rc4
 * object picks one when it is created (`builtin=True` forces the built-in one, for the tests). */

typedef void (*ossl_set_key_fn)(void *key, int len, const unsigned char *data);
typedef void (*ossl_rc4_fn)(void *key, size_t len, const unsigned char *in, unsigned char *out);
typedef unsigned char *(*ossl_sha1_fn)(const unsigned char *d, size_t n, unsigned char *md);
static ossl_set_key_fn ossl_set_key;
static ossl_rc4_fn ossl_rc4;
static ossl_sha1_fn ossl_sha1;

typedef struct {
    uint8_t s[256];
    uint8_t i, j;
} own_state;

#define USE_OSSL_RC4 1
#define USE_OSSL_SHA1 2

typedef struct {
    int ossl; /* USE_OSSL_*: RC4 keyed through libcrypto, the key change's SHA-1 from libcrypto */
    union {
        own_state own;
        uint32_t ossl_key[258]; /* RC4_KEY: {RC4_INT x, y, data[256]}, RC4_INT at most 32 bits */
    } u;
} rc4_state;

static void own_setup(own_state *st, const uint8_t *key, Py_ssize_t n)
{
    unsigned int k, j = 0, at = 0;
    for (k = 0; k < 256; k++)
        st->s[k] = (uint8_t)k;
    for (k = 0; k < 256; k++) {
        uint8_t t = st->s[k];
        j = (j + t + key[at]) & 0xFF;
        if (++at == (unsigned int)n)
            at = 0;
        st->s[k] = st->s[j];
        st->s[j] = t;
    }
    st->i = 0;
    st->j = 0;
}

#define OWN_STEP(out_byte)                                                                        \
    do {                                                                                          \
        uint8_t a_, b_;                                                                           \
        i = (i + 1) & 0xFF;                                                                       \
        a_ = s[i];                                                                                \
        j = (j + a_) & 0xFF;                                                                      \
        b_ = s[j];                                                                                \
        s[i] = b_;                                                                                \
        s[j] = a_;                                                                                \
        out_byte = s[(uint8_t)(a_ + b_)];                                                         \
    } while (0)

/* Eight keystream octets gathered into one word, then one 64-bit XOR: ~20% faster than a
 * byte at a time. */
static void own_run(own_state *st, const uint8_t *in, uint8_t *out, Py_ssize_t n)
{
    uint8_t *s = st->s;
    unsigned int i = st->i, j = st->j;
    Py_ssize_t k = 0;
    for (; k + 8 <= n; k += 8) {
        uint64_t w = 0, x;
        for (int q = 0; q < 8; q++) {
            uint8_t ks;
            OWN_STEP(ks);
            w |= (uint64_t)ks << (8 * q);
        }
        memcpy(&x, in + k, 8);
        x ^= w; /* little- or big-endian alike: octet q of w went to shift 8q, read back the same */
        memcpy(out + k, &x, 8);
    }
    for (; k < n; k++) {
        uint8_t ks;
        OWN_STEP(ks);
        out[k] = in[k] ^ ks;
    }
    st->i = (uint8_t)i;
    st->j = (uint8_t)j;
}

static void rc4_setup(rc4_state *st, const uint8_t *key, Py_ssize_t n)
{
    if (st->ossl & USE_OSSL_RC4)
        ossl_set_key(st->u.ossl_key, (int)n, key);
    else
        own_setup(&st->u.own, key, n);
}

/* out may equal in; in == NULL advances the stream without output. */
static void rc4_run(rc4_state *st, const uint8_t *in, uint8_t *out, Py_ssize_t n)
{
    if (!in) {
        uint8_t junk[512];
        memset(junk, 0, sizeof junk);
        while (n > 0) {
            Py_ssize_t m = n < (Py_ssize_t)sizeof junk ? n : (Py_ssize_t)sizeof junk;
            rc4_run(st, junk, junk, m);
            n -= m;
        }
        return;
    }
    if (st->ossl & USE_OSSL_RC4)
        ossl_rc4(st->u.ossl_key, (size_t)n, in, out);
    else
        own_run(&st->u.own, in, out, n);
}

/* ---------------------------------------------------------------------------------------- */
/* SHA-1 (FIPS 180-4), for the MPPE key change: a 112-octet message, two blocks.  The fallback
 * (and the reference at import) for libcrypto's SHA1, found like its RC4 (below). */

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80], a, b, c, d, e, t;
    int k;
    for (k = 0; k < 16; k++)
        w[k] = (uint32_t)p[4 * k] << 24 | (uint32_t)p[4 * k + 1] << 16 | (uint32_t)p[4 * k + 2] << 8 |
               (uint32_t)p[4 * k + 3];
    for (k = 16; k < 80; k++)
        w[k] = ROL(w[k - 3] ^ w[k - 8] ^ w[k - 14] ^ w[k - 16], 1);
    a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (k = 0; k < 80; k++) {
        uint32_t f, q;
        if (k < 20)
            f = (b & c) | (~b & d), q = 0x5A827999u;
        else if (k < 40)
            f = b ^ c ^ d, q = 0x6ED9EBA1u;
        else if (k < 60)
            f = (b & c) | (b & d) | (c & d), q = 0x8F1BBCDCu;
        else
            f = b ^ c ^ d, q = 0xCA62C1D6u;
        t = ROL(a, 5) + f + e + q + w[k];
        e = d, d = c, c = ROL(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1(const uint8_t *msg, size_t n, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    uint8_t last[128];
    size_t full = n & ~(size_t)63, rest = n - full, tail;
    uint64_t bits = (uint64_t)n * 8;
    for (size_t off = 0; off < full; off += 64)
        sha1_block(h, msg + off);
    memset(last, 0, sizeof last);
    memcpy(last, msg + full, rest);
    last[rest] = 0x80;
    tail = rest + 9 <= 64 ? 64 : 128;
    for (int k = 0; k < 8; k++)
        last[tail - 1 - k] = (uint8_t)(bits >> (8 * k));
    sha1_block(h, last);
    if (tail == 128)
        sha1_block(h, last + 64);
    for (int k = 0; k < 5; k++) {
        out[4 * k] = (uint8_t)(h[k] >> 24);
        out[4 * k + 1] = (uint8_t)(h[k] >> 16);
        out[4 * k + 2] = (uint8_t)(h[k] >> 8);
        out[4 * k + 3] = (uint8_t)h[k];
    }
}

/* The start key 8 or 16 octets, the key as long, the salt no longer: checked once for a
 * whole run by the batch calls, which then change keys frame after frame. */
static int check_key_lengths(Py_ssize_t n, Py_ssize_t keylen, Py_ssize_t saltlen)
{
    if ((n != 8 && n != 16) || keylen != n || saltlen > n) {
        PyErr_SetString(PyExc_ValueError, "change_key: start key and key must be 8 or 16 octets alike");
        return -1;
    }
    return 0;
}

/* RFC 3079 3.3 GetNewKeyFromSHA + 7.3's RC4 step + the 40/56-bit salt: the next session key
 * after `key`, of the start key's length (8 or 16).  Leaves `st` keyed with the interim key, as
 * the Python backends do.  Returns 0, or -1 with an exception set. */
static int change_key(rc4_state *st, const uint8_t *start, Py_ssize_t n, const uint8_t *key,
                      Py_ssize_t keylen, const uint8_t *salt, Py_ssize_t saltlen, uint8_t out[16])
{
    uint8_t msg[16 + 40 + 16 + 40], digest[20];
    if (check_key_lengths(n, keylen, saltlen) < 0)
        return -1;
    memcpy(msg, start, (size_t)n);
    memset(msg + n, 0x00, 40);
    memcpy(msg + n + 40, key, (size_t)n);
    memset(msg + 2 * n + 40, 0xF2, 40);
    if (st->ossl & USE_OSSL_SHA1)
        ossl_sha1(msg, (size_t)(2 * n + 80), digest);
    else
        sha1(msg, (size_t)(2 * n + 80), digest);
    rc4_setup(st, digest, n);
    rc4_run(st, digest, out, n);
    memcpy(out, salt, (size_t)saltlen);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Argument helpers (METH_FASTCALL: no tuple, no format string parsing per call). */

static int get_buf(PyObject *obj, Py_buffer *view, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object", what);
        return -1;
    }
    return 0;
}

static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return -1;
    }
    return 0;
}

static int get_u16(PyObject *obj, unsigned int *out, const char *what)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "%s out of range: %ld", what, v);
        return -1;
    }
    *out = (unsigned int)v;
    return 0;
}

/* An MPPE coherency count argument: 0..4095. */
static int get_count(PyObject *obj, unsigned int *out)
{
    if (get_u16(obj, out, "count") < 0)
        return -1;
    if (*out > 0x0FFF) {
        PyErr_SetString(PyExc_ValueError, "count must be 0..4095");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The Rc4 type */

typedef struct {
    PyObject_HEAD
    rc4_state st;
} Rc4Object;

static int Rc4_init(Rc4Object *self, PyObject *args, PyObject *kwds)
{
    static const uint8_t zero[16] = {0};
    static char *kwlist[] = {"builtin", NULL};
    int builtin = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$p:Rc4", kwlist, &builtin))
        return -1;
    self->st.ossl = builtin ? 0 : (ossl_rc4 ? USE_OSSL_RC4 : 0) | (ossl_sha1 ? USE_OSSL_SHA1 : 0);
    rc4_setup(&self->st, zero, 16);
    return 0;
}

static PyObject *Rc4_get_impl(Rc4Object *self, void *closure)
{
    (void)closure;
    return PyUnicode_FromString(self->st.ossl & USE_OSSL_RC4 ? "openssl" : "builtin");
}

static PyGetSetDef Rc4_getset[] = {
    {"impl", (getter)Rc4_get_impl, NULL, "Which RC4 runs: \"openssl\" (libcrypto) or \"builtin\".", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *Rc4_set_key(Rc4Object *self, PyObject *arg)
{
    Py_buffer key;
    if (get_buf(arg, &key, "key") < 0)
        return NULL;
    if (key.len < 1 || key.len > 256) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "RC4 key must be 1..256 octets");
        return NULL;
    }
    rc4_setup(&self->st, key.buf, key.len);
    PyBuffer_Release(&key);
    Py_RETURN_NONE;
}

static PyObject *Rc4_crypt(Rc4Object *self, PyObject *arg)
{
    Py_buffer data;
    PyObject *out;
    if (get_buf(arg, &data, "data") < 0)
        return NULL;
    out = PyBytes_FromStringAndSize(NULL, data.len);
    if (out)
        rc4_run(&self->st, data.buf, (uint8_t *)PyBytes_AS_STRING(out), data.len);
    PyBuffer_Release(&data);
    return out;
}

static PyObject *Rc4_next_key(Rc4Object *self, PyObject *arg)
{
    Py_buffer interim;
    PyObject *out;
    if (get_buf(arg, &interim, "interim") < 0)
        return NULL;
    if (interim.len < 1 || interim.len > 256) {
        PyBuffer_Release(&interim);
        PyErr_SetString(PyExc_ValueError, "RC4 key must be 1..256 octets");
        return NULL;
    }
    rc4_setup(&self->st, interim.buf, interim.len);
    out = PyBytes_FromStringAndSize(NULL, interim.len);
    if (out)
        rc4_run(&self->st, interim.buf, (uint8_t *)PyBytes_AS_STRING(out), interim.len);
    PyBuffer_Release(&interim);
    return out;
}

/* prefix + head (2 octets) + RC4(0x00, protocol, payload), RC4 writing straight into the
 * result. */
static PyObject *seal_into(rc4_state *st, Py_buffer *prefix, unsigned int head, unsigned int protocol,
                           Py_buffer *payload)
{
    Py_ssize_t size = prefix->len + 4 + payload->len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    uint8_t *p, proto[2];
    if (!out)
        return NULL;
    p = (uint8_t *)PyBytes_AS_STRING(out);
    memcpy(p, prefix->buf, (size_t)prefix->len);
    p += prefix->len;
    p[0] = (uint8_t)(head >> 8);
    p[1] = (uint8_t)head;
    proto[0] = (uint8_t)(protocol >> 8);
    proto[1] = (uint8_t)protocol;
    rc4_run(st, proto, p + 2, 2);
    rc4_run(st, payload->buf, p + 4, payload->len);
    return out;
}

static PyObject *Rc4_seal(Rc4Object *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer prefix, payload;
    unsigned int head, protocol;
    PyObject *out;
    if (check_nargs("seal", nargs, 4) < 0 || get_u16(args[1], &head, "head") < 0 ||
        get_u16(args[2], &protocol, "protocol") < 0 || get_buf(args[0], &prefix, "prefix") < 0)
        return NULL;
    if (get_buf(args[3], &payload, "payload") < 0) {
        PyBuffer_Release(&prefix);
        return NULL;
    }
    out = seal_into(&self->st, &prefix, head, protocol, &payload);
    PyBuffer_Release(&payload);
    PyBuffer_Release(&prefix);
    return out;
}

/* (protocol, payload) of an MPPE body (header octets skipped), or None when the decrypted
 * protocol field is not a valid PPP protocol (the stream still advances over the whole body). */
static PyObject *unseal_from(rc4_state *st, const uint8_t *body, Py_ssize_t len)
{
    Py_ssize_t m = len - 2, skip;
    uint8_t first[2];
    unsigned int protocol;
    PyObject *payload, *result;
    if (m < 1)
        Py_RETURN_NONE;
    body += 2;
    rc4_run(st, body, first, 1);
    if (first[0] & 1) {
        protocol = first[0];
        skip = 1;
    } else {
        if (m < 2) {
            Py_RETURN_NONE;
        }
        rc4_run(st, body + 1, first + 1, 1);
        if (!(first[1] & 1)) {
            rc4_run(st, NULL, NULL, m - 2);
            Py_RETURN_NONE;
        }
        protocol = (unsigned int)first[0] << 8 | first[1];
        skip = 2;
    }
    payload = PyBytes_FromStringAndSize(NULL, m - skip);
    if (!payload)
        return NULL;
    rc4_run(st, body + skip, (uint8_t *)PyBytes_AS_STRING(payload), m - skip);
    result = PyTuple_New(2);
    if (!result) {
        Py_DECREF(payload);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, PyLong_FromLong((long)protocol));
    PyTuple_SET_ITEM(result, 1, payload);
    if (!PyTuple_GET_ITEM(result, 0)) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* The stateless packet's first step, before its seal or unseal: the key change (RFC 3079 3.3
 * and 7.3) from `key`, and RC4 keyed with the result, which is left in `next`. */
static int rekey(rc4_state *st, const Py_buffer *start, const uint8_t *key, Py_ssize_t keylen,
                 const Py_buffer *salt, uint8_t next[16])
{
    if (change_key(st, start->buf, start->len, key, keylen, salt->buf, salt->len, next) < 0)
        return -1;
    rc4_setup(st, next, start->len);
    return 0;
}

/* Where the MPPE header of the stateless receiver's common frame starts, or -1: PPP
 * address/control optional, protocol 0x00FD compressed or not, then A (flushed) and D
 * (encrypted) set, C (compressed) clear, coherency count `count`, and a body after it. */
static Py_ssize_t mppe_body_at(const uint8_t *f, Py_ssize_t n, unsigned int count)
{
    Py_ssize_t pos = 0;
    if (n >= 2 && f[0] == 0xFF && f[1] == 0x03)
        pos = 2;
    if (pos < n && f[pos] == 0xFD)
        pos += 1;
    else if (pos + 1 < n && f[pos] == 0x00 && f[pos + 1] == 0xFD)
        pos += 2;
    else
        return -1;
    if (n - pos < 3 || (f[pos] & 0xB0) != 0x90 || ((unsigned int)(f[pos] & 0x0F) << 8 | f[pos + 1]) != count)
        return -1;
    return pos;
}

static PyObject *Rc4_unseal(Rc4Object *self, PyObject *arg)
{
    Py_buffer body;
    PyObject *out;
    if (get_buf(arg, &body, "body") < 0)
        return NULL;
    out = unseal_from(&self->st, body.buf, body.len);
    PyBuffer_Release(&body);
    return out;
}

static PyObject *Rc4_change_key(Rc4Object *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer start, key, salt;
    uint8_t out[16];
    int rc;
    if (check_nargs("change_key", nargs, 3) < 0 || get_buf(args[0], &start, "start") < 0)
        return NULL;
    if (get_buf(args[1], &key, "key") < 0) {
        PyBuffer_Release(&start);
        return NULL;
    }
    if (get_buf(args[2], &salt, "salt") < 0) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&start);
        return NULL;
    }
    rc = change_key(&self->st, start.buf, start.len, key.buf, key.len, salt.buf, salt.len, out);
    PyBuffer_Release(&salt);
    PyBuffer_Release(&key);
    PyBuffer_Release(&start);
    return rc < 0 ? NULL : PyBytes_FromStringAndSize((const char *)out, start.len);
}

/* rekey_seal(start, salt, key, prefix, head, protocol, payload) -> (new key, frame): the
 * stateless sender's whole packet - key change, RC4 keyed with the new key, seal. */
static PyObject *Rc4_rekey_seal(Rc4Object *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[5]; /* start, salt, key, prefix, payload */
    static const char *names[5] = {"start", "salt", "key", "prefix", "payload"};
    const int at[5] = {0, 1, 2, 3, 6};
    unsigned int head, protocol;
    uint8_t next[16];
    PyObject *key = NULL, *frame = NULL, *result = NULL;
    int got = 0;
    if (check_nargs("rekey_seal", nargs, 7) < 0 || get_u16(args[4], &head, "head") < 0 ||
        get_u16(args[5], &protocol, "protocol") < 0)
        return NULL;
    for (; got < 5; got++)
        if (get_buf(args[at[got]], &b[got], names[got]) < 0)
            goto done;
    if (rekey(&self->st, &b[0], b[2].buf, b[2].len, &b[1], next) < 0)
        goto done;
    key = PyBytes_FromStringAndSize((const char *)next, b[0].len);
    if (!key)
        goto done;
    frame = seal_into(&self->st, &b[3], head, protocol, &b[4]);
    if (!frame)
        goto done;
    result = PyTuple_Pack(2, key, frame);
done:
    Py_XDECREF(key);
    Py_XDECREF(frame);
    while (got-- > 0)
        PyBuffer_Release(&b[got]);
    return result;
}

/* rekey_unseal(start, salt, key, body) -> (new key, protocol, payload) or None: the stateless
 * receiver's packet one count ahead.  Nothing is committed: the caller keeps its key on None. */
static PyObject *Rc4_rekey_unseal(Rc4Object *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[4]; /* start, salt, key, body */
    static const char *names[4] = {"start", "salt", "key", "body"};
    uint8_t next[16];
    PyObject *key = NULL, *opened = NULL, *result = NULL;
    int got = 0;
    if (check_nargs("rekey_unseal", nargs, 4) < 0)
        return NULL;
    for (; got < 4; got++)
        if (get_buf(args[got], &b[got], names[got]) < 0)
            goto done;
    if (rekey(&self->st, &b[0], b[2].buf, b[2].len, &b[1], next) < 0)
        goto done;
    opened = unseal_from(&self->st, b[3].buf, b[3].len);
    if (!opened)
        goto done;
    if (opened == Py_None) {
        result = opened;
        opened = NULL;
        goto done;
    }
    key = PyBytes_FromStringAndSize((const char *)next, b[0].len);
    if (!key)
        goto done;
    result = PyTuple_Pack(3, key, PyTuple_GET_ITEM(opened, 0), PyTuple_GET_ITEM(opened, 1));
done:
    Py_XDECREF(key);
    Py_XDECREF(opened);
    while (got-- > 0)
        PyBuffer_Release(&b[got]);
    return result;
}

/* rekey_unseal_frame(start, salt, key, frame, count) -> (new key, protocol, payload) or None:
 * the stateless receiver's common packet, from the PPP frame (address/control and protocol
 * 0x00FD, either compressed or not) through the MPPE header checks to rekey_unseal, in one
 * call.  None for anything else - another protocol, a header that is not encrypted + flushed
 * without compression, a coherency count other than ``count``, a bad protocol after decryption
 * - and nothing is committed: the caller takes its general path, which decides and counts. */
static PyObject *Rc4_rekey_unseal_frame(Rc4Object *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[4]; /* start, salt, key, frame */
    static const char *names[4] = {"start", "salt", "key", "frame"};
    uint8_t next[16];
    const uint8_t *f;
    Py_ssize_t n, pos;
    unsigned int count;
    PyObject *key = NULL, *opened = NULL, *result = NULL;
    int got = 0;
    if (check_nargs("rekey_unseal_frame", nargs, 5) < 0 || get_count(args[4], &count) < 0)
        return NULL;
    for (; got < 4; got++)
        if (get_buf(args[got], &b[got], names[got]) < 0)
            goto done;
    f = b[3].buf;
    n = b[3].len;
    pos = mppe_body_at(f, n, count);
    if (pos < 0)
        goto none;
    if (rekey(&self->st, &b[0], b[2].buf, b[2].len, &b[1], next) < 0)
        goto done;
    opened = unseal_from(&self->st, f + pos, n - pos);
    if (!opened)
        goto done;
    if (opened == Py_None)
        goto none;
    key = PyBytes_FromStringAndSize((const char *)next, b[0].len);
    if (!key)
        goto done;
    result = PyTuple_Pack(3, key, PyTuple_GET_ITEM(opened, 0), PyTuple_GET_ITEM(opened, 1));
    goto done;
none:
    result = Py_None;
    Py_INCREF(result);
done:
    Py_XDECREF(key);
    Py_XDECREF(opened);
    while (got-- > 0)
        PyBuffer_Release(&b[got]);
    return result;
}

/* rekey_seal_many(start, salt, key, prefix, count, protocol, payloads) -> (new key, frames):
 * rekey_seal over a list of payloads of one protocol, packet k with coherency count
 * count + k (12 bits, wrapping) and FLUSHED + ENCRYPTED, each under the key after the previous
 * one's: the stateless sender's batch in one call.  An empty list changes nothing. */
static PyObject *Rc4_rekey_seal_many(Rc4Object *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[4]; /* start, salt, key, prefix */
    static const char *names[4] = {"start", "salt", "key", "prefix"};
    unsigned int count, protocol;
    uint8_t cur[16], next[16];
    PyObject *seq = NULL, *frames = NULL, *key = NULL, *result = NULL;
    Py_ssize_t n = 0, k;
    int got = 0;
    if (check_nargs("rekey_seal_many", nargs, 7) < 0 || get_count(args[4], &count) < 0 ||
        get_u16(args[5], &protocol, "protocol") < 0)
        return NULL;
    for (; got < 4; got++)
        if (get_buf(args[got], &b[got], names[got]) < 0)
            goto done;
    if (check_key_lengths(b[0].len, b[2].len, b[1].len) < 0)
        goto done;
    seq = PySequence_Fast(args[6], "payloads must be a sequence");
    if (!seq)
        goto done;
    n = PySequence_Fast_GET_SIZE(seq);
    frames = PyList_New(n);
    if (!frames)
        goto done;
    memcpy(cur, b[2].buf, (size_t)b[2].len);
    for (k = 0; k < n; k++) {
        Py_buffer payload;
        PyObject *frame;
        if (get_buf(PySequence_Fast_GET_ITEM(seq, k), &payload, "payload") < 0)
            goto done;
        if (rekey(&self->st, &b[0], cur, b[0].len, &b[1], next) < 0) {
            PyBuffer_Release(&payload);
            goto done;
        }
        memcpy(cur, next, (size_t)b[0].len);
        frame = seal_into(&self->st, &b[3], 0x9000u | ((count + (unsigned int)k) & 0x0FFFu), protocol, &payload);
        PyBuffer_Release(&payload);
        if (!frame)
            goto done;
        PyList_SET_ITEM(frames, k, frame);
    }
    key = PyBytes_FromStringAndSize((const char *)cur, b[0].len);
    if (key)
        result = PyTuple_Pack(2, key, frames);
done:
    Py_XDECREF(key);
    Py_XDECREF(frames);
    Py_XDECREF(seq);
    while (got-- > 0)
        PyBuffer_Release(&b[got]);
    return result;
}

/* rekey_unseal_frames(start, salt, key, frames, count) -> (key, payloads, protocols,
 * frame_octets, payload_octets): rekey_unseal_frame over a run of frames, the first with
 * coherency count ``count``, each next one count further, for as long as each opens as
 * rekey_unseal_frame would open it; the first frame that does not ends the run (it and what
 * follows are the caller's, nothing of them committed).  ``key`` comes back as the key after
 * the last frame taken (the one given when none was), with the payloads and protocols of the
 * frames taken and the octet totals of those frames and payloads. */
static PyObject *Rc4_rekey_unseal_frames(Rc4Object *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[3]; /* start, salt, key */
    static const char *names[3] = {"start", "salt", "key"};
    uint8_t cur[16], next[16];
    unsigned int count;
    Py_ssize_t i, nframes, klen, frame_octets = 0, payload_octets = 0;
    PyObject *seq = NULL, *payloads = NULL, *protocols = NULL, *key = NULL, *result = NULL;
    int got = 0;
    if (check_nargs("rekey_unseal_frames", nargs, 5) < 0 || get_count(args[4], &count) < 0)
        return NULL;
    for (; got < 3; got++)
        if (get_buf(args[got], &b[got], names[got]) < 0)
            goto done;
    klen = b[2].len;
    if (check_key_lengths(b[0].len, klen, b[1].len) < 0)
        goto done;
    memcpy(cur, b[2].buf, (size_t)klen);
    seq = PySequence_Fast(args[3], "frames must be a sequence");
    if (!seq)
        goto done;
    payloads = PyList_New(0);
    protocols = PyList_New(0);
    if (!payloads || !protocols)
        goto done;
    nframes = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < nframes; i++) {
        Py_buffer fb;
        const uint8_t *f;
        Py_ssize_t n, pos;
        PyObject *opened;
        int rc;
        if (get_buf(PySequence_Fast_GET_ITEM(seq, i), &fb, "frame") < 0)
            goto done;
        f = fb.buf;
        n = fb.len;
        pos = mppe_body_at(f, n, count); /* rekey_unseal_frame's checks */
        if (pos < 0) {
            PyBuffer_Release(&fb);
            break;
        }
        if (rekey(&self->st, &b[0], cur, klen, &b[1], next) < 0) {
            PyBuffer_Release(&fb);
            goto done;
        }
        opened = unseal_from(&self->st, f + pos, n - pos);
        PyBuffer_Release(&fb);
        if (!opened)
            goto done;
        if (opened == Py_None) {
            Py_DECREF(opened);
            break;
        }
        rc = PyList_Append(protocols, PyTuple_GET_ITEM(opened, 0));
        if (rc == 0)
            rc = PyList_Append(payloads, PyTuple_GET_ITEM(opened, 1));
        payload_octets += PyBytes_GET_SIZE(PyTuple_GET_ITEM(opened, 1));
        Py_DECREF(opened);
        if (rc < 0)
            goto done;
        frame_octets += n;
        memcpy(cur, next, (size_t)klen);
        count = (count + 1) & 0x0FFF;
    }
    key = PyBytes_FromStringAndSize((const char *)cur, klen);
    if (!key)
        goto done;
    result = Py_BuildValue("(OOOnn)", key, payloads, protocols, frame_octets, payload_octets);
done:
    Py_XDECREF(key);
    Py_XDECREF(payloads);
    Py_XDECREF(protocols);
    Py_XDECREF(seq);
    while (got-- > 0)
        PyBuffer_Release(&b[got]);
    return result;
}

static PyMethodDef Rc4_methods[] = {
    {"set_key", (PyCFunction)Rc4_set_key, METH_O, "Key the stream (RC4 key schedule)."},
    {"crypt", (PyCFunction)Rc4_crypt, METH_O, "Continue the stream over data."},
    {"next_key", (PyCFunction)Rc4_next_key, METH_O, "Key with interim and encrypt it (RFC 3079 7.3)."},
    {"seal", (PyCFunction)(void (*)(void))Rc4_seal, METH_FASTCALL,
     "seal(prefix, head, protocol, payload): prefix + head + RC4(protocol + payload)."},
    {"unseal", (PyCFunction)Rc4_unseal, METH_O, "(protocol, payload) of an MPPE body, or None."},
    {"change_key", (PyCFunction)(void (*)(void))Rc4_change_key, METH_FASTCALL,
     "change_key(start, key, salt): the next MPPE session key (RFC 3079 3.3 + 7.3)."},
    {"rekey_seal", (PyCFunction)(void (*)(void))Rc4_rekey_seal, METH_FASTCALL,
     "rekey_seal(start, salt, key, prefix, head, protocol, payload) -> (new key, frame)."},
    {"rekey_unseal", (PyCFunction)(void (*)(void))Rc4_rekey_unseal, METH_FASTCALL,
     "rekey_unseal(start, salt, key, body) -> (new key, protocol, payload) or None."},
    {"rekey_unseal_frame", (PyCFunction)(void (*)(void))Rc4_rekey_unseal_frame, METH_FASTCALL,
     "rekey_unseal_frame(start, salt, key, frame, count) -> (new key, protocol, payload) or None."},
    {"rekey_unseal_frames", (PyCFunction)(void (*)(void))Rc4_rekey_unseal_frames, METH_FASTCALL,
     "rekey_unseal_frames(start, salt, key, frames, count) -> (key, payloads, protocols, frame_octets, "
     "payload_octets): rekey_unseal_frame over the longest prefix of frames that opens."},
    {"rekey_seal_many", (PyCFunction)(void (*)(void))Rc4_rekey_seal_many, METH_FASTCALL,
     "rekey_seal_many(start, salt, key, prefix, count, protocol, payloads) -> (new key, frames)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Rc4Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pptpkit.speedups._ext.Rc4",
    .tp_basicsize = sizeof(Rc4Object),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One RC4 keystream with the whole-packet MPPE operations.",
    .tp_methods = Rc4_methods,
    .tp_getset = Rc4_getset,
    .tp_init = (initproc)Rc4_init,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------------------------------- */
/* Internet checksum */

/* The folded 16-bit ones-complement sum of data read as big-endian 16-bit words (an odd
 * length padded with a zero octet): congruent mod 0xFFFF to the data read as one big-endian
 * integer (shifted by 8 when odd), 0 only when all octets are 0. */
static PyObject *fast_csum(PyObject *mod, PyObject *arg)
{
    Py_buffer data;
    const uint8_t *p;
    Py_ssize_t n, k = 0;
    uint64_t sum = 0;
    (void)mod;
    if (get_buf(arg, &data, "data") < 0)
        return NULL;
    p = data.buf;
    n = data.len;
    /* Sum 32-bit big-endian words: each is 2**16 * hi + lo, and 2**16 == 1 mod 0xFFFF. */
    for (; k + 4 <= n; k += 4)
        sum += (uint32_t)p[k] << 24 | (uint32_t)p[k + 1] << 16 | (uint32_t)p[k + 2] << 8 | p[k + 3];
    for (; k + 2 <= n; k += 2)
        sum += (uint32_t)p[k] << 8 | p[k + 1];
    if (k < n)
        sum += (uint32_t)p[k] << 8;
    PyBuffer_Release(&data);
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return PyLong_FromUnsignedLong((unsigned long)sum);
}

/* ---------------------------------------------------------------------------------------- */
/* GRO-style coalescing: pptpkit.io.offload.Coalescer.flush's loop, rule for rule (see there for
 * what may merge and why; this is its twin and the tests hold the two to identical output). */

#define ACK 0x10
#define PSH 0x08

static uint64_t sum_words(const uint8_t *p, Py_ssize_t n)
{
    uint64_t sum = 0;
    Py_ssize_t k = 0;
    for (; k + 4 <= n; k += 4)
        sum += (uint32_t)p[k] << 24 | (uint32_t)p[k + 1] << 16 | (uint32_t)p[k + 2] << 8 | p[k + 3];
    for (; k + 2 <= n; k += 2)
        sum += (uint32_t)p[k] << 8 | p[k + 1];
    if (k < n)
        sum += (uint32_t)p[k] << 8;
    return sum;
}

/* v mod 0xFFFF, with 0 read as 0xFFFF (every caller's sum includes a protocol number). */
static unsigned int fold_nz(uint64_t v)
{
    unsigned int r = (unsigned int)(v % 0xFFFF);
    return r ? r : 0xFFFF;
}

typedef struct {
    PyObject *first;     /* borrowed from the queue */
    PyObject *segments;  /* list, owned */
    PyObject *payloads;  /* list, owned */
    Py_ssize_t hl, iphl, mss, size;
    uint32_t next_seq;
    int v6;
} batch_t;

typedef struct {
    const uint8_t *key; /* points into a queued packet (alive for the call) */
    int keylen;
    Py_ssize_t batch;   /* index into batches, or -1: the flow has no open batch */
} flow_t;

static uint64_t key_hash(const uint8_t *k, int n)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++)
        h = (h ^ k[i]) * 1099511628211ull;
    return h;
}

static PyObject *merge_unit(batch_t *b)
{
    const uint8_t *first = (const uint8_t *)PyBytes_AS_STRING(b->first);
    PyObject *last = PyList_GET_ITEM(b->segments, PyList_GET_SIZE(b->segments) - 1);
    Py_ssize_t hl = b->hl, iphl = b->iphl, total = b->size, tcp_len = total - iphl, k;
    PyObject *head, *vnet, *parts, *rest, *unit;
    uint8_t *h, v[10];
    uint64_t pseudo;
    head = PyBytes_FromStringAndSize((const char *)first, hl);
    if (!head)
        return NULL;
    h = (uint8_t *)PyBytes_AS_STRING(head);
    h[iphl + 13] = ((const uint8_t *)PyBytes_AS_STRING(last))[iphl + 13];
    if (b->v6) {
        h[4] = (uint8_t)(tcp_len >> 8), h[5] = (uint8_t)tcp_len;
        pseudo = sum_words(first + 8, 32) + 6 + (uint64_t)tcp_len;
    } else {
        unsigned int c;
        h[2] = (uint8_t)(total >> 8), h[3] = (uint8_t)total;
        h[10] = h[11] = 0;
        c = 0xFFFF - fold_nz(sum_words(h, 20));
        h[10] = (uint8_t)(c >> 8), h[11] = (uint8_t)c;
        pseudo = sum_words(first + 12, 8) + 6 + (uint64_t)tcp_len;
    }
    k = fold_nz(pseudo);
    h[iphl + 16] = (uint8_t)(k >> 8), h[iphl + 17] = (uint8_t)k;
    /* struct virtio_net_hdr, little-endian: NEEDS_CSUM, TCPV4/6, hdr_len, gso_size, csum_start,
     * csum_offset. */
    v[0] = 1, v[1] = b->v6 ? 4 : 1;
    v[2] = (uint8_t)hl, v[3] = (uint8_t)(hl >> 8);
    v[4] = (uint8_t)b->mss, v[5] = (uint8_t)(b->mss >> 8);
    v[6] = (uint8_t)iphl, v[7] = (uint8_t)(iphl >> 8);
    v[8] = 16, v[9] = 0;
    vnet = PyBytes_FromStringAndSize((const char *)v, 10);
    rest = PyBytes_FromStringAndSize((const char *)first + hl, PyBytes_GET_SIZE(b->first) - hl);
    parts = PyList_New(2 + PyList_GET_SIZE(b->payloads));
    if (!vnet || !rest || !parts) {
        Py_DECREF(head);
        Py_XDECREF(vnet);
        Py_XDECREF(rest);
        Py_XDECREF(parts);
        return NULL;
    }
    PyList_SET_ITEM(parts, 0, head);
    PyList_SET_ITEM(parts, 1, rest);
    for (k = 0; k < PyList_GET_SIZE(b->payloads); k++) {
        PyObject *pl = PyList_GET_ITEM(b->payloads, k);
        Py_INCREF(pl);
        PyList_SET_ITEM(parts, 2 + k, pl);
    }
    unit = PyTuple_Pack(3, vnet, parts, b->segments);
    Py_DECREF(vnet);
    Py_DECREF(parts);
    return unit;
}

static PyObject *single_unit(PyObject *zero, PyObject *packet)
{
    PyObject *one = PyList_New(1), *unit;
    if (!one)
        return NULL;
    Py_INCREF(packet);
    PyList_SET_ITEM(one, 0, packet);
    unit = PyTuple_Pack(3, zero, one, one);
    Py_DECREF(one);
    return unit;
}

/* coalesce(queue, zero_header) -> (units, bad_checksum, passthrough, merged_out, segments_merged) */
static PyObject *fast_coalesce(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *queue, *zero, *units = NULL, *result = NULL;
    Py_ssize_t n_in, nb = 0, tsize = 16, i;
    batch_t *batches = NULL;
    flow_t *table = NULL;
    /* slot k: a batch index >= 0, or -(queue index) - 1 for a packet written alone */
    Py_ssize_t *slots = NULL, nslots = 0;
    long bad = 0, single = 0, merged = 0, merged_segs = 0;
    (void)mod;
    if (check_nargs("coalesce", nargs, 2) < 0)
        return NULL;
    queue = args[0];
    zero = args[1];
    if (!PyList_Check(queue) || !PyBytes_Check(zero)) {
        PyErr_SetString(PyExc_TypeError, "coalesce(queue: list[bytes], zero_header: bytes)");
        return NULL;
    }
    n_in = PyList_GET_SIZE(queue);
    while (tsize < 2 * n_in)
        tsize *= 2;
    batches = PyMem_Calloc((size_t)n_in + 1, sizeof *batches);
    table = PyMem_Calloc((size_t)tsize, sizeof *table);
    slots = PyMem_Calloc((size_t)n_in + 1, sizeof *slots);
    if (!batches || !table || !slots) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n_in; i++) {
        PyObject *obj = PyList_GET_ITEM(queue, i);
        const uint8_t *p;
        Py_ssize_t n, iphl, hl;
        int v6, keylen, fl, ok;
        const uint8_t *key;
        flow_t *flow;
        batch_t *b;
        uint64_t whole;
        uint32_t seq;
        if (!PyBytes_Check(obj)) {
            PyErr_SetString(PyExc_TypeError, "coalesce: the queue holds bytes only");
            goto done;
        }
        p = (const uint8_t *)PyBytes_AS_STRING(obj);
        n = PyBytes_GET_SIZE(obj);
        if (n < 40)
            goto alone;
        if (p[0] == 0x45) {
            if (p[9] != 6 || (p[6] & 0x3F) || p[7] || ((Py_ssize_t)p[2] << 8 | p[3]) != n)
                goto alone;
            iphl = 20, v6 = 0, key = p + 12, keylen = 12;
        } else if (p[0] >> 4 == 6) {
            if (p[6] != 6 || n < 60 || ((Py_ssize_t)p[4] << 8 | p[5]) + 40 != n)
                goto alone;
            iphl = 40, v6 = 1, key = p + 8, keylen = 36;
        } else {
            goto alone;
        }
        {
            uint64_t hsh = key_hash(key, keylen);
            Py_ssize_t at = (Py_ssize_t)(hsh & (uint64_t)(tsize - 1));
            while (table[at].key && (table[at].keylen != keylen || memcmp(table[at].key, key, (size_t)keylen)))
                at = (at + 1) & (tsize - 1);
            flow = &table[at];
            if (!flow->key) {
                flow->key = key;
                flow->keylen = keylen;
                flow->batch = -1;
            }
        }
        hl = iphl + (p[iphl + 12] >> 4) * 4;
        fl = p[iphl + 13];
        if (hl < iphl + 20 || hl >= n || (fl != ACK && fl != (ACK | PSH))) {
            flow->batch = -1;
            goto alone;
        }
        whole = sum_words(p, n);
        if (v6)
            ok = (whole % 0xFFFF + 0xFFFF - sum_words(p, 8) % 0xFFFF + (uint64_t)(n - 40) + 6) % 0xFFFF == 0;
        else
            ok = sum_words(p, 20) % 0xFFFF == 0 &&
                 (whole + sum_words(p + 12, 8) + (uint64_t)(n - 20) + 6) % 0xFFFF == 0;
        if (!ok) {
            bad++;
            flow->batch = -1;
            goto alone;
        }
        seq = (uint32_t)p[iphl + 4] << 24 | (uint32_t)p[iphl + 5] << 16 | (uint32_t)p[iphl + 6] << 8 |
              p[iphl + 7];
        if (flow->batch >= 0) {
            Py_ssize_t plen = n - hl;
            const uint8_t *f;
            b = &batches[flow->batch];
            f = (const uint8_t *)PyBytes_AS_STRING(b->first);
            if (seq == b->next_seq && hl == b->hl && plen <= b->mss && b->size + plen <= 65535 &&
                (v6 ? memcmp(f, p, 4) == 0 && memcmp(f + 6, p + 6, 2) == 0
                    : memcmp(f, p, 2) == 0 && memcmp(f + 6, p + 6, 4) == 0) &&
                /* ack, data offset, window, urgent pointer as the first's; flags ACK or ACK|PSH */
                memcmp(f + iphl + 8, p + iphl + 8, 5) == 0 && memcmp(f + iphl + 14, p + iphl + 14, 2) == 0 &&
                memcmp(f + iphl + 20, p + iphl + 20, (size_t)(hl - iphl - 20)) == 0) {
                PyObject *payload = PyBytes_FromStringAndSize((const char *)p + hl, plen);
                if (!payload || PyList_Append(b->segments, obj) < 0 ||
                    PyList_Append(b->payloads, payload) < 0) {
                    Py_XDECREF(payload);
                    goto done;
                }
                Py_DECREF(payload);
                b->size += plen;
                b->next_seq = seq + (uint32_t)plen;
                if (fl != ACK || plen < b->mss)
                    flow->batch = -1;
                continue;
            }
        }
        b = &batches[nb];
        b->first = obj;
        b->segments = PyList_New(1);
        b->payloads = PyList_New(0);
        if (!b->segments || !b->payloads) {
            Py_CLEAR(b->segments);
            Py_CLEAR(b->payloads);
            goto done;
        }
        Py_INCREF(obj);
        PyList_SET_ITEM(b->segments, 0, obj);
        b->v6 = v6, b->iphl = iphl, b->hl = hl, b->mss = n - hl, b->size = n;
        b->next_seq = seq + (uint32_t)(n - hl);
        slots[nslots++] = nb;
        flow->batch = fl == ACK ? nb : -1;
        nb++;
        continue;
    alone:
        slots[nslots++] = -i - 1;
    }
    units = PyList_New(nslots);
    if (!units)
        goto done;
    for (i = 0; i < nslots; i++) {
        PyObject *unit;
        if (slots[i] < 0) {
            single++;
            unit = single_unit(zero, PyList_GET_ITEM(queue, -slots[i] - 1));
        } else {
            batch_t *b = &batches[slots[i]];
            if (PyList_GET_SIZE(b->segments) == 1) {
                single++;
                unit = PyTuple_Pack(3, zero, b->segments, b->segments);
            } else {
                merged++;
                merged_segs += (long)PyList_GET_SIZE(b->segments);
                unit = merge_unit(b);
            }
        }
        if (!unit) {
            Py_CLEAR(units);
            goto done;
        }
        PyList_SET_ITEM(units, i, unit);
    }
    result = Py_BuildValue("(Nllll)", units, bad, single, merged, merged_segs);
done:
    if (batches)
        for (i = 0; i < nb; i++) {
            Py_XDECREF(batches[i].segments);
            Py_XDECREF(batches[i].payloads);
        }
    PyMem_Free(batches);
    PyMem_Free(table);
    PyMem_Free(slots);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* TSO: a TCP super-segment cut into MSS-sized packets; pptpkit.io.offload.segment's loop (the
 * caller has validated the layout).  Each packet: the original headers with IPv4 total length,
 * ID + i and header checksum / IPv6 payload length, sequence number, flags (CWR only on the
 * first, FIN and PSH only on the last) and a full TCP checksum. */

static PyObject *fast_tso_split(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer pk;
    long v6, iphl, hl, mss;
    PyObject *out = NULL;
    const uint8_t *p;
    Py_ssize_t n, total, nseg, i;
    uint8_t flags, first_flags, mid_flags, last_flags;
    uint32_t seq;
    unsigned int ident;
    uint64_t pseudo;
    (void)mod;
    if (check_nargs("tso_split", nargs, 5) < 0)
        return NULL;
    v6 = PyObject_IsTrue(args[1]);
    iphl = PyLong_AsLong(args[2]);
    hl = PyLong_AsLong(args[3]);
    mss = PyLong_AsLong(args[4]);
    if (v6 < 0 || PyErr_Occurred())
        return NULL;
    if (get_buf(args[0], &pk, "packet") < 0)
        return NULL;
    p = pk.buf;
    n = pk.len;
    total = n - hl;
    if (mss < 1 || iphl < 20 || hl < iphl + 20 || hl > 0xFFFF || total < 1 || hl > n ||
        (v6 && iphl != 40) || (!v6 && (iphl > 60 || n > 65535))) {
        PyErr_SetString(PyExc_ValueError, "tso_split: inconsistent layout");
        goto done;
    }
    nseg = (total + mss - 1) / mss;
    flags = p[iphl + 13];
    first_flags = flags & (uint8_t)~0x09; /* no FIN, no PSH */
    mid_flags = first_flags & (uint8_t)~0x80; /* no CWR either */
    last_flags = flags & (uint8_t)~0x80;
    seq = (uint32_t)p[iphl + 4] << 24 | (uint32_t)p[iphl + 5] << 16 | (uint32_t)p[iphl + 6] << 8 | p[iphl + 7];
    ident = (unsigned int)p[4] << 8 | p[5];
    /* Pseudo-header addresses and protocol; the length is added per segment. */
    pseudo = (v6 ? sum_words(p + 8, 32) : sum_words(p + 12, 8)) + 6;
    out = PyList_New(nseg);
    if (!out)
        goto done;
    for (i = 0; i < nseg; i++) {
        Py_ssize_t off = hl + i * mss, clen = total - i * mss < mss ? total - i * mss : mss;
        Py_ssize_t tcp_len = hl - iphl + clen;
        PyObject *seg = PyBytes_FromStringAndSize(NULL, hl + clen);
        uint8_t *q, f;
        uint32_t sq = seq + (uint32_t)(i * mss);
        unsigned int c;
        if (!seg) {
            Py_CLEAR(out);
            goto done;
        }
        q = (uint8_t *)PyBytes_AS_STRING(seg);
        memcpy(q, p, (size_t)hl);
        memcpy(q + hl, p + off, (size_t)clen);
        f = i == 0 ? first_flags : mid_flags;
        if (i == nseg - 1)
            f = i == 0 ? flags : last_flags;
        if (v6) {
            q[4] = (uint8_t)(tcp_len >> 8), q[5] = (uint8_t)tcp_len;
        } else {
            Py_ssize_t tot = iphl + tcp_len;
            unsigned int idn = (ident + (unsigned int)i) & 0xFFFF;
            q[2] = (uint8_t)(tot >> 8), q[3] = (uint8_t)tot;
            q[4] = (uint8_t)(idn >> 8), q[5] = (uint8_t)idn;
            q[10] = q[11] = 0;
            c = 0xFFFF - fold_nz(sum_words(q, iphl));
            q[10] = (uint8_t)(c >> 8), q[11] = (uint8_t)c;
        }
        q += iphl;
        q[4] = (uint8_t)(sq >> 24), q[5] = (uint8_t)(sq >> 16), q[6] = (uint8_t)(sq >> 8), q[7] = (uint8_t)sq;
        q[13] = f;
        q[16] = q[17] = 0;
        c = 0xFFFF - fold_nz(pseudo + (uint64_t)tcp_len + sum_words(q, tcp_len));
        q[16] = (uint8_t)(c >> 8), q[17] = (uint8_t)c;
        PyList_SET_ITEM(out, i, seg);
    }
done:
    PyBuffer_Release(&pk);
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* The raw GRE socket: batched receive with the demultiplexer's parse, and send with a fixed
 * source address.  pptpkit.gre.demux.parse_datagram is the parse's twin; the codes match. */

#define RECV_SLOTS 64
#define RECV_SIZE 65536
static uint8_t *recv_area; /* RECV_SLOTS * RECV_SIZE, allocated on first use */

/* The routing key (source address << 16 | call ID) of an IPv4 + enhanced-GRE datagram, or a
 * negative reason code; *ihl receives the IPv4 header length. */
static long long parse_datagram(const uint8_t *d, Py_ssize_t n, Py_ssize_t *ihl)
{
    Py_ssize_t h;
    *ihl = 0;
    if (n < 20)
        return -1; /* too short */
    h = (d[0] & 0x0F) * 4;
    if (d[0] >> 4 != 4 || h < 20)
        return -2; /* not IPv4 */
    if (n < h + 8)
        return -1;
    if ((d[h + 1] & 0x07) != 1 || !(d[h] & 0x20) || d[h + 2] != 0x88 || d[h + 3] != 0x0B)
        return -3; /* not enhanced GRE carrying PPP with a key */
    *ihl = h;
    return (long long)((uint32_t)d[12] << 24 | (uint32_t)d[13] << 16 | (uint32_t)d[14] << 8 | d[15]) << 16 |
           ((unsigned int)d[h + 6] << 8 | d[h + 7]);
}

/* recv_gre(fd, max) -> [(key or reason code, GRE packet or b"")]: up to max (<= 64) datagrams
 * in one recvmmsg; [] when none is waiting; OSError for a socket error before any datagram. */
static PyObject *fast_recv_gre(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    struct mmsghdr msgs[RECV_SLOTS];
    struct iovec iov[RECV_SLOTS];
    long fd, want;
    int got, k;
    PyObject *out;
    (void)mod;
    if (check_nargs("recv_gre", nargs, 2) < 0)
        return NULL;
    fd = PyLong_AsLong(args[0]);
    want = PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (want < 1 || want > RECV_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "recv_gre: max must be 1..64");
        return NULL;
    }
    if (!recv_area) {
        recv_area = PyMem_RawMalloc((size_t)RECV_SLOTS * RECV_SIZE);
        if (!recv_area)
            return PyErr_NoMemory();
    }
    memset(msgs, 0, sizeof msgs);
    for (k = 0; k < want; k++) {
        iov[k].iov_base = recv_area + (size_t)k * RECV_SIZE;
        iov[k].iov_len = RECV_SIZE;
        msgs[k].msg_hdr.msg_iov = &iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
    }
    Py_BEGIN_ALLOW_THREADS
    got = recvmmsg((int)fd, msgs, (unsigned int)want, MSG_DONTWAIT, NULL);
    Py_END_ALLOW_THREADS
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    out = PyList_New(got);
    if (!out)
        return NULL;
    for (k = 0; k < got; k++) {
        const uint8_t *d = iov[k].iov_base;
        Py_ssize_t ihl, n = (Py_ssize_t)msgs[k].msg_len;
        long long key = parse_datagram(d, n, &ihl);
        PyObject *item = NULL, *pk = key < 0 ? PyBytes_FromStringAndSize(NULL, 0)
                                              : PyBytes_FromStringAndSize((const char *)d + ihl, n - ihl);
        if (pk) {
            item = Py_BuildValue("(LN)", key, pk);
        }
        if (!item) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, k, item);
    }
    return out;
}

/* send_gre(fd, datagram, peer, pktinfo[, payload]): one sendmsg to IPv4 address `peer` (an
 * int), from the source address in `pktinfo` (a packed struct in_pktinfo, or None).  With
 * `payload`, the datagram is `datagram + payload` gathered by the kernel (two iovecs): a GRE
 * header and the PPP frame behind it, never joined in memory.  Raises OSError as
 * socket.sendmsg does (BlockingIOError for a full buffer). */
static PyObject *fast_send_gre(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, info, tail;
    unsigned long peer;
    long fd;
    struct sockaddr_in to;
    struct iovec iov[2];
    struct msghdr msg;
    union {
        char buf[CMSG_SPACE(sizeof(struct in_pktinfo))];
        struct cmsghdr align;
    } control;
    ssize_t rc;
    int have_info, have_tail = nargs == 5;
    (void)mod;
    if (!have_tail && check_nargs("send_gre", nargs, 4) < 0)
        return NULL;
    have_info = args[3] != Py_None;
    fd = PyLong_AsLong(args[0]);
    peer = PyLong_AsUnsignedLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (peer > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "send_gre: peer is not an IPv4 address");
        return NULL;
    }
    if (get_buf(args[1], &data, "datagram") < 0)
        return NULL;
    if (have_tail && get_buf(args[4], &tail, "payload") < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    memset(&msg, 0, sizeof msg);
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl((uint32_t)peer);
    iov[0].iov_base = data.buf;
    iov[0].iov_len = (size_t)data.len;
    if (have_tail) {
        iov[1].iov_base = tail.buf;
        iov[1].iov_len = (size_t)tail.len;
    }
    msg.msg_name = &to;
    msg.msg_namelen = sizeof to;
    msg.msg_iov = iov;
    msg.msg_iovlen = have_tail ? 2 : 1;
    if (have_info) {
        struct cmsghdr *c;
        if (get_buf(args[3], &info, "pktinfo") < 0) {
            if (have_tail)
                PyBuffer_Release(&tail);
            PyBuffer_Release(&data);
            return NULL;
        }
        if (info.len != (Py_ssize_t)sizeof(struct in_pktinfo)) {
            PyBuffer_Release(&info);
            if (have_tail)
                PyBuffer_Release(&tail);
            PyBuffer_Release(&data);
            PyErr_SetString(PyExc_ValueError, "send_gre: pktinfo must be a packed struct in_pktinfo");
            return NULL;
        }
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        memcpy(CMSG_DATA(c), info.buf, sizeof(struct in_pktinfo));
        PyBuffer_Release(&info);
    }
    Py_BEGIN_ALLOW_THREADS
    rc = sendmsg((int)fd, &msg, MSG_DONTWAIT);
    Py_END_ALLOW_THREADS
    if (have_tail)
        PyBuffer_Release(&tail);
    PyBuffer_Release(&data);
    if (rc < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* send_gre_many(fd, peer, pktinfo, call_id, seq, ack, frames) -> (sent, dropped, errors, errno):
 * one GRE data datagram per frame to IPv4 address `peer` (an int), from the source in `pktinfo`
 * (a packed struct in_pktinfo, or None), in as few sendmmsg calls as the kernel allows.  Frame
 * k gets the enhanced GRE header with call ID `call_id`, sequence number seq + k (32 bits,
 * wrapping) and, unless `ack` is negative, acknowledgement `ack`: built here, the header and
 * the frame go out as two iovecs, never joined.  Every frame is tried once, as one sendmsg
 * each would: a message the kernel refuses is counted - `dropped` for a full buffer or an
 * interruption (EAGAIN, ENOBUFS, EINTR), `errors` otherwise (the last errno is returned) - and
 * the next one is tried; nothing is raised for them. */
#define SEND_SLOTS 64
static PyObject *fast_send_gre_many(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    struct mmsghdr msgs[SEND_SLOTS];
    struct iovec iov[SEND_SLOTS][2];
    uint8_t hdr[SEND_SLOTS][16];
    Py_buffer views[SEND_SLOTS];
    union {
        char buf[CMSG_SPACE(sizeof(struct in_pktinfo))];
        struct cmsghdr align;
    } control;
    struct sockaddr_in to;
    unsigned long peer, call_id, seq;
    long fd;
    long long ack;
    int have_info;
    Py_ssize_t n, done = 0, sent = 0, dropped = 0, errors = 0;
    int last_errno = 0;
    PyObject *list;
    (void)mod;
    if (check_nargs("send_gre_many", nargs, 7) < 0)
        return NULL;
    fd = PyLong_AsLong(args[0]);
    peer = PyLong_AsUnsignedLong(args[1]);
    call_id = PyLong_AsUnsignedLong(args[3]);
    seq = PyLong_AsUnsignedLong(args[4]);
    ack = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred())
        return NULL;
    if (peer > 0xFFFFFFFFul || call_id > 0xFFFFul || seq > 0xFFFFFFFFul || ack > 0xFFFFFFFFll) {
        PyErr_SetString(PyExc_ValueError, "send_gre_many: peer, call ID, seq or ack out of range");
        return NULL;
    }
    have_info = args[2] != Py_None;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl((uint32_t)peer);
    memset(&control, 0, sizeof control);
    if (have_info) {
        Py_buffer info;
        struct msghdr probe;
        struct cmsghdr *c;
        if (get_buf(args[2], &info, "pktinfo") < 0)
            return NULL;
        if (info.len != (Py_ssize_t)sizeof(struct in_pktinfo)) {
            PyBuffer_Release(&info);
            PyErr_SetString(PyExc_ValueError, "send_gre_many: pktinfo must be a packed struct in_pktinfo");
            return NULL;
        }
        memset(&probe, 0, sizeof probe);
        probe.msg_control = control.buf;
        probe.msg_controllen = sizeof control.buf;
        c = CMSG_FIRSTHDR(&probe);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        memcpy(CMSG_DATA(c), info.buf, sizeof(struct in_pktinfo));
        PyBuffer_Release(&info);
    }
    list = PySequence_Fast(args[6], "frames must be a sequence");
    if (!list)
        return NULL;
    n = PySequence_Fast_GET_SIZE(list);
    while (done < n) {
        Py_ssize_t m = n - done < SEND_SLOTS ? n - done : SEND_SLOTS, k, at = 0;
        for (k = 0; k < m; k++) {
            uint8_t *h = hdr[k];
            uint32_t s = (uint32_t)(seq + (unsigned long)(done + k));
            size_t len;
            if (get_buf(PySequence_Fast_GET_ITEM(list, done + k), &views[k], "frame") < 0) {
                while (k-- > 0)
                    PyBuffer_Release(&views[k]);
                Py_DECREF(list);
                return NULL;
            }
            if (views[k].len > 0xFFFF) {
                while (k >= 0)
                    PyBuffer_Release(&views[k--]);
                Py_DECREF(list);
                PyErr_SetString(PyExc_ValueError, "send_gre_many: frame over 65535 octets");
                return NULL;
            }
            len = (size_t)views[k].len;
            h[0] = 0x30;
            h[1] = ack >= 0 ? 0x81 : 0x01;
            h[2] = 0x88;
            h[3] = 0x0B;
            h[4] = (uint8_t)(len >> 8);
            h[5] = (uint8_t)len;
            h[6] = (uint8_t)(call_id >> 8);
            h[7] = (uint8_t)call_id;
            h[8] = (uint8_t)(s >> 24);
            h[9] = (uint8_t)(s >> 16);
            h[10] = (uint8_t)(s >> 8);
            h[11] = (uint8_t)s;
            if (ack >= 0) {
                uint32_t a = (uint32_t)ack;
                h[12] = (uint8_t)(a >> 24);
                h[13] = (uint8_t)(a >> 16);
                h[14] = (uint8_t)(a >> 8);
                h[15] = (uint8_t)a;
            }
            iov[k][0].iov_base = h;
            iov[k][0].iov_len = ack >= 0 ? 16 : 12;
            iov[k][1].iov_base = views[k].buf;
            iov[k][1].iov_len = len;
            memset(&msgs[k], 0, sizeof msgs[k]);
            msgs[k].msg_hdr.msg_name = &to;
            msgs[k].msg_hdr.msg_namelen = sizeof to;
            msgs[k].msg_hdr.msg_iov = iov[k];
            msgs[k].msg_hdr.msg_iovlen = 2;
            if (have_info) {
                msgs[k].msg_hdr.msg_control = control.buf;
                msgs[k].msg_hdr.msg_controllen = sizeof control.buf;
            }
        }
        Py_BEGIN_ALLOW_THREADS
        while (at < m) {
            int rc = sendmmsg((int)fd, msgs + at, (unsigned int)(m - at), MSG_DONTWAIT);
            if (rc > 0) {
                sent += rc;
                at += rc;
                continue;
            }
            /* The message at `at` was refused (rc < 0: errno says why); count it, go on. */
            if (rc == 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR) {
                dropped++;
            } else {
                errors++;
                last_errno = errno;
            }
            at++;
        }
        Py_END_ALLOW_THREADS
        for (k = 0; k < m; k++)
            PyBuffer_Release(&views[k]);
        done += m;
    }
    Py_DECREF(list);
    return Py_BuildValue("(nnni)", sent, dropped, errors, last_errno);
}

/* gre_data_run(packets, call_id, seq, acked, window) -> (payloads, acks, overruns): the
 * longest prefix of packets that are enhanced-GRE data packets (K and S set, A optional, no
 * other flag, version 1, protocol PPP) of call_id, whose length field matches, with more than
 * 16 octets in all, numbered seq, seq + 1, ... (mod 2**32): their payloads (copies), the ack
 * numbers of those that carry one, in order, and how many are numbered more than window past
 * acked (serially; acked < 0: none).  pptpkit.gre.packet.data_run is the twin. */
static PyObject *fast_gre_data_run(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *seq_obj = NULL, *payloads = NULL, *acks = NULL, *result = NULL;
    unsigned long call_id, expect, window;
    long long acked;
    Py_ssize_t i, npk, overruns = 0;
    (void)mod;
    if (check_nargs("gre_data_run", nargs, 5) < 0)
        return NULL;
    call_id = PyLong_AsUnsignedLong(args[1]);
    expect = PyLong_AsUnsignedLong(args[2]);
    acked = PyLong_AsLongLong(args[3]);
    window = PyLong_AsUnsignedLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (call_id > 0xFFFF || expect > 0xFFFFFFFFul || acked > 0xFFFFFFFFll || window > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "gre_data_run: argument out of range");
        return NULL;
    }
    seq_obj = PySequence_Fast(args[0], "packets must be a sequence");
    if (!seq_obj)
        return NULL;
    payloads = PyList_New(0);
    acks = PyList_New(0);
    if (!payloads || !acks)
        goto done;
    npk = PySequence_Fast_GET_SIZE(seq_obj);
    for (i = 0; i < npk; i++) {
        Py_buffer b;
        const uint8_t *d;
        Py_ssize_t n, hdr;
        unsigned int word;
        uint32_t seq, dist;
        PyObject *payload, *ack = NULL;
        int rc;
        if (get_buf(PySequence_Fast_GET_ITEM(seq_obj, i), &b, "packet") < 0)
            goto done;
        d = b.buf;
        n = b.len;
        if (n <= 16) {
            PyBuffer_Release(&b);
            break;
        }
        word = (unsigned int)d[0] << 8 | d[1];
        if (word == 0x3081)
            hdr = 16;
        else if (word == 0x3001)
            hdr = 12;
        else {
            PyBuffer_Release(&b);
            break;
        }
        seq = (uint32_t)d[8] << 24 | (uint32_t)d[9] << 16 | (uint32_t)d[10] << 8 | d[11];
        if (d[2] != 0x88 || d[3] != 0x0B || ((Py_ssize_t)d[4] << 8 | d[5]) != n - hdr ||
            ((unsigned long)d[6] << 8 | d[7]) != call_id || seq != (uint32_t)expect) {
            PyBuffer_Release(&b);
            break;
        }
        if (acked >= 0) {
            dist = seq - (uint32_t)acked;
            if (dist > window && dist < 0x80000000u)
                overruns++;
        }
        payload = PyBytes_FromStringAndSize((const char *)d + hdr, n - hdr);
        if (payload && hdr == 16) {
            ack = PyLong_FromUnsignedLong((unsigned long)((uint32_t)d[12] << 24 | (uint32_t)d[13] << 16 |
                                                          (uint32_t)d[14] << 8 | d[15]));
        }
        PyBuffer_Release(&b);
        if (!payload || (hdr == 16 && !ack)) {
            Py_XDECREF(payload);
            goto done;
        }
        rc = PyList_Append(payloads, payload);
        Py_DECREF(payload);
        if (ack) {
            if (rc == 0)
                rc = PyList_Append(acks, ack);
            Py_DECREF(ack);
        }
        if (rc < 0)
            goto done;
        expect = (expect + 1) & 0xFFFFFFFFul;
    }
    result = Py_BuildValue("(OOn)", payloads, acks, overruns);
done:
    Py_XDECREF(payloads);
    Py_XDECREF(acks);
    Py_DECREF(seq_obj);
    return result;
}

/* ipv4_from(packets, source) -> bool: whether every packet is IPv4 (version 4, at least the
 * 20-octet header) with source address `source` (4 octets): the receive path's source check of
 * a whole run.  pptpkit.io.link.ipv4_from is the twin. */
static PyObject *fast_ipv4_from(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer src;
    PyObject *seq;
    Py_ssize_t i, n;
    int ok = 1;
    (void)mod;
    if (check_nargs("ipv4_from", nargs, 2) < 0 || get_buf(args[1], &src, "source") < 0)
        return NULL;
    if (src.len != 4) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "ipv4_from: source must be 4 octets");
        return NULL;
    }
    seq = PySequence_Fast(args[0], "packets must be a sequence");
    if (!seq) {
        PyBuffer_Release(&src);
        return NULL;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n && ok; i++) {
        Py_buffer b;
        const uint8_t *d;
        if (get_buf(PySequence_Fast_GET_ITEM(seq, i), &b, "packet") < 0) {
            Py_DECREF(seq);
            PyBuffer_Release(&src);
            return NULL;
        }
        d = b.buf;
        ok = b.len >= 20 && d[0] >> 4 == 4 && memcmp(d + 12, src.buf, 4) == 0;
        PyBuffer_Release(&b);
    }
    Py_DECREF(seq);
    PyBuffer_Release(&src);
    return PyBool_FromLong(ok);
}

static PyObject *fast_parse_gre(PyObject *mod, PyObject *arg)
{
    Py_buffer d;
    Py_ssize_t ihl;
    long long key;
    (void)mod;
    if (get_buf(arg, &d, "datagram") < 0)
        return NULL;
    key = parse_datagram(d.buf, d.len, &ihl);
    PyBuffer_Release(&d);
    return Py_BuildValue("(Ln)", key, ihl);
}

static PyMethodDef module_methods[] = {
    {"parse_gre", (PyCFunction)fast_parse_gre, METH_O,
     "parse_gre(datagram) -> (routing key or reason code, IPv4 header length): recv_gre's parse"},
    {"gre_data_run", (PyCFunction)(void (*)(void))fast_gre_data_run, METH_FASTCALL,
     "gre_data_run(packets, call_id, seq, acked, window) -> (payloads, acks, overruns)"},
    {"ipv4_from", (PyCFunction)(void (*)(void))fast_ipv4_from, METH_FASTCALL,
     "ipv4_from(packets, source) -> whether every packet is IPv4 from source (4 octets)"},
    {"recv_gre", (PyCFunction)(void (*)(void))fast_recv_gre, METH_FASTCALL,
     "recv_gre(fd, max) -> [(routing key or reason code, GRE packet)]"},
    {"send_gre", (PyCFunction)(void (*)(void))fast_send_gre, METH_FASTCALL,
     "send_gre(fd, datagram, peer_ipv4_int, pktinfo_or_None)"},
    {"send_gre_many", (PyCFunction)(void (*)(void))fast_send_gre_many, METH_FASTCALL,
     "send_gre_many(fd, peer, pktinfo, call_id, seq, ack, frames) -> (sent, dropped, errors, errno)"},
    {"tso_split", (PyCFunction)(void (*)(void))fast_tso_split, METH_FASTCALL,
     "tso_split(packet, v6, ip_header_len, headers_len, mss) -> list of IP packets"},
    {"coalesce", (PyCFunction)(void (*)(void))fast_coalesce, METH_FASTCALL,
     "coalesce(queue, zero_header) -> (units, bad_checksum, passthrough, merged_out, segments_merged)"},
    {"csum", (PyCFunction)fast_csum, METH_O,
     "csum(data): folded ones-complement sum of data's big-endian 16-bit words."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "pptpkit.speedups._ext", "Compiled primitives of pptpkit's per-packet path.",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

/* libcrypto's RC4, if it has one that agrees with ours on a known answer (keystream of a
 * 5-octet key across a call boundary, as RFC 6229 lays it out). */
static void find_openssl_rc4(void)
{
    static const char *names[] = {"libcrypto.so.3", "libcrypto.so", NULL};
    static const uint8_t key[5] = {1, 2, 3, 4, 5};
    uint8_t zeros[64] = {0}, want[64], got[64];
    rc4_state own, ossl;
    void *lib = NULL;
    for (int k = 0; names[k] && !lib; k++)
        lib = dlopen(names[k], RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return;
    /* SHA-1 of the key change: libcrypto's uses the CPU's SHA instructions where there are
     * some (several times faster than the portable one below, about a tenth of a stateless
     * packet's cost); checked against the built-in one on a two-block message first. */
    ossl_sha1 = (ossl_sha1_fn)dlsym(lib, "SHA1");
    if (ossl_sha1) {
        uint8_t msg[112], a[20], b[20];
        for (int k = 0; k < (int)sizeof msg; k++)
            msg[k] = (uint8_t)(k * 7 + 1);
        sha1(msg, sizeof msg, a);
        if (ossl_sha1(msg, sizeof msg, b) != b || memcmp(a, b, sizeof a) != 0)
            ossl_sha1 = NULL;
    }
    ossl_set_key = (ossl_set_key_fn)dlsym(lib, "RC4_set_key");
    ossl_rc4 = (ossl_rc4_fn)dlsym(lib, "RC4");
    if (ossl_set_key && ossl_rc4) {
        own.ossl = 0;
        ossl.ossl = USE_OSSL_RC4;
        rc4_setup(&own, key, 5);
        rc4_setup(&ossl, key, 5);
        rc4_run(&own, zeros, want, 16);
        rc4_run(&own, zeros, want + 16, 48);
        rc4_run(&ossl, zeros, got, 16);
        rc4_run(&ossl, zeros, got + 16, 48);
        if (memcmp(want, got, sizeof want) == 0 && want[0] == 0xb2 && want[1] == 0x39)
            return; /* keep the library loaded for the life of the process */
    }
    ossl_set_key = NULL;
    ossl_rc4 = NULL;
    if (!ossl_sha1)
        dlclose(lib);
}

PyMODINIT_FUNC PyInit__ext(void)
{
    PyObject *m;
    find_openssl_rc4();
    if (PyType_Ready(&Rc4Type) < 0)
        return NULL;
    m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    Py_INCREF(&Rc4Type);
    if (PyModule_AddObject(m, "Rc4", (PyObject *)&Rc4Type) < 0) {
        Py_DECREF(&Rc4Type);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "RC4_IMPL", ossl_rc4 ? "openssl" : "builtin") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "SHA1_IMPL", ossl_sha1 ? "openssl" : "builtin") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
