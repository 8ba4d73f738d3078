/* SHA512-CRYPT ("$6$", Drepper's "Unix crypt using SHA-256 and SHA-512")
 * on OpenSSL's SHA-512, for popframe.auth.schemes.
 *
 * Why: a login's SHA512-CRYPT is the largest single cost of a POP3 session
 * (29% of the machine's CPU in the SQL store's drain benchmark), and
 * libxcrypt computes SHA-512 in portable C; OpenSSL's assembly does the
 * same 5,000 rounds with 27% less CPU (benchmarks/RESULTS.md, issue 11's
 * eighth pass).  Same algorithm, same rounds, same output: libxcrypt's is
 * the reference, and tests/test_shacrypt.py compares the two on random
 * inputs.
 *
 * Only the common form is computed here: "$6$" [ "rounds=N$" ] SALT with
 * SALT 1-16 characters of the crypt alphabet, N 1000-999999999 written
 * without leading zeros, and passwords up to 256 octets.  Anything else
 * returns None, and the caller asks libxcrypt, so no unusual setting can
 * be read differently from it.  The GIL is released while hashing. */

#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA512_Init & co.: no EVP cost per round */
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>

#define SALT_MAX 16
#define ROUNDS_DEFAULT 5000
#define ROUNDS_MIN 1000
#define PASSWORD_MAX 256 /* longer: libxcrypt's business (it refuses 512 and more) */

static const char ALPHABET[] =
    "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static int in_alphabet(char c)
{
    return c != '\0' && strchr(ALPHABET, c) != NULL;
}

/* The setting's salt and rounds; 0 when it is not the common form. */
static int parse_setting(const char *setting, Py_ssize_t length, const char **salt,
                         size_t *salt_length, long *rounds, int *rounds_given)
{
    const char *p = setting, *end = setting + length;
    if (length < 4 || memcmp(p, "$6$", 3) != 0)
        return 0;
    p += 3;
    *rounds = ROUNDS_DEFAULT;
    *rounds_given = 0;
    if (end - p >= 7 && memcmp(p, "rounds=", 7) == 0) {
        long value = 0; /* at most 9 digits (999999999, the maximum): fits a 32-bit long */
        const char *digits = p + 7, *q = digits;
        while (q < end && *q >= '0' && *q <= '9' && q - digits < 9) {
            value = value * 10 + (*q - '0');
            q++;
        }
        /* a tenth digit is not the '$' that must follow */
        if (q == digits || q >= end || *q != '$' || *digits == '0' || value < ROUNDS_MIN)
            return 0;
        *rounds = value;
        *rounds_given = 1;
        p = q + 1;
    }
    const char *start = p;
    while (p < end && *p != '$' && p - start <= SALT_MAX) {
        if (!in_alphabet(*p))
            return 0;
        p++;
    }
    if (p == start || p - start > SALT_MAX || (p < end && *p != '$'))
        return 0;
    *salt = start;
    *salt_length = (size_t)(p - start);
    return 1;
}

/* ``length`` octets of ``digest`` repeated: the P sequence. */
static void repeat(unsigned char *out, size_t length, const unsigned char *digest)
{
    for (; length >= SHA512_DIGEST_LENGTH; length -= SHA512_DIGEST_LENGTH) {
        memcpy(out, digest, SHA512_DIGEST_LENGTH);
        out += SHA512_DIGEST_LENGTH;
    }
    memcpy(out, digest, length);
}

static char *encode24(char *out, unsigned int b2, unsigned int b1, unsigned int b0, int n)
{
    unsigned int w = (b2 << 16) | (b1 << 8) | b0;
    while (n-- > 0) {
        *out++ = ALPHABET[w & 0x3f];
        w >>= 6;
    }
    return out;
}

/* The hash string into ``out`` (room for 123 octets and a NUL). */
static void sha512_crypt(const unsigned char *key, size_t key_length, const char *salt,
                         size_t salt_length, long rounds, int rounds_given,
                         unsigned char *p_sequence, char *out)
{
    SHA512_CTX ctx;
    unsigned char a[SHA512_DIGEST_LENGTH], b[SHA512_DIGEST_LENGTH];
    unsigned char dp[SHA512_DIGEST_LENGTH], ds[SHA512_DIGEST_LENGTH];
    size_t n;

    /* B = H(key salt key) */
    SHA512_Init(&ctx);
    SHA512_Update(&ctx, key, key_length);
    SHA512_Update(&ctx, salt, salt_length);
    SHA512_Update(&ctx, key, key_length);
    SHA512_Final(b, &ctx);

    /* A = H(key salt B-repeated-to-len(key) then, per bit of len(key), B or key) */
    SHA512_Init(&ctx);
    SHA512_Update(&ctx, key, key_length);
    SHA512_Update(&ctx, salt, salt_length);
    for (n = key_length; n > SHA512_DIGEST_LENGTH; n -= SHA512_DIGEST_LENGTH)
        SHA512_Update(&ctx, b, SHA512_DIGEST_LENGTH);
    SHA512_Update(&ctx, b, n);
    for (n = key_length; n > 0; n >>= 1) {
        if (n & 1)
            SHA512_Update(&ctx, b, SHA512_DIGEST_LENGTH);
        else
            SHA512_Update(&ctx, key, key_length);
    }
    SHA512_Final(a, &ctx);

    /* DP = H(key repeated len(key) times); P = DP repeated to len(key) */
    SHA512_Init(&ctx);
    for (n = 0; n < key_length; n++)
        SHA512_Update(&ctx, key, key_length);
    SHA512_Final(dp, &ctx);
    repeat(p_sequence, key_length, dp);

    /* DS = H(salt repeated 16 + A[0] times); the S sequence is DS's first
     * len(salt) octets (len(salt) <= 16), read from ds itself */
    SHA512_Init(&ctx);
    for (n = 0; n < 16u + a[0]; n++)
        SHA512_Update(&ctx, salt, salt_length);
    SHA512_Final(ds, &ctx);

    /* The rounds, C starting as A. */
    for (long i = 0; i < rounds; i++) {
        SHA512_Init(&ctx);
        if (i & 1)
            SHA512_Update(&ctx, p_sequence, key_length);
        else
            SHA512_Update(&ctx, a, SHA512_DIGEST_LENGTH);
        if (i % 3 != 0)
            SHA512_Update(&ctx, ds, salt_length);
        if (i % 7 != 0)
            SHA512_Update(&ctx, p_sequence, key_length);
        if (i & 1)
            SHA512_Update(&ctx, a, SHA512_DIGEST_LENGTH);
        else
            SHA512_Update(&ctx, p_sequence, key_length);
        SHA512_Final(a, &ctx);
    }

    /* "$6$[rounds=N$]salt$" and the digest in the crypt alphabet, its
     * octets in the order the specification gives. */
    if (rounds_given)
        out += sprintf(out, "$6$rounds=%ld$", rounds);
    else
        out += sprintf(out, "$6$");
    memcpy(out, salt, salt_length);
    out += salt_length;
    *out++ = '$';
    for (int i = 0; i < 21; i++) {
        int x = (i * 22) % 63, y = (i * 22 + 21) % 63, z = (i * 22 + 42) % 63;
        out = encode24(out, a[x], a[y], a[z], 4);
    }
    out = encode24(out, 0, 0, a[63], 2);
    *out = '\0';

    OPENSSL_cleanse(&ctx, sizeof ctx);
    OPENSSL_cleanse(b, sizeof b);
    OPENSSL_cleanse(dp, sizeof dp);
    OPENSSL_cleanse(ds, sizeof ds);
    OPENSSL_cleanse(a, sizeof a);
}

static PyObject *shacrypt_sha512_crypt(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer key, setting;
    const char *salt;
    size_t salt_length;
    long rounds;
    int rounds_given;
    char out[128];
    unsigned char p_sequence[PASSWORD_MAX];

    if (!PyArg_ParseTuple(args, "y*y*:sha512_crypt", &key, &setting))
        return NULL;
    int usable = key.len <= PASSWORD_MAX && memchr(key.buf, 0, key.len) == NULL
        && parse_setting(setting.buf, setting.len, &salt, &salt_length, &rounds, &rounds_given);
    if (usable) {
        Py_BEGIN_ALLOW_THREADS
        sha512_crypt(key.buf, (size_t)key.len, salt, salt_length, rounds, rounds_given,
                     p_sequence, out);
        Py_END_ALLOW_THREADS
        OPENSSL_cleanse(p_sequence, (size_t)key.len);
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&setting);
    if (!usable)
        Py_RETURN_NONE;
    return PyBytes_FromString(out);
}

static PyMethodDef methods[] = {
    {"sha512_crypt", shacrypt_sha512_crypt, METH_VARARGS,
     "sha512_crypt(password, setting) -> bytes or None\n\n"
     "crypt(3) of password with a \"$6$\" setting, on OpenSSL's SHA-512; None\n"
     "when the setting is not the common form (ask libxcrypt)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "popframe.auth._shacrypt",
    "SHA512-CRYPT on OpenSSL's SHA-512 (see _shacrypt.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__shacrypt(void)
{
    return PyModule_Create(&module);
}
