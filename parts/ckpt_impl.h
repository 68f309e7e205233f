/* parts/ckpt_impl.h - checkpoint container (// >>checkpoints), included by
 * moemlora.h inside MOEMLORA_IMPLEMENTATION; never include it directly.
 *
 * A model-agnostic container of tagged sections, each either raw bytes or a
 * list of named float32 tensors. The byte layout is specified in
 * docs/FORMAT.md; the short version:
 *
 *   header   "MMLCKPT\0" | u32 version=1 | u32 0x01020304 | u32 nsec | u32 crc
 *   section  tag[4] | u32 kind (0 bytes, 1 tensors) | u64 len | payload | u32 crc
 *   tensors  u32 count, then per tensor: u16 name_len, name, u32 ndim,
 *            u64 shape[ndim], zero padding to 64 (relative to the payload
 *            start), float32 data
 *
 * All integers and floats are in the writer's byte order, guarded by the
 * marker. The header CRC covers the 20 bytes before it; a section CRC covers
 * its 16-byte section header and its payload, so every byte of a file is
 * under some CRC32C.
 *
 * Saving goes through the atomic writer (mml__afile_*): on any failure the
 * previous file at the path is untouched and no temporary is left. Opening
 * reads the whole file into memory and validates every length, count, shape
 * and CRC before anything is handed out: each length field is checked against
 * the bytes that remain before it is used, and every allocation is bounded by
 * the file size. */

#if defined(__GNUC__) || defined(__clang__)
#define MML__CKPT_FN static __attribute__((unused))
#else
#define MML__CKPT_FN static
#endif

#define MML__CKPT_VERSION 1u
#define MML__CKPT_ENDIAN 0x01020304u
#define MML__CKPT_ENDIAN_SWAPPED 0x04030201u
#define MML__CKPT_HDR 24u          /* magic 8, version, endian, nsec, crc */
#define MML__CKPT_SEC_HDR 16u      /* tag 4, kind 4, payload length 8 */
#define MML__CKPT_SEC_MIN 20u      /* section header + crc, empty payload */
#define MML__CKPT_MAX_SECTIONS 1024u
#define MML__CKPT_MAX_NAME 255u
#define MML__CKPT_MAX_DIM 2147483648ull /* 2^31 */
#define MML__CKPT_ALIGN 64u
/* u16 name length + 1 name byte + u32 ndim + one u64 dim */
#define MML__CKPT_TENSOR_MIN 15u

enum { MML__CKPT_BYTES = 0, MML__CKPT_TENSORS = 1 };

static const char mml__ckpt_magic[8] = {'M', 'M', 'L', 'C', 'K', 'P', 'T', '\0'};

/* One float32 tensor handed to mml__ckpt_save; data holds prod(shape) floats. */
typedef struct mml__ckpt_tensor {
    const char *name;   /* 1..255 printable ASCII bytes, unique in its section */
    int32_t ndim;       /* 1..4 */
    int64_t shape[4];   /* each 0..2^31 */
    const float *data;
} mml__ckpt_tensor;

/* A tensor section has tensors != NULL (ntensors may be 0); otherwise it is a
 * byte section of nbytes bytes. Tags are 4 printable ASCII bytes, unique. */
typedef struct mml__ckpt_section {
    char tag[4];
    const void *bytes;
    uint64_t nbytes;
    const mml__ckpt_tensor *tensors;
    int32_t ntensors;
} mml__ckpt_section;

/* A validated tensor of an open checkpoint. */
typedef struct mml__ckpt_tinfo {
    const char *name;   /* NUL-terminated, in the section's name pool */
    uint64_t name_off;  /* offset of the name bytes in the image (during parse) */
    uint32_t name_len;
    int32_t ndim;
    int64_t shape[4];
    uint64_t nelem;
    uint64_t data_off;  /* offset of the float data in the image */
} mml__ckpt_tinfo;

typedef struct mml__ckpt_sec {
    char tag[4];
    uint32_t kind;
    uint64_t off, len;     /* payload within the image */
    int32_t ntensors;      /* -1 for a byte section */
    mml__ckpt_tinfo *t;    /* sorted by name */
    char *names;
} mml__ckpt_sec;

typedef struct mml__ckpt {
    char *label;           /* file path or caller's label, used in every error */
    unsigned char *img;    /* the whole file */
    size_t len;
    uint32_t nsec;
    mml__ckpt_sec *sec;
} mml__ckpt;

// >>checkpoints: CRC32C -------------------------------------------------------

/* Castagnoli polynomial, reflected (0x82F63B78). */
static const uint32_t mml__crc32c_table[256] = {
    0x00000000u, 0xf26b8303u, 0xe13b70f7u, 0x1350f3f4u, 0xc79a971fu, 0x35f1141cu,
    0x26a1e7e8u, 0xd4ca64ebu, 0x8ad958cfu, 0x78b2dbccu, 0x6be22838u, 0x9989ab3bu,
    0x4d43cfd0u, 0xbf284cd3u, 0xac78bf27u, 0x5e133c24u, 0x105ec76fu, 0xe235446cu,
    0xf165b798u, 0x030e349bu, 0xd7c45070u, 0x25afd373u, 0x36ff2087u, 0xc494a384u,
    0x9a879fa0u, 0x68ec1ca3u, 0x7bbcef57u, 0x89d76c54u, 0x5d1d08bfu, 0xaf768bbcu,
    0xbc267848u, 0x4e4dfb4bu, 0x20bd8edeu, 0xd2d60dddu, 0xc186fe29u, 0x33ed7d2au,
    0xe72719c1u, 0x154c9ac2u, 0x061c6936u, 0xf477ea35u, 0xaa64d611u, 0x580f5512u,
    0x4b5fa6e6u, 0xb93425e5u, 0x6dfe410eu, 0x9f95c20du, 0x8cc531f9u, 0x7eaeb2fau,
    0x30e349b1u, 0xc288cab2u, 0xd1d83946u, 0x23b3ba45u, 0xf779deaeu, 0x05125dadu,
    0x1642ae59u, 0xe4292d5au, 0xba3a117eu, 0x4851927du, 0x5b016189u, 0xa96ae28au,
    0x7da08661u, 0x8fcb0562u, 0x9c9bf696u, 0x6ef07595u, 0x417b1dbcu, 0xb3109ebfu,
    0xa0406d4bu, 0x522bee48u, 0x86e18aa3u, 0x748a09a0u, 0x67dafa54u, 0x95b17957u,
    0xcba24573u, 0x39c9c670u, 0x2a993584u, 0xd8f2b687u, 0x0c38d26cu, 0xfe53516fu,
    0xed03a29bu, 0x1f682198u, 0x5125dad3u, 0xa34e59d0u, 0xb01eaa24u, 0x42752927u,
    0x96bf4dccu, 0x64d4cecfu, 0x77843d3bu, 0x85efbe38u, 0xdbfc821cu, 0x2997011fu,
    0x3ac7f2ebu, 0xc8ac71e8u, 0x1c661503u, 0xee0d9600u, 0xfd5d65f4u, 0x0f36e6f7u,
    0x61c69362u, 0x93ad1061u, 0x80fde395u, 0x72966096u, 0xa65c047du, 0x5437877eu,
    0x4767748au, 0xb50cf789u, 0xeb1fcbadu, 0x197448aeu, 0x0a24bb5au, 0xf84f3859u,
    0x2c855cb2u, 0xdeeedfb1u, 0xcdbe2c45u, 0x3fd5af46u, 0x7198540du, 0x83f3d70eu,
    0x90a324fau, 0x62c8a7f9u, 0xb602c312u, 0x44694011u, 0x5739b3e5u, 0xa55230e6u,
    0xfb410cc2u, 0x092a8fc1u, 0x1a7a7c35u, 0xe811ff36u, 0x3cdb9bddu, 0xceb018deu,
    0xdde0eb2au, 0x2f8b6829u, 0x82f63b78u, 0x709db87bu, 0x63cd4b8fu, 0x91a6c88cu,
    0x456cac67u, 0xb7072f64u, 0xa457dc90u, 0x563c5f93u, 0x082f63b7u, 0xfa44e0b4u,
    0xe9141340u, 0x1b7f9043u, 0xcfb5f4a8u, 0x3dde77abu, 0x2e8e845fu, 0xdce5075cu,
    0x92a8fc17u, 0x60c37f14u, 0x73938ce0u, 0x81f80fe3u, 0x55326b08u, 0xa759e80bu,
    0xb4091bffu, 0x466298fcu, 0x1871a4d8u, 0xea1a27dbu, 0xf94ad42fu, 0x0b21572cu,
    0xdfeb33c7u, 0x2d80b0c4u, 0x3ed04330u, 0xccbbc033u, 0xa24bb5a6u, 0x502036a5u,
    0x4370c551u, 0xb11b4652u, 0x65d122b9u, 0x97baa1bau, 0x84ea524eu, 0x7681d14du,
    0x2892ed69u, 0xdaf96e6au, 0xc9a99d9eu, 0x3bc21e9du, 0xef087a76u, 0x1d63f975u,
    0x0e330a81u, 0xfc588982u, 0xb21572c9u, 0x407ef1cau, 0x532e023eu, 0xa145813du,
    0x758fe5d6u, 0x87e466d5u, 0x94b49521u, 0x66df1622u, 0x38cc2a06u, 0xcaa7a905u,
    0xd9f75af1u, 0x2b9cd9f2u, 0xff56bd19u, 0x0d3d3e1au, 0x1e6dcdeeu, 0xec064eedu,
    0xc38d26c4u, 0x31e6a5c7u, 0x22b65633u, 0xd0ddd530u, 0x0417b1dbu, 0xf67c32d8u,
    0xe52cc12cu, 0x1747422fu, 0x49547e0bu, 0xbb3ffd08u, 0xa86f0efcu, 0x5a048dffu,
    0x8ecee914u, 0x7ca56a17u, 0x6ff599e3u, 0x9d9e1ae0u, 0xd3d3e1abu, 0x21b862a8u,
    0x32e8915cu, 0xc083125fu, 0x144976b4u, 0xe622f5b7u, 0xf5720643u, 0x07198540u,
    0x590ab964u, 0xab613a67u, 0xb831c993u, 0x4a5a4a90u, 0x9e902e7bu, 0x6cfbad78u,
    0x7fab5e8cu, 0x8dc0dd8fu, 0xe330a81au, 0x115b2b19u, 0x020bd8edu, 0xf0605beeu,
    0x24aa3f05u, 0xd6c1bc06u, 0xc5914ff2u, 0x37faccf1u, 0x69e9f0d5u, 0x9b8273d6u,
    0x88d28022u, 0x7ab90321u, 0xae7367cau, 0x5c18e4c9u, 0x4f48173du, 0xbd23943eu,
    0xf36e6f75u, 0x0105ec76u, 0x12551f82u, 0xe03e9c81u, 0x34f4f86au, 0xc69f7b69u,
    0xd5cf889du, 0x27a40b9eu, 0x79b737bau, 0x8bdcb4b9u, 0x988c474du, 0x6ae7c44eu,
    0xbe2da0a5u, 0x4c4623a6u, 0x5f16d052u, 0xad7d5351u,
};

/* Byte at a time: the portable path and the reference for the SSE4.2 one. */
MML__CKPT_FN uint32_t mml__crc32c_sw(uint32_t crc, const void *buf, size_t n) {
    const unsigned char *p = (const unsigned char *)buf;
    crc = ~crc;
    while (n--) crc = mml__crc32c_table[(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MML__CRC32C_HW 1
#include <cpuid.h>
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) MML__CKPT_FN uint32_t mml__crc32c_hw(uint32_t crc,
                                                                       const void *buf,
                                                                       size_t n) {
    const unsigned char *p = (const unsigned char *)buf;
    uint64_t c = (uint32_t)~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
    }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

/* 1 if the CPU has the SSE4.2 crc32 instruction; cpuid runs once (it is slow
 * under virtualisation) and the answer is cached. */
MML__CKPT_FN int mml__crc32c_have_hw(void) {
    static int state; /* 0 unknown, 1 no, 2 yes */
    int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (!s) {
        unsigned a, b, c, d;
        s = (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2)) ? 2 : 1;
        __atomic_store_n(&state, s, __ATOMIC_RELAXED);
    }
    return s == 2;
}
#else
MML__CKPT_FN int mml__crc32c_have_hw(void) { return 0; }
#endif

/* CRC32C, chainable: mml__crc32c(mml__crc32c(0, a, n), b, m) is the CRC of a
 * followed by b. crc32c("123456789") = 0xE3069283. */
MML__CKPT_FN uint32_t mml__crc32c(uint32_t crc, const void *buf, size_t n) {
#ifdef MML__CRC32C_HW
    if (mml__crc32c_have_hw()) return mml__crc32c_hw(crc, buf, n);
#endif
    return mml__crc32c_sw(crc, buf, n);
}

// >>checkpoints: small helpers -------------------------------------------------

static uint16_t mml__ckpt_u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t mml__ckpt_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t mml__ckpt_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Zero bytes that bring offset q (from the payload start) to a multiple of 64. */
static uint64_t mml__ckpt_pad(uint64_t q) { return (MML__CKPT_ALIGN - q % MML__CKPT_ALIGN) % MML__CKPT_ALIGN; }

static int mml__ckpt_printable(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7E) return 0;
    return 1;
}

/* Copies up to 255 bytes of p into out as printable text ('?' for the rest),
 * so messages about corrupt names and tags stay readable. */
static const char *mml__ckpt_san(char out[256], const void *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;
    if (n > 255) n = 255;
    for (size_t i = 0; i < n; i++) out[i] = (s[i] >= 0x20 && s[i] <= 0x7E) ? (char)s[i] : '?';
    out[n] = 0;
    return out;
}

/* "[3, 4]" */
static const char *mml__ckpt_fmt_shape(char out[128], int32_t ndim, const int64_t *shape) {
    size_t k = 0;
    out[k++] = '[';
    for (int32_t i = 0; i < ndim && i < 4; i++)
        k += (size_t)snprintf(out + k, 128 - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    snprintf(out + k, 128 - k, "]");
    return out;
}

/* A zero dim makes the tensor empty whatever the other dims are. */
static int mml__ckpt_has_zero(int32_t ndim, const int64_t *shape) {
    for (int32_t k = 0; k < ndim; k++)
        if (shape[k] == 0) return 1;
    return 0;
}

static int mml__ckpt_tcmp(const void *a, const void *b) {
    return strcmp(((const mml__ckpt_tinfo *)a)->name, ((const mml__ckpt_tinfo *)b)->name);
}

// >>checkpoints: save ---------------------------------------------------------

/* Bytes of a tensor's entry (name, shape, padding, data) that starts q bytes
 * into its payload; the caller has validated the tensor. */
static uint64_t mml__ckpt_tensor_entry(uint64_t q, const mml__ckpt_tensor *t, uint64_t nelem) {
    uint64_t h = 2 + strlen(t->name) + 4 + 8 * (uint64_t)t->ndim;
    return h + mml__ckpt_pad(q + h) + 4 * nelem;
}

/* Checks one tensor before anything is written; *nelem = its element count. */
static mml_status mml__ckpt_check_tensor(const char *path, const char *tag,
                                         const mml__ckpt_tensor *t, uint64_t *nelem) {
    size_t nl = t->name ? strlen(t->name) : 0;
    if (nl == 0 || nl > MML__CKPT_MAX_NAME || !mml__ckpt_printable((const unsigned char *)t->name, nl))
        return mml__fail(MML_ERR_ARG, "%s: section %.4s: tensor name must be 1..255 printable ASCII bytes",
                         path, tag);
    if (t->ndim < 1 || t->ndim > 4)
        return mml__fail(MML_ERR_ARG, "%s: section %.4s: tensor '%s': ndim %d out of range 1..4", path,
                         tag, t->name, (int)t->ndim);
    uint64_t n = mml__ckpt_has_zero(t->ndim, t->shape) ? 0 : 1;
    for (int32_t k = 0; k < t->ndim; k++) {
        if (t->shape[k] < 0 || (uint64_t)t->shape[k] > MML__CKPT_MAX_DIM ||
            (n && !mml__mul_ok(n, (uint64_t)t->shape[k], SIZE_MAX / 8, &n)))
            return mml__fail(MML_ERR_ARG, "%s: section %.4s: tensor '%s': dim %d = %lld out of range",
                             path, tag, t->name, (int)k, (long long)t->shape[k]);
    }
    if (n && !t->data)
        return mml__fail(MML_ERR_ARG, "%s: section %.4s: tensor '%s': data is NULL", path, tag, t->name);
    *nelem = n;
    return MML_OK;
}

/* Validates a section and returns its payload length in *plen. */
static mml_status mml__ckpt_check_section(const char *path, const mml__ckpt_section *s,
                                          uint64_t *plen) {
    const char *tag = s->tag;
    if (!mml__ckpt_printable((const unsigned char *)tag, 4))
        return mml__fail(MML_ERR_ARG, "%s: section tags must be 4 printable ASCII bytes", path);
    if (!s->tensors) {
        if (s->ntensors || (s->nbytes && !s->bytes) || s->nbytes > SIZE_MAX / 4)
            return mml__fail(MML_ERR_ARG, "%s: section %.4s: bad byte section", path, tag);
        *plen = s->nbytes;
        return MML_OK;
    }
    if (s->bytes || s->nbytes || s->ntensors < 0)
        return mml__fail(MML_ERR_ARG, "%s: section %.4s: give either bytes or tensors", path, tag);
    uint64_t q = 4;
    for (int32_t i = 0; i < s->ntensors; i++) {
        const mml__ckpt_tensor *t = &s->tensors[i];
        uint64_t n = 0;
        mml_status st = mml__ckpt_check_tensor(path, tag, t, &n);
        if (st) return st;
        for (int32_t j = 0; j < i; j++)
            if (strcmp(s->tensors[j].name, t->name) == 0)
                return mml__fail(MML_ERR_ARG, "%s: section %.4s: duplicate tensor name '%s'", path, tag,
                                 t->name);
        q += mml__ckpt_tensor_entry(q, t, n);
        if (q > SIZE_MAX / 4)
            return mml__fail(MML_ERR_ARG, "%s: section %.4s: too large", path, tag);
    }
    *plen = q;
    return MML_OK;
}

static mml_status mml__ckpt_check_all(const char *path, const mml__ckpt_section *secs, int nsec) {
    if (!path) return mml__fail(MML_ERR_ARG, "checkpoint save: path is NULL");
    if (nsec < 0 || (uint32_t)nsec > MML__CKPT_MAX_SECTIONS || (nsec && !secs))
        return mml__fail(MML_ERR_ARG, "%s: section count %d out of range 0..%u", path, nsec,
                         MML__CKPT_MAX_SECTIONS);
    for (int i = 0; i < nsec; i++) {
        uint64_t plen = 0;
        mml_status st = mml__ckpt_check_section(path, &secs[i], &plen);
        if (st) return st;
        for (int j = 0; j < i; j++)
            if (memcmp(secs[j].tag, secs[i].tag, 4) == 0)
                return mml__fail(MML_ERR_ARG, "%s: duplicate section %.4s", path, secs[i].tag);
    }
    return MML_OK;
}

/* Payload length of a validated section. */
static uint64_t mml__ckpt_payload_len(const mml__ckpt_section *s) {
    if (!s->tensors) return s->nbytes;
    uint64_t q = 4;
    for (int32_t i = 0; i < s->ntensors; i++) {
        uint64_t n = 1;
        for (int32_t k = 0; k < s->tensors[i].ndim; k++) n *= (uint64_t)s->tensors[i].shape[k];
        q += mml__ckpt_tensor_entry(q, &s->tensors[i], n);
    }
    return q;
}

/* Writes n bytes and folds them into *crc. */
static mml_status mml__ckpt_put(mml__afile *f, uint32_t *crc, const void *p, size_t n) {
    *crc = mml__crc32c(*crc, p, n);
    return mml__afile_write(f, p, n);
}

static mml_status mml__ckpt_write_tensors(mml__afile *f, uint32_t *crc, const mml__ckpt_section *s) {
    unsigned char h[2 + MML__CKPT_MAX_NAME + 4 + 32 + MML__CKPT_ALIGN];
    uint32_t cnt = (uint32_t)s->ntensors;
    mml_status st = mml__ckpt_put(f, crc, &cnt, 4);
    uint64_t q = 4;
    for (int32_t i = 0; i < s->ntensors && !st; i++) {
        const mml__ckpt_tensor *t = &s->tensors[i];
        uint16_t nl = (uint16_t)strlen(t->name);
        uint32_t nd = (uint32_t)t->ndim;
        uint64_t n = 1;
        size_t k = 0;
        memcpy(h + k, &nl, 2), k += 2;
        memcpy(h + k, t->name, nl), k += nl;
        memcpy(h + k, &nd, 4), k += 4;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v = (uint64_t)t->shape[d];
            memcpy(h + k, &v, 8), k += 8;
            n *= v;
        }
        uint64_t pad = mml__ckpt_pad(q + k);
        memset(h + k, 0, (size_t)pad), k += (size_t)pad;
        q += k + 4 * n;
        st = mml__ckpt_put(f, crc, h, k);
        if (!st && n) st = mml__ckpt_put(f, crc, t->data, (size_t)(4 * n));
    }
    return st;
}

static mml_status mml__ckpt_write_all(mml__afile *f, const mml__ckpt_section *secs, int nsec) {
    unsigned char h[MML__CKPT_HDR];
    uint32_t v[3] = {MML__CKPT_VERSION, MML__CKPT_ENDIAN, (uint32_t)nsec};
    memcpy(h, mml__ckpt_magic, 8);
    memcpy(h + 8, v, 12);
    uint32_t crc = mml__crc32c(0, h, 20);
    memcpy(h + 20, &crc, 4);
    mml_status st = mml__afile_write(f, h, sizeof h);
    for (int i = 0; i < nsec && !st; i++) {
        const mml__ckpt_section *s = &secs[i];
        unsigned char sh[MML__CKPT_SEC_HDR];
        uint32_t kind = s->tensors ? MML__CKPT_TENSORS : MML__CKPT_BYTES;
        uint64_t plen = mml__ckpt_payload_len(s);
        memcpy(sh, s->tag, 4);
        memcpy(sh + 4, &kind, 4);
        memcpy(sh + 8, &plen, 8);
        crc = 0;
        st = mml__ckpt_put(f, &crc, sh, sizeof sh);
        if (st) break;
        if (kind == MML__CKPT_TENSORS) st = mml__ckpt_write_tensors(f, &crc, s);
        else if (s->nbytes) st = mml__ckpt_put(f, &crc, s->bytes, (size_t)s->nbytes);
        if (!st) st = mml__afile_write(f, &crc, 4);
    }
    return st;
}

/* Rewords a write failure so the caller learns the old file is still there. */
static mml_status mml__ckpt_save_failed(const char *path, mml_status st) {
    char why[sizeof mml__errbuf];
    snprintf(why, sizeof why, "%s", mml_last_error());
    return mml__fail(st, "%s: checkpoint not saved (the previous file is untouched): %s", path, why);
}

/* Writes the sections to path atomically. */
MML__CKPT_FN mml_status mml__ckpt_save(const char *path, const mml__ckpt_section *secs, int nsec) {
    mml_status st = mml__ckpt_check_all(path, secs, nsec);
    if (st) return st;
    /* The writer holds a 64 KiB buffer: keep it off small thread stacks. */
    mml__afile *f = (mml__afile *)mml__alloc(sizeof *f);
    if (!f) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", path);
    st = mml__afile_open(f, path);
    if (!st) {
        st = mml__ckpt_write_all(f, secs, nsec);
        if (st) mml__afile_abort(f);
        else st = mml__afile_commit(f);
    }
    mml__free(f);
    return st ? mml__ckpt_save_failed(path, st) : MML_OK;
}

// >>checkpoints: open and validate ----------------------------------------------

/* Checks magic, byte order, version and header CRC; *nsec = section count. */
static mml_status mml__ckpt_parse_header(const mml__ckpt *c, const unsigned char *b, size_t len,
                                         uint32_t *nsec) {
    const char *L = c->label;
    size_t m = len < 8 ? len : 8;
    if (m && memcmp(b, mml__ckpt_magic, m) != 0)
        return mml__fail(MML_ERR_FORMAT, "%s: not a moemlora checkpoint (bad magic)", L);
    if (len < MML__CKPT_HDR)
        return mml__fail(MML_ERR_FORMAT, "%s: truncated at byte %zu (the file header is %u bytes)", L,
                         len, MML__CKPT_HDR);
    uint32_t version = mml__ckpt_u32(b + 8), endian = mml__ckpt_u32(b + 12);
    if (endian == MML__CKPT_ENDIAN_SWAPPED)
        return mml__fail(MML_ERR_FORMAT, "%s: written on a machine of other byte order", L);
    if (endian != MML__CKPT_ENDIAN)
        return mml__fail(MML_ERR_FORMAT, "%s: corrupt header: byte-order marker 0x%08x", L,
                         (unsigned)endian);
    if (version > MML__CKPT_VERSION)
        return mml__fail(MML_ERR_FORMAT, "%s: format version %u is newer than this library's %u", L,
                         (unsigned)version, MML__CKPT_VERSION);
    if (version == 0) return mml__fail(MML_ERR_FORMAT, "%s: corrupt header: format version 0", L);
    uint32_t stored = mml__ckpt_u32(b + 20), crc = mml__crc32c(0, b, 20);
    if (stored != crc)
        return mml__fail(MML_ERR_FORMAT, "%s: header CRC mismatch (stored 0x%08x, computed 0x%08x)", L,
                         (unsigned)stored, (unsigned)crc);
    *nsec = mml__ckpt_u32(b + 16);
    if (*nsec > MML__CKPT_MAX_SECTIONS)
        return mml__fail(MML_ERR_FORMAT, "%s: section count %u is absurd (at most %u)", L,
                         (unsigned)*nsec, MML__CKPT_MAX_SECTIONS);
    if (*nsec > (len - MML__CKPT_HDR) / MML__CKPT_SEC_MIN)
        return mml__fail(MML_ERR_FORMAT, "%s: truncated at byte %zu: the header declares %u sections, more than fit", L, len,
                         (unsigned)*nsec);
    return MML_OK;
}

/* Reads the fixed part of tensor i at payload offset *q (name, ndim, shape,
 * padding); every length is checked against the n bytes of payload p. */
static mml_status mml__ckpt_parse_thead(const mml__ckpt *c, const char *tag, const unsigned char *p,
                                        uint64_t n, uint64_t *q, uint32_t i, mml__ckpt_tinfo *t) {
    const char *L = c->label;
    char nm[256];
    if (n - *q < 2)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor %u: name length past the end of the payload",
                         L, tag, (unsigned)i);
    uint32_t nl = mml__ckpt_u16(p + *q);
    *q += 2;
    if (nl > n - *q)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor %u: name length %u runs past the end of the payload",
                         L, tag, (unsigned)i, (unsigned)nl);
    if (nl == 0 || nl > MML__CKPT_MAX_NAME || !mml__ckpt_printable(p + *q, nl))
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor %u: bad name '%s' (%u bytes)", L, tag,
                         (unsigned)i, mml__ckpt_san(nm, p + *q, nl), (unsigned)nl);
    mml__ckpt_san(nm, p + *q, nl);
    t->name_off = *q;
    t->name_len = nl;
    *q += nl;
    if (n - *q < 4)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': ndim past the end of the payload",
                         L, tag, nm);
    uint32_t nd = mml__ckpt_u32(p + *q);
    *q += 4;
    if (nd < 1 || nd > 4)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': ndim %u out of range 1..4", L, tag,
                         nm, (unsigned)nd);
    if (n - *q < 8 * (uint64_t)nd)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': shape past the end of the payload",
                         L, tag, nm);
    t->ndim = (int32_t)nd;
    for (uint32_t k = 0; k < nd; k++, *q += 8) {
        uint64_t d = mml__ckpt_u64(p + *q);
        if (d > MML__CKPT_MAX_DIM)
            return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': dim %u = %llu exceeds 2^31", L,
                             tag, nm, (unsigned)k, (unsigned long long)d);
        t->shape[k] = (int64_t)d;
    }
    uint64_t pad = mml__ckpt_pad(*q);
    if (n - *q < pad)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': padding past the end of the payload",
                         L, tag, nm);
    for (uint64_t k = 0; k < pad; k++)
        if (p[*q + k])
            return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': nonzero padding", L, tag, nm);
    *q += pad;
    return MML_OK;
}

/* Tensor i: header, then an element count checked against what is left. */
static mml_status mml__ckpt_parse_tensor(const mml__ckpt *c, const char *tag, const unsigned char *p,
                                         uint64_t n, uint64_t *q, uint32_t i, mml__ckpt_tinfo *t) {
    mml_status st = mml__ckpt_parse_thead(c, tag, p, n, q, i, t);
    if (st) return st;
    uint64_t limit = (n - *q) / 4, ne = mml__ckpt_has_zero(t->ndim, t->shape) ? 0 : 1;
    for (int32_t k = 0; k < t->ndim && ne; k++) {
        if (!mml__mul_ok(ne, (uint64_t)t->shape[k], limit, &ne)) {
            char nm[256], sh[128];
            return mml__fail(MML_ERR_FORMAT,
                             "%s: section %s: tensor '%s': shape %s does not fit the %llu bytes left in the payload",
                             c->label, tag, mml__ckpt_san(nm, p + t->name_off, t->name_len),
                             mml__ckpt_fmt_shape(sh, t->ndim, t->shape), (unsigned long long)(n - *q));
        }
    }
    t->nelem = ne;
    t->data_off = *q;
    *q += 4 * ne;
    return MML_OK;
}

/* Parses a tensor section whose CRC has been checked: entries, exact fit,
 * then a name pool, sorted by name for lookup, with duplicates rejected. */
static mml_status mml__ckpt_parse_tensors(const mml__ckpt *c, const unsigned char *b, mml__ckpt_sec *s) {
    char tag[256], nm[256];
    const unsigned char *p = b + s->off;
    uint64_t n = s->len, q = 4, pool = 0;
    mml__ckpt_san(tag, s->tag, 4);
    if (n < 4)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor count past the end of the payload",
                         c->label, tag);
    uint32_t cnt = mml__ckpt_u32(p);
    if (cnt > (n - 4) / MML__CKPT_TENSOR_MIN)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor count %u does not fit the payload (%llu bytes)",
                         c->label, tag, (unsigned)cnt, (unsigned long long)n);
    s->t = (mml__ckpt_tinfo *)mml__alloc((size_t)cnt * sizeof *s->t);
    if (!s->t) return mml__fail(MML_ERR_NOMEM, "%s: section %s: out of memory", c->label, tag);
    s->ntensors = (int32_t)cnt;
    for (uint32_t i = 0; i < cnt; i++) {
        mml_status st = mml__ckpt_parse_tensor(c, tag, p, n, &q, i, &s->t[i]);
        if (st) return st;
        pool += s->t[i].name_len + 1;
        s->t[i].data_off += s->off;
    }
    if (q != n)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: %llu trailing bytes after the last tensor",
                         c->label, tag, (unsigned long long)(n - q));
    s->names = (char *)mml__alloc((size_t)pool);
    if (!s->names) return mml__fail(MML_ERR_NOMEM, "%s: section %s: out of memory", c->label, tag);
    for (uint32_t i = 0, k = 0; i < cnt; k += s->t[i].name_len + 1, i++) {
        memcpy(s->names + k, p + s->t[i].name_off, s->t[i].name_len);
        s->t[i].name = s->names + k;
    }
    if (cnt > 1) qsort(s->t, cnt, sizeof *s->t, mml__ckpt_tcmp);
    for (uint32_t i = 1; i < cnt; i++)
        if (strcmp(s->t[i - 1].name, s->t[i].name) == 0)
            return mml__fail(MML_ERR_FORMAT, "%s: section %s: duplicate tensor name '%s'", c->label, tag,
                             mml__ckpt_san(nm, s->t[i].name, s->t[i].name_len));
    return MML_OK;
}

/* Section i at byte *pos: lengths against the file end, then CRC, then the
 * contents (tag, kind, uniqueness, tensor entries). */
static mml_status mml__ckpt_parse_section(mml__ckpt *c, const unsigned char *b, size_t len,
                                          size_t *pos, uint32_t i) {
    const char *L = c->label;
    char tag[256];
    mml__ckpt_sec *s = &c->sec[i];
    size_t rem = len - *pos;
    if (rem < MML__CKPT_SEC_HDR)
        return mml__fail(MML_ERR_FORMAT, "%s: truncated at byte %zu: section %u header incomplete", L, len,
                         (unsigned)i);
    const unsigned char *h = b + *pos;
    uint64_t plen = mml__ckpt_u64(h + 8);
    mml__ckpt_san(tag, h, 4);
    if (plen > rem - MML__CKPT_SEC_HDR || rem - MML__CKPT_SEC_HDR - plen < 4)
        return mml__fail(MML_ERR_FORMAT,
                         "%s: truncated at byte %zu: section %s at byte %zu declares a %llu-byte payload", L,
                         len, tag, *pos, (unsigned long long)plen);
    uint32_t stored = mml__ckpt_u32(h + MML__CKPT_SEC_HDR + plen);
    uint32_t crc = mml__crc32c(mml__crc32c(0, h, MML__CKPT_SEC_HDR), h + MML__CKPT_SEC_HDR, (size_t)plen);
    if (stored != crc)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: CRC mismatch (stored 0x%08x, computed 0x%08x)", L,
                         tag, (unsigned)stored, (unsigned)crc);
    memcpy(s->tag, h, 4);
    s->kind = mml__ckpt_u32(h + 4);
    s->off = *pos + MML__CKPT_SEC_HDR;
    s->len = plen;
    s->ntensors = -1;
    if (!mml__ckpt_printable(h, 4))
        return mml__fail(MML_ERR_FORMAT, "%s: section %u: tag '%s' is not printable ASCII", L, (unsigned)i, tag);
    for (uint32_t j = 0; j < i; j++)
        if (memcmp(c->sec[j].tag, s->tag, 4) == 0)
            return mml__fail(MML_ERR_FORMAT, "%s: duplicate section %s", L, tag);
    if (s->kind != MML__CKPT_BYTES && s->kind != MML__CKPT_TENSORS)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: unknown kind %u", L, tag, (unsigned)s->kind);
    *pos += MML__CKPT_SEC_HDR + (size_t)plen + 4;
    return s->kind == MML__CKPT_TENSORS ? mml__ckpt_parse_tensors(c, b, s) : MML_OK;
}

/* Validates the whole image b[0..len) into c (offsets only, so the caller may
 * move the image afterwards). */
/* Opaque to interprocedural optimisation: given a constant buffer, GCC 12
 * would otherwise warn (-Warray-bounds) about reads on paths that the length
 * checks have already ruled out. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noipa))
#endif
static mml_status mml__ckpt_parse(mml__ckpt *c, const unsigned char *b, size_t len) {
    uint32_t nsec = 0;
    mml_status st = mml__ckpt_parse_header(c, b, len, &nsec);
    if (st) return st;
    c->sec = (mml__ckpt_sec *)mml__alloc((size_t)nsec * sizeof *c->sec);
    if (!c->sec) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", c->label);
    c->nsec = nsec;
    size_t pos = MML__CKPT_HDR;
    for (uint32_t i = 0; i < nsec; i++)
        if ((st = mml__ckpt_parse_section(c, b, len, &pos, i)) != MML_OK) return st;
    if (pos != len)
        return mml__fail(MML_ERR_FORMAT, "%s: %zu bytes of trailing garbage after the last section (at byte %zu)",
                         c->label, len - pos, pos);
    return MML_OK;
}

MML__CKPT_FN void mml__ckpt_close(mml__ckpt *c) {
    if (!c) return;
    for (uint32_t i = 0; c->sec && i < c->nsec; i++) {
        mml__free(c->sec[i].t);
        mml__free(c->sec[i].names);
    }
    mml__free(c->sec);
    mml__free(c->img);
    mml__free(c->label);
    mml__free(c);
}

static mml__ckpt *mml__ckpt_new(const char *label) {
    mml__ckpt *c = (mml__ckpt *)mml__alloc(sizeof *c);
    size_t n = strlen(label);
    if (c) c->label = (char *)mml__alloc(n + 1);
    if (!c || !c->label) {
        mml__ckpt_close(c);
        mml__fail(MML_ERR_NOMEM, "%s: out of memory", label);
        return NULL;
    }
    memcpy(c->label, label, n);
    return c;
}

/* Validates len bytes at buf (label names them in errors) and keeps a copy.
 * Parsing the caller's buffer in place keeps sanitizers' bounds exact. */
MML__CKPT_FN mml_status mml__ckpt_open_mem(const void *buf, size_t len, const char *label,
                                           mml__ckpt **out) {
    if (!out) return mml__fail(MML_ERR_ARG, "checkpoint open: out is NULL");
    *out = NULL;
    if (!label) label = "(memory)";
    if (!buf && len) return mml__fail(MML_ERR_ARG, "%s: buffer is NULL", label);
    mml__ckpt *c = mml__ckpt_new(label);
    if (!c) return MML_ERR_NOMEM;
    mml_status st = mml__ckpt_parse(c, (const unsigned char *)buf, len);
    if (!st && !(c->img = (unsigned char *)mml__alloc(len)))
        st = mml__fail(MML_ERR_NOMEM, "%s: out of memory (%zu bytes)", label, len);
    if (st) {
        mml__ckpt_close(c);
        return st;
    }
    if (len) memcpy(c->img, buf, len);
    c->len = len;
    *out = c;
    return MML_OK;
}

/* Reads all of f (size bytes) into an aligned buffer. */
static mml_status mml__ckpt_slurp(FILE *f, const char *path, unsigned char **img, size_t *len) {
    long end;
    if (fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        return mml__fail(MML_ERR_IO, "%s: cannot determine the file size: %s", path, strerror(errno));
    *len = (size_t)end;
    *img = (unsigned char *)mml__alloc(*len);
    if (!*img) return mml__fail(MML_ERR_NOMEM, "%s: out of memory (%zu bytes)", path, *len);
    if (*len && fread(*img, 1, *len, f) != *len)
        return mml__fail(MML_ERR_IO, "%s: read failed: %s", path, ferror(f) ? strerror(errno) : "file shrank");
    return MML_OK;
}

/* Reads path into memory and validates it. */
MML__CKPT_FN mml_status mml__ckpt_open(const char *path, mml__ckpt **out) {
    if (!out) return mml__fail(MML_ERR_ARG, "checkpoint open: out is NULL");
    *out = NULL;
    if (!path) return mml__fail(MML_ERR_ARG, "checkpoint open: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return mml__fail(MML_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    mml__ckpt *c = mml__ckpt_new(path);
    mml_status st = c ? mml__ckpt_slurp(f, path, &c->img, &c->len) : MML_ERR_NOMEM;
    fclose(f);
    if (!st) st = mml__ckpt_parse(c, c->img, c->len);
    if (st) {
        mml__ckpt_close(c);
        return st;
    }
    *out = c;
    return MML_OK;
}

// >>checkpoints: lookup ---------------------------------------------------------

static const mml__ckpt_sec *mml__ckpt_find(const mml__ckpt *c, const char tag[4]) {
    for (uint32_t i = 0; i < c->nsec; i++)
        if (memcmp(c->sec[i].tag, tag, 4) == 0) return &c->sec[i];
    return NULL;
}

static const mml__ckpt_tinfo *mml__ckpt_find_tensor(const mml__ckpt_sec *s, const char *name) {
    mml__ckpt_tinfo key;
    if (s->kind != MML__CKPT_TENSORS || s->ntensors <= 0) return NULL;
    key.name = name;
    return (const mml__ckpt_tinfo *)bsearch(&key, s->t, (size_t)s->ntensors, sizeof key, mml__ckpt_tcmp);
}

/* A byte section's payload; MML_ERR_FORMAT if it is missing or holds tensors. */
MML__CKPT_FN mml_status mml__ckpt_bytes(const mml__ckpt *c, const char tag[4], const void **p,
                                        uint64_t *n) {
    char t[256];
    if (!c || !tag || !p || !n) return mml__fail(MML_ERR_ARG, "checkpoint bytes: NULL argument");
    const mml__ckpt_sec *s = mml__ckpt_find(c, tag);
    mml__ckpt_san(t, tag, 4);
    if (!s) return mml__fail(MML_ERR_FORMAT, "%s: missing section %s", c->label, t);
    if (s->kind != MML__CKPT_BYTES)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s holds tensors, not bytes", c->label, t);
    *p = c->img + s->off;
    *n = s->len;
    return MML_OK;
}

MML__CKPT_FN int mml__ckpt_has_tensor(const mml__ckpt *c, const char tag[4], const char *name) {
    const mml__ckpt_sec *s = (c && tag && name) ? mml__ckpt_find(c, tag) : NULL;
    return s && mml__ckpt_find_tensor(s, name) != NULL;
}

/* Copies tensor name of section tag into dst (prod(shape) floats) after
 * checking that the stored ndim and shape equal the expected ones. */
MML__CKPT_FN mml_status mml__ckpt_tensor_read(const mml__ckpt *c, const char tag[4], const char *name,
                                              int32_t ndim, const int64_t *shape, float *dst) {
    char t[256], nm[256], want[128], got[128];
    if (!c || !tag || !name || !shape || ndim < 1 || ndim > 4)
        return mml__fail(MML_ERR_ARG, "checkpoint tensor read: bad argument");
    const mml__ckpt_sec *s = mml__ckpt_find(c, tag);
    mml__ckpt_san(t, tag, 4);
    mml__ckpt_san(nm, name, strlen(name));
    if (!s) return mml__fail(MML_ERR_FORMAT, "%s: missing section %s", c->label, t);
    if (s->kind != MML__CKPT_TENSORS)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s holds bytes, not tensors", c->label, t);
    const mml__ckpt_tinfo *ti = mml__ckpt_find_tensor(s, name);
    if (!ti) return mml__fail(MML_ERR_FORMAT, "%s: section %s: no tensor named '%s'", c->label, t, nm);
    int same = ti->ndim == ndim;
    for (int32_t k = 0; same && k < ndim; k++) same = ti->shape[k] == shape[k];
    if (!same)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s' has shape %s in the file, expected %s",
                         c->label, t, nm, mml__ckpt_fmt_shape(got, ti->ndim, ti->shape),
                         mml__ckpt_fmt_shape(want, ndim, shape));
    if (ti->nelem && !dst) return mml__fail(MML_ERR_ARG, "checkpoint tensor read: dst is NULL");
    if (ti->nelem) memcpy(dst, c->img + ti->data_off, (size_t)(4 * ti->nelem));
    return MML_OK;
}

/* Iteration, for tools and the fuzzer. */
MML__CKPT_FN int mml__ckpt_nsections(const mml__ckpt *c) { return c ? (int)c->nsec : 0; }

/* Section i's tag (4 bytes, no NUL) and
 * its tensor count (-1 for a byte section); NULL if i is out of range. */
MML__CKPT_FN const char *mml__ckpt_section_at(const mml__ckpt *c, int i, int32_t *ntensors) {
    if (!c || i < 0 || (uint32_t)i >= c->nsec) return NULL;
    if (ntensors) *ntensors = c->sec[i].ntensors;
    return c->sec[i].tag;
}

/* Tensor i (in name order) of section tag: its name, ndim and shape; NULL if
 * there is no such tensor. */
MML__CKPT_FN const char *mml__ckpt_tensor_at(const mml__ckpt *c, const char tag[4], int32_t i,
                                             int32_t *ndim, int64_t shape[4]) {
    const mml__ckpt_sec *s = (c && tag) ? mml__ckpt_find(c, tag) : NULL;
    if (!s || i < 0 || i >= s->ntensors) return NULL;
    if (ndim) *ndim = s->t[i].ndim;
    if (shape) memcpy(shape, s->t[i].shape, sizeof s->t[i].shape);
    return s->t[i].name;
}
